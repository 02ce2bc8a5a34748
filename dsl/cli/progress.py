"""The rich progress bar of `cnnspec train` in a terminal: a ProgressReporter for the loop.

The training layer knows only the protocol (cnnspec.training.progress); rich is imported here,
in the CLI, the one layer that draws on the terminal.
"""

from __future__ import annotations

import sys
from typing import Any

from cnnspec.training.progress import NoProgress, PlainProgress, ProgressReporter


class RichProgress:
    """A bar per epoch with running loss/accuracy, then the epoch's validation numbers."""

    def __init__(self) -> None:
        self.bar: Any = None
        self.task: Any = None
        self.epochs = self.steps = 0

    def start(self, epochs: int, steps: int) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.epochs, self.steps = epochs, steps
        self.bar = Progress(
            TextColumn("epoch {task.fields[epoch]}/{task.fields[epochs]}"),
            BarColumn(bar_width=24),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[metrics]}"),
        )
        self.bar.start()

    def epoch_start(self, epoch: int) -> None:
        if self.bar is not None:
            self.task = self.bar.add_task(
                "train", total=self.steps, epoch=epoch, epochs=self.epochs, metrics="")

    def batch_done(self, batch: int, logs: dict[str, Any]) -> None:
        if self.bar is None or self.task is None:
            return
        text = "  ".join(f"{short} {float(logs[k]):.4f}"
                         for k, short in (("loss", "loss"), ("accuracy", "acc")) if k in logs)
        self.bar.update(self.task, completed=batch, metrics=text)

    def epoch_done(self, row: dict[str, Any]) -> None:
        if self.bar is None or self.task is None:
            return
        text = "  ".join(
            f"{short} {row[k]:.4f}"
            for k, short in (("loss", "loss"), ("accuracy", "acc"),
                             ("val_loss", "val_loss"), ("val_accuracy", "val_acc"))
            if row.get(k) is not None
        )
        self.bar.update(self.task, completed=self.steps, metrics=text)

    def finish(self) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None

    def say(self, line: str) -> None:
        print(line, flush=True)


def reporter(mode: str | None) -> ProgressReporter:
    """The reporter for `--progress`: rich, plain, none, or None (auto: rich on a terminal)."""
    if mode is None:
        mode = "rich" if sys.stdout.isatty() else "plain"
    if mode == "rich":
        return RichProgress()
    return PlainProgress() if mode == "plain" else NoProgress()
