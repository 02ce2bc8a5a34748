"""Pruned sweeps (issue 13): cnnspec.experiments.pruning against references written here.

No TensorFlow (but in the last test, which stops a real run of the tiny fixture spec): a fake
trainer reports scripted validation curves through the epoch hook. The
expected stops come from references in this file, written from the rules as published (ASHA's
asynchronous promotion, Hyperband's brackets, the median rule), and from cases worked by hand;
the module only asks Optuna, so these tests hold Optuna's decisions, the wiring and the "why".
"""

from __future__ import annotations

import binascii
import json
import math
import random
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from cnnspec.experiments import pruning
from cnnspec.experiments.pruning import EpochReporter, Finished, PrunerConfig, best_k
from cnnspec.failures import UsageError
from cnnspec.training.loop import Stop

optuna = pytest.importorskip("optuna")
TrialState = optuna.trial.TrialState

# a case worked by hand: eta 2, rungs end at epochs 1 and 2 (4 is the last epoch, not judged)
HAND = [
    [0.30, 0.40, 0.50, 0.60],
    [0.20, 0.35, 0.45, 0.55],  # epoch 1: 0.20 vs {0.30, 0.20}: best 1 of 2 is 0.30 -> stop
    [0.35, 0.38, 0.50, 0.62],  # epoch 1: best of {.30,.20,.35} -> on; epoch 2: .38 < .40 -> stop
    [0.25, 0.45, 0.55, 0.65],  # epoch 1: best 2 of {.30,.20,.35,.25} are .35,.30 -> stop
]
HAND_STOPS = {0: None, 1: 1, 2: 2, 3: 1}


# the fake trainer and the drivers ----------------------------------------------------------


def fake_training(curve: list[float], hooks: list[Callable], metric: str = "val_accuracy"
                  ) -> Iterator[tuple[int, object]]:
    """Trains one epoch per next(): the history row goes to the hooks, as train(...,
    epoch_hooks=...) will; yields (epoch, the first stop request or None)."""
    for epoch, value in enumerate(curve, start=1):
        row = {"epoch": epoch, metric: value, "accuracy": 0.5}
        stop = None
        for hook in hooks:  # as the loop: the hooks in order, up to the first stop
            stop = hook(epoch, row)
            if stop is not None:
                break
        yield epoch, stop
        if stop is not None:
            return


def schedule(n: int, epochs: int, speeds: tuple[int, ...], step: Callable[[int, int], bool],
             start: Callable[[int, int], None] = lambda i, w: None) -> dict[int, int | None]:
    """n trials on len(speeds) workers; worker w trains an epoch every speeds[w] ticks (a
    slower machine), and a free worker takes the next trial. step(trial, epoch) -> True to
    stop. Returns trial -> epoch stopped (None: ran to the end). The same driver runs the
    references and the module, so equal decisions give equal orders."""
    held: list[list[int] | None] = [None] * len(speeds)  # per worker: [trial, epochs done]
    nxt, stops, tick = 0, {}, 0
    while nxt < n or any(held):
        for w in range(len(speeds)):
            if held[w] is None and nxt < n:
                start(nxt, w)
                held[w] = [nxt, 0]
                nxt += 1
        for w, speed in enumerate(speeds):
            slot = held[w]
            if slot is None or tick % speed:
                continue
            slot[1] += 1
            trial, epoch = slot
            if step(trial, epoch):
                stops[trial] = epoch
                held[w] = None
            elif epoch == epochs:
                stops[trial] = None
                held[w] = None
        tick += 1
    return stops


SEQUENTIAL, TWO = (1,), (1, 2)  # one worker; two, the second half as fast


