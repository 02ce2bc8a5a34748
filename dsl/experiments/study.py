"""Sweeps over many workers: a sweep stored in an Optuna study, trained by any number of workers.

`cnnspec sweep SPEC --study NAME [--storage URL]` turns every variant of the spec into one trial
of an Optuna study; any number of worker processes, on any machines, run the same command
against the same storage and each pulls the next untried variant. `cnnspec compare --study NAME
[--storage URL]` prints the comparison from the study alone.

Why it is built this way:

* Optuna's engine, not a scheduler of our own. Optuna's storages already have the one atomic
  step a work queue needs: a WAITING trial becomes RUNNING for exactly one caller
  (`set_trial_state_values(id, RUNNING)` returns True for one worker and False for the rest;
  PostgreSQL/MySQL do it with SELECT ... FOR UPDATE, the journal file by the order of its log).
  The same compare-and-set decides who fails a stale trial, and a unique study name decides who
  creates the study. Everything below is built from those three atomic steps.
* Exactly once, grid. The one worker whose `create_study` succeeds enqueues every variant as a
  fixed-parameter WAITING trial, once, then sets the study attr `cnnspec.queued`; the others get
  DuplicatedStudyError, load the study and wait for that marker. Workers pop WAITING trials
  themselves (the same loop as Optuna's `Study.ask`, through public storage methods), so a
  worker that finds the queue empty stops (after the running trials, which may still be lost
  and re-queued): `ask()` would instead have the sampler invent a new, non-enqueued trial,
  and such junk trials would count as results.
* Exactly once, TPE (`--search tpe --trials N`). The creator enqueues N empty "slots"; the
  sampler picks each slot's variant. A variant is claimed by writing it to the trial and then
  reading the study: a worker that sees another RUNNING or COMPLETE trial holding the same
  variant backs off (write-then-read: two workers can both back off, never both train). A
  backed-off sample is a PRUNED duplicate, not trained, and its slot is replaced.
* Lost workers. Every trial a worker holds has a heartbeat (a thread; Optuna only beats inside
  `Study.optimize`, which we do not use, so we start the beat ourselves). Before each pop and
  while idle, workers call Optuna's `fail_stale_trials`: a RUNNING trial without a beat for the
  grace period is set to FAIL by exactly one worker (the compare-and-set again), and that worker
  alone re-queues it as a new WAITING trial (`_requeue`). A result recorded before the worker
  died travels with the copy (the `result` attr is the commit point), and a run folder that
  completed but was not recorded is read back, so a finished variant is never trained twice.
* SQLite is made serializable. With Python's sqlite3 driver a read does not start a
  transaction, so two processes can both read a trial as WAITING and both "pop" it (measured:
  7 of 300 pops duplicated with 3 processes). Every SQLite transaction here starts with
  BEGIN IMMEDIATE instead, and the schema is created under a file lock.
* JournalStorage has no heartbeat in Optuna; `_JournalHeartbeatStorage` adds one: the beat is a
  trial system attr, and a trial is stale when its beat has not *changed* for the grace period
  as seen by the checking worker's own monotonic clock (no clock agreement between machines).
* compare works from the study alone: each trial stores its history, accuracy, params and MACs
  in user attrs. Run folders stay on the machine (or shared disk) that trained them.

Storage URLs: any SQLAlchemy URL (`sqlite:///runs/sweeps.sqlite3`,
`postgresql+psycopg2://user@host:5432/db`), or `journal://PATH` for Optuna's journal file
(`journal:///shared/sweeps.log` is the absolute path /shared/sweeps.log). Without --storage
the study lives in `<runs-dir>/sweeps.sqlite3`.

Layering: this module is the engine below the CLI and never imports it. The commands' glue
(flags, the console, the trainer that calls `cli_train.train_one`, the printed comparison) is in
`cnnspec.cli.experiments`; it hands the worker its trainer and `say` as callables.

Optuna names used that are not in its documented API: `optuna.storages._heartbeat.BaseHeartbeat`
(to give JournalStorage a heartbeat) and `FrozenTrial._trial_id`.
"""

from __future__ import annotations

import contextlib
import math
import os
import random
import signal
import socket
import threading
import time
import types
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cnnspec.failures import Failure, UsageError
from cnnspec.language import ir
from cnnspec.language.format import format_spec
from cnnspec.language.sweep import Point, Variant, check_all_variants, expand, sweep_points
from cnnspec.training import records

DEFAULT_HEARTBEAT = 30  # seconds between beats of a running trial
GRACE_BEATS = 4  # default grace period: this many missed beats
QUEUE_WAIT = 120.0  # seconds a joining worker waits for the creator to fill the queue
JOURNAL_PREFIX = "journal://"
STORAGE_FILE = "sweeps.sqlite3"

