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
