"""`compare --study`: the study's trials sorted into what the comparison shows, from the study
alone (each trial's user attrs hold its history, accuracy and model size), so a study can be
compared from any machine that reaches its storage, not only the ones holding the run folders.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cnnspec.experiments import compare
from cnnspec.experiments.queue import A_CONFIG, A_MODELS, A_VARIANTS, S_RETRY_OF, quiet_optuna


@dataclass
class StudyView:
    """The study's trials sorted into what `compare` shows."""

    rows: list[compare.RunRow]
    run_dirs: list[Path]
    completed: int = 0
    running: int = 0
    queued: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    requeued: int = 0
    duplicates: int = 0
    pruned: int = 0  # trials the pruner stopped (shown, status "pruned"; not the duplicates)
    variants: int = 0
    search: str = "grid"


def study_view(study: Any) -> StudyView:
    """Rows for compare (compare.RunRow), built from trial user attrs alone, in the order of the
    sweep's variants (then trial number)."""
    attrs = study.user_attrs
    order = {n: i for i, n in enumerate(attrs.get(A_VARIANTS, []))}
    view = StudyView([], [], variants=len(order),
                     search=attrs.get(A_CONFIG, {}).get("search", "grid"))
    shown = _shown_trials(study.get_trials(deepcopy=False), view)
    models = attrs.get(A_MODELS, {})
    for _, _, trial, status in sorted(
            ((order.get(t.user_attrs.get("variant"), len(order)), t.number, t, status)
             for t, status in shown), key=lambda s: (s[0], s[1])):
        row, run_dir = _trial_row(trial, status, models)
        view.rows.append(row)
        view.run_dirs.append(run_dir)
    return view


def _shown_trials(trials: list[Any], view: StudyView) -> list[tuple[Any, str]]:
    """The trials that get a row, each with its status; counts every trial into `view` (the
    lost trials that were re-queued and the TPE duplicates are counted, not shown). Both a TPE
    duplicate and a pruned trial are PRUNED in Optuna: the duplicate has `duplicate_of`, the
    pruned trial the pruner's why (`pruned`)."""
    TrialState = quiet_optuna().trial.TrialState
    retried = {n for t in trials for n in t.system_attrs.get(S_RETRY_OF, [])}
    shown = []
    for t in trials:
        u = t.user_attrs
        if "duplicate_of" in u or (t.state == TrialState.PRUNED and "pruned" not in u):
            view.duplicates += 1
            continue
        if t.state == TrialState.PRUNED:
            view.pruned += 1
            status = "pruned"
        elif t.state == TrialState.FAIL and "failure" not in u:
            if t.number in retried:
                view.requeued += 1
                continue
            status = "lost"
        elif t.state == TrialState.FAIL:
            status = "failed"
            view.failed.append((u.get("variant", f"trial {t.number}"),
                                str(u["failure"]).splitlines()[0]))
        elif t.state == TrialState.WAITING:
            if "variant" not in u:
                continue  # a TPE slot: its variant is not chosen yet
            view.queued += 1
            status = "queued"
        elif t.state == TrialState.RUNNING:
            view.running += 1
            status = "running"
        else:
            view.completed += 1
            status = "completed"
        shown.append((t, status))
    return shown


def _trial_row(trial: Any, status: str, models: dict[str, list[int]]) -> tuple[compare.RunRow,
                                                                                Path]:
    """One trial's comparison row (from its recorded result, or the partial one of a failed
    run) and its run folder (a placeholder path when it never had one)."""
    u = trial.user_attrs
    result = u.get("result") or u.get("partial") or {}
    why = u.get("pruned") or {}
    worker = u.get("worker") or {}
    run_dir = u.get("run_dir") or result.get("run_dir")
    variant = u.get("variant")
    row = compare.build_row(
        run=Path(run_dir).name if run_dir else f"trial {trial.number}",
        path=run_dir or "",
        spec=variant or f"trial {trial.number}",
        status=status,
        history=result.get("history") or [],  # the best/final fields are derived from it
        test_accuracy=result.get("test_accuracy"),
        params=models.get(variant, [worker.get("n_params")])[0],
        macs=models.get(variant, [None, worker.get("macs")])[1],
        epochs_planned=worker.get("epochs"),
        lr=worker.get("lr"),
        batch=worker.get("batch"),
        pruned_reason=str(why.get("reason") or why.get("rule") or "") if status == "pruned"
        else "",
    )
    if status == "pruned" and why.get("epoch") is not None:  # the epoch the pruner judged
        row = dataclasses.replace(row, pruned_at=why["epoch"])
    return row, Path(run_dir) if run_dir else Path(f"trial-{trial.number}")