# study user attrs
A_SPEC, A_CONFIG, A_VARIANTS = "cnnspec.spec", "cnnspec.config", "cnnspec.variants"
A_HEARTBEAT, A_GRACE, A_QUEUED = "cnnspec.heartbeat", "cnnspec.grace", "cnnspec.queued"
A_MODELS = "cnnspec.models"  # variant -> [params, MACs]
# trial system attrs
S_RETRY_OF = "cnnspec.retry_of"  # numbers of the lost trials this one replaces, oldest first
S_BEAT = "cnnspec.heartbeat"  # journal storage only
# trial user attrs carried to a re-queued copy
_CARRY = ("variant", "slot", "result", "worker", "attempts", "dup_chain")


def _optuna() -> Any:
    """Import optuna quietly: its INFO lines would interleave with the worker's own output."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    return optuna


# -- storage ------------------------------------------------------------------------------------


def storage_url(storage: str | None, runs_dir: str | os.PathLike[str] = "runs") -> str:
    """The URL to use: --storage as given, else the SQLite file in the runs folder."""
    if storage:
        return storage
    return "sqlite:///" + str((Path(runs_dir) / STORAGE_FILE).resolve())


def _journal_path(url: str) -> Path:
    return Path(url[len(JOURNAL_PREFIX):])


def open_storage(url: str, heartbeat: int | None = DEFAULT_HEARTBEAT,
                 grace: int | None = None) -> Any:
    """An Optuna storage for `url` whose lost trials are detected and re-queued.

    heartbeat/grace in whole seconds (Optuna's RDBStorage wants integers); heartbeat None opens
    the storage for reading only (compare).
    """
    optuna = _optuna()
    if grace is None and heartbeat is not None:
        grace = GRACE_BEATS * heartbeat
    if url.startswith(JOURNAL_PREFIX):
        path = _journal_path(url)
        if url == JOURNAL_PREFIX or path.is_dir() or not path.name:
            raise UsageError(f"{url}: no file; write e.g. journal:///shared/sweeps.log")
        if heartbeat is None:
            _must_exist(path, url)
        from optuna.storages.journal import JournalFileBackend

        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            backend = JournalFileBackend(str(path))
            return _journal_storage_class()(backend, heartbeat, grace)
        except OSError as exc:
            raise Failure(f"cannot open the journal file {path}: "
                          f"{exc.strerror or exc}") from None
    kwargs: dict[str, Any] = {}
    if heartbeat is not None:
        kwargs = {"heartbeat_interval": heartbeat, "grace_period": grace,
                  "heartbeat_stale_trial_callback": _requeue}
    try:
        from sqlalchemy.engine import make_url

        parsed = make_url(url)
    except Exception as exc:
        raise UsageError(f"not a storage URL: {url} ({exc}); use an SQLAlchemy URL such as "
                         "sqlite:///runs/sweeps.sqlite3 or postgresql+psycopg2://user@host/db, "
                         "or journal:///path/file.log") from None
    if parsed.get_backend_name() == "sqlite":
        if heartbeat is None and parsed.database and parsed.database != ":memory:":
            _must_exist(Path(parsed.database), url)
        return _open_sqlite(optuna, url, parsed.database, kwargs)
    return _retry_open(lambda: optuna.storages.RDBStorage(url, **kwargs), url)


def _retry_open(make: Callable[[], Any], url: str) -> Any:
    """Open an RDB storage; workers starting together on a fresh database race to create its
    tables (a second CREATE TABLE fails), so a failed first open is retried."""
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    last: Exception | None = None
    for attempt in range(4):
        try:
            return make()
        except ImportError as exc:
            raise Failure(f"{_redact(url)}: the database driver is not installed ({exc}); for "
                          "PostgreSQL: pip install psycopg2-binary") from None
        except (ArgumentError, NoSuchModuleError) as exc:
            raise UsageError(f"not a storage URL: {_redact(url)} ({exc})") from None
        except Exception as exc:  # noqa: BLE001 - sqlalchemy/optuna raise many kinds here
            last = exc
            time.sleep(0.2 + random.random() * 0.5 * (attempt + 1))
    first = (str(last).splitlines() or [""])[0]  # sqlalchemy appends the SQL and a link
    raise Failure(f"cannot open the storage {_redact(url)}: {type(last).__name__}: {first}")


def _must_exist(path: Path, url: str) -> None:
    """Reading a study (compare) never creates a storage: a missing file is named instead."""
    if not path.is_file():
        raise Failure(f"no sweep storage at {path} ({_redact(url)}): "
                      + ("not a file" if path.exists() else "no such file"))


def _open_sqlite(optuna: Any, url: str, database: str | None, kwargs: dict[str, Any]) -> Any:
    """SQLite, made safe for several processes: every transaction is BEGIN IMMEDIATE (one writer
    at a time, reads included), busy waits up to a minute, schema created under a file lock."""
    import fcntl

    import sqlalchemy

    if not database or database == ":memory:":
        raise UsageError(f"{url}: an in-memory database cannot be shared; give a file")
    path = Path(database)
    engine_kwargs = {"connect_args": {"timeout": 60, "isolation_level": None}}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = open(str(path) + ".lock", "a")  # noqa: SIM115 - closed by the `with` below
    except OSError as exc:
        raise Failure(f"cannot open the SQLite file {path}: {exc.strerror or exc}") from None
    with lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            storage = _retry_open(
                lambda: optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs, **kwargs),
                url)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)

    @sqlalchemy.event.listens_for(storage.engine, "begin")
    def _begin_immediate(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    return storage


_JOURNAL_CLASS: Any = None


def _journal_storage_class() -> Any:
    """JournalStorage with a heartbeat (made once; optuna is imported lazily)."""
    global _JOURNAL_CLASS
    if _JOURNAL_CLASS is not None:
        return _JOURNAL_CLASS
    from optuna.storages import JournalStorage
    from optuna.storages._heartbeat import BaseHeartbeat
    from optuna.trial import TrialState

    class _JournalHeartbeatStorage(JournalStorage, BaseHeartbeat):  # type: ignore[misc]
        """A beat is a trial system attr (the time, for people); a trial is stale when its attr
        has not changed for `grace` seconds of *this* process's monotonic clock, so machines
        need not agree on the time. A newly seen trial is watched a full grace period first."""

        def __init__(self, backend: Any, heartbeat: int | None, grace: int | None) -> None:
            super().__init__(backend)
            self.heartbeat_interval = heartbeat
            self.grace_period = grace
            self._seen: dict[int, tuple[Any, float]] = {}

        def record_heartbeat(self, trial_id: int) -> None:
            self.set_trial_system_attr(trial_id, S_BEAT, time.time())

        def _get_stale_trial_ids(self, study_id: int) -> list[int]:
            now = time.monotonic()
            grace = self.grace_period or 2 * (self.heartbeat_interval or 1)
            stale, seen = [], {}
            for t in self.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,)):
                beat = t.system_attrs.get(S_BEAT)
                last = self._seen.get(t._trial_id)
                seen[t._trial_id] = last if last is not None and last[0] == beat else (beat, now)
                if now - seen[t._trial_id][1] > grace:
                    stale.append(t._trial_id)
            self._seen = seen
            return stale

        def get_heartbeat_interval(self) -> int | None:
            return self.heartbeat_interval

        def get_heartbeat_stale_trial_callback(self) -> Any:
            return _requeue if self.heartbeat_interval is not None else None

    _JOURNAL_CLASS = _JournalHeartbeatStorage
    return _JOURNAL_CLASS


def _set_heartbeat(storage: Any, heartbeat: int, grace: int) -> None:
    """Use the study's beat settings (the creator's), whatever this worker's flags said: a
    checker with a shorter grace than the owner's beat would fail live trials."""
    storage.heartbeat_interval = heartbeat
    storage.grace_period = grace


