"""`compare --study` / `sweep --study` with a bad storage or study name: one clean error line.

No training: every case stops before the first trial (the sweep cases fail while opening the
storage). Each asserts the exit code, the message, and that no traceback reached the user.
"""

from __future__ import annotations

import optuna
import pytest
from conftest import run_cli

from cnnspec.experiments import study

SWEEP = "conv4 relu drop{.1,.2} | dense8\n"


def _error(result, code: int, *needles: str) -> str:
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    assert result.returncode == code, result.stderr
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    for needle in needles:
        assert needle in result.stderr, result.stderr
    return lines[0]


@pytest.fixture
def two_studies(tmp_path):
    url = f"sqlite:///{tmp_path / 'sweeps.sqlite3'}"
    storage = study.open_storage(url)
    for name in ("alpha", "be[/]ta"):
        optuna.create_study(study_name=name, storage=storage)
    return url


def test_unknown_study_name(two_studies):
    _error(run_cli("compare", "--study", "nope", "--storage", two_studies), 1,
           "cnnspec: error: no study named nope in this storage")


def test_no_study_name_with_several_studies_lists_them(two_studies):
    first = _error(run_cli("compare", "--storage", two_studies), 2)
    assert first == "cnnspec: error: give --study NAME; this storage holds alpha, be[/]ta"


def test_an_empty_storage(tmp_path):
    url = f"sqlite:///{tmp_path / 'empty.sqlite3'}"
    study.open_storage(url)  # creates the schema, no study
    first = _error(run_cli("compare", "--storage", url), 2)
    assert first == "cnnspec: error: give --study NAME; this storage holds no studies"


@pytest.mark.parametrize(("storage", "code", "needle"), [
    ("notaurl", 2, "cnnspec: error: not a storage URL: notaurl"),
    ("foo://bar", 2, "cnnspec: error: not a storage URL: foo://bar"),
    ("sqlite://", 2, "an in-memory database cannot be shared"),
    ("journal://", 2, "journal://: no file"),
])
def test_not_a_storage_url(storage, code, needle, tmp_path):
    _error(run_cli("compare", "--study", "x", "--storage", storage, cwd=tmp_path), code, needle)


def test_compare_never_creates_a_storage(tmp_path):
    """Reading a study must not leave an empty database (or journal) behind a typo."""
    for url, path in ((f"sqlite:///{tmp_path / 'typo.sqlite3'}", tmp_path / "typo.sqlite3"),
                      (f"journal://{tmp_path / 'typo.log'}", tmp_path / "typo.log")):
        first = _error(run_cli("compare", "--study", "x", "--storage", url,
                               env={"COLUMNS": "60"}), 1)
        # one line, however narrow the terminal: rich does not wrap error messages
        assert first == f"cnnspec: error: no sweep storage at {path} ({url}): no such file"
        assert not path.exists()
    _error(run_cli("compare", "--study", "x", "--storage", f"sqlite:///{tmp_path}"), 1,
           "not a file")


def test_a_file_that_is_not_a_database(tmp_path):
    junk = tmp_path / "junk.db"
    junk.write_text("not sqlite\n")
    first = _error(run_cli("compare", "--study", "x", "--storage", f"sqlite:///{junk}"), 1)
    assert first == (f"cnnspec: error: cannot use {junk} as the sweep's SQLite storage: it "
                     "is not an SQLite database; give the sweep another file")


def test_compare_without_a_storage_in_the_runs_folder(tmp_path):
    _error(run_cli("compare", "--study", "x", "--runs-dir", str(tmp_path / "runs")), 1,
           f"no sweep storage at {tmp_path / 'runs' / 'sweeps.sqlite3'}")


@pytest.mark.parametrize("storage", [
    "journal:///proc/no/such/dir/sweeps.log",  # /proc refuses new folders, even for root
    "sqlite:////proc/no/such/dir/sweeps.sqlite3",
])
def test_sweep_with_a_storage_it_cannot_create(storage, tmp_path):
    spec = tmp_path / "s.cnn"
    spec.write_text(SWEEP)
    out = tmp_path / "out"
    first = _error(run_cli("sweep", str(spec), "--study", "x", "--storage", storage,
                           "--epochs", "1", "--limit", "32", "--out", str(out)), 1)
    assert first.startswith("cnnspec: error: cannot open the ")
    assert "/proc/no/such/dir/sweeps." in first
    assert not out.exists()


