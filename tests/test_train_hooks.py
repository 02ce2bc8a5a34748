"""Epoch hooks (`train(..., epoch_hooks=[...])`) and progress reporters: the loop's extensions.

A hook is called after each epoch's record and checkpoint are written; a `Stop` it returns ends
the run cleanly with the Stop's status and reason. Runs are the fixture spec `tiny` on the
bundled sample's first 64 images (2 steps per epoch), so each takes a few seconds.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, run_cli, snapshot

from cnnspec.language.parse import load
from cnnspec.language.settings import resolve_settings
from cnnspec.training import records
from cnnspec.training.data import load_cifar10

TINY = ROOT / "tests" / "fixtures" / "run-before-issue-11" / "spec.cnn"
LIMIT = 64
EPOCHS = 4

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


@pytest.fixture(scope="module")
def data(home: Path):
    return load_cifar10(env={}, limit=LIMIT)


def tiny():
    spec = load(TINY)
    settings = resolve_settings({s.key: s.value for s in spec.settings}).override(epochs=EPOCHS)
    return spec, settings


class StopAfter:
    """A hook that records what it is shown and asks to stop after epoch `last`."""

    def __init__(self, last: int, status: str = "pruned", reason: str = "behind the median"):
        self.last, self.status, self.reason = last, status, reason
        self.calls: list[tuple[int, dict, int]] = []
        self.run_dir: Path | None = None

    def __call__(self, epoch: int, row: dict):
        from cnnspec.training.train import Stop

        # what the folder holds when the hook runs: the epoch's checkpoint is already written
        checkpointed = records.read_checkpoint_state(self.run_dir)["epochs_completed"]
        self.calls.append((epoch, dict(row), checkpointed))
        return Stop(self.status, self.reason) if epoch == self.last else None


@pytest.fixture(scope="module")
def pruned(data, tmp_path_factory: pytest.TempPathFactory):
    from cnnspec.training.train import train

    out = tmp_path_factory.mktemp("hooks") / "pruned"
    hook = StopAfter(2)
    hook.run_dir = out
    spec, settings = tiny()
    result = train(spec, settings, data, out, progress="none", epoch_hooks=[hook])
    return out, hook, result


def test_a_hook_that_stops_after_epoch_2_leaves_a_complete_pruned_run(pruned, data) -> None:
    out, hook, result = pruned
    assert (result.status, result.reason, result.epochs_completed) == (
        "pruned", "behind the median", 2)
    # called after epochs 1 and 2, each time with that epoch's row, its checkpoint written
    history = records.read_history(out)
    assert [(e, c) for e, _, c in hook.calls] == [(1, 1), (2, 2)]
    assert [row for _, row, _ in hook.calls] == history
    status = records.read_status(out)
    assert (status["status"], status["reason"], status["epochs_completed"],
            status["epochs_planned"]) == ("pruned", "behind the median", 2, EPOCHS)
    for name in (records.SPEC_FILE, records.SETTINGS_FILE, records.HISTORY_JSON,
                 records.HISTORY_CSV, records.CURVE_FILE, records.MODEL_FILE,
                 records.METRICS_FILE):
        assert (out / name).is_file(), name
    assert [row["epoch"] for row in history] == [1, 2]
    metrics = records.read_json(out / records.METRICS_FILE)
    assert metrics["epochs"] == 2 and metrics == result.metrics


def test_the_pruned_runs_metrics_score_its_saved_model(pruned, data) -> None:
    """metrics.json against Keras by hand: the saved model on x/255 and one-hot labels."""
    from cnnspec.training.train import _import_tf

    out, _, result = pruned
    _, keras = _import_tf()
    model = keras.models.load_model(out / records.MODEL_FILE)
    x = data.x_test.astype(np.float32) / np.float32(255)
    probs = model.predict(x, batch_size=256, verbose=0)
    accuracy = float(np.mean(np.argmax(probs, 1) == data.y_test))
    assert result.metrics["test_accuracy"] == pytest.approx(accuracy, abs=1e-6)
    y = np.eye(10, dtype=np.float32)[data.y_test]
    loss = float(np.mean(keras.losses.categorical_crossentropy(y, probs)))
    assert result.metrics["test_loss"] == pytest.approx(loss, rel=1e-4)


def test_a_pruned_run_does_not_resume(pruned, data) -> None:
    from cnnspec.training.train import ResumeRefused, resume_run

    out, _, _ = pruned
    before = snapshot(out, lock=False)
    with pytest.raises(ResumeRefused, match="pruned after epoch 2 .behind the median."):
        resume_run(out, data, progress="none")
    assert snapshot(out, lock=False) == before


def test_the_cli_refuses_to_resume_a_pruned_run(pruned, home: Path) -> None:
    out, _, _ = pruned
    before = snapshot(out, lock=False)
    done = run_cli("train", "--resume", str(out), "--progress", "none",
                   env={"HOME": str(home)}, timeout=300)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "cannot resume" in done.stderr and "pruned" in done.stderr
    assert "Traceback" not in done.stderr
    assert snapshot(out, lock=False) == before


def test_early_stopping_completes_the_run_and_resume_returns_it(data, tmp_path: Path) -> None:
    from cnnspec.training.train import resume_run, train

    hook = StopAfter(1, status="completed", reason="val_loss stopped improving")
    hook.run_dir = tmp_path / "early"
    spec, settings = tiny()
    result = train(spec, settings, data, hook.run_dir, progress="none", epoch_hooks=[hook])
    assert (result.status, result.epochs_completed) == ("completed", 1)
    assert records.read_status(hook.run_dir)["reason"] == "val_loss stopped improving"
    again = resume_run(hook.run_dir, data, progress="none")
    assert (again.status, again.epochs_completed) == ("completed", 1)


def test_a_hook_that_goes_on_changes_nothing(data, tmp_path: Path) -> None:
    from cnnspec.training.train import train

    spec, settings = tiny()
    settings = settings.override(epochs=2)
    seen: list[int] = []
    hooked = train(spec, settings, data, tmp_path / "hooked", progress="none",
                   epoch_hooks=[lambda epoch, row: seen.append(epoch)])
    plain = train(spec, settings, data, tmp_path / "plain", progress="none")
    assert seen == [1, 2]
    assert hooked.status == "completed" and hooked.metrics == plain.metrics
    drop = ("seconds", "images_per_second")
    assert [{k: v for k, v in r.items() if k not in drop} for r in hooked.history] == \
        [{k: v for k, v in r.items() if k not in drop} for r in plain.history]


def test_stop_takes_only_the_statuses_a_clean_end_can_have() -> None:
    from cnnspec.training.train import Stop

    assert "pruned" in records.STATUSES
    for status in ("failed", "interrupted", "running", "bogus"):
        with pytest.raises(ValueError, match="Stop status"):
            Stop(status, "why")


class Recorder:
    """A ProgressReporter that writes down every call."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def start(self, epochs, steps):
        self.calls.append(("start", epochs, steps))

    def epoch_start(self, epoch):
        self.calls.append(("epoch_start", epoch))

    def batch_done(self, batch, logs):
        self.calls.append(("batch_done", batch, sorted(logs)))

    def epoch_done(self, row):
        self.calls.append(("epoch_done", row["epoch"]))

    def finish(self):
        self.calls.append(("finish",))

    def say(self, line):
        self.calls.append(("say", line))


