"""Layer 5, the command line: the only place that knows argparse, exit codes and rich.

`main` is the `cnnspec` command; `train` and `experiments` register their subcommands.
"""
