"""What a trial stores about its training: the trainer's `Outcome` and the `result` record.

The `result` user attr is what `compare --study` reads instead of the run folder (which may be
on another machine). Its summary fields (best and final accuracies) come from the one builder of
comparison rows, `compare.build_row`, so a study and a run folder can never disagree on them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cnnspec.experiments import compare
from cnnspec.training import records


@dataclass
class Outcome:
    """What training one variant gave: status completed | failed | interrupted | pruned (an
    epoch hook stopped it; the worker records the trial PRUNED, not FAIL)."""

    status: str
    history: list[dict[str, Any]]
    metrics: dict[str, Any] | None = None
    reason: str | None = None
    run_dir: Path | None = None  # where it really went, if not the folder asked for


# trainer(variant, run_dir) -> Outcome; a pruned sweep's worker also passes
# epoch_hooks=[...] (the training loop's hooks: `cnnspec.training.train.train`)
Trainer = Callable[..., Outcome]


def _finite(x: Any) -> Any:
    """NaN and infinities become None: a study's attrs are JSON, which has neither."""
    return x if not isinstance(x, float) or math.isfinite(x) else None


def result_record(history: Sequence[dict[str, Any]], metrics: dict[str, Any] | None,
                  run_dir: Path | str | None) -> dict[str, Any]:
    """The `result` user attr: enough for `compare` without the run folder. `value` (what the
    study maximises) is the final validation accuracy, else the test accuracy."""
    rows = [{k: _finite(h.get(k)) for k in records.HISTORY_FIELDS} for h in history]
    test = None if metrics is None else _finite(metrics.get("test_accuracy"))
    row = compare.build_row(run="", path="", spec="", status="completed", history=rows,
                            test_accuracy=test, params=None, macs=None, epochs_planned=None,
                            lr=None, batch=None)
    value = row.final_val_accuracy
    return {
        "value": value if value is not None else test,
        "history": rows,
        "epochs": row.epochs,
        "best_val_accuracy": row.best_val_accuracy,
        "best_epoch": row.best_epoch,
        "final_val_accuracy": value,
        "final_train_accuracy": row.final_train_accuracy,
        "final_val_loss": row.final_val_loss,
        "test_accuracy": test,
        "run_dir": None if run_dir is None else str(run_dir),
    }


def completed_folder(run_dir: str | None) -> dict[str, Any] | None:
    """The result of a run folder that finished, if this machine can see it (a lost worker's
    variant that completed is read back rather than trained again)."""
    if not run_dir:
        return None
    folder = Path(run_dir)
    try:
        status = records.read_json(folder / records.STATUS_FILE)
        if status.get("status") != "completed":
            return None
        metrics = None
        if (folder / records.METRICS_FILE).is_file():
            metrics = records.read_json(folder / records.METRICS_FILE)
        return result_record(records.read_history(folder), metrics, folder)
    except (OSError, ValueError):
        return None