def _requeue(study: Any, trial: Any) -> None:
    """Re-queue a trial that lost its worker: a new WAITING copy with the same parameters.

    Optuna calls this from `fail_stale_trials` only in the worker whose FAIL of the stale trial
    succeeded, so each lost trial is re-queued exactly once. A result the lost worker recorded
    (the `result` attr) travels with the copy, and the copy is told that result, not retrained.
    """
    optuna = _optuna()
    fixed = dict(trial.system_attrs.get("fixed_params", {}))
    fixed.update(trial.params)
    attrs = {k: v for k, v in trial.user_attrs.items() if k in _CARRY}
    attempt = {"trial": trial.number, "run_dir": trial.user_attrs.get("run_dir"),
               "worker": trial.user_attrs.get("worker", {}).get("id")}
    attrs["attempts"] = [*trial.user_attrs.get("attempts", []), attempt]
    study.add_trial(optuna.trial.create_trial(
        state=optuna.trial.TrialState.WAITING,
        system_attrs={"fixed_params": fixed,
                      S_RETRY_OF: [*trial.system_attrs.get(S_RETRY_OF, []), trial.number]},
        user_attrs=attrs,
    ))


# -- the sweep and its study --------------------------------------------------------------------


@dataclass(frozen=True)
class SweepDef:
    """What every worker of one study must agree on."""

    spec: ir.Spec
    variants: tuple[Variant, ...]
    points: tuple[Point, ...]
    search: str
    trials: int
    config: dict[str, Any]
    text: str
    models: dict[str, tuple[int, int]] = field(default_factory=dict)  # name -> (params, MACs)

    def by_labels(self) -> dict[tuple[str, ...], Variant]:
        return {tuple(label for _, label in v.choices): v for v in self.variants}


