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
  alone re-queues it as a new WAITING trial (`queue.requeue`). A result recorded before the worker
  died travels with the copy (the `result` attr is the commit point), and a run folder that
  completed but was not recorded is read back, so a finished variant is never trained twice.
* SQLite is made serializable. With Python's sqlite3 driver a read does not start a
  transaction, so two processes can both read a trial as WAITING and both "pop" it (measured:
  7 of 300 pops duplicated with 3 processes). Every SQLite transaction here starts with
  BEGIN IMMEDIATE instead, and the schema is created under a file lock.
* JournalStorage has no heartbeat in Optuna; `heartbeat.journal_storage_class` adds one: the
  beat is a trial system attr, and a trial is stale when its beat has not *changed* for the
  grace period as seen by the checking worker's own monotonic clock (no clock agreement
  between machines).
* compare works from the study alone: each trial stores its history, accuracy, params and MACs
  in user attrs. Run folders stay on the machine (or shared disk) that trained them.

Storage URLs: any SQLAlchemy URL (`sqlite:///runs/sweeps.sqlite3`,
`postgresql+psycopg2://user@host:5432/db`), or `journal://PATH` for Optuna's journal file
(`journal:///shared/sweeps.log` is the absolute path /shared/sweeps.log). Without --storage
the study lives in `<runs-dir>/sweeps.sqlite3`.

The engine is split by job, one module each; this module is the façade the CLI, the benchmark
and the tests import (`from cnnspec.experiments import study`):

* `definition`: the options of a sweep, the variants and flags every worker agrees on;
* `queue`: the study as a work queue (create or join, re-queue a lost trial, the attr names);
* `storage`: opening an SQLAlchemy URL or a journal file;
* `heartbeat`: the beat thread of a held trial, and the journal storage's heartbeat;
* `results`: what a trainer returns and what a trial records;
* `worker`: the loop that pops, trains and records trials;
* `view`: the comparison rows from the study alone;
* `overhead`: what the bookkeeping costs per trial (bench/sweep_overhead.py).

Layering: the engine is below the CLI and never imports it. The commands' glue (flags, the
console, SIGTERM, the trainer that calls `cli.train.train_one`, the printed comparison) is in
`cnnspec.cli.experiments`; it hands the worker its trainer and `say` as callables.

Optuna names used that are not in its documented API: `optuna.storages._heartbeat.BaseHeartbeat`
(to give JournalStorage a heartbeat) and `FrozenTrial._trial_id`.
"""

from __future__ import annotations

from cnnspec.experiments.definition import (
    CONFIG_FLAGS,
    TRAIN_FLAGS,
    SweepDef,
    SweepOptions,
    sweep_def,
)
from cnnspec.experiments.heartbeat import DEFAULT_HEARTBEAT, GRACE_BEATS, Heartbeat
from cnnspec.experiments.overhead import measure_overhead
from cnnspec.experiments.queue import (
    A_CONFIG,
    A_GRACE,
    A_HEARTBEAT,
    A_MODELS,
    A_QUEUED,
    A_SPEC,
    A_VARIANTS,
    S_RETRY_OF,
    create_or_join,
    load_study,
    requeue,
)
from cnnspec.experiments.results import Outcome, Trainer, result_record
from cnnspec.experiments.storage import (
    JOURNAL_PREFIX,
    STORAGE_FILE,
    journal_path,
    open_storage,
    redact_url,
    storage_url,
)
from cnnspec.experiments.view import StudyView, study_view
from cnnspec.experiments.worker import Interrupted, Worker
from cnnspec.failures import Failure, UsageError
from cnnspec.training.records import safe_name

__all__ = [
    "A_CONFIG", "A_GRACE", "A_HEARTBEAT", "A_MODELS", "A_QUEUED", "A_SPEC", "A_VARIANTS",
    "CONFIG_FLAGS", "DEFAULT_HEARTBEAT", "GRACE_BEATS", "JOURNAL_PREFIX", "S_RETRY_OF",
    "STORAGE_FILE", "TRAIN_FLAGS", "Failure", "Heartbeat", "Interrupted", "Outcome",
    "StudyView", "SweepDef", "SweepOptions", "Trainer", "UsageError", "Worker",
    "create_or_join", "journal_path", "load_study", "measure_overhead", "open_storage",
    "redact_url", "requeue", "result_record", "safe_name", "storage_url", "study_view",
    "sweep_def",
]
