"""`python -m cnnspec` runs the command line."""

import sys

from cnnspec.cli.main import main

sys.exit(main())
