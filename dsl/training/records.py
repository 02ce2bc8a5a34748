"""The files of a run folder, and the one way they are written: atomically.

A training run can die at any instant (Ctrl-C, SIGKILL, a full disk, a power cut). Every record
is therefore written to a temporary file in the same folder, flushed and fsynced, then moved over
the old one with `os.replace`, so a reader sees either the previous complete file or the new
complete file, never half of one. This module is pure I/O (json, csv, os): no TensorFlow, so
`cnnspec` commands that only read runs (compare, show) stay fast.

Run folder layout (names are the constants below):

    spec.cnn            the spec text that was trained
    settings.json       resolved settings, precision, data, versions, params and MACs
    history.csv/.json   one row per completed epoch (HISTORY_FIELDS)
    metrics.json        final test loss/accuracy and per-class accuracy
    model.keras         the trained model
    learning_curve.png  loss and accuracy per epoch, train and validation (drawn by `plots`)
    status.json         running | completed | failed | interrupted, with a reason
    checkpoint/         state.json + epoch-NNNN.keras: where `resume` starts from
    .lock               held (fcntl.flock) by the one process writing the folder; names it
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import io
import json
import math
import os
import socket
import stat
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

SPEC_FILE = "spec.cnn"
SETTINGS_FILE = "settings.json"
HISTORY_CSV = "history.csv"
HISTORY_JSON = "history.json"
METRICS_FILE = "metrics.json"
MODEL_FILE = "model.keras"
CURVE_FILE = "learning_curve.png"
STATUS_FILE = "status.json"
CHECKPOINT_DIR = "checkpoint"
CHECKPOINT_STATE = "state.json"
BEST_WEIGHTS = "best.npz"  # in checkpoint/: early stopping's best epoch so far (its weights)
LOCK_FILE = ".lock"
SWEEP_RECORD = "sweep.json"  # in a sweep's --out, beside its run folders: how it prunes

# "lr": the learning rate of the epoch's last step (the schedule's, or the constant rate);
# absent (None) in runs recorded before it existed
HISTORY_FIELDS = (
    "epoch", "loss", "accuracy", "val_loss", "val_accuracy", "seconds", "images_per_second",
    "lr",
)
STATUSES = ("running", "completed", "failed", "interrupted", "pruned")


def safe_name(name: str) -> str:
    """A spec, variant or study name as a folder name: characters a shell or file system would
    mangle become `_` (the names' brackets, commas and `=` stay, so a folder says its variant)."""
    return "".join(c if c.isalnum() or c in "-_.[],=+" else "_" for c in name)


def keras_file_problem(path: Path) -> str | None:
    """Why a .keras file is not one Keras can load, in the user's terms, or None if it may be:
    Keras says "File not found" for a cut-off file, a folder and one it may not read alike."""
    import zipfile

    try:
        mode = path.stat().st_mode
        if stat.S_ISDIR(mode):
            return "a folder, not a .keras file"
        if not stat.S_ISREG(mode):  # a pipe would block the open until someone writes to it
            return "not a regular file"
        with path.open("rb") as f:
            if not zipfile.is_zipfile(f):
                return "not a .keras zip archive (cut off or overwritten); the file is damaged"
    except OSError as exc:
        return f"cannot be read: {exc.strerror or exc}"
    return None


class RunFolderError(ValueError):
    """A run folder that is missing, is not a run, or whose records cannot be read.

    str(exc) is a complete message for the user, naming the folder or file. A ValueError, so
    callers that already treat unreadable JSON (a ValueError) as a bad record keep working.
    """


class RunLocked(RunFolderError):
    """Another process is writing this run folder right now (it holds the folder's lock)."""

    def __init__(self, message: str, holder: str) -> None:
        super().__init__(message)
        self.holder = holder


# -- atomic writing ----------------------------------------------------------------------------


def _fsync_dir(folder: Path) -> None:
    """Make a rename durable: fsync the directory entry (a no-op where the OS does not allow it)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _mode_for(target: Path) -> int:
    """The file's current permissions, or what a plain open() would give it under the umask."""
    try:
        return target.stat().st_mode & 0o777
    except FileNotFoundError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success, fsync it and move it over `path`.

    For writers that insist on a file name (Keras's `model.save`, matplotlib's `savefig`): the
    temporary name keeps `path`'s suffix. If the body raises, the temporary file is removed and
    `path` is left exactly as it was.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(
        prefix=f".{target.stem}.", suffix=f".tmp{target.suffix}", dir=target.parent
    )
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with tmp.open("rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, _mode_for(target))  # mkstemp's 0600 would make records private
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    _fsync_dir(target.parent)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write `data` to `path` so that readers see the old file or the new one, never a mix."""
    with atomic_path(path) as tmp, tmp.open("wb") as f:
        f.write(data)
        f.flush()


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """`atomic_write_bytes` for UTF-8 text."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_copy(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
    """Copy a file atomically (the destination is complete or untouched)."""
    atomic_write_bytes(dst, Path(src).read_bytes())


# -- JSON --------------------------------------------------------------------------------------


def _clean(value: Any) -> Any:
    """JSON-safe: NaN and infinities become null (strict JSON has no spelling for them)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def write_json(path: str | os.PathLike[str], obj: Any) -> None:
    """Write `obj` as indented, strict JSON, atomically."""
    atomic_write_text(path, json.dumps(_clean(obj), indent=2, allow_nan=False) + "\n")


def read_json(path: str | os.PathLike[str]) -> Any:
    """Read a JSON record; RunFolderError (a ValueError) naming the file if it is not JSON.

    Records are written atomically, so a file that does not parse was damaged after the fact
    (edited, truncated by a full disk, copied badly): say so, instead of a JSON traceback.
    """
    path = Path(path)
    with contextlib.suppress(OSError):  # (a missing file is the caller's own error)
        mode = path.stat().st_mode
        if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
            # a FIFO in a record's place would block the reader forever
            raise RunFolderError(f"{path}: corrupted record, not a regular file")
    try:
        return json.loads(path.read_text("utf-8"), parse_int=_record_int)
    except RecursionError:  # `[[[[...]]]]` nested past what the decoder can follow
        raise RunFolderError(f"{path}: corrupted record, nested too deep") from None
    except ValueError as exc:  # not UTF-8, not JSON, or a number no record holds
        raise RunFolderError(f"{path}: corrupted record, not valid JSON ({exc})") from None


MAX_RECORD_DIGITS = 30  # far above any count a run records (params, MACs, images, seeds)


def _record_int(digits: str) -> int:
    """A JSON integer of a record; ValueError for one no record holds (10**400 would reach
    float() as an OverflowError wherever it is used)."""
    if len(digits.lstrip("-")) > MAX_RECORD_DIGITS:
        raise ValueError(f"a whole number of {len(digits.lstrip('-')):,} digits")
    return int(digits)


# -- history -----------------------------------------------------------------------------------


def history_csv_text(rows: Sequence[Mapping[str, Any]]) -> str:
    """History as CSV: a header of HISTORY_FIELDS, floats in full (round-trip) precision."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(HISTORY_FIELDS)
    for row in rows:
        writer.writerow(["" if row.get(k) is None else row[k] for k in HISTORY_FIELDS])
    return buf.getvalue()


def write_history(run_dir: str | os.PathLike[str], rows: Sequence[Mapping[str, Any]]) -> None:
    """Write history.csv and history.json (a list of per-epoch objects)."""
    folder = Path(run_dir)
    clean = [{k: row.get(k) for k in HISTORY_FIELDS} for row in rows]
    atomic_write_text(folder / HISTORY_CSV, history_csv_text(clean))
    write_json(folder / HISTORY_JSON, clean)


def read_history(run_dir: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The per-epoch history of a run ([] before the first epoch ends)."""
    path = Path(run_dir) / HISTORY_JSON
    if not path.is_file():
        return []
    rows = read_json(path)
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise RunFolderError(f"{path}: corrupted record: not a list of per-epoch objects")
    # a value that is not a number, as this package writes it (null): `NaN` or `Infinity` in
    # a hand-edited or foreign record would print "nan%" and make `compare --json` invalid JSON
    return [{k: None if isinstance(v, float) and not math.isfinite(v) else v
             for k, v in row.items()} for row in rows]


def read_history_csv(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """history.csv back as dicts: epoch as int, other fields as float, empty cells as None."""
    with Path(path).open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    out = []
    for row in rows:
        out.append({
            k: (None if row.get(k, "") in ("", None) else int(row[k]) if k == "epoch"
                else float(row[k]))
            for k in HISTORY_FIELDS  # a column added later ("lr") is None in older files
        })
    return out


# -- status ------------------------------------------------------------------------------------


def write_status(
    run_dir: str | os.PathLike[str],
    status: str,
    reason: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """Record the run's state: one of STATUSES, why (for failed/interrupted), and any extras."""
    if status not in STATUSES:
        raise ValueError(f"status must be one of {', '.join(STATUSES)}, not {status!r}")
    record = {
        "status": status,
        "reason": reason,
        **extra,
        "updated": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "pid": os.getpid(),
    }
    write_json(Path(run_dir) / STATUS_FILE, record)
    return record


def read_status(run_dir: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The status record, or None for a folder that never started a run."""
    path = Path(run_dir) / STATUS_FILE
    if not path.is_file():
        return None
    record = read_json(path)
    if not isinstance(record, dict) or record.get("status") not in STATUSES:
        raise RunFolderError(
            f"{path}: corrupted record: 'status' must be one of {', '.join(STATUSES)}")
    return record


# -- checkpoints -------------------------------------------------------------------------------


def checkpoint_dir(run_dir: str | os.PathLike[str]) -> Path:
    return Path(run_dir) / CHECKPOINT_DIR


def checkpoint_model_name(epochs_done: int) -> str:
    """Model file of the checkpoint after `epochs_done` epochs (e.g. `epoch-0003.keras`).

    Each checkpoint gets its own model file and state.json is written after it, naming it: the
    switch from one checkpoint to the next is the single atomic replace of state.json, so a kill
    at any point leaves a state.json whose model file exists and matches it.
    """
    return f"epoch-{epochs_done:04d}.keras"


def write_checkpoint_state(run_dir: str | os.PathLike[str], state: Mapping[str, Any]) -> None:
    """Point the checkpoint at a new state (its model file must already be written)."""
    write_json(checkpoint_dir(run_dir) / CHECKPOINT_STATE, dict(state))


def read_checkpoint_state(run_dir: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The last checkpoint's state, or None if no epoch has completed yet. A state.json that
    holds `null` (or any non-object) is damaged, not "no checkpoint": a resume would otherwise
    start the run over without a word."""
    path = checkpoint_dir(run_dir) / CHECKPOINT_STATE
    if not path.is_file():
        return None
    state = read_json(path)
    if not isinstance(state, dict):
        raise RunFolderError(f"{path}: corrupted record: not a JSON object")
    return state


def _is_temporary(path: Path) -> bool:
    return path.name.startswith(".") and ".tmp" in path.name and path.is_file()


def remove_temporaries(run_dir: str | os.PathLike[str]) -> None:
    """Delete temporaries a killed writer left behind (the records they shadow are intact)."""
    for folder in (Path(run_dir), checkpoint_dir(run_dir)):
        if folder.is_dir():
            for path in folder.iterdir():
                if _is_temporary(path):
                    with contextlib.suppress(OSError):
                        path.unlink()


def prune_checkpoints(run_dir: str | os.PathLike[str], keep: str) -> None:
    """Delete checkpoint model files other than `keep`, and leftover temporaries."""
    folder = checkpoint_dir(run_dir)
    if not folder.is_dir():
        return
    for path in folder.iterdir():
        is_model = path.name.startswith("epoch-") and path.suffix == ".keras"
        if (is_model and path.name != keep) or _is_temporary(path):
            with contextlib.suppress(OSError):
                path.unlink()


# -- one writer at a time ---------------------------------------------------------------------


def _lock_holder(fd: int) -> str:
    with contextlib.suppress(OSError, UnicodeDecodeError):
        text = os.pread(fd, 200, 0).decode("utf-8").strip()
        if text:
            return text
    return "another process"


# What a second writer of a run folder is told ({folder}, {holder}: see run_lock)
RUN_BUSY = ("{folder} is being written by {holder}; only one process may write a run folder. "
            "Wait for it to finish (or stop it), then resume; or pick another folder")


def holds_run(folder: Path) -> bool:
    """Whether a folder holds a run (its settings or its status): one to resume, never one a
    new run or a sweep may write into."""
    return (folder / SETTINGS_FILE).exists() or (folder / STATUS_FILE).exists()


@contextlib.contextmanager
def run_lock(run_dir: str | os.PathLike[str], busy: str = RUN_BUSY,
             role: str = "a run folder") -> Iterator[Path]:
    """Hold the run folder's exclusive lock while the body writes it; creates the folder.

    Two writers of one folder would interleave checkpoints, delete each other's in-flight files
    and overwrite each other's status, so a second writer (a `--resume` of a run that is still
    training, two trainings given the same `--out`) is refused at once with RunLocked, which
    names the process holding the lock. The lock is `fcntl.flock` on `RUN_DIR/.lock`: the kernel
    drops it when the holder exits, even by SIGKILL, so a crashed run never leaves a stale lock.
    The file stays (deleting it would let a third process lock a fresh inode while a second
    still waits on the old one) and holds the current holder's PID and host, for the message.
    The same lock guards a sweep's --out (a folder of run folders), with its own `busy` text
    and `role` (what the folder was to be, for the message when it cannot be one).
    """
    folder = Path(run_dir)
    created = not folder.exists()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # a file in the way, no permission, a read-only disk
        raise RunFolderError(
            f"{folder}: cannot use it as {role} ({exc.strerror or exc})") from None
    try:
        fd = os.open(folder / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:  # the lock file itself: a folder of that name, no permission
        raise RunFolderError(
            f"{folder}: cannot use it as {role}: its lock file {folder / LOCK_FILE} cannot be "
            f"opened ({exc.strerror or exc})") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _lock_holder(fd)
            raise RunLocked(busy.format(folder=folder, holder=holder), holder) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
        try:
            yield folder
        finally:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
                if created and [p.name for p in folder.iterdir()] == [LOCK_FILE]:
                    # refused before writing anything: leave no empty folder behind
                    (folder / LOCK_FILE).unlink()
                    folder.rmdir()
    finally:
        os.close(fd)  # closing the only descriptor releases the lock

