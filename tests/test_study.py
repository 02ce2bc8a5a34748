"""Sweeps over many workers (experiments.study): exactly once, lost workers re-queued, compare.

Two kinds of test. In-process ones drive `study.Worker` with a trainer that returns at once, in
threads, against SQLite, the journal file and (when CNNSPEC_TEST_PG_URL is set) PostgreSQL: they
check the bookkeeping (each variant trained once, a lost trial re-queued once, a result recorded
before the loss reused, TPE duplicates not trained) in seconds. Subprocess ones run
`python -m cnnspec sweep` workers for real on the bundled sample (4 variants, 64 images,
1 epoch), kill one with SIGKILL, and run PostgreSQL: the path a user takes.

PostgreSQL: `.ci/run` starts a throwaway server with `.ci/postgres.sh` and exports
CNNSPEC_TEST_PG_URL; without it those tests skip and say why.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import optuna
import pytest
from conftest import ROOT

from cnnspec.experiments import study
from cnnspec.language.parse import parse
from cnnspec.training import records

TrialState = optuna.trial.TrialState

PG_URL = os.environ.get("CNNSPEC_TEST_PG_URL")
PG_SKIP = ("no PostgreSQL server for this test: "
           + os.environ.get("CNNSPEC_TEST_PG_SKIP",
                            "CNNSPEC_TEST_PG_URL is not set (.ci/run starts one with "
                            ".ci/postgres.sh)"))
needs_pg = pytest.mark.skipif(not PG_URL, reason=PG_SKIP)

TINY = "conv8 relu pool2 drop{.25,.5} | dense{16,32}\n"  # 4 variants
WIDE = "conv{4,8} relu pool2 drop{.1,.25,.5} | dense{8,16}\n"  # 12 variants


# -- in-process: the bookkeeping, with a trainer that returns at once ---------------------------


def _args(search="grid", trials=None, epochs=1):
    """The sweep's options as the CLI would pass them (plain values, no Namespace)."""
    return study.SweepOptions(search=search, trials=trials,
                              train={"epochs": epochs, "limit": 64})


class FakeTrainer:
    """Records which variants it trained; val accuracy is a function of the name."""

    def __init__(self, delay: float = 0.02, fail: str | None = None) -> None:
        self.calls: list[str] = []
        self.lock = threading.Lock()
        self.delay, self.fail = delay, fail

    def __call__(self, variant, run_dir):
        with self.lock:
            self.calls.append(variant.name)
        time.sleep(self.delay)
        if variant.name == self.fail:
            return study.Outcome("failed", [], None, "loss became nan")
        acc = (sum(map(ord, variant.name)) % 97) / 100
        return study.Outcome("completed", [{"epoch": 1, "loss": 2.0, "accuracy": acc + 0.01,
                                            "val_loss": 2.1, "val_accuracy": acc}],
                             {"test_accuracy": acc})


def _url(kind: str, tmp_path: Path) -> str:
    if kind == "sqlite":
        return f"sqlite:///{tmp_path / 'sweeps.sqlite3'}"
    if kind == "journal":
        return f"journal://{tmp_path / 'sweeps.log'}"
    return PG_URL or ""


STORAGES = ["sqlite", "journal", pytest.param("postgresql", marks=needs_pg)]


def _worker(url, name, sweep, trainer, tmp_path, heartbeat=1, grace=5):
    storage = study.open_storage(url, heartbeat, grace)
    st, _ = study.create_or_join(storage, name, sweep, heartbeat, grace)
    return study.Worker(st, storage, sweep, trainer, tmp_path / "runs")


def _trials(url, name):
    return study.load_study(study.open_storage(url, heartbeat=None), name).get_trials()


def _completed_variants(url, name):
    return sorted(t.user_attrs["variant"] for t in _trials(url, name)
                  if t.state == TrialState.COMPLETE)