_CONFIG_FLAGS = ("epochs", "batch", "lr", "momentum", "optimizer", "seed", "limit", "precision",
                 "max_params", "sample", "sample_seed")


def sweep_def(spec: ir.Spec, args: Any) -> SweepDef:
    """Expand and check every variant (before anything is stored or trained).

    `args` holds the sweep's flags as attributes (`search`, `trials`, `sample`, the training
    settings of `_CONFIG_FLAGS`, ...); a missing one is None."""
    search = getattr(args, "search", None) or "grid"
    trials = getattr(args, "trials", None)
    sample = getattr(args, "sample", None)
    if search == "grid" and trials is not None:
        raise UsageError("--trials applies to --search tpe; a grid trains every variant "
                         "(take fewer with --sample K)")
    if search == "tpe" and sample is not None:
        raise UsageError("--sample applies to grid sweeps; --search tpe samples with --trials N")
    if search == "tpe" and trials is None:
        raise UsageError("--search tpe needs --trials N (how many variants to train)")
    max_variants = getattr(args, "max_variants", None) or 256
    variants = expand(spec, max_variants=max_variants, sample=sample,
                      seed=getattr(args, "sample_seed", 0) or 0)
    max_params = getattr(args, "max_params", None)
    kw = {} if max_params is None else {"max_params": max_params}
    reports = check_all_variants(spec, max_variants=max_variants, sample=sample,
                                 seed=getattr(args, "sample_seed", 0) or 0, **kw)
    models = {r.name: (r.params, r.macs) for r in reports}
    config = {k: getattr(args, k, None) for k in _CONFIG_FLAGS}
    config.update(search=search, trials=trials)
    n = len(variants) if search == "grid" else min(trials or 0, len(variants))
    return SweepDef(spec, tuple(variants), tuple(sweep_points(spec)), search, n, config,
                    format_spec(spec), models)


def _sampler(search: str) -> Any:
    optuna = _optuna()
    if search == "tpe":
        # a different seed per worker: equal seeds would make all workers propose the same
        return optuna.samplers.TPESampler(constant_liar=True)
    return optuna.samplers.RandomSampler()  # never consulted: grid trials have fixed params


def create_or_join(storage: Any, name: str, sweep: SweepDef, heartbeat: int, grace: int,
                   say: Callable[[str], None] = lambda _: None) -> tuple[Any, bool]:
    """The study `name`: created and filled by exactly one worker, joined by the others."""
    optuna = _optuna()
    try:
        study = optuna.create_study(storage=storage, study_name=name, direction="maximize",
                                    sampler=_sampler(sweep.search))
    except optuna.exceptions.DuplicatedStudyError:
        study = optuna.load_study(study_name=name, storage=storage,
                                  sampler=_sampler(sweep.search))
        attrs = _wait_for_queue(study, name)
        _same_sweep_or_fail(attrs, sweep, name)
        _set_heartbeat(storage, attrs[A_HEARTBEAT], attrs[A_GRACE])
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
    if attrs.get(A_SPEC) != sweep.text:
        problems.append("the spec differs")
    elif attrs.get(A_VARIANTS) != [v.name for v in sweep.variants]:
        problems.append("the variant names differ (is the spec file named differently?)")
    theirs = attrs.get(A_CONFIG, {})
    for key, mine in sweep.config.items():
        if theirs.get(key) != mine:
            problems.append(f"{key}: study has {theirs.get(key)!r}, this worker {mine!r}")
    if problems:
        raise Failure(f"study {name} holds a different sweep: " + "; ".join(problems)
                      + ". Run every worker with the same spec and flags, or use another --study.")


# -- one worker ---------------------------------------------------------------------------------


@dataclass
class Outcome:
    """What training one variant gave: status completed | failed | interrupted."""

    status: str
    history: list[dict[str, Any]]
    metrics: dict[str, Any] | None = None
    reason: str | None = None
    run_dir: Path | None = None  # where it really went, if not the folder asked for


Trainer = Callable[[Variant, Path], Outcome]


class _Heartbeat:
    """Beats for one trial on a daemon thread; a failed beat (storage unreachable) is retried at
    the next interval, so a short outage does not lose the trial."""

    def __init__(self, storage: Any, trial_id: int, interval: float) -> None:
        self.storage, self.trial_id, self.interval = storage, trial_id, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name=f"cnnspec-heartbeat-{trial_id}")

    def start(self) -> _Heartbeat:
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            with contextlib.suppress(Exception):
                self.storage.record_heartbeat(self.trial_id)

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()


class _Interrupted(Exception):
    """Ctrl-C or SIGTERM while this worker held a trial; the trial is already re-queued."""


def _finite(x: Any) -> Any:
    return x if not isinstance(x, float) or math.isfinite(x) else None


