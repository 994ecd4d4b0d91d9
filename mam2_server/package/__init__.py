"""`mam2 package TARGET DIR`: host plugin folders ready to install, with their Python dependencies as wheels."""
