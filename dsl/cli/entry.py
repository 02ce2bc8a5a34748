"""The `cnnspec` command's entry point: the module the console script and `python -m cnnspec`
import, and nothing heavy besides.

Why a module of its own: importing the command line (the language, rich, argparse's tables of
every command) takes a few hundred milliseconds, a second or two on a loaded machine, and a
Ctrl-C in that time came out as a Python traceback from the middle of an import. Here the
import happens inside the try, so an early Ctrl-C gets the same "interrupted" and exit 130 as
one during a run. (This is also why `import cnnspec` itself imports nothing until asked.)
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

EXIT_INTERRUPTED = 130  # 128 + SIGINT, what a shell reports for a Ctrl-C


def main(argv: Sequence[str] | None = None) -> int:
    try:
        from cnnspec.cli.main import main as run

        return run(argv)
    except KeyboardInterrupt:  # before the command's own handling was in place
        try:
            if sys.stderr is not None:
                sys.stderr.write("interrupted\n")
                sys.stderr.flush()
        except (OSError, ValueError):
            pass  # stderr closed or gone: the exit status still says it
        return EXIT_INTERRUPTED
