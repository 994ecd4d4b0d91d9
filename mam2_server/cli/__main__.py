import sys

from mam2_server.cli import main

sys.exit(main())