@pytest.mark.parametrize("kind", STORAGES)
def test_three_workers_train_every_variant_exactly_once(kind, tmp_path):
    url, name = _url(kind, tmp_path), f"grid-{uuid.uuid4().hex[:8]}"
    sweep = study.sweep_def(parse(WIDE, "wide.cnn"), _args())
    trainer = FakeTrainer()
    errors = []

    def one():
        try:
            _worker(url, name, sweep, trainer, tmp_path).run(poll=0.1)
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=one) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    names = sorted(v.name for v in sweep.variants)
    assert len(names) == 12
    assert sorted(trainer.calls) == names  # each trained once, none skipped
    assert _completed_variants(url, name) == names
    trials = _trials(url, name)
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 12, [  # no junk trials
        (t.number, t.state.name, t.user_attrs, t.system_attrs) for t in trials]


@pytest.mark.parametrize("kind", STORAGES)
def test_lost_trials_are_requeued_once_and_finished_ones_are_not_retrained(kind, tmp_path):
    url, name = _url(kind, tmp_path), f"lost-{uuid.uuid4().hex[:8]}"
    sweep = study.sweep_def(parse(TINY, "tiny.cnn"), _args())
    # worker 1 takes three trials and "dies" holding them (no more beats, no tell): it had
    # recorded the first one's result (the commit point); the second one's run folder had
    # completed but was not recorded yet; the third one had not finished
    dead = _worker(url, name, sweep, FakeTrainer(), tmp_path, grace=2)
    held = [dead.pop() for _ in range(3)]
    recorded = optuna.Trial(dead.study, held[0][0])
    dead._suggest(recorded)
    recorded.set_user_attr("result", study.result_record(
        [{"epoch": 1, "accuracy": 0.5, "val_accuracy": 0.42}], None, "/elsewhere/run"))
    folder = tmp_path / "finished-run"
    records.write_json(folder / records.SETTINGS_FILE, {})
    records.write_history(folder, [{"epoch": 1, "accuracy": 0.3, "val_accuracy": 0.25}])
    records.write_json(folder / records.STATUS_FILE, {"status": "completed"})
    optuna.Trial(dead.study, held[1][0]).set_user_attr("run_dir", str(folder))
    names = [frozen.user_attrs["variant"] for _, frozen in held]

    trainer = FakeTrainer()
    _worker(url, name, sweep, trainer, tmp_path, grace=2).run(poll=0.2)

    assert names[0] not in trainer.calls and names[1] not in trainer.calls
    assert trainer.calls.count(names[2]) == 1  # lost before it finished: trained once
    assert len(trainer.calls) == 2
    assert _completed_variants(url, name) == sorted(v.name for v in sweep.variants)
    trials = _trials(url, name)
    lost = [t for t in trials if t.state == TrialState.FAIL]
    assert sorted(t.number for t in lost) == sorted(frozen.number for _, frozen in held)
    copies = {t.user_attrs["variant"]: t for t in trials if t.system_attrs.get(study.S_RETRY_OF)}
    assert sorted(c.system_attrs[study.S_RETRY_OF][-1] for c in copies.values()) == sorted(
        t.number for t in lost)  # each lost trial re-queued exactly once
    assert all(c.state == TrialState.COMPLETE for c in copies.values())
    assert copies[names[0]].value == pytest.approx(0.42)
    assert copies[names[0]].user_attrs["run_dir"] == "/elsewhere/run"
    assert copies[names[1]].value == pytest.approx(0.25)
    assert copies[names[1]].user_attrs["run_dir"] == str(folder)
    view = study.study_view(study.load_study(study.open_storage(url, heartbeat=None), name))
    assert view.completed == 4 and view.requeued == 3 and not view.failed


