"""How a training run reports its progress: a small protocol, and the two reporters without rich.

The training loop calls a `ProgressReporter` and never knows how it draws: "plain" prints one
line per epoch (pipes, logs, CI), "none" says nothing (libraries, tests, sweeps). The rich bar of
a terminal lives in the CLI (cnnspec.cli.progress), the only layer that imports rich, and is
passed in as an object.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class ProgressReporter(Protocol):
    """What the loop tells a progress display, in this order per run.

    start(epochs, steps) once, then per epoch: epoch_start(epoch) (1-based), batch_done(batch,
    logs) after each training step call (1-based batch, logs with the running "loss" and
    "accuracy"), epoch_done(row) with the epoch's history row; finish() once at the end (also
    after an error or Ctrl-C); say(line) for a sentence to the user (resuming, interrupted).
    """

    def start(self, epochs: int, steps: int) -> None: ...

    def epoch_start(self, epoch: int) -> None: ...

    def batch_done(self, batch: int, logs: dict[str, Any]) -> None: ...

    def epoch_done(self, row: dict[str, Any]) -> None: ...

    def finish(self) -> None: ...

    def say(self, line: str) -> None: ...


def epoch_line(row: dict[str, Any], epochs: int) -> str:
    """`epoch 2/10  loss 1.2345  accuracy 0.5000 … 3.1s  1,234 img/s`: one epoch in a line."""
    parts = [f"epoch {row['epoch']}/{epochs}"]
    for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
        if row.get(key) is not None:
            parts.append(f"{key} {row[key]:.4f}")
    parts.append(f"{row['seconds']:.1f}s")
    if row.get("images_per_second"):
        parts.append(f"{row['images_per_second']:,.0f} img/s")
    return "  ".join(parts)


class NoProgress:
    """Says nothing."""

    def start(self, epochs: int, steps: int) -> None:
        pass

    def epoch_start(self, epoch: int) -> None:
        pass

    def batch_done(self, batch: int, logs: dict[str, Any]) -> None:
        pass

    def epoch_done(self, row: dict[str, Any]) -> None:
        pass

    def finish(self) -> None:
        pass

    def say(self, line: str) -> None:
        pass


class PlainProgress(NoProgress):
    """One line per epoch on stdout (flushed, so a pipe or log file sees it as it happens)."""

    def __init__(self) -> None:
        self.epochs = 0

    def start(self, epochs: int, steps: int) -> None:
        self.epochs = epochs

    def epoch_done(self, row: dict[str, Any]) -> None:
        self.say(epoch_line(row, self.epochs))

    def say(self, line: str) -> None:
        print(line, flush=True)


PROGRESS_NAMES = ("plain", "none")


def resolve_progress(progress: str | ProgressReporter | None) -> ProgressReporter:
    """The reporter for `train(progress=…)`: "plain", "none", None (= plain) or a reporter.

    "rich" is the CLI's (cnnspec.cli.progress.RichProgress): this layer does not import rich.
    """
    if progress is None or progress == "plain":
        return PlainProgress()
    if progress == "none":
        return NoProgress()
    if isinstance(progress, str):
        hint = (" (the rich bar is the CLI's: pass cnnspec.cli.progress.RichProgress())"
                if progress == "rich" else "")
        raise ValueError(
            f"progress must be {', '.join(PROGRESS_NAMES)} or a ProgressReporter, not "
            f"{progress!r}{hint}")
    if not isinstance(progress, ProgressReporter):
        raise TypeError(f"progress must be a ProgressReporter, not {type(progress).__name__}")
    return progress