def result_record(history: Sequence[dict[str, Any]], metrics: dict[str, Any] | None,
                  run_dir: Path | str | None) -> dict[str, Any]:
    """The `result` user attr: enough for `compare` without the run folder."""
    rows = [{k: _finite(h.get(k)) for k in records.HISTORY_FIELDS} for h in history]
    val = [(h["val_accuracy"], h["epoch"]) for h in rows if h.get("val_accuracy") is not None]
    best = max(val, key=lambda t: t[0]) if val else (None, None)
    last = rows[-1] if rows else {}
    test = None if metrics is None else _finite(metrics.get("test_accuracy"))
    value = last.get("val_accuracy")
    return {
        "value": value if value is not None else test,
        "history": rows,
        "epochs": len(rows),
        "best_val_accuracy": best[0],
        "best_epoch": best[1],
        "final_val_accuracy": value,
        "final_train_accuracy": last.get("accuracy"),
        "final_val_loss": last.get("val_loss"),
        "test_accuracy": test,
        "run_dir": None if run_dir is None else str(run_dir),
    }


def _completed_folder(run_dir: str | None) -> dict[str, Any] | None:
    """The result of a run folder that finished, if this machine can see it."""
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


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_.[],=+" else "_" for c in name)


class Worker:
    """Pulls trials from one study until none is waiting or running, training each variant."""

    def __init__(self, study: Any, storage: Any, sweep: SweepDef, trainer: Trainer,
                 runs_base: Path, say: Callable[[str], None] = lambda _: None,
                 settings: Callable[[Variant], dict[str, Any]] = lambda _: {}) -> None:
        self.study, self.storage, self.sweep = study, storage, sweep
        self.trainer, self.runs_base, self.say, self.settings = trainer, runs_base, say, settings
        self.optuna = _optuna()
        self.id = f"{socket.gethostname()}:{os.getpid()}"
        self.by_labels = sweep.by_labels()
        self.by_name = {v.name: v for v in sweep.variants}
        self.trained: list[str] = []  # variant names this worker trained
        self.recorded = 0  # trials this worker finished (trained, recovered or duplicates)
        self._result: dict[str, Any] | None = None  # the trial's result once training ended

    # the loop -------------------------------------------------------------------------------

    def run(self, poll: float | None = None) -> None:
        """Work until the study has nothing waiting and nothing running (a running trial may
        still be lost and re-queued, so an idle worker waits for it)."""
        poll = poll or float(self.storage.get_heartbeat_interval() or 1)
        waiting_said = False
        while True:
            self.fail_stale()
            popped = self.pop()
            if popped is not None:
                waiting_said = False
                self.run_trial(*popped)
                continue
            running = self.study.get_trials(deepcopy=False,
                                            states=(self.optuna.trial.TrialState.RUNNING,))
            if not running:
                return
            if not waiting_said:
                grace = getattr(self.storage, "grace_period", None)
                self.say(f"nothing left to start; waiting for {len(running)} running trial(s) "
                         f"on other workers (a lost one is re-queued after {grace}s)")
                waiting_said = True
            time.sleep(poll)

    def fail_stale(self) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.optuna.storages.fail_stale_trials(self.study)

    def pop(self) -> tuple[int, Any] | None:
        """Take one WAITING trial: the first beat, then WAITING -> RUNNING, which succeeds for
        exactly one worker. Beating first closes the gap in which a worker that died right
        after the pop would hold a RUNNING trial without a beat (never detected as stale)."""
        TrialState = self.optuna.trial.TrialState
        for t in self.study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
            try:
                self.storage.record_heartbeat(t._trial_id)
                if self.storage.set_trial_state_values(t._trial_id, state=TrialState.RUNNING):
                    return t._trial_id, t
            except (self.optuna.exceptions.UpdateFinishedTrialError, KeyError):
                continue
        return None

    # one trial ------------------------------------------------------------------------------

    def run_trial(self, trial_id: int, frozen: Any) -> None:
        beat = _Heartbeat(self.storage, trial_id,
                          float(self.storage.get_heartbeat_interval() or 30)).start()
        try:
            self._run_trial(trial_id, frozen, beat)
        except _Interrupted:
            raise  # already back in the queue
        except (self.optuna.exceptions.UpdateFinishedTrialError, ValueError) as exc:
            # a write to a trial that others failed as stale: UpdateFinishedTrialError, or
            # tell's "Cannot tell a FAIL trial"
            beat.stop()
            current = self.storage.get_trial(trial_id)
            if current.state != self.optuna.trial.TrialState.FAIL or (
                    isinstance(exc, ValueError) and "Cannot tell" not in str(exc)):
                self.give_back(trial_id)
                raise
            self.handle_lost(current, self._result or current.user_attrs.get("result"))
        except BaseException:
            # Ctrl-C, SIGTERM, or an error that ends this worker: the trial goes back to the
            # queue now rather than after the grace period
            beat.stop()
            self.give_back(trial_id)
            raise
        finally:
            beat.stop()

    def _suggest(self, trial: Any) -> tuple[str, ...]:
        return tuple(trial.suggest_categorical(p.key, list(p.labels)) for p in self.sweep.points)

    def _run_trial(self, trial_id: int, frozen: Any, beat: _Heartbeat) -> None:
        self._result: dict[str, Any] | None = None
        trial = self.optuna.Trial(self.study, trial_id)
        number = trial.number
        labels = self._suggest(trial)
        variant = self.by_labels.get(labels)
        if variant is None:
            self._fail(trial, beat, f"parameters {labels} are not a variant of this sweep")
            return
        attrs = frozen.user_attrs
        if self.sweep.search == "tpe" and self._duplicate(trial, variant, attrs, beat):
            return
        recorded = attrs.get("result")
        source = "recorded by the lost worker"
        if recorded is None:
            for attempt in reversed(attrs.get("attempts", [])):
                recorded = _completed_folder(attempt.get("run_dir"))
                if recorded is not None and recorded["value"] is not None:
                    source = f"read from its completed run folder {attempt['run_dir']}"
                    break
        if recorded is not None and recorded.get("value") is not None:
            # a lost trial whose variant did finish: record it, don't train it again
            lost = frozen.system_attrs.get(S_RETRY_OF, [])
            self.say(f"trial {number} {variant.name}: finished before its worker was lost "
                     f"(trial {lost[-1] if lost else '?'}); result {source}")
            if "result" not in attrs:
                self._set(trial, "result", recorded)
            self._set(trial, "recovered_from", lost[-1] if lost else None)
            if recorded.get("run_dir"):
                self._set(trial, "run_dir", recorded["run_dir"])
            self._tell(trial, beat, recorded)
            return
        run_dir = self.runs_base / f"{_safe(variant.name)}-t{number}"
        n_params, macs = self.sweep.models.get(variant.name, (None, None))
        self._set(trial, "run_dir", str(run_dir.resolve()))
        self._set(trial, "worker", {"id": self.id, "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                                    "n_params": n_params, "macs": macs,
                                    **self.settings(variant)})
        if "variant" not in attrs:
            self._set(trial, "variant", variant.name)
        self.say(f"trial {number}: {variant.name} on {self.id} -> {run_dir}")
        outcome = self.trainer(variant, run_dir)
        where = outcome.run_dir or run_dir
        if outcome.status == "interrupted":
            beat.stop()
            self.give_back(trial_id)
            raise _Interrupted(f"interrupted during trial {number} ({variant.name}); "
                               "it is back in the queue for any worker")
        if outcome.status != "completed":
            self.trained.append(variant.name)
            self._set(trial, "partial", result_record(outcome.history, outcome.metrics, where))
            self._fail(trial, beat, outcome.reason or "training failed")
            return
        result = result_record(outcome.history, outcome.metrics, where)
        if result["value"] is None:
            self._fail(trial, beat, "no validation or test accuracy to score the variant by")
            return
        self.trained.append(variant.name)
        self._result = result
        self._set(trial, "result", result)  # the commit point: a re-queued copy reuses it
        self._tell(trial, beat, result)

    def _duplicate(self, trial: Any, variant: Variant, attrs: dict[str, Any],
                   beat: _Heartbeat) -> bool:
        """TPE: claim the variant, or record this sample as a duplicate (write, then read)."""
        TrialState = self.optuna.trial.TrialState
        self._set(trial, "variant", variant.name)
        holders = [
            t for t in self.study.get_trials(deepcopy=False,
                                             states=(TrialState.RUNNING, TrialState.COMPLETE))
            if t.number != trial.number and t.user_attrs.get("variant") == variant.name
            and "duplicate_of" not in t.user_attrs
        ]
        if not holders:
            return False
        done = [t for t in holders if t.state == TrialState.COMPLETE]
        first = (done or holders)[0]
        self._set(trial, "duplicate_of", first.number)
        chain = int(attrs.get("dup_chain", 0)) + 1
        self._replace_slot(chain)
        beat.stop()
        self.study.tell(trial, state=TrialState.PRUNED)
        self.recorded += 1
        self.say(f"trial {trial.number}: TPE proposed {variant.name} again (trial {first.number});"
                 " not trained")
        return True

    def _replace_slot(self, chain: int) -> None:
        """Give back the budget a duplicate used: a new slot, unless every variant is taken.
        After two duplicates in a row the slot is fixed to a random untaken variant."""
        TrialState = self.optuna.trial.TrialState
        taken = {t.user_attrs.get("variant") for t in self.study.get_trials(deepcopy=False)
                 if t.state in (TrialState.RUNNING, TrialState.COMPLETE, TrialState.WAITING)
                 and "duplicate_of" not in t.user_attrs}
        free = [v for v in self.sweep.variants if v.name not in taken]
        if not free:
            return
        params: dict[str, Any] = {}
        attrs: dict[str, Any] = {"slot": "replacement", "dup_chain": chain}
        if chain >= 2:
            pick = random.choice(free)
            params = dict(pick.choices)
            attrs["variant"] = pick.name
        self.study.enqueue_trial(params, user_attrs=attrs)

    def _set(self, trial: Any, key: str, value: Any) -> None:
        trial.set_user_attr(key, value)

    def _fail(self, trial: Any, beat: _Heartbeat, reason: str) -> None:
        self._set(trial, "failure", reason)
        beat.stop()
        self.study.tell(trial, state=self.optuna.trial.TrialState.FAIL)
        self.recorded += 1
        self.say(f"trial {trial.number} failed: {reason.splitlines()[0]}")

    def _tell(self, trial: Any, beat: _Heartbeat, result: dict[str, Any]) -> None:
        beat.stop()
        self.study.tell(trial, result["value"])
        self.recorded += 1

    def give_back(self, trial_id: int) -> None:
        """Put a trial this worker holds back in the queue now (Ctrl-C, SIGTERM), instead of
        leaving it to be found stale after the grace period. The FAIL is the same
        compare-and-set as stale detection, so at most one re-queue happens."""
        TrialState = self.optuna.trial.TrialState
        try:
            if self.storage.set_trial_state_values(trial_id, state=TrialState.FAIL):
                _requeue(self.study, self.storage.get_trial(trial_id))
        except self.optuna.exceptions.UpdateFinishedTrialError:
            pass

    def handle_lost(self, trial: Any, result: dict[str, Any] | None) -> None:
        """This worker's trial was declared lost while it was alive (no beat reached the storage
        for the grace period) and re-queued. Hand a finished result to the re-queued copy if no
        one has started it; otherwise the variant is being trained again elsewhere."""
        TrialState = self.optuna.trial.TrialState
        if result is not None:
            for t in self.study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
                if trial.number in t.system_attrs.get(S_RETRY_OF, []):
                    try:
                        if not self.storage.set_trial_state_values(t._trial_id,
                                                                   state=TrialState.RUNNING):
                            break
                    except self.optuna.exceptions.UpdateFinishedTrialError:
                        break
                    copy = self.optuna.Trial(self.study, t._trial_id)
                    self._suggest(copy)  # its fixed parameters, for the record
                    copy.set_user_attr("result", result)
                    copy.set_user_attr("run_dir", result.get("run_dir"))
                    copy.set_user_attr("recovered_from", trial.number)
                    self.study.tell(copy, result["value"])
                    self.say(f"trial {trial.number} had been declared lost; its result went to "
                             f"its re-queued copy, trial {copy.number}")
                    return
        self.say(f"trial {trial.number} had been declared lost (no heartbeat reached the storage "
                 "for the grace period) and re-queued; the copy is trained by whichever worker "
                 "takes it" + ("" if result is None else ", and this worker's result, already "
                 f"in {result.get('run_dir')}, is not recorded"))


