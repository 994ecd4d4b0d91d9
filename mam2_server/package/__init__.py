"""`mam2 package TARGET DIR`: installable host plugin packages (one module per target)."""
