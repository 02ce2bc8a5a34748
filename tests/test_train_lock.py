"""One writer per run folder, and default run folders that two processes can never share.

The lock is held here, in the test process, with `records.run_lock`, and the CLI is run as a
subprocess against the locked folder: the refusal must come at once (before TensorFlow), name
this process's PID, and leave every file as it was, including a checkpoint that is "in flight".
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from conftest import ROOT, SPECS

from cnnspec.training import records

RACE = textwrap.dedent("""
    import sys, time
    import cnnspec.cli.train as ct
    runs, start = sys.argv[1], float(sys.argv[2])
    time.strftime = lambda fmt, *a: "20260101-000000"  # every process: the same second
    while time.time() < start:
        pass
    print(ct.new_run_dir(runs, "exp1"))
""")


def _env(home: Path) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items()
            if k not in ("CNNSPEC_DATA", "KERAS_HOME", "TF_CONFIG", "CNNSPEC_CPU_DEVICES")}
    return {**base, "HOME": str(home), "COLUMNS": "1000"}


def test_default_folders_in_the_same_second_are_distinct(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import cnnspec.cli.train as ct

    monkeypatch.setattr(ct.time, "strftime", lambda fmt, *a: "20260101-000000")
    first, second = ct.new_run_dir(tmp_path, "exp1"), ct.new_run_dir(tmp_path, "exp1")
    assert first.name == "exp1-20260101-000000" and second.name == "exp1-20260101-000000-2"
    assert first.is_dir() and second.is_dir()  # claimed, not just named


def test_processes_racing_for_a_default_folder_each_get_their_own(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    start = time.time() + 3  # every process spins until the same instant
    procs = [subprocess.Popen([sys.executable, "-c", RACE, str(runs), str(start)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(6)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err for _, err in outs]
    folders = [out.strip() for out, _ in outs]
    assert len(set(folders)) == 6, folders
    assert sorted(p.name for p in runs.iterdir()) == sorted(Path(f).name for f in folders)


def test_a_second_lock_on_a_held_folder_is_refused_with_the_holder(tmp_path: Path) -> None:
    with records.run_lock(tmp_path / "run"):
        with pytest.raises(records.RunLocked) as info, records.run_lock(tmp_path / "run"):
            pytest.fail("a second writer got the lock")
        assert f"pid {os.getpid()} on {socket.gethostname()}" in str(info.value)
    with records.run_lock(tmp_path / "run"):  # released: the next writer gets it
        pass


def test_a_lock_left_by_a_killed_process_does_not_block(tmp_path: Path) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom cnnspec.training import records\n"
         "with records.run_lock(sys.argv[1]):\n    print('locked', flush=True)\n"
         "    time.sleep(600)\n", str(tmp_path / "run")],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(records.RunLocked, match=f"pid {holder.pid} "), \
                records.run_lock(tmp_path / "run"):
            pass
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()
    with records.run_lock(tmp_path / "run"):  # the kernel dropped the dead holder's lock
        pass


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A finished 1-epoch run of exp1 on 64 images, and the HOME it used."""
    home = tmp_path_factory.mktemp("home")
    out = tmp_path_factory.mktemp("runs") / "exp1"
    done = subprocess.run(
        [sys.executable, "-m", "cnnspec", "train", str(SPECS / "exp1.cnn"), "--epochs", "1",
         "--limit", "64", "--out", str(out), "--progress", "none"],
        cwd=ROOT, env=_env(home), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return out, home


def test_resume_while_another_process_writes_is_refused_and_deletes_nothing(
        run: tuple[Path, Path], tmp_path: Path) -> None:
    source, home = run
    folder = tmp_path / "busy"
    shutil.copytree(source, folder)
    status = records.read_status(folder)
    status.update(status="running", epochs_completed=1)
    (folder / records.STATUS_FILE).write_text(json.dumps(status))
    # the other writer's checkpoint, half written (what a resumer used to delete)
    in_flight = records.checkpoint_dir(folder) / ".epoch-0003.x1.tmp.keras"
    in_flight.write_bytes(b"half a model")
    with records.run_lock(folder):
        before = {p: p.read_bytes() for p in folder.rglob("*")
                  if p.is_file() and p.name != records.LOCK_FILE}
        started = time.monotonic()
        done = subprocess.run([sys.executable, "-m", "cnnspec", "train", "--resume", str(folder)],
                              cwd=ROOT, env=_env(home), capture_output=True, text=True,
                              timeout=600)
        took = time.monotonic() - started
        after = {p: p.read_bytes() for p in folder.rglob("*")
                 if p.is_file() and p.name != records.LOCK_FILE}
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    assert f"is being written by pid {os.getpid()} on {socket.gethostname()}" in done.stderr
    assert after == before and in_flight.read_bytes() == b"half a model"
    # refused before TensorFlow starts: no epoch trained, no model loaded (generous bound)
    assert took < 60


def test_train_into_a_folder_being_set_up_is_refused(run: tuple[Path, Path],
                                                      tmp_path: Path) -> None:
    _, home = run
    folder = tmp_path / "fresh"
    with records.run_lock(folder):  # another process has just claimed it, nothing written yet
        done = subprocess.run(
            [sys.executable, "-m", "cnnspec", "train", str(SPECS / "exp1.cnn"), "--limit", "64",
             "--epochs", "1", "--out", str(folder)],
            cwd=ROOT, env=_env(home), capture_output=True, text=True, timeout=600)
        assert sorted(p.name for p in folder.iterdir()) == [records.LOCK_FILE]
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    assert f"pid {os.getpid()}" in done.stderr and "only one process" in done.stderr


def test_the_chief_of_a_distributed_run_takes_the_lock_too(run: tuple[Path, Path],
                                                            tmp_path: Path) -> None:
    source, home = run
    folder = tmp_path / "busy"
    shutil.copytree(source, folder)
    status = records.read_status(folder)
    status.update(status="interrupted", epochs_completed=1)
    (folder / records.STATUS_FILE).write_text(json.dumps(status))
    with records.run_lock(folder):
        before = {p: p.read_bytes() for p in folder.rglob("*")
                  if p.is_file() and p.name != records.LOCK_FILE}
        done = subprocess.run(
            [sys.executable, "-m", "cnnspec", "train", "--resume", str(folder),
             "--strategy", "mirrored"],
            cwd=ROOT, env={**_env(home), "CNNSPEC_CPU_DEVICES": "2"}, capture_output=True,
            text=True, timeout=600)
        after = {p: p.read_bytes() for p in folder.rglob("*")
                 if p.is_file() and p.name != records.LOCK_FILE}
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    assert f"is being written by pid {os.getpid()}" in done.stderr
    assert after == before