# -- running a worker ---------------------------------------------------------------------------


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM (a cluster preempting the job) behaves like Ctrl-C: the held trial goes back
    to the queue at once instead of after the grace period."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


# -- compare from the study --------------------------------------------------------------------


@dataclass
class StudyView:
    """The study's trials sorted into what `compare` shows."""

    rows: list[Any]
    run_dirs: list[Path]
    completed: int = 0
    running: int = 0
    queued: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    requeued: int = 0
    duplicates: int = 0
    variants: int = 0
    search: str = "grid"


def load_study(storage: Any, name: str | None) -> Any:
    optuna = _optuna()
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


def study_view(study: Any) -> StudyView:
    """Rows for compare (compare.RunRow), built from trial user attrs alone."""
    from cnnspec.experiments import compare

    TrialState = _optuna().trial.TrialState
    trials = study.get_trials(deepcopy=False)
    attrs = study.user_attrs
    order = {n: i for i, n in enumerate(attrs.get(A_VARIANTS, []))}
    config = attrs.get(A_CONFIG, {})
    models = attrs.get(A_MODELS, {})
    retried = {n for t in trials for n in t.system_attrs.get(S_RETRY_OF, [])}
    view = StudyView([], [], variants=len(order), search=config.get("search", "grid"))
    shown = []
    for t in trials:
        u = t.user_attrs
        if t.state == TrialState.PRUNED or "duplicate_of" in u:
            view.duplicates += 1
            continue
        if t.state == TrialState.FAIL and "failure" not in u:
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
        shown.append((order.get(u.get("variant"), len(order)), t.number, t, status))
    for _, _, t, status in sorted(shown, key=lambda s: (s[0], s[1])):
        u = t.user_attrs
        result = u.get("result") or u.get("partial") or {}
        history = result.get("history") or []
        worker = u.get("worker") or {}
        run_dir = u.get("run_dir") or result.get("run_dir")
        view.rows.append(compare.build_row(
            run=Path(run_dir).name if run_dir else f"trial {t.number}",
            path=run_dir or "",
            spec=u.get("variant", f"trial {t.number}"),
            status=status,
            history=history,  # result_record's rows: the best/final fields are derived from them
            test_accuracy=result.get("test_accuracy"),
            params=models.get(u.get("variant"), [worker.get("n_params")])[0],
            macs=models.get(u.get("variant"), [None, worker.get("macs")])[1],
            epochs_planned=worker.get("epochs"),
            lr=worker.get("lr"),
            batch=worker.get("batch"),
        ))
        view.run_dirs.append(Path(run_dir) if run_dir else Path(f"trial-{t.number}"))
    return view


