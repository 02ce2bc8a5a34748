"""A second Ctrl-C while a stopped run rewinds its records must not cut that rewrite short."""

from __future__ import annotations

import os
import signal
from types import SimpleNamespace

import pytest

from cnnspec.training import loop, records


@pytest.fixture
def default_sigint():
    """Python's own Ctrl-C handler, whatever the test runner's worker had (it may ignore it)."""
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, before)


def test_signals_held_ignores_ctrl_c_and_sigterm_then_restores_them(default_sigint):
    def on_term(*_):
        raise AssertionError("SIGTERM reached its handler inside signals_held")

    before_term = signal.signal(signal.SIGTERM, on_term)
    try:
        with loop.signals_held():
            os.kill(os.getpid(), signal.SIGINT)  # would raise KeyboardInterrupt here
            os.kill(os.getpid(), signal.SIGTERM)
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
        assert signal.getsignal(signal.SIGTERM) is on_term
    finally:
        signal.signal(signal.SIGTERM, before_term)
    with pytest.raises(KeyboardInterrupt):  # and Ctrl-C works again afterwards
        os.kill(os.getpid(), signal.SIGINT)


def test_a_second_ctrl_c_during_the_rewind_leaves_the_run_interrupted(
        default_sigint, tmp_path, monkeypatch):
    """The rewind to the checkpoint is where the second press lands in practice: it still
    ends with status.json saying "interrupted", resumable, and the result returned."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    rec = loop.RunRecords(run_dir, "r", epochs=3, seed=1, history=[{"epoch": 1}])
    rec.status("running")

    def rewind_pressed_twice(folder, name):
        os.kill(os.getpid(), signal.SIGINT)  # the second Ctrl-C, mid-rewrite
        return [{"epoch": 1}]

    monkeypatch.setattr(loop, "keep_interrupted", rewind_pressed_twice)
    said: list[str] = []
    fake = SimpleNamespace(rec=rec, history_decision=lambda: None,
                           reporter=SimpleNamespace(say=said.append))
    fake._record_interrupted = lambda by: loop.Loop._record_interrupted(fake, by)
    result = loop.Loop._interrupted(fake)
    assert result.status == "interrupted"
    status = records.read_status(run_dir)
    assert status["status"] == "interrupted" and status["epochs_completed"] == 1
    assert said == [status["reason"]]


def test_a_closed_output_stops_the_run_resumably_not_as_failed(tmp_path):
    """`cnnspec train ... | head -2`: the reader goes away mid-run. The run was marked
    "failed: cannot write its records: Broken pipe" and told to make room; nothing was wrong
    with its records, so it stops as for Ctrl-C, resumable, and resumes to the end."""
    import json
    import subprocess
    import sys

    from conftest import ROOT, run_cli

    spec = tmp_path / "s.cnn"
    spec.write_text("input 32x32x3\nconv8 relu pool4 | dense16\n")
    out = tmp_path / "run"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "HOME": str(tmp_path), "CNNSPEC_DATA": ""}
    proc = subprocess.Popen(
        [sys.executable, "-m", "cnnspec", "train", str(spec), "--epochs", "40", "--limit",
         "64", "--out", str(out), "--progress", "plain"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first = proc.stdout.readline()  # epoch 1's line: the run is under way
    proc.stdout.close()  # ... and its reader goes away
    stderr = proc.stderr.read()
    proc.wait(timeout=300)
    assert first.startswith("epoch 1/40"), first + stderr[-2000:]
    assert "Traceback" not in stderr
    status = json.loads((out / "status.json").read_text())
    assert status["status"] == "interrupted", status
    assert "its output was closed" in status["reason"]
    done = status["epochs_completed"]
    assert 1 <= done < 40
    history = json.loads((out / "history.json").read_text())
    assert len(history) == done  # records agree with the checkpoint they were rewound to
    resumed = run_cli("train", "--resume", str(out), "--progress", "none",
                      env={"HOME": str(tmp_path), "CNNSPEC_DATA": ""})
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert len(json.loads((out / "history.json").read_text())) == 40


def test_a_failed_run_counts_the_epochs_it_checkpointed(tmp_path):
    """Epoch 2 trained, then its checkpoint could not be written (a read-only folder): the
    status said 2 epochs completed while the history and the checkpoint, which a resume
    starts from, hold 1."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    one = [{"epoch": 1, "loss": 2.0}]
    records.write_checkpoint_state(run_dir, {"epochs_completed": 1, "history": one})
    rec = loop.RunRecords(run_dir, "r", epochs=5, seed=1, history=[*one, {"epoch": 2}])

    def body():
        raise PermissionError(13, "Permission denied", str(run_dir / "checkpoint" / "x.keras"))

    fake = SimpleNamespace(rec=rec, body=body, reporter=SimpleNamespace(finish=lambda: None),
                           latch=loop.InterruptLatch())
    with pytest.raises(PermissionError):
        loop.Loop.run(fake)
    status = records.read_status(run_dir)
    assert status["status"] == "failed"
    assert status["reason"] == "cannot write its records: Permission denied"
    assert status["epochs_completed"] == 1


def test_a_records_failure_names_the_folder_and_the_fix(tmp_path):
    import errno

    from cnnspec.cli.train import records_failure

    run = tmp_path / "run"
    run.mkdir()
    (run / records.SETTINGS_FILE).write_text("{}")  # the run has started: it resumes
    temporary = run / "checkpoint" / ".epoch-0006.x1y2.tmp.keras"
    denied = records_failure(run, PermissionError(errno.EACCES, "Permission denied",
                                                  str(temporary)))
    # the folder that refused the file, not the writer's temporary name
    assert denied.startswith(f"cannot write the run's records in {run / 'checkpoint'}: "
                             "Permission denied; the run stopped. Make it writable, then ")
    assert ".tmp." not in denied
    full = records_failure(run, OSError(errno.ENOSPC, "No space left on device"))
    assert full.startswith(f"cannot write the run's records in {run}: No space left on device;")
    assert "Make room, then continue it from its last checkpoint: cnnspec train --resume" in full


def test_an_interrupt_inside_a_c_call_is_still_an_interrupt():
    """Ctrl-C landing in numpy's __array__ under TensorFlow surfaces as SystemError("...
    returned a result with an exception set") with the KeyboardInterrupt as its context: the
    run was interrupted (resumable), not failed, and SIGTERM keeps its name."""
    try:
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt:
            raise SystemError(  # noqa: B904 (the KeyboardInterrupt as context is the point)
                "<built-in method __array__> returned a result with an exception set")
    except SystemError as exc:
        wrapped = exc
    assert loop.interrupted_by(wrapped) == "Ctrl-C"
    assert loop.interrupted_by(KeyboardInterrupt("SIGTERM")) == "SIGTERM"
    assert loop.interrupted_by(ValueError("no")) is None
