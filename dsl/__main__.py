"""`python -m cnnspec` runs the command line."""

import sys

from cnnspec.cli import main

sys.exit(main())
