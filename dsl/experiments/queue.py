"""The study as a work queue: created and filled by one worker, joined by the others; a lost
trial re-queued exactly once.

Everything here rests on Optuna's atomic steps (see `cnnspec.experiments.study`): a unique
study name decides who creates the study and enqueues the variants; the compare-and-set of a
trial's state decides who fails a stale trial, and that worker alone re-queues it (`requeue`).
The names of the study and trial attrs cnnspec stores live here, with the code that writes them.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from typing import Any

from cnnspec.experiments.definition import SweepDef
from cnnspec.experiments.pruning import flags_text, same_pruning
from cnnspec.failures import Failure, UsageError

QUEUE_WAIT = 120.0  # seconds a joining worker waits for the creator to fill the queue

# study user attrs
A_SPEC, A_CONFIG, A_VARIANTS = "cnnspec.spec", "cnnspec.config", "cnnspec.variants"
A_HEARTBEAT, A_GRACE, A_QUEUED = "cnnspec.heartbeat", "cnnspec.grace", "cnnspec.queued"
A_MODELS = "cnnspec.models"  # variant -> [params, MACs]
# trial system attrs
S_RETRY_OF = "cnnspec.retry_of"  # numbers of the lost trials this one replaces, oldest first
S_BEAT = "cnnspec.heartbeat"  # journal storage only
# trial user attrs carried to a re-queued copy
CARRY = ("variant", "slot", "result", "worker", "attempts", "dup_chain")


def quiet_optuna() -> Any:
    """Import optuna quietly: its INFO lines would interleave with the worker's own output."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    return optuna


def requeue(study: Any, trial: Any) -> None:
    """Re-queue a trial that lost its worker: a new WAITING copy with the same parameters.

    Optuna calls this from `fail_stale_trials` only in the worker whose FAIL of the stale trial
    succeeded, so each lost trial is re-queued exactly once. A result the lost worker recorded
    (the `result` attr) travels with the copy, and the copy is told that result, not retrained.
    """
    optuna = quiet_optuna()
    fixed = dict(trial.system_attrs.get("fixed_params", {}))
    fixed.update(trial.params)
    attrs = {k: v for k, v in trial.user_attrs.items() if k in CARRY}
    attempt = {"trial": trial.number, "run_dir": trial.user_attrs.get("run_dir"),
               "worker": trial.user_attrs.get("worker", {}).get("id")}
    attrs["attempts"] = [*trial.user_attrs.get("attempts", []), attempt]
    study.add_trial(optuna.trial.create_trial(
        state=optuna.trial.TrialState.WAITING,
        system_attrs={"fixed_params": fixed,
                      S_RETRY_OF: [*trial.system_attrs.get(S_RETRY_OF, []), trial.number]},
        user_attrs=attrs,
    ))



def _sampler(search: str) -> Any:
    optuna = quiet_optuna()
    if search == "tpe":
        # a different seed per worker: equal seeds would make all workers propose the same
        return optuna.samplers.TPESampler(constant_liar=True)
    return optuna.samplers.RandomSampler()  # never consulted: grid trials have fixed params


def create_or_join(storage: Any, name: str, sweep: SweepDef, heartbeat: int, grace: int,
                   say: Callable[[str], None] = lambda _: None) -> tuple[Any, bool]:
    """The study `name`: created and filled by exactly one worker, joined by the others."""
    optuna = quiet_optuna()
    try:
        study = optuna.create_study(storage=storage, study_name=name, direction="maximize",
                                    sampler=_sampler(sweep.search))
    except optuna.exceptions.DuplicatedStudyError:
        study = optuna.load_study(study_name=name, storage=storage,
                                  sampler=_sampler(sweep.search))
        attrs = _wait_for_queue(study, name)
        _same_sweep_or_fail(attrs, sweep, name)
        set_heartbeat(storage, attrs[A_HEARTBEAT], attrs[A_GRACE])
        return study, False
    study.set_user_attr(A_SPEC, sweep.text)
    study.set_user_attr(A_CONFIG, sweep.config)
    study.set_user_attr(A_VARIANTS, [v.name for v in sweep.variants])
    study.set_user_attr(A_MODELS, {k: list(pm) for k, pm in sweep.models.items()})
    study.set_user_attr(A_HEARTBEAT, heartbeat)
    study.set_user_attr(A_GRACE, grace)
    if sweep.search == "grid":
        for v in sweep.variants:
            study.enqueue_trial(dict(v.choices), user_attrs={"variant": v.name})
    else:
        for i in range(sweep.trials):
            study.enqueue_trial({}, user_attrs={"slot": i})
    study.set_user_attr(A_QUEUED, sweep.trials)  # the marker the joiners wait for: set last
    say(f"study {name}: created; queued {sweep.trials} "
        + ("variants" if sweep.search == "grid" else f"TPE samples of {len(sweep.variants)}"))
    return study, True


def _wait_for_queue(study: Any, name: str) -> dict[str, Any]:
    deadline = time.monotonic() + QUEUE_WAIT
    while True:
        attrs = study.user_attrs
        if A_QUEUED in attrs:
            return attrs
        if A_SPEC not in attrs and study.get_trials(deepcopy=False):
            raise Failure(f"study {name} exists but was not made by cnnspec; use another --study")
        if time.monotonic() > deadline:
            raise Failure(
                f"study {name}: the worker that created it never finished queuing its variants "
                f"(it probably died). Delete it and start again: optuna delete-study "
                f"--storage URL --study-name {name}")
        time.sleep(0.5)


def _same_sweep_or_fail(attrs: dict[str, Any], sweep: SweepDef, name: str) -> None:
    problems = []
    theirs = attrs.get(A_CONFIG, {})
    # a flag that chooses the variants (`--then-train K`: the K winners) explains names that
    # differ; the file's name is the guess only when no such flag does
    chosen_alike = theirs.get("then_train") == sweep.config.get("then_train") \
        or "then_train" not in theirs  # a study made before the count was recorded
    if attrs.get(A_SPEC) != sweep.text:
        problems.append("the spec differs")
    elif attrs.get(A_VARIANTS) != [v.name for v in sweep.variants] and chosen_alike:
        problems.append("the variant names differ (is the spec file named differently?)")
    for key, mine in sweep.config.items():
        if key == "prune":
            if not same_pruning(theirs.get(key), mine):
                problems.append(f"pruning: study has {flags_text(theirs.get(key))}, "
                                f"this worker {flags_text(mine)}")
        elif key == "then_train" and key not in theirs:
            continue  # recorded since 2026-12-03: an older then-train study is joined as before
        elif theirs.get(key) != mine:
            problems.append(f"{key}: study has {theirs.get(key)!r}, this worker {mine!r}")
    if problems:
        raise Failure(f"study {name} holds a different sweep: " + "; ".join(problems)
                      + ". Run every worker with the same spec and flags, or use another --study.")


def set_heartbeat(storage: Any, heartbeat: int, grace: int) -> None:
    """Use the study's beat settings (the creator's), whatever this worker's flags said: a
    checker with a shorter grace than the owner's beat would fail live trials."""
    storage.heartbeat_interval = heartbeat
    storage.grace_period = grace


def load_study(storage: Any, name: str | None) -> Any:
    """The study `name`, or the storage's only study when no name is given (compare)."""
    optuna = quiet_optuna()
    if name is None:
        names = optuna.get_all_study_names(storage)
        if len(names) != 1:
            raise UsageError("give --study NAME; this storage holds "
                             + (", ".join(names) if names else "no studies"))
        name = names[0]
    try:
        return optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        raise Failure(f"no study named {name} in this storage") from None
