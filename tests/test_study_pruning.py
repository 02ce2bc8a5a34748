"""Pruned sweeps in a study (issue 13): the worker's bookkeeping with a pruner attached.

In process, with a trainer that "trains" scripted validation curves through the epoch hooks it
is given (as the training loop calls them, stopping at the first Stop), in threads against
SQLite and the journal file (and PostgreSQL when CNNSPEC_TEST_PG_URL is set). Checked: each
variant trained once; a stop is recorded PRUNED with a why whose values justify it (the
asynchronous rule itself is held against a reference in test_pruning); a TPE duplicate and a
pruned trial, both PRUNED in Optuna, stay apart; a worker lost mid-trial after reporting
epochs leaves a trial that is re-queued and trained again, never counted as pruned; workers
with other pruning flags are refused.
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from pathlib import Path

import optuna
import pytest
from test_study import TINY, WIDE, _url, needs_pg

from cnnspec.experiments import pruning, study
from cnnspec.experiments.pruning import PrunerConfig
from cnnspec.failures import Failure
from cnnspec.language.parse import parse

TrialState = optuna.trial.TrialState
STORAGES = ["sqlite", "journal", pytest.param("postgresql", marks=needs_pg)]
EPOCHS = 4


def _curve(name: str) -> list[float]:
    """A rising curve per variant, fixed by its name (a different level per variant)."""
    rng = random.Random(name)
    level = rng.uniform(0.1, 0.6)
    return [round(level + 0.05 * e + rng.uniform(0, 0.02), 4) for e in range(EPOCHS)]


class CurveTrainer:
    """Calls the hooks after each scripted epoch, stops at the first Stop (as the loop does)."""

    def __init__(self, delay: float = 0.01) -> None:
        self.calls: list[str] = []
        self.lock = threading.Lock()
        self.delay = delay

    def __call__(self, variant, run_dir, epoch_hooks=()):
        with self.lock:
            self.calls.append(variant.name)
        history = []
        for epoch, value in enumerate(_curve(variant.name), start=1):
            time.sleep(self.delay)
            row = {"epoch": epoch, "loss": 1.0, "accuracy": value, "val_loss": 1.1,
                   "val_accuracy": value}
            history.append(row)
            for hook in epoch_hooks:
                stop = hook(epoch, row)
                if stop is not None:
                    return study.Outcome(stop.status, history, None, stop.reason)
        return study.Outcome("completed", history, {"test_accuracy": history[-1]["val_accuracy"]})


def _options(search="grid", trials=None, prune: PrunerConfig | None = None):
    return study.SweepOptions(search=search, trials=trials, train={"epochs": EPOCHS},
                              prune=None if prune is None else pruning.config_record(prune))


def _worker(url, name, sweep, trainer, tmp_path, config, heartbeat=1, grace=5):
    storage = study.open_storage(url, heartbeat, grace)
    st, _ = study.create_or_join(storage, name, sweep, heartbeat, grace)
    return study.Worker(st, storage, sweep, trainer, tmp_path / "runs",
                        settings=lambda _: {"epochs": EPOCHS}, pruner=config)


def _trials(url, name):
    return study.load_study(study.open_storage(url, heartbeat=None), name).get_trials()


def _view(url, name):
    return study.study_view(study.load_study(study.open_storage(url, heartbeat=None), name))


HALVING = PrunerConfig(kind="halving", min_resource=1, eta=2, max_epochs=EPOCHS)


def _assert_every_stop_is_justified(trials) -> None:
    for t in trials:
        if t.state != TrialState.PRUNED or "duplicate_of" in t.user_attrs:
            continue
        why = t.user_attrs["pruned"]
        assert why["value"] < why["cutoff"]  # halving stops only the worse (ties go on)
        assert why["epoch"] == max(t.intermediate_values)  # it reported up to its stop
        assert why["value"] == _curve(t.user_attrs["variant"])[why["epoch"] - 1]
        assert t.user_attrs["partial"]["epochs"] == why["epoch"]
        assert "result" not in t.user_attrs  # never a result a re-queued copy would be told
        assert why["reason"].startswith("successive halving (eta=2)")


@pytest.mark.parametrize("kind", STORAGES)
def test_two_workers_prune_a_shared_grid_study_and_train_each_variant_once(kind, tmp_path):
    url, name = _url(kind, tmp_path), f"pruned-{uuid.uuid4().hex[:8]}"
    sweep = study.sweep_def(parse(WIDE, "wide.cnn"), _options(prune=HALVING))
    trainer = CurveTrainer()
    workers = [_worker(url, name, sweep, trainer, tmp_path, HALVING) for _ in range(2)]
    threads = [threading.Thread(target=w.run, kwargs={"poll": 0.1}) for w in workers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert sorted(trainer.calls) == sorted(v.name for v in sweep.variants)  # each once
    trials = _trials(url, name)
    assert len(trials) == 12 and {t.state for t in trials} <= {TrialState.COMPLETE,
                                                                TrialState.PRUNED}
    pruned = [t for t in trials if t.state == TrialState.PRUNED]
    assert pruned, "twelve curves at different levels: halving stops some"
    _assert_every_stop_is_justified(trials)
    for t in trials:
        if t.state == TrialState.COMPLETE:
            assert sorted(t.intermediate_values) == list(range(1, EPOCHS + 1))
    assert sorted(n for w in workers for n in w.pruned) == sorted(
        t.user_attrs["variant"] for t in pruned)
    view = _view(url, name)
    assert (view.completed, view.pruned, view.duplicates, view.requeued) == (
        12 - len(pruned), len(pruned), 0, 0)
    rows = {r.spec: r for r in view.rows}
    for t in pruned:
        row = rows[t.user_attrs["variant"]]
        assert (row.status, row.pruned_at, row.epochs) == (
            "pruned", t.user_attrs["pruned"]["epoch"], t.user_attrs["pruned"]["epoch"])
        assert row.pruned_reason == t.user_attrs["pruned"]["reason"]


def test_tpe_duplicates_and_pruned_trials_stay_apart(tmp_path):
    url, name = _url("sqlite", tmp_path), "tpe-pruned"
    sweep = study.sweep_def(parse(WIDE, "wide.cnn"),
                            _options(search="tpe", trials=8, prune=HALVING))
    trainer = CurveTrainer(delay=0)
    threads = [threading.Thread(target=lambda: _worker(url, name, sweep, trainer, tmp_path,
                                                       HALVING).run(poll=0.1))
               for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    trials = _trials(url, name)
    duplicates = [t for t in trials if "duplicate_of" in t.user_attrs]
    pruned = [t for t in trials if "pruned" in t.user_attrs]
    assert all(t.state == TrialState.PRUNED for t in duplicates + pruned)
    assert not {t.number for t in duplicates} & {t.number for t in pruned}
    # a variant is trained once, pruned or not: a duplicate of a pruned variant is not retrained
    assert len(trainer.calls) == len(set(trainer.calls)) == 8
    _assert_every_stop_is_justified(trials)
    view = _view(url, name)
    assert (view.duplicates, view.pruned) == (len(duplicates), len(pruned))
    assert view.completed + view.pruned == 8


def test_a_worker_lost_after_reporting_epochs_leaves_a_trial_that_is_trained_again(tmp_path):
    """SIGKILL mid-trial, as the study sees it: a RUNNING trial with reported epochs and no
    more beats. It is failed as stale and re-queued, never counted as pruned."""
    url, name = _url("sqlite", tmp_path), "lost-pruned"
    sweep = study.sweep_def(parse(TINY, "tiny.cnn"), _options(prune=HALVING))
    dead = _worker(url, name, sweep, CurveTrainer(), tmp_path, HALVING, grace=2)
    trial_id, frozen = dead.pop()
    trial = optuna.Trial(dead.study, trial_id)
    dead._suggest(trial)
    reporter = pruning.EpochReporter(trial, HALVING, EPOCHS)
    assert reporter(1, {"val_accuracy": 0.3}) is None  # the first at its rung always goes on
    variant = frozen.user_attrs["variant"]

    trainer = CurveTrainer()
    _worker(url, name, sweep, trainer, tmp_path, HALVING, grace=2).run(poll=0.2)
    trials = _trials(url, name)
    lost = next(t for t in trials if t.number == frozen.number)
    assert lost.state == TrialState.FAIL and "pruned" not in lost.user_attrs
    copy = next(t for t in trials if frozen.number in t.system_attrs.get(study.S_RETRY_OF, []))
    assert copy.user_attrs["variant"] == variant and variant in trainer.calls
    assert copy.state in (TrialState.COMPLETE, TrialState.PRUNED)
    view = _view(url, name)
    assert view.requeued == 1
    assert view.pruned == sum(1 for t in trials if "pruned" in t.user_attrs)
    assert view.completed + view.pruned == 4


def test_a_worker_with_other_pruning_flags_is_refused_and_an_old_study_is_unpruned(tmp_path):
    url = _url("sqlite", tmp_path)
    spec = parse(TINY, "tiny.cnn")
    storage = study.open_storage(url, 1, 2)
    study.create_or_join(storage, "s", study.sweep_def(spec, _options(prune=HALVING)), 1, 2)
    other = PrunerConfig(kind="halving", min_resource=1, eta=3, max_epochs=EPOCHS)
    with pytest.raises(Failure, match=r"pruning: study has --prune halving --prune-metric "
                       r"val_accuracy --min-epochs 1 --reduction-factor 2, this worker "
                       r"--prune halving --prune-metric val_accuracy --min-epochs 1 "
                       r"--reduction-factor 3"):
        study.create_or_join(storage, "s", study.sweep_def(spec, _options(prune=other)), 1, 2)
    study.create_or_join(storage, "s", study.sweep_def(spec, _options(prune=HALVING)), 1, 2)
    # a study made before pruning (no record) is joined by workers that do not prune
    study.create_or_join(storage, "old", study.sweep_def(spec, _options()), 1, 2)
    study.create_or_join(storage, "old", study.sweep_def(
        spec, _options(prune=PrunerConfig(max_epochs=EPOCHS))), 1, 2)
    with pytest.raises(Failure, match="pruning: study has --prune none, this worker --prune "
                                      "halving"):
        study.create_or_join(storage, "old", study.sweep_def(spec, _options(prune=HALVING)),
                             1, 2)


def test_the_study_keeps_a_run_folder_path_per_pruned_trial(tmp_path):
    url, name = _url("journal", tmp_path), "paths"
    sweep = study.sweep_def(parse(WIDE, "wide.cnn"), _options(prune=HALVING))
    _worker(url, name, sweep, CurveTrainer(delay=0), tmp_path, HALVING).run(poll=0.1)
    for t in _trials(url, name):
        assert Path(t.user_attrs["run_dir"]).parent == (tmp_path / "runs").resolve()


def test_a_sampled_grid_is_pruned_like_the_full_one(tmp_path):
    """--sample K: the study holds K variants, and they are pruned as any grid's."""
    url, name = _url("sqlite", tmp_path), "sampled"
    options = study.SweepOptions(sample=6, sample_seed=3, train={"epochs": EPOCHS},
                                 prune=pruning.config_record(HALVING))
    sweep = study.sweep_def(parse(WIDE, "wide.cnn"), options)
    assert len(sweep.variants) == 6
    trainer = CurveTrainer(delay=0)
    _worker(url, name, sweep, trainer, tmp_path, HALVING).run(poll=0.1)
    trials = sorted(_trials(url, name), key=lambda t: t.number)
    assert [t.user_attrs["variant"] for t in trials] == [v.name for v in sweep.variants]
    assert sorted(trainer.calls) == sorted(v.name for v in sweep.variants)
    _assert_every_stop_is_justified(trials)
    # one worker, trials in order: the first trial is never stopped (first at every rung)
    assert trials[0].state == TrialState.COMPLETE