def _redact(url: str) -> str:
    """The URL without a password, for printing."""
    if "://" in url and "@" in url.split("://", 1)[1].split("/", 1)[0]:
        scheme, rest = url.split("://", 1)
        cred, host = rest.split("@", 1)
        return f"{scheme}://{cred.split(':', 1)[0]}@{host}"
    return url


# -- overhead measurement (bench/sweep_overhead.py) ---------------------------------------------


def _noop_trainer(variant: Variant, run_dir: Path) -> Outcome:
    """A trainer that returns a one-epoch result at once (for measuring the storage alone)."""
    return Outcome("completed", [{"epoch": 1, "loss": 2.0, "accuracy": 0.3, "val_loss": 2.1,
                                  "val_accuracy": 0.28, "seconds": 30.0,
                                  "images_per_second": 160.0}], {"test_accuracy": 0.28})


def _overhead_worker(text: str, url: str, heartbeat: int, study_name: str, out: Any) -> None:
    """One worker of `measure_overhead`; puts (seconds from opening the storage to the end of
    its loop, trials it finished) on `out`."""
    from cnnspec.language.parse import parse

    args = types.SimpleNamespace(search="grid", trials=None, sample=None, sample_seed=0,
                              max_variants=256, max_params=None)
    sweep = sweep_def(parse(text), args)
    _optuna()  # imports are start-up cost, not per-trial cost
    started = time.perf_counter()
    storage = open_storage(url, heartbeat)
    study, _ = create_or_join(storage, study_name, sweep, heartbeat, GRACE_BEATS * heartbeat)
    worker = Worker(study, storage, sweep, _noop_trainer, Path("/nonexistent"))
    worker.run(poll=0.05)
    out.put((time.perf_counter() - started, worker.recorded))


