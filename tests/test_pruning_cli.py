"""Pruned sweeps end to end (issue 13): `cnnspec sweep --prune ... --then-train K` for real.

The sweeps train a tiny spec (4 variants, 128 sample images, 3 epochs) as a user would, as a
subprocess. What was pruned is not taken from the command: it is recomputed here from the
run folders' own histories with the asynchronous successive-halving rule written in
test_pruning (`asha_reference`), so the test holds on any machine, whatever the accuracies.
The winner of --then-train is recomputed the same way (best final val_accuracy of the
completed folders). Error paths run the CLI and expect one message and no traceback.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import optuna
import pytest
from conftest import run_cli
from test_pruning import asha_reference

from cnnspec.training import records

TrialState = optuna.trial.TrialState

# 4 variants in this order (the sweep's order: conv first, then dense)
TINY = """input 32x32x3
classes 10
train optimizer=sgd lr=.05 batch=32 epochs=3 shuffle=true seed=7

conv{4,16} relu pool4
| dense{8,32} relu
"""
VARIANTS = ["tiny[conv=4,dense=8]", "tiny[conv=4,dense=32]", "tiny[conv=16,dense=8]",
            "tiny[conv=16,dense=32]"]
EPOCHS = 3
PRUNE = ("--prune", "halving", "--reduction-factor", "2", "--min-epochs", "1")
RUN_FILES = (records.SETTINGS_FILE, records.HISTORY_JSON, records.STATUS_FILE,
             records.METRICS_FILE, records.MODEL_FILE)


def _env(tmp: Path) -> dict[str, str]:
    home = tmp / "home"
    home.mkdir(exist_ok=True)
    return {"HOME": str(home), "CNNSPEC_DATA": "", "COLUMNS": "220",
            "TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "1",
            "OMP_NUM_THREADS": "1"}


def _sweep(tmp: Path, *extra: str):
    spec = tmp / "tiny.cnn"
    spec.write_text(TINY)
    return run_cli("sweep", str(spec), "--limit", "128", "--progress", "none", *extra,
                   cwd=tmp, env=_env(tmp))


def _folder(root: Path, variant: str) -> Path:
    found = [p.parent for p in root.glob(f"*/{records.STATUS_FILE}")
             if p.parent.name.startswith(variant)]
    assert len(found) == 1, (variant, found)
    return found[0]


def _curves(folders: list[Path]) -> list[list[float]]:
    """Each run's val_accuracy per epoch; a pruned run's missing epochs are -inf (the rule
    never reads past a stop)."""
    out = []
    for f in folders:
        values = [h["val_accuracy"] for h in records.read_history(f)]
        out.append(values + [-math.inf] * (EPOCHS - len(values)))
    return out


def _expected_stops(folders: list[Path]) -> dict[int, int | None]:
    return asha_reference(_curves(folders), r=1, eta=2)


def _final(folder: Path) -> float:
    return records.read_history(folder)[-1]["val_accuracy"]


def _no_traceback(result) -> None:
    assert "Traceback" not in result.stderr + result.stdout, result.stderr[-3000:]


# -- a local sweep (no --study): pruned variants, then the winner trained long ----------------


@pytest.fixture(scope="module")
def local_sweep(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("local")
    result = _sweep(tmp, *PRUNE, "--out", str(tmp / "out"), "--then-train", "1",
                    "--then-epochs", "2")
    return tmp / "out", result


def test_a_pruned_variant_stops_where_halving_says_with_a_complete_run_folder(local_sweep):
    out, result = local_sweep
    assert result.returncode == 0, result.stderr[-3000:]
    folders = [_folder(out, v) for v in VARIANTS]
    expected = _expected_stops(folders)
    assert any(expected.values()), "the tiny sweep is meant to prune (see the curves above)"
    for i, folder in enumerate(folders):
        status = records.read_status(folder)
        history = records.read_history(folder)
        assert all((folder / name).is_file() for name in RUN_FILES), folder
        if expected[i] is None:
            assert (status["status"], len(history)) == ("completed", EPOCHS)
        else:
            assert (status["status"], len(history)) == ("pruned", expected[i])
            assert "successive halving (eta=2)" in status["reason"]
            assert f"{history[-1]['val_accuracy']:.4f}" in status["reason"]
            assert f"{VARIANTS[i]}: pruned after epoch {expected[i]}" in result.stderr
    pruned = sum(1 for e in expected.values() if e is not None)
    trained = sum(len(records.read_history(f)) for f in folders)
    assert f"{pruned} of 4 variants pruned; {trained} of {4 * EPOCHS} epochs trained" \
        in result.stderr


def test_then_train_trains_the_best_completed_variant_again_as_a_fresh_run(local_sweep):
    out, result = local_sweep
    folders = [_folder(out, v) for v in VARIANTS]
    completed = [(v, f) for v, f in zip(VARIANTS, folders, strict=True)
                 if records.read_status(f)["status"] == "completed"]
    winner = max(completed, key=lambda vf: _final(vf[1]))[0]  # ties: the first, as best_k
    long = list((out / "then-train").iterdir())
    assert [p.name for p in long if p.is_dir()] == [winner]
    history = records.read_history(long[0])
    assert [h["epoch"] for h in history] == [1, 2]  # a fresh run of --then-epochs, not resumed
    assert records.read_status(long[0])["status"] == "completed"
    assert "train again for 2 epochs, as fresh runs" in result.stderr
    # the comparison printed at the end has both phases: 4 sweep runs and the long run
    assert "5 runs" in result.stdout and "then-train/" in result.stdout


def test_compare_lists_pruned_runs_as_pruned_at_their_epoch_after_the_completed(local_sweep):
    out, _ = local_sweep
    for sort in ((), ("--sort", "val_accuracy"), ("--sort", "best")):
        rows = json.loads(run_cli("compare", str(out), "--json", "--no-plots", *sort).stdout)
        states = [r["status"] for r in rows]
        first_pruned = states.index("pruned")
        assert all(s == "completed" for s in states[:first_pruned])
        assert all(s == "pruned" for s in states[first_pruned:])
        for r in rows[first_pruned:]:
            status = records.read_status(Path(r["path"]))
            assert r["pruned_at"] == r["epochs"] == len(records.read_history(Path(r["path"])))
            assert r["pruned_reason"] == status["reason"]
        if sort:  # the completed runs are ranked among themselves, best first
            key = "final_val_accuracy" if sort[1] == "val_accuracy" else "best_val_accuracy"
            done = [r[key] for r in rows[:first_pruned]]
            assert done == sorted(done, reverse=True)
    table = run_cli("compare", str(out), "--no-plots", env={"COLUMNS": "250"}).stdout
    assert "pruned at 1" in table or "pruned at 2" in table
    assert "pruned runs stopped before their last epoch" in table


def test_then_train_with_fewer_completed_variants_than_asked_says_so(tmp_path, local_sweep):
    out, _ = local_sweep
    completed = sum(records.read_status(_folder(out, v))["status"] == "completed"
                    for v in VARIANTS)
    assert completed < 4  # the same sweep prunes on this machine (the test above)
    result = _sweep(tmp_path, *PRUNE, "--out", str(tmp_path / "out"), "--then-train", "4",
                    "--then-epochs", "1", "--no-plots")
    assert result.returncode == 1
    _no_traceback(result)
    assert (f"--then-train 4: only {completed} variant(s) completed the sweep with a final "
            f"val_accuracy ({4 - completed} pruned, 0 failed); nothing was trained long"
            ) in result.stderr
    assert not (tmp_path / "out" / "then-train").exists()
    assert "4 runs" in result.stdout  # the sweep's comparison is still printed


# -- a study (SQLite): the same, with the why in the study --------------------------------------


@pytest.fixture(scope="module")
def study_sweep(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("study")
    url = f"sqlite:///{tmp / 'sweeps.sqlite3'}"
    result = _sweep(tmp, *PRUNE, "--study", "tiny", "--storage", url, "--heartbeat", "1",
                    "--grace", "5", "--runs-dir", str(tmp / "runs"), "--then-train", "1",
                    "--then-epochs", "2")
    return tmp, url, result


def _trials(url: str, name: str):
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.load_study(study_name=name, storage=url).get_trials()


def test_a_pruned_study_records_pruned_and_completed_trials_with_the_why(study_sweep):
    tmp, url, result = study_sweep
    assert result.returncode == 0, result.stderr[-3000:]
    trials = sorted(_trials(url, "tiny"), key=lambda t: t.number)
    assert [t.user_attrs["variant"] for t in trials] == VARIANTS  # one trial each, none lost
    folders = [Path(t.user_attrs["run_dir"]) for t in trials]
    expected = _expected_stops(folders)
    assert any(expected.values())
    for i, (t, folder) in enumerate(zip(trials, folders, strict=True)):
        assert all((folder / name).is_file() for name in RUN_FILES), folder
        status = records.read_status(folder)
        if expected[i] is None:
            assert t.state == TrialState.COMPLETE and status["status"] == "completed"
            assert "pruned" not in t.user_attrs
        else:
            why = t.user_attrs["pruned"]
            assert t.state == TrialState.PRUNED and status["status"] == "pruned"
            assert (why["epoch"], why["rule"], why["reason"]) == (
                expected[i], "halving", status["reason"])
            assert why["value"] == records.read_history(folder)[-1]["val_accuracy"]
            assert why["value"] < why["cutoff"]
            assert "duplicate_of" not in t.user_attrs
    pruned = sum(1 for e in expected.values() if e is not None)
    assert f"{4 - pruned} of 4 variants completed" in result.stdout
    assert f"{pruned} pruned" in result.stdout


def test_the_long_phase_is_a_study_of_its_own_with_the_winner(study_sweep):
    tmp, url, result = study_sweep
    trials = _trials(url, "tiny")
    done = [t for t in trials if t.state == TrialState.COMPLETE]
    winner = max(sorted(done, key=lambda t: t.number),
                 key=lambda t: _final(Path(t.user_attrs["run_dir"]))).user_attrs["variant"]
    long = _trials(url, "tiny.then-train")
    assert [(t.state, t.user_attrs["variant"]) for t in long] == [(TrialState.COMPLETE, winner)]
    folder = Path(long[0].user_attrs["run_dir"])
    assert folder.parent == (tmp / "runs" / "tiny" / "then-train").resolve()
    assert [h["epoch"] for h in records.read_history(folder)] == [1, 2]
    assert "study tiny.then-train: 1 runs" in result.stdout


def test_compare_study_shows_the_epoch_and_the_why(study_sweep):
    tmp, url, _ = study_sweep
    rows = json.loads(run_cli("compare", "--storage", url, "--study", "tiny", "--json",
                              "--no-plots").stdout)
    by_variant = {t.user_attrs["variant"]: t for t in _trials(url, "tiny")}
    states = [r["status"] for r in rows]
    assert states == sorted(states, key=lambda s: s == "pruned")  # pruned last
    for r in rows:
        t = by_variant[r["spec"]]
        if r["status"] == "pruned":
            assert r["pruned_at"] == t.user_attrs["pruned"]["epoch"] == r["epochs"]
            assert r["pruned_reason"] == t.user_attrs["pruned"]["reason"]
        else:
            assert r["pruned_at"] is None and r["pruned_reason"] == ""


def test_a_worker_with_other_pruning_flags_is_refused(study_sweep):
    tmp, url, _ = study_sweep
    spec = tmp / "tiny.cnn"
    result = run_cli("sweep", str(spec), "--limit", "128", "--progress", "none",
                     "--prune", "median", "--study", "tiny", "--storage", url,
                     "--runs-dir", str(tmp / "runs"), cwd=tmp, env=_env(tmp))
    assert result.returncode == 1
    _no_traceback(result)
    err = " ".join(result.stderr.split())
    assert ("study tiny holds a different sweep: pruning: study has --prune halving "
            "--prune-metric val_accuracy --min-epochs 1 --reduction-factor 2, this worker "
            "--prune median --prune-metric val_accuracy --warmup 1 --startup-trials 3") in err
    unpruned = run_cli("sweep", str(spec), "--limit", "128", "--study", "tiny", "--storage",
                       url, "--runs-dir", str(tmp / "runs"), cwd=tmp, env=_env(tmp))
    assert unpruned.returncode == 1
    assert "this worker --prune none" in " ".join(unpruned.stderr.split())


# -- error paths: one message, no traceback, before anything trains ----------------------------


@pytest.mark.parametrize("flags, code, words", [
    (("--prune", "sometimes"), 2, "argument --prune: invalid choice: 'sometimes'"),
    (("--prune", "halving", "--reduction-factor", "1"), 2,
     "--reduction-factor 1: a whole number, at least 2"),
    (("--prune", "halving", "--min-epochs", "3"), 2,
     "--min-epochs 3 is not below the sweep's 3 epochs"),
    (("--prune", "median", "--warmup", "0"), 2, "--warmup 0: the first epoch"),
    (("--prune", "median", "--startup-trials", "-1"), 2, "--startup-trials -1: a whole number"),
    (("--prune-metric", "val_auc"), 2, "argument --prune-metric: invalid choice"),
    (("--then-train", "2"), 2, "--then-train 2 needs --then-epochs N"),
    (("--then-epochs", "9"), 2, "--then-epochs N goes with --then-train K"),
    (("--then-train", "5", "--then-epochs", "2"), 2,
     "--then-train 5: the sweep has only 4 variant(s)"),
    (("--then-train", "0", "--then-epochs", "2"), 2, "--then-train"),
    (("--prune", "halving", "--reduction-factor", "1", "--study", "x"), 2,
     "--reduction-factor 1: a whole number, at least 2"),
])
def test_bad_pruning_flags_are_refused_with_one_message(tmp_path, flags, code, words):
    result = _sweep(tmp_path, "--out", str(tmp_path / "out"), *flags)
    assert result.returncode == code, result.stderr
    _no_traceback(result)
    assert words in " ".join(result.stderr.split())
    assert not (tmp_path / "out").exists()  # refused before any run folder
    assert "data:" not in result.stderr  # ... and before the data loaded


def test_the_flags_are_in_the_help():
    help_text = run_cli("sweep", "--help", env={"COLUMNS": "200"}).stdout
    for flag in ("--prune {none,halving,hyperband,median}", "--prune-metric", "--min-epochs",
                 "--reduction-factor", "--warmup", "--startup-trials", "--then-train K",
                 "--then-epochs N"):
        assert flag in help_text


@pytest.mark.parametrize("flags", [("--prune", "halving"), ("--prune", "median"),
                                   ("--then-train", "1", "--then-epochs", "2"),
                                   ("--prune", "halving", "--study", "s")])
def test_pruning_a_sweep_without_validation_is_refused_up_front(tmp_path, flags):
    """Pruning judges, and --then-train ranks, the validation metric of each epoch: a variant
    with validation=none would leave every trial failed; it is refused before anything runs."""
    spec = tmp_path / "unvalidated.cnn"
    spec.write_text("input 32x32x3\nclasses 10\ntrain validation=none lr={.01,.05} epochs=3\n"
                    "conv8 relu |\n")
    result = run_cli("sweep", str(spec), "--out", str(tmp_path / "out"), "--progress", "none",
                     *flags, cwd=tmp_path, env=_env(tmp_path))
    assert result.returncode == 2, result.stderr
    _no_traceback(result)
    assert ("unvalidated[lr=.01] has validation=none, but pruning and --then-train need the "
            "validation metric of every epoch" in " ".join(result.stderr.split()))
    assert not (tmp_path / "out").exists()
