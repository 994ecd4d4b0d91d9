"""`mam2 package TARGET DIR`: host plugins ready to install, with their Python dependencies as wheels
(one module per target: `add_arguments(parser)` and `run(args)`)."""