def measure_overhead(text: str, url: str, workers: int = 1, heartbeat: int = DEFAULT_HEARTBEAT,
                     study_name: str = "overhead") -> dict[str, Any]:
    """Storage seconds per trial: the real worker loop (open the storage, create the study and
    enqueue, stale check, pop, parameters, attrs, heartbeat thread, tell) with a trainer that
    returns a one-epoch result at once, in `workers` processes against one storage (1: in this
    process); and the cost of one heartbeat write."""
    import multiprocessing
    import queue

    from cnnspec.language.parse import parse

    n = len(expand(parse(text), max_variants=256))
    out: Any
    if workers == 1:
        out = queue.Queue()
        _overhead_worker(text, url, heartbeat, study_name, out)
    else:
        ctx = multiprocessing.get_context("spawn")
        out = ctx.Queue()
        procs = [ctx.Process(target=_overhead_worker,
                             args=(text, url, heartbeat, study_name, out))
                 for _ in range(workers)]
        for proc in procs:
            proc.start()
        for proc in procs:
            proc.join()
        if any(proc.exitcode for proc in procs):
            raise RuntimeError(f"worker exit codes {[proc.exitcode for proc in procs]}")
    loops = [out.get() for _ in range(workers)]
    storage = open_storage(url, heartbeat)
    study = load_study(storage, study_name)
    done = [t for t in study.get_trials(deepcopy=False) if t.state.is_finished()]
    if len(done) != n or sum(k for _, k in loops) != n:
        raise RuntimeError(f"{len(done)} of {n} trials finished")
    beats = 50
    t0 = time.perf_counter()
    for _ in range(beats):
        storage.record_heartbeat(done[0]._trial_id)
    return {"trials": n, "workers": workers, "worker_seconds": [s for s, _ in loops],
            "per_trial": sum(s for s, _ in loops) / n,
            "heartbeat": (time.perf_counter() - t0) / beats}
