"""The two run-time error types of the commands, below the CLI so every layer can raise them.

`cnnspec.cli.main` turns them into exit codes (2 for a UsageError, 1 for a Failure) and re-exports
them; the experiment engine (`cnnspec.experiments.study`) raises them without importing the CLI.
"""

from __future__ import annotations


class UsageError(Exception):
    """A command-line mistake the parser could not catch (exit 2)."""


class Failure(Exception):
    """A run-time failure already explained to the user (exit 1)."""