def test_unreachable_database_server(tmp_path):
    """Port 1 on localhost refuses connections: a clean error after the retries (or, without
    psycopg2, a clean 'driver not installed')."""
    result = run_cli("compare", "--study", "x", "--storage",
                     "postgresql+psycopg2://user:secret@127.0.0.1:1/db", timeout=120)
    first = _error(result, 1)
    assert first.startswith("cnnspec: error: ")
    assert "secret" not in result.stderr  # the password is not printed


_GOOD_LINE = b'{"op_code": 0, "worker_id": "w", "study_name": "s2", "directions": [2]}\n'


@pytest.mark.parametrize(("content", "line", "why"), [
    # what a worker killed while writing leaves: Optuna raised a JSONDecodeError after
    # appending its own records onto the incomplete line, breaking the file for good
    (_GOOD_LINE + b'{"op_code": 4, "worker_id": "w", "datetime_start": "2026-', 2,
     "its last line is incomplete"),
    (_GOOD_LINE + b"garbage\n" + _GOOD_LINE, 2, "a line that is not JSON"),
    (_GOOD_LINE + b"[1, 2]\n", 2, "a line that is not an Optuna journal record"),
])
def test_a_damaged_journal_is_refused_and_left_unchanged(tmp_path, content, line, why):
    journal = tmp_path / "j.log"
    journal.write_bytes(content)
    storage = f"journal://{journal}"
    spec = tmp_path / "s.cnn"
    spec.write_text(SWEEP)
    out = tmp_path / "out"
    for args in (["compare", "--study", "s2", "--storage", storage, "--no-plots"],
                 ["sweep", str(spec), "--study", "s2", "--storage", storage,
                  "--epochs", "1", "--limit", "32", "--out", str(out)]):
        first = _error(run_cli(*args), 1)
        fix = ("A worker killed while writing leaves an incomplete last line: remove that line "
               "(keep a copy of the file) and start again" if line == content.count(b"\n") + 1
               else "Restore the file from a copy, or give the sweep a new journal")
        assert first == (f"cnnspec: error: the journal file {journal} is damaged at line "
                         f"{line} ({why}); it is left unchanged. {fix}")
        assert journal.read_bytes() == content
    assert not out.exists()
    # with the damaged line removed, the study reads again
    journal.write_bytes(_GOOD_LINE)
    again = run_cli("compare", "--study", "s2", "--storage", storage, "--no-plots")
    assert again.returncode == 0 and "Traceback" not in again.stderr, again.stderr[-2000:]


def test_a_study_worker_refuses_a_run_folder_as_out_before_creating_the_study(tmp_path):
    """The refusal comes before the storage is opened: no study with queued trials is left
    behind a mistyped --out."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "settings.json").write_text("{}")
    spec = tmp_path / "s.cnn"
    spec.write_text("conv4 relu pool2 drop{.1,.3} | dense8\n")
    rd = tmp_path / "rd"
    result = run_cli("sweep", str(spec), "--study", "st", "--runs-dir", str(rd), "--out",
                     str(run), "--epochs", "1", "--limit", "64")
    assert result.returncode == 1, result.stderr
    assert f"cnnspec: error: --out {run} is the folder of one run" in result.stderr
    assert "created" not in result.stderr
    assert not (rd / "sweeps.sqlite3").exists()


@pytest.mark.parametrize(("make", "why"), [
    (lambda p: p.mkdir(), "it is a folder; give a file name"),
    (lambda p: p.write_text("not a database\n"), "it is not an SQLite database"),
])
def test_a_sweep_storage_that_is_not_an_sqlite_file_is_refused_leaving_nothing(
        tmp_path, make, why):
    """sqlite:///DIR said "unable to open database file" and left DIR.lock behind; a text
    file said "file is not a database" and left its .lock too."""
    target = tmp_path / "store.sqlite3"
    make(target)
    (tmp_path / "s.cnn").write_text("input 32x32x3\nconv{4,8} relu pool4 | dense8\n")
    result = run_cli("sweep", "s.cnn", "--epochs", "1", "--limit", "64", "--study", "a",
                     "--storage", f"sqlite:///{target}", "--out", "out", cwd=tmp_path)
    _error(result, 1, f"cnnspec: error: cannot use {target} as the sweep's SQLite storage: "
           f"{why}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.cnn", "store.sqlite3"]


def test_an_empty_file_is_a_new_sqlite_storage(tmp_path):
    """SQLite makes a database of an empty file (as `touch` leaves one): not refused."""
    empty = tmp_path / "fresh.sqlite3"
    empty.touch()
    study.open_storage(f"sqlite:///{empty}")  # creates the schema
    assert empty.read_bytes().startswith(b"SQLite format 3\x00")
