"""`python -m cnnspec` runs the command line."""

import sys

from cnnspec.cli.entry import main

sys.exit(main())