def asha_reference(curves: list[list[float]], r: int, eta: int,
                   speeds: tuple[int, ...] = SEQUENTIAL,
                   bracket_of: Callable[[int], int] = lambda i: 0) -> dict[int, int | None]:
    """Asynchronous successive halving, from the rule: at the end of its rung k (epoch
    r*eta**(b+k), b its bracket) a trial goes on iff its value is among the best
    max(n // eta, 1) of the n values written at that rung so far by trials of its bracket,
    its own included (ties go on). The last epoch is not judged."""
    epochs = len(curves[0])
    at_rung: dict[tuple[int, int], list[float]] = {}
    rung = {i: 0 for i in range(len(curves))}

    def step(i: int, epoch: int) -> bool:
        b = bracket_of(i)
        if epoch == epochs or epoch != r * eta ** (b + rung[i]):
            return False
        v = curves[i][epoch - 1]
        values = at_rung.setdefault((b, rung[i]), [])
        values.append(v)
        keep = max(len(values) // eta, 1)
        if v < sorted(values, reverse=True)[keep - 1]:
            return True
        rung[i] += 1
        return False

    return schedule(len(curves), epochs, speeds, step)


def median_reference(curves: list[list[float]], startup: int, warmup: int,
                     speeds: tuple[int, ...] = SEQUENTIAL) -> dict[int, int | None]:
    """The median rule: once `startup` trials have completed, a trial whose best value so far
    is below the median of the completed trials' values at this epoch stops (not before
    epoch `warmup`, never at the last epoch)."""
    epochs = len(curves[0])
    completed: list[int] = []

    def step(i: int, epoch: int) -> bool:
        if epoch == epochs:
            completed.append(i)
            return False
        if len(completed) < max(startup, 1) or epoch < warmup:
            return False
        best = max(curves[i][:epoch])
        return best < statistics.median(curves[j][epoch - 1] for j in completed)

    return schedule(len(curves), epochs, speeds, step)


def run_module(study, config: PrunerConfig, curves: list[list[float]],
               speeds: tuple[int, ...] = SEQUENTIAL, metric: str = "val_accuracy",
               studies=None, owners: dict[int, int] | None = None) -> dict[int, int | None]:
    """The module on the same driver: each trial a trial of `study` (or, per worker, of its
    own study object over a shared storage), the fake trainer reporting through EpochReporter,
    a stop recorded with record_pruned."""
    studies = studies or [study]
    runs: dict[int, tuple] = {}

    def start(i: int, w: int) -> None:
        s = studies[w % len(studies)]
        if owners is not None:
            owners[i] = w
        trial = pop(s)
        assert trial.number == i
        reporter = EpochReporter(trial, config, epochs=len(curves[i]))
        runs[i] = (s, trial, fake_training(curves[i], [reporter], metric))

    def step(i: int, epoch: int) -> bool:
        s, trial, training = runs[i]
        done, stop = next(training)
        assert done == epoch
        if stop is not None:
            pruning.record_pruned(s, trial, stop)
            return True
        if epoch == len(curves[i]):
            s.tell(trial, curves[i][-1])
        return False

    return schedule(len(curves), len(curves[0]), speeds, step, start)


def pop(study, ask: bool = True):
    """Take the first WAITING trial as the study worker does (WAITING -> RUNNING succeeds for
    one caller); when none is queued, ask for a new one (the in-memory local study) or None."""
    storage = study._storage
    for t in study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
        try:
            if storage.set_trial_state_values(t._trial_id, state=TrialState.RUNNING):
                return optuna.Trial(study, t._trial_id)
        except optuna.exceptions.UpdateFinishedTrialError:
            continue
    return study.ask() if ask else None


def curves_of(seed: int, n: int = 16, epochs: int = 6) -> list[list[float]]:
    """Scripted learning curves: rising, noisy, crossing (so order matters)."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        start, rate = rng.uniform(0.15, 0.45), rng.uniform(0.01, 0.08)
        out.append([round(start + rate * e + rng.uniform(-0.03, 0.03), 4)
                    for e in range(epochs)])
    return out


def states(study) -> dict[int, str]:
    return {t.number: t.state.name for t in study.get_trials()}


# configuration ---------------------------------------------------------------------------


def test_defaults_are_none_validation_accuracy_eta_3_from_epoch_1():
    c = PrunerConfig()
    assert (c.kind, c.metric, c.min_resource, c.eta, c.maximize) == (
        "none", "val_accuracy", 1, 3, True)
    assert PrunerConfig(metric="val_loss").maximize is False
    assert PrunerConfig(kind="halving", min_resource=2, eta=3).rung_epoch(1) == 6
    assert PrunerConfig(kind="hyperband", max_epochs=9).rung_epoch(0, bracket=2) == 9


def test_a_training_metric_prunes_but_the_validation_metric_ranks_the_winners():
    """--prune-metric accuracy: trials are stopped on the training accuracy (B, best on
    validation at epoch 1, is stopped for its training accuracy), and the long phase ranks the
    completed ones by their final val_accuracy, as a local sweep tells them."""
    config = PrunerConfig(kind="halving", metric="accuracy", min_resource=1, eta=3,
                          max_epochs=3)
    assert config.ranked_by == "val_accuracy" and config.maximize
    assert PrunerConfig(metric="loss").ranked_by == "val_loss"
    assert PrunerConfig(metric="val_loss").ranked_by == "val_loss"
    study = pruning.local_study(config)
    curves = {"A": ([.40, .50, .60], [.20, .25, .30]),  # (accuracy, val_accuracy) per epoch
              "B": ([.20, .30, .40], [.50, .55, .60]),
              "C": ([.45, .55, .65], [.25, .30, .35])}
    states = {}
    for name, (train, val) in curves.items():
        reporter = pruning.begin(study, name, config, epochs=3)
        for epoch in (1, 2, 3):
            row = {"epoch": epoch, "accuracy": train[epoch - 1], "val_accuracy": val[epoch - 1]}
            if reporter(epoch, row) is not None:
                break
        states[name] = pruning.finish(study, reporter, val[epoch - 1])
    assert states == {"A": "completed", "B": "pruned", "C": "completed"}
    ranked = best_k(pruning.finished_trials(study, config), 2, config.maximize)
    assert [(f.variant, f.value) for f in ranked] == [("C", .35), ("A", .30)]


@pytest.mark.parametrize(("kwargs", "words"), [
    ({"kind": "asha"}, "--prune 'asha': choose one of none, halving, hyperband, median"),
    ({"metric": "val_auc"}, "--prune-metric 'val_auc'"),
    ({"min_resource": 0}, "--min-epochs 0"),
    ({"min_resource": 1.5}, "--min-epochs 1.5"),
    ({"eta": 1}, "--reduction-factor 1: a whole number, at least 2"),
    ({"eta": True}, "--reduction-factor True"),
    ({"max_epochs": 0}, "--epochs 0"),
    ({"warmup": 0}, "--warmup 0"),
    ({"startup": -1}, "--startup-trials -1"),
    ({"kind": "hyperband"}, "--prune hyperband needs the sweep's epochs"),
    ({"kind": "halving", "min_resource": 6, "max_epochs": 6},
     "--min-epochs 6 is not below the sweep's 6 epochs"),
    ({"kind": "median", "warmup": 3, "max_epochs": 3}, "--warmup 3 is not below"),
])
def test_bad_values_are_refused_with_the_flag_and_the_fix(kwargs, words):
    with pytest.raises(UsageError, match="^" + words.replace("(", r"\(").replace("?", r"\?")
                       .replace(".", r"\.")):
        PrunerConfig(**kwargs)


def test_every_problem_is_named_at_once():
    with pytest.raises(UsageError) as err:
        PrunerConfig(kind="x", eta=0)
    assert "--prune 'x'" in str(err.value) and "--reduction-factor 0" in str(err.value)


def test_importing_the_module_does_not_import_optuna():
    code = ("import sys, cnnspec.experiments.pruning as p; p.PrunerConfig(kind='halving'); "
            "print('optuna' in sys.modules, 'tensorflow' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "False False"


def test_a_reporter_refuses_a_study_whose_pruner_was_not_attached():
    config = PrunerConfig(kind="halving", max_epochs=4)
    study = optuna.create_study(direction="maximize")  # Optuna's default: a MedianPruner
    with pytest.raises(ValueError, match="MedianPruner, not SuccessiveHalvingPruner: call "
                                         r"pruning.attach\(study, config\) first"):
        EpochReporter(study.ask(), config)
    pruning.attach(study, config)
    EpochReporter(study.ask(), config)


def test_the_factory_builds_optunas_pruners_with_these_parameters():
    sh = pruning.make_pruner(PrunerConfig(kind="halving", min_resource=2, eta=4))
    assert isinstance(sh, optuna.pruners.SuccessiveHalvingPruner)
    assert (sh._min_resource, sh._reduction_factor, sh._min_early_stopping_rate,
            sh._bootstrap_count) == (2, 4, 0, 0)
    hb = pruning.make_pruner(PrunerConfig(kind="hyperband", min_resource=1, eta=3, max_epochs=9))
    assert isinstance(hb, optuna.pruners.HyperbandPruner)
    assert (hb._min_resource, hb._max_resource, hb._reduction_factor) == (1, 9, 3)
    md = pruning.make_pruner(PrunerConfig(kind="median", warmup=2, startup=4))
    assert isinstance(md, optuna.pruners.MedianPruner)
    assert (md._n_warmup_steps, md._n_startup_trials) == (2, 4)
    assert isinstance(pruning.make_pruner(PrunerConfig()), optuna.pruners.NopPruner)


# successive halving against the reference ------------------------------------------------


def test_the_reference_gives_the_stops_worked_by_hand():
    assert asha_reference(HAND, r=1, eta=2) == HAND_STOPS


def test_halving_stops_the_trials_worked_by_hand_at_those_epochs():
    config = PrunerConfig(kind="halving", min_resource=1, eta=2, max_epochs=4)
    study = pruning.local_study(config)
    assert run_module(study, config, HAND) == HAND_STOPS
    assert states(study) == {0: "COMPLETE", 1: "PRUNED", 2: "PRUNED", 3: "PRUNED"}
    # epochs trained: 4 + 1 + 2 + 1 of 16
    assert sum(len(t.intermediate_values) for t in study.get_trials()) == 8


def test_the_why_names_the_rule_the_rung_the_value_and_the_values_compared():
    config = PrunerConfig(kind="halving", min_resource=1, eta=2, max_epochs=4)
    study = pruning.local_study(config)
    run_module(study, config, HAND)
    why = {t.number: t.user_attrs.get("pruned") for t in study.get_trials()}
    assert why[0] is None
    # the one line for people goes with the record (status.json keeps the same line)
    reason = why[2].pop("reason")
    assert "rung 1 (epoch 2)" in reason and "0.3800" in reason and "cut-off 0.4000" in reason
    assert why[2] == {
        "rule": "halving", "epoch": 2, "metric": "val_accuracy", "value": 0.38, "trial": 2,
        "rung": 1, "rung_epoch": 2, "eta": 2, "keep": 1, "reached": 2, "cutoff": 0.40,
        "compared": [{"trial": 0, "value": 0.40}],
    }
    assert why[3]["rung"] == 0 and why[3]["keep"] == 2 and why[3]["cutoff"] == 0.30
    assert json.loads(json.dumps(why[3], allow_nan=False)) == why[3]
    assert sorted(c["value"] for c in why[3]["compared"]) == [0.20, 0.30, 0.35]


def test_the_stop_request_says_pruned_and_why_in_one_line():
    config = PrunerConfig(kind="halving", min_resource=1, eta=2, max_epochs=4)
    study = pruning.local_study(config)
    for curve in HAND[:2]:
        trial = study.ask()
        stops = [s for _, s in fake_training(curve, [EpochReporter(trial, config)]) if s]
    (stop,) = stops
    assert isinstance(stop, Stop)  # what train(..., epoch_hooks=...) accepts
    assert stop.status == "pruned" and stop.epoch == 1
    assert trial.number == 1 and study.trials[1].state == TrialState.RUNNING  # not told yet
    assert stop.reason == ("successive halving (eta=2): at rung 0 (epoch 1) val_accuracy 0.2000 "
                           "is not among the best 1 of the 2 trials that reached it "
                           "(cut-off 0.3000)")


def test_the_why_includes_a_value_that_arrived_between_its_read_and_the_pruners():
    config = PrunerConfig(kind="halving", min_resource=1, eta=2, max_epochs=4)
    study = pruning.local_study(config)
    mine, other = study.ask(), study.ask()

    class Racing(optuna.pruners.SuccessiveHalvingPruner):
        """Another worker writes its rung-0 value just as the pruner starts."""

        def prune(self, s, t):
            s._storage.set_trial_system_attr(other._trial_id, "completed_rung_0", 0.5)
            return super().prune(s, t)

    study.pruner = Racing(min_resource=1, reduction_factor=2)
    stop = EpochReporter(mine, config)(1, {"val_accuracy": 0.3})
    assert stop is not None  # 0.3 is not the best 1 of {0.5, 0.3}
    assert (stop.record["compared"], stop.record["cutoff"]) == (
        [{"trial": other.number, "value": 0.5}], 0.5)


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize(("r", "eta"), [(1, 3), (1, 2), (2, 2)])
def test_halving_stops_exactly_what_asynchronous_successive_halving_says(seed, r, eta):
    curves = curves_of(seed)
    config = PrunerConfig(kind="halving", min_resource=r, eta=eta, max_epochs=6)
    expected = asha_reference(curves, r, eta)
    assert any(e is not None for e in expected.values())  # the case prunes something
    assert run_module(pruning.local_study(config), config, curves) == expected


@pytest.mark.parametrize("seed", [4, 8])
def test_halving_with_two_workers_at_different_speeds_follows_the_asynchronous_rule(seed):
    curves = curves_of(seed)
    config = PrunerConfig(kind="halving", min_resource=1, eta=3, max_epochs=6)
    expected = asha_reference(curves, 1, 3, speeds=TWO)
    assert expected != asha_reference(curves, 1, 3)  # the order of arrival at rungs matters
    assert run_module(pruning.local_study(config), config, curves, speeds=TWO) == expected


def test_a_minimised_metric_is_judged_the_other_way_and_recorded_as_it_is():
    losses = [[round(1 - v, 2) for v in c] for c in HAND]
    config = PrunerConfig(kind="halving", metric="val_loss", min_resource=1, eta=2,
                          max_epochs=4)
    study = pruning.local_study(config)
    assert run_module(study, config, losses, metric="val_loss") == HAND_STOPS
    why = study.trials[2].user_attrs["pruned"]
    assert (why["metric"], why["value"], why["cutoff"]) == ("val_loss", 0.62, 0.60)
    assert why["compared"] == [{"trial": 0, "value": 0.60}]


def test_nan_stops_the_trial_and_says_so():
    config = PrunerConfig(kind="halving", min_resource=1, eta=3, max_epochs=4)
    study = pruning.local_study(config)
    stops = run_module(study, config, [[0.3, 0.4, 0.5, 0.6], [float("nan"), 0.4, 0.5, 0.6]])
    assert stops == {0: None, 1: 1}
    why = study.trials[1].user_attrs["pruned"]
    assert (why["value"], why["epoch"], why["compared"]) == (None, 1, [])


def test_a_missing_metric_is_not_reported_and_stops_nothing():
    config = PrunerConfig(kind="halving", min_resource=1, eta=2, max_epochs=4)
    study = pruning.local_study(config)
    trial = study.ask()
    assert EpochReporter(trial, config)(1, {"epoch": 1, "val_accuracy": None}) is None
    assert study.trials[0].intermediate_values == {}


def test_none_never_prunes_but_keeps_the_curves():
    curves = [[0.9] * 6] + [[0.1] * 6] * 5
    config = PrunerConfig(kind="none", max_epochs=6)
    study = pruning.local_study(config)
    assert run_module(study, config, curves) == dict.fromkeys(range(6))
    assert all(len(t.intermediate_values) == 6 for t in study.get_trials())


def test_the_last_epoch_is_reported_but_never_judged():
    # r=1, eta=2, 2 epochs: rung 1 would end at epoch 2, the last: nobody stops there
    curves = [[0.5, 0.9], [0.6, 0.1]]
    config = PrunerConfig(kind="halving", min_resource=1, eta=2, max_epochs=2)
    study = pruning.local_study(config)
    assert run_module(study, config, curves) == {0: None, 1: None}
    assert study.trials[1].intermediate_values == {1: 0.6, 2: 0.1}


# hyperband and median against their references --------------------------------------------


def hyperband_brackets(study_name: str, r: int, eta: int, max_epochs: int) -> Callable:
    """Hyperband's bracket of trial `number`, from its description: s_max + 1 brackets with
    r*eta**s_max <= max_epochs; bracket b gets ceil(n * eta**s / (s + 1)) shares (s = n-1-b),
    a trial lands by crc32("<study>_<number>") modulo the total."""
    n = 1
    while r * eta ** n <= max_epochs:
        n += 1
    shares = [math.ceil(n * eta ** (n - 1 - b) / (n - b)) for b in range(n)]

    def bracket(number: int) -> int:
        x = binascii.crc32(f"{study_name}_{number}".encode()) % sum(shares)
        for b, share in enumerate(shares):
            if x < share:
                return b
            x -= share
        raise AssertionError

    return bracket


@pytest.mark.parametrize("seed", [6, 7])
def test_hyperband_stops_exactly_what_its_brackets_of_halving_say(seed):
    curves = curves_of(seed, n=16, epochs=9)
    config = PrunerConfig(kind="hyperband", min_resource=1, eta=3, max_epochs=9)
    study = pruning.local_study(config, name=f"hb{seed}")
    bracket = hyperband_brackets(f"hb{seed}", 1, 3, 9)
    assert len({bracket(i) for i in range(16)}) > 1  # the case uses several brackets
    expected = asha_reference(curves, 1, 3, bracket_of=bracket)
    assert run_module(study, config, curves) == expected
    for t in study.get_trials(states=(TrialState.PRUNED,)):
        why = t.user_attrs["pruned"]
        assert why["bracket"] == bracket(t.number)
        assert why["rung_epoch"] == why["epoch"] == 3 ** (why["bracket"] + why["rung"])


def test_median_stops_the_trials_worked_by_hand():
    curves = [[0.5, 0.6, 0.7], [0.4, 0.5, 0.6], [0.3, 0.7, 0.8], [0.46, 0.5, 0.9]]
    # trial 2: epoch 1, best .30 < median(.5, .4) = .45; trial 3: epoch 2, best .50 < .55
    expected = {0: None, 1: None, 2: 1, 3: 2}
    assert median_reference(curves, startup=2, warmup=1) == expected
    config = PrunerConfig(kind="median", startup=2, warmup=1, max_epochs=3)
    study = pruning.local_study(config)
    assert run_module(study, config, curves) == expected
    why = study.trials[3].user_attrs["pruned"]
    assert (why["rule"], why["epoch"], why["best"], why["median"]) == ("median", 2, 0.5, 0.55)
    assert why["compared"] == [{"trial": 0, "value": 0.6}, {"trial": 1, "value": 0.5}]


@pytest.mark.parametrize(("seed", "startup", "warmup"), [(8, 3, 1), (9, 2, 3), (10, 5, 2)])
def test_median_stops_exactly_what_the_median_rule_says(seed, startup, warmup):
    curves = curves_of(seed)
    config = PrunerConfig(kind="median", startup=startup, warmup=warmup, max_epochs=6)
    expected = median_reference(curves, startup, warmup)
    assert any(e is not None for e in expected.values())
    assert run_module(pruning.local_study(config), config, curves) == expected
    assert all(e is None or e >= warmup for e in expected.values())


# shared storages: two workers, each its own study object ---------------------------------


def shared(kind: str, tmp_path, config: PrunerConfig, n: int, workers: int = 2):
    """A study in SQLite or a journal file, filled like the study engine fills it (queued
    trials), loaded by `workers` workers through their own storage objects."""
    from cnnspec.experiments.storage import open_storage

    url = (f"sqlite:///{tmp_path}/s.sqlite3" if kind == "sqlite"
           else f"journal://{tmp_path}/s.log")
    first = optuna.create_study(storage=open_storage(url, heartbeat=60), study_name="s",
                                direction="maximize")
    for i in range(n):
        first.enqueue_trial({}, user_attrs={"variant": f"v{i}"})
    return [pruning.attach(optuna.load_study(study_name="s",
                                             storage=open_storage(url, heartbeat=60)), config)
            for _ in range(workers)]


@pytest.mark.parametrize("kind", ["sqlite", "journal"])
def test_two_workers_on_a_shared_storage_prune_from_each_others_values(kind, tmp_path):
    curves = curves_of(13, n=12)
    config = PrunerConfig(kind="halving", min_resource=1, eta=3, max_epochs=6)
    studies = shared(kind, tmp_path, config, len(curves))
    expected = asha_reference(curves, 1, 3, speeds=TWO)
    assert expected != asha_reference(curves, 1, 3)
    owners: dict[int, int] = {}
    assert run_module(None, config, curves, speeds=TWO, studies=studies, owners=owners) \
        == expected
    # some trial was stopped by a value only the other worker had reported
    assert any(owners[c["trial"]] != owners[t.number]
               for t in studies[0].get_trials(states=(TrialState.PRUNED,))
               for c in t.user_attrs["pruned"]["compared"])
    fresh = optuna.load_study(study_name="s", storage=studies[1]._storage)
    assert {t.number: t.state.name for t in fresh.get_trials()} == {
        i: "COMPLETE" if e is None else "PRUNED" for i, e in expected.items()}


@pytest.mark.parametrize("kind", ["sqlite", "journal"])
def test_two_worker_threads_train_each_trial_once_and_record_every_stop(kind, tmp_path):
    curves = curves_of(12, n=10)
    config = PrunerConfig(kind="halving", min_resource=1, eta=2, max_epochs=6)
    studies = shared(kind, tmp_path, config, len(curves))
    trained: list[int] = []
    lock = threading.Lock()

    def worker(study) -> None:
        while True:
            trial = pop(study, ask=False)
            if trial is None:
                return
            with lock:
                trained.append(trial.number)
            reporter = EpochReporter(trial, config)
            for _epoch, stop in fake_training(curves[trial.number], [reporter]):
                time.sleep(0.001)
                if stop is not None:
                    pruning.record_pruned(study, trial, stop)
            if trial.number not in {t.number for t in study.get_trials(
                    states=(TrialState.PRUNED,))}:
                study.tell(trial, curves[trial.number][-1])

    errors: list[BaseException] = []

    def guarded(study) -> None:
        try:
            worker(study)
        except BaseException as exc:  # noqa: BLE001 - reported below, not lost in the thread
            errors.append(exc)

    threads = [threading.Thread(target=guarded, args=(s,)) for s in studies]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    final = {t.number: t for t in studies[0].get_trials()}
    assert sorted(trained) == list(range(len(curves)))  # each once
    assert {t.state for t in final.values()} <= {TrialState.COMPLETE, TrialState.PRUNED}
    pruned = [t for t in final.values() if t.state == TrialState.PRUNED]
    # (which ones depends on the threads' order; that each stop is the rule's is tested above)
    assert pruned and all(t.user_attrs["pruned"]["epoch"] == max(t.intermediate_values)
                          for t in pruned)


def test_a_pruned_trial_is_final_and_never_requeued_as_lost(tmp_path):
    from cnnspec.experiments.queue import S_RETRY_OF
    from cnnspec.experiments.storage import open_storage

    config = PrunerConfig(kind="halving", min_resource=1, eta=2, max_epochs=4)
    storage = open_storage(f"sqlite:///{tmp_path}/s.sqlite3", heartbeat=1, grace=1)
    study = pruning.attach(optuna.create_study(storage=storage, study_name="s",
                                               direction="maximize"), config)
    for i in range(3):
        study.enqueue_trial({}, user_attrs={"variant": f"v{i}"})
    good, bad, lost = pop(study), pop(study), pop(study)
    for trial in (good, bad, lost):
        storage.record_heartbeat(trial._trial_id)
    list(fake_training(HAND[0], [EpochReporter(good, config)]))
    study.tell(good, HAND[0][-1])
    stops = [s for _, s in fake_training(HAND[1], [EpochReporter(bad, config)]) if s]
    pruning.record_pruned(study, bad, stops[0])
    # the lost worker trained one epoch (promoted at rung 0: .35 is the best so far), then died
    assert next(fake_training(HAND[2], [EpochReporter(lost, config)])) == (1, None)
    time.sleep(2.5)  # every beat is now older than the grace period
    optuna.storages.fail_stale_trials(study)
    by_number = {t.number: t for t in study.get_trials()}
    assert by_number[bad.number].state == TrialState.PRUNED
    assert by_number[lost.number].state == TrialState.FAIL  # the control: a lost RUNNING trial
    copies = [t for t in by_number.values() if t.state == TrialState.WAITING]
    assert [c.system_attrs[S_RETRY_OF] for c in copies] == [[lost.number]]
    assert "pruned" not in by_number[lost.number].user_attrs  # lost, not counted as pruned
    assert [(f.number, f.state) for f in pruning.finished_trials(study, config)] == [
        (good.number, "completed"), (bad.number, "pruned"), (lost.number, "failed")]
    # nor can a worker's give-back (FAIL by compare-and-set) touch it
    with pytest.raises(optuna.exceptions.UpdateFinishedTrialError):
        storage.set_trial_state_values(bad._trial_id, state=TrialState.FAIL)


# then train the best K -------------------------------------------------------------------


def test_best_k_ranks_completed_trials_only_by_their_final_value():
    finished = [
        Finished("a", "completed", 0.70, 6, 0),
        Finished("b", "completed", 0.65, 6, 1),
        Finished("d", "pruned", 0.80, 2, 2),  # higher, at epoch 2: not a final value
        Finished("c", "completed", 0.72, 6, 3),
        Finished("e", "failed", None, 3, 4),
        Finished("f", "completed", None, 6, 5),
    ]
    assert [f.variant for f in best_k(finished, 2)] == ["c", "a"]
    assert [f.variant for f in best_k(finished, 10)] == ["c", "a", "b"]
    assert best_k(finished, 0) == []
    with pytest.raises(UsageError, match="--then-train -1"):
        best_k(finished, -1)


def test_best_k_minimises_a_loss_and_counts_a_variant_once_ties_by_trial_order():
    finished = [
        Finished("a", "completed", 0.9, 6, 0),
        Finished("b", "completed", 0.8, 6, 1),
        Finished("a", "completed", 0.7, 6, 2),  # a re-queued copy of a, better
        Finished("c", "completed", 0.8, 6, 3),
        Finished("d", "pruned", 0.1, 1, 4),
    ]
    assert [(f.variant, f.value) for f in best_k(finished, 3, maximize=False)] == [
        ("a", 0.7), ("b", 0.8), ("c", 0.8)]


def test_finished_trials_reads_a_pruned_study_for_best_k():
    config = PrunerConfig(kind="halving", min_resource=1, eta=2, max_epochs=4)
    study = pruning.local_study(config)
    run_module(study, config, HAND)
    finished = pruning.finished_trials(study, config)
    assert [(f.state, f.value, f.epochs) for f in finished] == [
        ("completed", 0.60, 4), ("pruned", 0.20, 1), ("pruned", 0.38, 2), ("pruned", 0.25, 1)]
    # trial 2 reached .38 and trial 3 .25; only trial 0 completed, so only it is picked
    assert [f.number for f in best_k(finished, 2)] == [0]


def test_a_local_sweep_begins_and_finishes_each_variant_and_ranks_the_completed():
    config = PrunerConfig(kind="halving", min_resource=1, eta=2, max_epochs=4)
    study = pruning.local_study(config)
    ended = []
    for name, curve in zip("abcd", HAND, strict=True):
        reporter = pruning.begin(study, name, config)
        list(fake_training(curve, [reporter]))
        ended.append(pruning.finish(study, reporter, curve[-1]))
    assert ended == ["completed", "pruned", "pruned", "pruned"]
    crashed = pruning.begin(study, "e", config)
    assert pruning.finish(study, crashed, None) == "failed"
    assert [(f.variant, f.state) for f in pruning.finished_trials(study, config)] == [
        ("a", "completed"), ("b", "pruned"), ("c", "pruned"), ("d", "pruned"), ("e", "failed")]
    assert [f.variant for f in best_k(pruning.finished_trials(study, config), 2)] == ["a"]


# the real training loop ----------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")
def test_the_reporter_stops_real_training_and_the_run_folder_says_why(tmp_path, monkeypatch):
    """train(..., epoch_hooks=[reporter]) on the tiny fixture spec (64 sample images): a first
    trial scripted at 100 % makes the real one the worse of 2 at rung 0, so it stops after
    epoch 1 with a complete run folder, and the study and status.json hold the same why."""
    from conftest import ROOT

    from cnnspec.language.parse import load
    from cnnspec.language.settings import resolve_settings
    from cnnspec.training import records
    from cnnspec.training.data import load_cifar10
    from cnnspec.training.train import train

    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("KERAS_HOME", raising=False)
    data = load_cifar10(env={}, limit=64)
    spec = load(ROOT / "tests" / "fixtures" / "run-before-issue-11" / "spec.cnn")
    settings = resolve_settings({s.key: s.value for s in spec.settings}).override(epochs=3)
    config = PrunerConfig(kind="halving", min_resource=1, eta=2, max_epochs=3)
    study = pruning.local_study(config)
    scripted = pruning.begin(study, "perfect", config)
    list(fake_training([1.0, 1.0, 1.0], [scripted]))
    assert pruning.finish(study, scripted, 1.0) == "completed"

    reporter = pruning.begin(study, "real", config, epochs=3)
    out = tmp_path / "real"
    result = train(spec, settings, data, out, progress="none", epoch_hooks=[reporter])
    assert pruning.finish(study, reporter, None) == "pruned"
    assert (result.status, result.epochs_completed) == ("pruned", 1)
    status = records.read_status(out)
    assert (status["status"], status["reason"]) == ("pruned", reporter.decision.reason)
    assert [row["epoch"] for row in records.read_history(out)] == [1]
    assert (out / records.MODEL_FILE).is_file() and (out / records.METRICS_FILE).is_file()
    why = study.trials[1].user_attrs["pruned"]
    assert (why["epoch"], why["rung"], why["cutoff"]) == (1, 0, 1.0)
    assert why["value"] == records.read_history(out)[0]["val_accuracy"]


def test_the_readme_sweep_is_the_benchs_sweep_and_every_variant_checks() -> None:
    """README's `cnnspec sweep exp7-sweep.cnn --prune halving ...` names a file the README
    writes out just above it: the sweep bench/pruning.py measures, so the figures beside it are
    about this very sweep."""
    import re
    from pathlib import Path

    from cnnspec.language.parse import parse
    from cnnspec.language.sweep import check_all_variants

    root = Path(__file__).resolve().parents[1]
    readme = (root / "README.md").read_text()
    block = re.search(r"```\n(# exp7, swept: 16 variants.*?)```\n", readme, re.S)
    bench = re.search(r'^SPEC = """(.*?)"""', (root / "bench" / "pruning.py").read_text(),
                      re.S | re.M)
    assert block is not None and bench is not None
    assert block.group(1) == bench.group(1)
    assert "cnnspec sweep exp7-sweep.cnn --prune halving" in readme[block.end():]
    assert len(check_all_variants(parse(block.group(1), name="exp7-sweep"))) == 16


def test_the_min_epochs_refusal_of_a_one_epoch_sweep_gives_no_empty_range():
    """`--prune halving --epochs 1` said `use --min-epochs 1..0`, a range with nothing in it."""
    from cnnspec.experiments.pruning import PrunerConfig

    with pytest.raises(Exception, match=r"use --min-epochs 1\.\.2 or --prune none"):
        PrunerConfig(kind="halving", max_epochs=3, min_resource=3)
    with pytest.raises(Exception, match="train more epochs, or --prune none") as caught:
        PrunerConfig(kind="halving", max_epochs=1)
    assert "1..0" not in str(caught.value)


@pytest.mark.parametrize(("flags", "advice"), [
    ({"kind": "halving", "eta": 2, "max_epochs": 3}, "(--min-epochs 2, --prune none)"),
    ({"kind": "halving", "eta": 3, "max_epochs": 3}, "(--reduction-factor 2, --min-epochs 2, "
                                                     "--prune none)"),
    ({"kind": "halving", "eta": 2, "max_epochs": 2}, "(--prune none)"),
    ({"kind": "median", "warmup": 1, "max_epochs": 4}, "(--warmup 2, --prune none)"),
    ({"kind": "none"}, None),  # nothing was pruned: no advice to prune less
])
def test_prune_less_advice_names_only_values_the_sweep_did_not_use(flags, advice):
    """A sweep run with `--reduction-factor 2` was told to prune less with
    `--reduction-factor 2`."""
    from cnnspec.cli.experiments import _prune_less
    from cnnspec.experiments.pruning import PrunerConfig

    assert _prune_less(PrunerConfig(**flags)) == (
        f"Prune less in a new sweep {advice} " if advice else "")


def test_a_study_whose_then_train_count_changed_says_so_not_the_file_name():
    """The second worker asked for two winners where the study holds one: it was told the
    variant names differ, "is the spec file named differently?"."""
    from types import SimpleNamespace

    from cnnspec.cli.main import Failure
    from cnnspec.experiments.queue import A_CONFIG, A_SPEC, A_VARIANTS, _same_sweep_or_fail

    attrs = {A_SPEC: "text", A_VARIANTS: ["s[a]"], A_CONFIG: {"then_train": 1}}
    sweep = SimpleNamespace(text="text", variants=[SimpleNamespace(name="s[a]"),
                                                   SimpleNamespace(name="s[b]")],
                            config={"then_train": 2})
    with pytest.raises(Failure) as caught:
        _same_sweep_or_fail(attrs, sweep, "hs.then-train")
    assert "then_train: study has 1, this worker 2" in str(caught.value)
    assert "named differently" not in str(caught.value)
    sweep.config = {"then_train": 1}  # same count, other names: the old guess stands
    with pytest.raises(Failure, match="named differently"):
        _same_sweep_or_fail(attrs, sweep, "hs.then-train")
    # a then-train study made before the count was recorded is joined as before
    _same_sweep_or_fail({**attrs, A_CONFIG: {}}, SimpleNamespace(
        text="text", variants=[SimpleNamespace(name="s[a]")], config={"then_train": 1}), "o")
