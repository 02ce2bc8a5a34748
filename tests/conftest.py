"""Shared fixtures: paths into the repository and a way to run the installed CLI."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SPECS = ROOT / "specs"
EXAMPLES = ROOT / "examples"
SHARED_DATA = ROOT.parent / "shared" / "data" / "cifar-10-batches-py"


def run_cli(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None,
            timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """Run `python -m cnnspec ARGS` as a user would, capturing text output."""
    full_env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "COLUMNS": "160", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "cnnspec", *args],
        cwd=cwd or ROOT, env=full_env, capture_output=True, text=True, timeout=timeout,
    )


def signal_when(proc: subprocess.Popen, ready: Callable[[], bool], what: str, sig: int,
                timeout: float = 300, poll: float = 0.05) -> tuple[str, str]:
    """Send `sig` (Ctrl-C's SIGINT, SIGTERM) to `proc` (started with text stdout and stderr
    pipes) as soon as `ready()` is true, and return its (stdout, stderr) once it has ended; the
    test fails if it ends first or `what` never happens within `timeout` seconds."""
    try:
        deadline = time.monotonic() + timeout
        while not ready():
            if proc.poll() is not None:
                pytest.fail(f"training ended before {what}: {proc.communicate()[1][-2000:]}")
            if time.monotonic() > deadline:
                pytest.fail(f"training never reached {what}")
            time.sleep(poll)
        proc.send_signal(sig)
        return proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def kill_when(proc: subprocess.Popen, ready: Callable[[], bool], what: str,
              timeout: float = 240, poll: float = 0.05) -> None:
    """SIGKILL `proc` (started with stderr=PIPE) as soon as `ready()` is true; the test fails
    if it ends first or `what` never happens within `timeout` seconds."""
    try:
        deadline = time.monotonic() + timeout
        while not ready():
            if proc.poll() is not None:
                pytest.fail(f"training ended before {what}: "
                            f"{proc.stderr.read().decode()[-2000:]}")
            if time.monotonic() > deadline:
                pytest.fail(f"training never reached {what}")
            time.sleep(poll)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL


def snapshot(folder: Path, lock: bool = True) -> dict[str, bytes]:
    """Every file under folder (or the file itself) with its bytes: to prove a command that was
    refused changed nothing. lock=False leaves out a run folder's lock file, which a refused
    writer may create empty and leave behind (it is not a record)."""
    if not folder.exists():
        return {}
    if folder.is_file():
        return {"": folder.read_bytes()}
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and (lock or p.name != ".lock")}


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty HOME for the whole module: no Keras cache, no ~/.keras config from the machine.

    Test files whose HOME needs more (a data cache, an env dict) define their own `home`.
    """
    path = tmp_path_factory.mktemp("home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HOME", str(path))
        mp.delenv("KERAS_HOME", raising=False)
        mp.delenv("CNNSPEC_DATA", raising=False)
        yield path


@pytest.fixture
def cli():
    return run_cli