def test_a_live_worker_declared_lost_hands_its_result_to_the_requeued_copy(tmp_path):
    # a worker whose beats stop reaching the storage (a network partition) while it trains:
    # another worker fails its trial as stale and re-queues it; when the first one finishes,
    # nobody has started the copy yet, so its result goes there and nothing trains twice
    url, name = _url("sqlite", tmp_path), "partition"
    sweep = study.sweep_def(parse(TINY, "tiny.cnn"), _args())
    declared_lost = threading.Event()

    class Trainer(FakeTrainer):
        def __call__(self, variant, run_dir):
            assert declared_lost.wait(30)
            return super().__call__(variant, run_dir)

    trainer = Trainer()
    cut_off = _worker(url, name, sweep, trainer, tmp_path, grace=2)
    trial_id, frozen = cut_off.pop()
    cut_off.storage.record_heartbeat = lambda trial_id: None  # its beats are lost from now on
    thread = threading.Thread(target=cut_off.run_trial, args=(trial_id, frozen))
    thread.start()
    other = _worker(url, name, sweep, FakeTrainer(), tmp_path, grace=2)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        other.fail_stale()
        if any(t.system_attrs.get(study.S_RETRY_OF) for t in _trials(url, name)):
            break
        time.sleep(0.2)
    declared_lost.set()
    thread.join(30)
    assert trainer.calls == [frozen.user_attrs["variant"]]
    trials = _trials(url, name)
    (copy,) = [t for t in trials if t.system_attrs.get(study.S_RETRY_OF)]
    assert copy.state == TrialState.COMPLETE
    assert copy.user_attrs["recovered_from"] == frozen.number
    assert copy.params == trials[frozen.number].params


def test_ctrl_c_puts_the_held_trial_back_at_once(tmp_path):
    url, name = _url("sqlite", tmp_path), "ctrl-c"
    sweep = study.sweep_def(parse(TINY, "tiny.cnn"), _args())

    class Trainer(FakeTrainer):
        def __call__(self, variant, run_dir):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _worker(url, name, sweep, Trainer(), tmp_path).run(poll=0.1)
    trials = _trials(url, name)
    assert [t.state for t in trials] == [TrialState.FAIL] + [TrialState.WAITING] * 4
    assert trials[4].system_attrs[study.S_RETRY_OF] == [0]
    assert trials[4].user_attrs["variant"] == trials[0].user_attrs["variant"]
    trainer = FakeTrainer()
    _worker(url, name, sweep, trainer, tmp_path).run(poll=0.1)  # a later worker finishes it
    assert sorted(trainer.calls) == sorted(v.name for v in sweep.variants)


def test_failed_training_fails_its_trial_and_the_sweep_goes_on(tmp_path):
    url, name = _url("sqlite", tmp_path), "fails"
    sweep = study.sweep_def(parse(TINY, "tiny.cnn"), _args())
    bad = sweep.variants[1].name
    trainer = FakeTrainer(fail=bad)
    _worker(url, name, sweep, trainer, tmp_path).run(poll=0.1)
    assert len(trainer.calls) == 4  # tried once, not re-queued
    (failed,) = [t for t in _trials(url, name) if t.state == TrialState.FAIL]
    assert failed.user_attrs["variant"] == bad
    assert failed.user_attrs["failure"] == "loss became nan"
    view = study.study_view(study.load_study(study.open_storage(url, heartbeat=None), name))
    assert view.completed == 3 and view.failed == [(bad, "loss became nan")]