def test_a_progress_reporter_is_told_every_epoch_and_batch(data, tmp_path: Path) -> None:
    from cnnspec.training.train import train

    spec, settings = tiny()
    recorder = Recorder()
    train(spec, settings.override(epochs=2), data, tmp_path / "run", progress=recorder)
    batch = ("batch_done", ["accuracy", "loss"])
    steps = LIMIT // 32
    epoch = lambda e: [("epoch_start", e), *[(batch[0], b, batch[1])  # noqa: E731
                                            for b in range(1, steps + 1)], ("epoch_done", e)]
    assert recorder.calls == [("start", 2, steps), *epoch(1), *epoch(2), ("finish",)]


def test_plain_progress_prints_a_line_per_epoch(data, tmp_path: Path, capsys) -> None:
    from cnnspec.training.train import train

    spec, settings = tiny()
    train(spec, settings.override(epochs=2), data, tmp_path / "run", progress="plain")
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[:2] for line in lines] == [["epoch", "1/2"], ["epoch", "2/2"]]


@pytest.mark.parametrize("progress", ["rich", "fancy"])
def test_the_training_layer_has_no_rich_bar(progress: str, data, tmp_path: Path) -> None:
    from cnnspec.training.train import train

    spec, settings = tiny()
    with pytest.raises(ValueError, match="progress must be plain, none or a ProgressReporter"):
        train(spec, settings, data, tmp_path / "run", progress=progress)
    assert not (tmp_path / "run").exists()


def test_the_cli_draws_the_rich_bar_through_the_reporter(home: Path, tmp_path: Path) -> None:
    out = tmp_path / "rich"
    done = run_cli("train", str(TINY), "--limit", str(LIMIT), "--epochs", "1", "--out", str(out),
                   "--precision", "float32", "--progress", "rich", env={"HOME": str(home)},
                   timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "epoch 1/1" in done.stdout and "2/2" in done.stdout  # the bar's epoch and steps
    assert records.read_status(out)["status"] == "completed"


def test_a_ctrl_c_that_python_swallows_still_stops_the_run(home: Path, tmp_path: Path) -> None:
    """A SIGINT landing in a weakref callback or `__del__` (matplotlib's transforms, collected
    while the learning curve is drawn) is printed as "Exception ignored" and lost: the run,
    and a sweep in CI, trained on to the end. The loop remembers the signal and stops at the
    next epoch boundary, interrupted and resumable, as for any Ctrl-C.

    In a fresh interpreter, whose SIGINT handler is Python's own (a test worker may ignore
    SIGINT); the hook sends the signal from inside a `__del__`, where its KeyboardInterrupt is
    swallowed."""
    import signal
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent(f"""
        import os, signal, gc
        from pathlib import Path
        from cnnspec.language.parse import load
        from cnnspec.language.settings import resolve_settings
        from cnnspec.training.data import load_cifar10
        from cnnspec.training.train import train

        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
        class Swallows:
            def __del__(self):
                os.kill(os.getpid(), signal.SIGINT)  # raised in here: Python ignores it
                for _ in range(1000):
                    pass

        def hook(epoch, row):
            if epoch == 1:
                Swallows()  # collected at once: the interrupt is lost
            return None

        spec = load({str(TINY)!r})
        settings = resolve_settings({{s.key: s.value for s in spec.settings}}).override(
            epochs={EPOCHS})
        data = load_cifar10(env={{}}, limit={LIMIT})
        result = train(spec, settings, data, Path({str(tmp_path / "run")!r}),
                       progress="none", epoch_hooks=[hook])
        print("RESULT", result.status, result.epochs_completed)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=600, cwd=ROOT, env={**__import__("os").environ,
                                                      "HOME": str(home),
                                                      "TF_CPP_MIN_LOG_LEVEL": "3"},
                          preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert "Exception ignored" in done.stderr, done.stderr[-2000:]  # the loss is reproduced
    assert "RESULT interrupted 1" in done.stdout, done.stdout + done.stderr[-2000:]
    status = records.read_status(tmp_path / "run")
    assert status["status"] == "interrupted" and "Ctrl-C" in status["reason"]
