"""Opening the storage a study lives in: an SQLAlchemy URL or Optuna's journal file.

SQLite is made serializable: with Python's sqlite3 driver a read does not start a transaction,
so two processes can both read a trial as WAITING and both "pop" it (measured: 7 of 300 pops
duplicated with 3 processes). Every SQLite transaction here starts with BEGIN IMMEDIATE instead,
and the schema is created under a file lock. Workers starting together on a fresh database race
to create its tables, so a failed first open is retried. Reading a study (compare) never
creates a storage. Storages opened for work re-queue their lost trials (`queue.requeue`).
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cnnspec.experiments.heartbeat import DEFAULT_HEARTBEAT, GRACE_BEATS, journal_storage_class
from cnnspec.experiments.queue import quiet_optuna, requeue
from cnnspec.failures import Failure, UsageError

JOURNAL_PREFIX = "journal://"
STORAGE_FILE = "sweeps.sqlite3"


def storage_url(storage: str | None, runs_dir: str | os.PathLike[str] = "runs") -> str:
    """The URL to use: --storage as given, else the SQLite file in the runs folder."""
    if storage:
        return storage
    return "sqlite:///" + str((Path(runs_dir) / STORAGE_FILE).resolve())


def journal_path(url: str) -> Path:
    return Path(url[len(JOURNAL_PREFIX):])


def open_storage(url: str, heartbeat: int | None = DEFAULT_HEARTBEAT,
                 grace: int | None = None) -> Any:
    """An Optuna storage for `url` whose lost trials are detected and re-queued.

    heartbeat/grace in whole seconds (Optuna's RDBStorage wants integers); heartbeat None opens
    the storage for reading only (compare).
    """
    optuna = quiet_optuna()
    if grace is None and heartbeat is not None:
        grace = GRACE_BEATS * heartbeat
    if url.startswith(JOURNAL_PREFIX):
        path = journal_path(url)
        if url == JOURNAL_PREFIX or path.is_dir() or not path.name:
            raise UsageError(f"{url}: no file; write e.g. journal:///shared/sweeps.log")
        if heartbeat is None:
            _must_exist(path, url)
        _check_journal(path)
        from optuna.storages.journal import JournalFileBackend

        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            backend = JournalFileBackend(str(path))
            return journal_storage_class()(backend, heartbeat, grace)
        except OSError as exc:
            raise Failure(f"cannot open the journal file {path}: "
                          f"{exc.strerror or exc}") from None
    kwargs: dict[str, Any] = {}
    if heartbeat is not None:
        kwargs = {"heartbeat_interval": heartbeat, "grace_period": grace,
                  "heartbeat_stale_trial_callback": requeue}
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
            raise Failure(f"{redact_url(url)}: the database driver is not installed ({exc}); for "
                          "PostgreSQL: pip install psycopg2-binary") from None
        except (ArgumentError, NoSuchModuleError) as exc:
            raise UsageError(f"not a storage URL: {redact_url(url)} ({exc})") from None
        except Exception as exc:  # noqa: BLE001 - sqlalchemy/optuna raise many kinds here
            last = exc
            time.sleep(0.2 + random.random() * 0.5 * (attempt + 1))
    first = (str(last).splitlines() or [""])[0]  # sqlalchemy appends the SQL and a link
    raise Failure(f"cannot open the storage {redact_url(url)}: {type(last).__name__}: {first}")


def _check_journal(path: Path, waits: int = 5) -> None:
    """Refuse a damaged journal file before Optuna reads or appends to it. Optuna fails on a
    line it cannot parse with a JSONDecodeError, after a worker has already appended its own
    records to the damaged file (onto an incomplete last line: a line broken for good). A
    worker killed while writing leaves such a line. An incomplete last line may also be another
    worker's write in progress, so it is read again a few times before it counts as damage."""
    import json

    for attempt in range(waits + 1):
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return  # a new journal
        except OSError as exc:
            raise Failure(f"cannot read the journal file {path}: {exc.strerror or exc}") from None
        if not data or data.endswith(b"\n") or attempt == waits:
            break
        time.sleep(0.2)
    lines = data.split(b"\n")
    for number, line in enumerate(lines, 1):
        if number == len(lines):
            why = "its last line is incomplete" if line else None
        else:
            try:
                record = json.loads(line)
                why = None if isinstance(record, dict) and "op_code" in record else (
                    "a line that is not an Optuna journal record")
            except (ValueError, RecursionError):
                why = "a line that is not JSON"
        if why is not None:
            fix = ("A worker killed while writing leaves an incomplete last line: remove that "
                   "line (keep a copy of the file) and start again" if number == len(lines)
                   else "Restore the file from a copy, or give the sweep a new journal")
            raise Failure(f"the journal file {path} is damaged at line {number} ({why}); it "
                          f"is left unchanged. {fix}")


def _must_exist(path: Path, url: str) -> None:
    """Reading a study (compare) never creates a storage: a missing file is named instead."""
    if not path.is_file():
        raise Failure(f"no sweep storage at {path} ({redact_url(url)}): "
                      + ("not a file" if path.exists() else "no such file"))


def _open_sqlite(optuna: Any, url: str, database: str | None, kwargs: dict[str, Any]) -> Any:
    """SQLite, made safe for several processes: every transaction is BEGIN IMMEDIATE (one writer
    at a time, reads included), busy waits up to a minute, schema created under a file lock."""
    import fcntl

    import sqlalchemy

    if not database or database == ":memory:":
        raise UsageError(f"{url}: an in-memory database cannot be shared; give a file")
    path = Path(database)
    refused = _not_sqlite(path)
    if refused is not None:  # before anything is created beside it
        raise Failure(f"cannot use {path} as the sweep's SQLite storage: {refused}")
    engine_kwargs = {"connect_args": {"timeout": 60, "isolation_level": None}}
    lock_path = Path(str(path) + ".lock")
    new_lock = not lock_path.exists()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = open(lock_path, "a")  # noqa: SIM115 - closed by the `with` below
    except OSError as exc:
        raise Failure(f"cannot open the SQLite file {path}: {exc.strerror or exc}") from None
    with lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            storage = _retry_open(
                lambda: optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs, **kwargs),
                url)
        except Failure:
            if new_lock:  # a refused storage leaves nothing of ours behind
                lock_path.unlink(missing_ok=True)
            raise
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)

    @sqlalchemy.event.listens_for(storage.engine, "begin")
    def _begin_immediate(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    return storage


_SQLITE_HEADER = b"SQLite format 3\x00"  # the first 16 bytes of every SQLite database file


def _not_sqlite(path: Path) -> str | None:
    """Why an existing path cannot be a sweep's SQLite file (a folder, a text file), or None
    (it is one, or it does not exist yet and will be created)."""
    if not path.exists():
        return None
    if path.is_dir():
        return "it is a folder; give a file name, e.g. sqlite:///runs/sweeps.sqlite3"
    try:
        with path.open("rb") as f:
            head = f.read(len(_SQLITE_HEADER))
    except OSError as exc:
        return f"cannot read it: {exc.strerror or exc}"
    if head and head != _SQLITE_HEADER:
        return "it is not an SQLite database; give the sweep another file"
    return None


def redact_url(url: str) -> str:
    """The URL without a password, for printing."""
    if "://" in url and "@" in url.split("://", 1)[1].split("/", 1)[0]:
        scheme, rest = url.split("://", 1)
        cred, host = rest.split("@", 1)
        return f"{scheme}://{cred.split(':', 1)[0]}@{host}"
    return url