@pytest.mark.parametrize("kind", ["sqlite", "journal"])
def test_tpe_trains_n_distinct_variants_and_never_a_duplicate(kind, tmp_path):
    url, name = _url(kind, tmp_path), "tpe"
    sweep = study.sweep_def(parse(WIDE, "wide.cnn"), _args(search="tpe", trials=8))
    trainer = FakeTrainer(delay=0.01)
    threads = [threading.Thread(target=lambda: _worker(url, name, sweep, trainer, tmp_path)
                                .run(poll=0.1)) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert len(trainer.calls) == 8 and len(set(trainer.calls)) == 8
    trials = _trials(url, name)
    assert len(_completed_variants(url, name)) == 8
    duplicates = [t for t in trials if t.state == TrialState.PRUNED]
    assert all("duplicate_of" in t.user_attrs for t in duplicates)
    assert not [t for t in trials if t.state in (TrialState.WAITING, TrialState.RUNNING)]


def test_a_worker_with_other_settings_cannot_join(tmp_path):
    url = _url("sqlite", tmp_path)
    spec = parse(TINY, "tiny.cnn")
    storage = study.open_storage(url, 1, 2)
    study.create_or_join(storage, "s", study.sweep_def(spec, _args(epochs=1)), 1, 2)
    with pytest.raises(study.Failure, match="epochs: study has 1, this worker 2"):
        study.create_or_join(storage, "s", study.sweep_def(spec, _args(epochs=2)), 1, 2)
    other = parse(TINY.replace("conv8", "conv16"), "tiny.cnn")
    with pytest.raises(study.Failure, match="the spec differs"):
        study.create_or_join(storage, "s", study.sweep_def(other, _args(epochs=1)), 1, 2)


def test_storage_urls(tmp_path):
    assert study.storage_url(None, tmp_path) == f"sqlite:///{tmp_path}/sweeps.sqlite3"
    assert study.storage_url("journal:///x/y.log", tmp_path) == "journal:///x/y.log"
    assert study.journal_path("journal:///shared/s.log") == Path("/shared/s.log")
    assert study.redact_url("postgresql+psycopg2://me:secret@db:5432/x") == \
        "postgresql+psycopg2://me@db:5432/x"
    with pytest.raises(study.UsageError, match="in-memory"):
        study.open_storage("sqlite:///:memory:")


# -- subprocess: real workers on the bundled sample ---------------------------------------------


def _env(tmp_path: Path) -> dict[str, str]:
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    # one thread each: two TensorFlow workers on two cores otherwise fight over them
    return {**os.environ, "HOME": str(home), "CNNSPEC_DATA": "", "TF_CPP_MIN_LOG_LEVEL": "3",
            "COLUMNS": "200", "TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "1",
            "OMP_NUM_THREADS": "1"}


def _start_worker(tmp_path, spec, url, name, runs, *extra):
    cmd = [sys.executable, "-m", "cnnspec", "sweep", str(spec), "--storage", url,
           "--study", name, "--limit", "64", "--epochs", "1", "--progress", "none",
           "--heartbeat", "1", "--grace", "4", "--runs-dir", str(runs), *extra]
    return subprocess.Popen(cmd, cwd=ROOT, env=_env(tmp_path), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _finish(proc, timeout=150):
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def _completed_run_folders(root: Path) -> list[Path]:
    return sorted(p.parent for p in root.rglob(records.STATUS_FILE)
                  if json.loads(p.read_text())["status"] == "completed")


def _two_workers(tmp_path, url, name):
    spec = tmp_path / "tiny.cnn"
    spec.write_text(TINY)
    procs = [_start_worker(tmp_path, spec, url, name, tmp_path / f"runs{i}", "--no-plots")
             for i in (1, 2)]
    return [_finish(p) for p in procs]


def _assert_each_variant_once(tmp_path, url, name, results):
    for code, _, err in results:
        assert code == 0, err[-3000:]
    trials = _trials(url, name)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert sorted(t.user_attrs["variant"] for t in complete) == sorted(
        v.name for v in study.sweep_def(parse(TINY, "tiny.cnn"), _args()).variants)
    assert len(trials) == 4  # no junk, no duplicates
    folders = _completed_run_folders(tmp_path)
    assert len(folders) == 4
    assert sorted(str(f.resolve()) for f in folders) == sorted(
        t.user_attrs["run_dir"] for t in complete)


@pytest.fixture(scope="module")
def sqlite_sweep(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("two-workers")
    url = f"sqlite:///{tmp / 'sweeps.sqlite3'}"
    return tmp, url, _two_workers(tmp, url, "tiny")


def test_two_workers_share_a_sqlite_sweep_and_train_each_variant_once(sqlite_sweep):
    tmp, url, results = sqlite_sweep
    _assert_each_variant_once(tmp, url, "tiny", results)
    # each worker ends with the whole study's table
    for _, out, _ in results:
        assert "4 of 4 variants completed" in out


def test_compare_from_the_study_prints_the_four_variants(sqlite_sweep, cli):
    tmp, url, _ = sqlite_sweep
    result = cli("compare", "--storage", url, "--study", "tiny", "--no-plots",
                 env={"COLUMNS": "200"})
    assert result.returncode == 0, result.stderr
    names = [v.name for v in study.sweep_def(parse(TINY, "tiny.cnn"), _args()).variants]
    lines = [ln for ln in result.stdout.splitlines() if ln.startswith("│ tiny[")]
    assert [ln.split("│")[1].strip() for ln in lines] == names
    assert "4 of 4 variants completed, 0 running, 0 queued, 0 failed" in result.stdout
    # the study alone gives the same numbers as the run folders
    from_study = json.loads(cli("compare", "--storage", url, "--study", "tiny", "--json",
                                "--no-plots").stdout)
    folders = [r["path"] for r in from_study]
    from_runs = json.loads(cli("compare", *folders, "--json", "--no-plots").stdout)
    keys = ("spec", "params", "macs", "epochs", "best_val_accuracy", "final_val_accuracy",
            "final_train_accuracy", "test_accuracy", "lr", "batch", "overfitting")
    assert [{k: r[k] for k in keys} for r in from_study] == \
        [{k: r[k] for k in keys} for r in from_runs]


def test_a_killed_worker_loses_nothing(tmp_path):
    spec = tmp_path / "tiny.cnn"
    spec.write_text(TINY)
    url, name = f"sqlite:///{tmp_path / 'sweeps.sqlite3'}", "killed"
    victim = _start_worker(tmp_path, spec, url, name, tmp_path / "victim", "--no-plots")
    survivor = _start_worker(tmp_path, spec, url, name, tmp_path / "survivor", "--no-plots")
    held = None
    deadline = time.monotonic() + 60
    while held is None and time.monotonic() < deadline:
        time.sleep(0.2)
        try:
            running = [t for t in _trials(url, name) if t.state == TrialState.RUNNING]
        except Exception:  # noqa: BLE001 - the study may not exist yet
            continue
        held = next((t for t in running
                     if t.user_attrs.get("worker", {}).get("id", "").endswith(
                         f":{victim.pid}")), None)
    assert held is not None, "the victim never held a running trial"
    victim.send_signal(signal.SIGKILL)
    victim.communicate()
    code, out, err = _finish(survivor)
    assert code == 0, err[-3000:]
    assert "4 of 4 variants completed" in out and "1 stopped or lost trial(s) re-queued" in out
    trials = _trials(url, name)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert sorted(t.user_attrs["variant"] for t in complete) == sorted(
        v.name for v in study.sweep_def(parse(TINY, "tiny.cnn"), _args()).variants)
    (lost,) = [t for t in trials if t.state == TrialState.FAIL]
    assert lost.number == held.number
    (copy,) = [t for t in trials if t.system_attrs.get(study.S_RETRY_OF)]
    assert copy.system_attrs[study.S_RETRY_OF] == [held.number]
    assert copy.state == TrialState.COMPLETE
    assert copy.user_attrs["variant"] == held.user_attrs["variant"]
    assert len(_completed_run_folders(tmp_path)) == 4  # the victim's folder never completed


@needs_pg
def test_two_workers_share_a_postgresql_sweep(tmp_path):
    name = f"tiny-{uuid.uuid4().hex[:8]}"
    results = _two_workers(tmp_path, PG_URL, name)
    _assert_each_variant_once(tmp_path, PG_URL, name, results)
