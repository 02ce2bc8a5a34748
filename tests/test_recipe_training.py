"""Training recipes end to end: the spec's schedule, augmentation, optimizer and loss options,
test-time flip, EMA and early stopping, trained through `cnnspec train` on real CIFAR-10 images.

Expected values come from outside the trainer: the learning rate of each epoch from the
one-cycle arithmetic written out here, the smoothed loss and the flip accuracy from the saved
model scored with numpy, the EMA from the optimizer's own averages, the early-stopped weights
from re-scoring model.keras. Runs are tiny (512 images, batch 64) and in float32, so the file
runs in about a minute on any CPU.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, kill_when, run_cli

from cnnspec.training import records

LIMIT = 512
BATCH = 64
STEPS = LIMIT // BATCH  # 8 steps per epoch
EPOCHS = 3
RECIPE = ("input 32x32x3\nclasses 10\n"
          f"train batch={BATCH} epochs={EPOCHS} seed=7 momentum=.9 nesterov=true "
          "weight_decay=5e-4 lr=onecycle(.1,warm=.3) augment=flip+crop4+cutout8 "
          "label_smoothing=.2 tta=flip ema=.9\n"
          "conv8 relu bn pool2 drop.25 | dense16 relu\n")
SCORES = ("epoch", "loss", "accuracy", "val_loss", "val_accuracy", "lr")

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


def _train(spec: Path, out: Path, home: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return run_cli("train", str(spec), "--out", str(out), "--limit", str(LIMIT),
                   "--precision", "float32", "--progress", "plain", *extra,
                   env={"HOME": str(home), "CNNSPEC_DATA": ""}, timeout=300)


@pytest.fixture(scope="module")
def spec(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("spec") / "recipe.cnn"
    path.write_text(RECIPE)
    return path


@pytest.fixture(scope="module")
def reference(spec: Path, home: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "reference"
    result = _train(spec, out, home)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    return out


def _load(path: Path):
    """A saved model of a scheduled run: Keras must know cnnspec's schedule class first (a
    plain `keras.models.load_model(path, compile=False)` loads it without cnnspec)."""
    import keras

    from cnnspec.training.schedules import register_keras_objects

    register_keras_objects()
    return keras.models.load_model(path)


def _scores(run: Path) -> list[tuple]:
    return [tuple(row[k] for k in SCORES) for row in records.read_history(run)]


def _test_images(home: Path) -> tuple[np.ndarray, np.ndarray]:
    from cnnspec.training.data import load_cifar10

    data = load_cifar10(env={}, limit=LIMIT)
    return data.x_test.astype(np.float32) / np.float32(255), data.y_test


def test_every_recipe_setting_is_recorded(reference: Path) -> None:
    recorded = json.loads((reference / records.SETTINGS_FILE).read_text())["settings"]
    assert (recorded["lr"]["kind"], recorded["lr"]["peak"], recorded["lr"]["warm"]) == (
        "onecycle", 0.1, 0.3)
    assert recorded["augment"] == {"flip": True, "crop": 4, "crop_mode": "reflect",
                                   "cutout": 8}
    assert (recorded["nesterov"], recorded["weight_decay"], recorded["label_smoothing"],
            recorded["tta"], recorded["ema"]) == (True, 5e-4, 0.2, "flip", 0.9)


def test_history_has_the_learning_rate_of_each_epoch(reference: Path) -> None:
    """onecycle(.1, warm=.3) over 3 x 8 steps: 7 warm-up steps (round(.3 x 24)) rising from 0
    to .1, then linear down to 0 at step 24. Each row holds its epoch's last step's rate."""
    total, warm = EPOCHS * STEPS, round(0.3 * EPOCHS * STEPS)

    def rate(t: int) -> float:
        return 0.1 * t / warm if t < warm else 0.1 * (1 - (t - warm) / (total - warm))

    got = [row["lr"] for row in records.read_history(reference)]
    assert got == pytest.approx([rate(e * STEPS - 1) for e in (1, 2, 3)], rel=1e-9)
    # and the optimizer really steps this schedule: the checkpoint's, after all 24 steps
    state = records.read_checkpoint_state(reference)
    optimizer = _load(records.checkpoint_dir(reference) / state["model"]).optimizer
    assert int(optimizer.iterations.numpy()) == total
    schedule = optimizer._learning_rate
    assert schedule.get_config()["steps_per_epoch"] == STEPS
    for t in (0, 3, warm, 15, total - 1):
        assert float(schedule(t)) == pytest.approx(rate(t), rel=1e-6, abs=1e-9)
    assert (reference / records.CURVE_FILE).is_file()


def test_test_time_flip_is_reported_beside_the_plain_accuracy(reference: Path,
                                                               home: Path) -> None:

    scored = json.loads((reference / records.METRICS_FILE).read_text())
    model = _load(reference / records.MODEL_FILE)
    x, y = _test_images(home)
    plain = np.asarray(model.predict(x, verbose=0))
    mirrored = np.asarray(model.predict(np.ascontiguousarray(x[:, :, ::-1]), verbose=0))
    expected_plain = float(np.mean(plain.argmax(1) == y))
    expected_flip = float(np.mean(((plain + mirrored) / 2).argmax(1) == y))
    # the same weights scored twice: at most one near-tie may fall the other way
    assert abs(scored["test_accuracy"] - expected_plain) <= 1 / len(y)
    assert abs(scored["test_accuracy_flip"] - expected_flip) <= 1 / len(y)


def test_label_smoothing_is_the_loss_trained_and_validated(reference: Path,
                                                           home: Path) -> None:
    """The last epoch's val_loss is the smoothed cross-entropy of the saved (EMA) model."""

    model = _load(reference / records.MODEL_FILE)
    x, y = _test_images(home)
    probs = np.clip(np.asarray(model.predict(x, verbose=0), np.float64), 1e-7, 1 - 1e-7)
    probs /= probs.sum(axis=1, keepdims=True)
    onehot = np.eye(10)[y]
    smoothed = onehot * 0.8 + 0.2 / 10
    expected = float(np.mean(-(smoothed * np.log(probs)).sum(axis=1)))
    plain = float(np.mean(-(onehot * np.log(probs)).sum(axis=1)))
    val_loss = records.read_history(reference)[-1]["val_loss"]
    assert val_loss == pytest.approx(expected, rel=1e-4)
    assert abs(val_loss - plain) > 1e-3  # smoothing really changed what was measured


def test_the_saved_model_is_the_ema_of_the_weights(reference: Path) -> None:
    """model.keras holds the optimizer's moving averages; the checkpoint the trained weights."""

    state = records.read_checkpoint_state(reference)
    trained = _load(records.checkpoint_dir(reference) / state["model"])
    saved = _load(reference / records.MODEL_FILE)
    optimizer = trained.optimizer
    averages = [np.asarray(v.numpy()) for v in optimizer._model_variables_moving_average]
    assert len(averages) == len(trained.trainable_variables) > 0
    for avg, var in zip(averages, saved.trainable_variables, strict=True):
        np.testing.assert_array_equal(np.asarray(var.numpy()), avg)
    assert any(not np.array_equal(np.asarray(a.numpy()), np.asarray(b.numpy()))
               for a, b in zip(trained.trainable_variables, saved.trainable_variables,
                               strict=True))


def test_augmentation_changes_training_and_the_same_seed_repeats_it(
        reference: Path, spec: Path, home: Path, tmp_path: Path) -> None:
    again = tmp_path / "again"
    assert _train(spec, again, home).returncode == 0
    assert _scores(again) == _scores(reference)
    plain = tmp_path / "plain"
    assert _train(spec, plain, home, "--augment", "none").returncode == 0
    assert _scores(plain)[0][1] != _scores(reference)[0][1]  # the first epoch's loss


def test_sigkill_mid_run_then_resume_gives_the_uninterrupted_history(
        reference: Path, spec: Path, home: Path, tmp_path: Path) -> None:
    """Killed (SIGKILL) as soon as epoch 1's checkpoint exists, resumed with `--resume`: the
    schedule, the augmentation draws, the EMA and the optimizer state all continue exactly."""
    out = tmp_path / "killed"
    env = {**os.environ, "HOME": str(home), "CNNSPEC_DATA": "", "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "cnnspec", "train", str(spec), "--out", str(out), "--limit",
         str(LIMIT), "--precision", "float32", "--progress", "none"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    state = records.checkpoint_dir(out) / records.CHECKPOINT_STATE
    kill_when(proc, state.exists, "its first checkpoint", poll=0.02)
    assert records.read_status(out)["status"] == "running"
    assert records.read_checkpoint_state(out)["epochs_completed"] < EPOCHS

    result = run_cli("train", "--resume", str(out), "--progress", "plain",
                     env={"HOME": str(home), "CNNSPEC_DATA": ""}, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert _scores(out) == _scores(reference)
    for key in ("test_loss", "test_accuracy", "test_accuracy_flip"):
        assert (json.loads((out / records.METRICS_FILE).read_text())[key]
                == json.loads((reference / records.METRICS_FILE).read_text())[key])


def wreck_at_epoch_2():
    """A Keras callback class that scales every weight 50x at the end of epoch 2's training
    (before its validation): that epoch's val_loss is then far worse than epoch 1's."""
    import keras

    class Wreck(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 1:
                self.model.set_weights([w * 50 for w in self.model.get_weights()])

    return Wreck


EARLY = ("input 32x32x3\nclasses 10\n"
         "train batch=64 epochs=6 seed=3 lr=.05 momentum=.9 patience=1\n"
         "conv8 relu pool2 | dense16 relu\n")


def test_early_stopping_stops_and_keeps_the_best_epochs_weights(home: Path,
                                                                 tmp_path: Path) -> None:
    """Epoch 2's weights are wrecked on purpose (a callback scales them up 50x before its
    validation), so val_loss gets worse; patience=1 stops there, and the run's model is epoch
    1's: re-scored from model.keras it gives epoch 1's val_loss to the last bit."""

    from cnnspec import load
    from cnnspec.language.settings import settings_of
    from cnnspec.training.data import load_cifar10
    from cnnspec.training.train import evaluate_run, train

    Wreck = wreck_at_epoch_2()
    path = tmp_path / "early.cnn"
    path.write_text(EARLY)
    spec = load(path)
    data = load_cifar10(env={}, limit=LIMIT)
    out = tmp_path / "run"
    result = train(spec, settings_of(spec), data, out, progress="none", callbacks=[Wreck()])
    history = records.read_history(out)
    assert result.status == "completed" and [r["epoch"] for r in history] == [1, 2]
    assert history[1]["val_loss"] > history[0]["val_loss"]
    assert "early stopping: val_loss did not improve" in records.read_status(out)["reason"]
    assert (result.metrics["best_epoch"], result.metrics["monitor"]) == (1, "val_loss")
    assert result.metrics["best_val_loss"] == history[0]["val_loss"]
    rescored = evaluate_run(out, data)
    assert rescored["test_loss"] == history[0]["val_loss"]
    assert rescored["test_accuracy"] == history[0]["val_accuracy"] == result.test_accuracy

    finished = run_cli("train", str(path), "--out", str(tmp_path / "cli"), "--limit", "64",
                       "--epochs", "1", "--precision", "float32",
                       env={"HOME": str(home), "CNNSPEC_DATA": ""})
    assert finished.returncode == 0, finished.stderr[-2000:]
    assert "patience: kept the weights of epoch 1, the best" in finished.stdout


PLAIN_NET = RECIPE.replace("augment=flip+crop4+cutout8 ", "").replace(
    "conv8 relu bn pool2 drop.25 | dense16 relu", "conv8 relu pool2 | dense16 relu")


def test_a_mirrored_run_applies_the_recipe_as_the_unsharded_one(home: Path,
                                                                tmp_path: Path) -> None:
    """Schedule, Nesterov, weight decay, label smoothing, EMA and flip TTA under `--strategy
    mirrored` on two logical CPUs (our own train step, not model.fit): without dropout, batch
    norm or augmentation it trains what the unsharded run trains, up to float32 summation
    order; and the augmentation is applied there too."""
    path = tmp_path / "plain.cnn"
    path.write_text(PLAIN_NET)
    two = {"HOME": str(home), "CNNSPEC_DATA": "", "CNNSPEC_CPU_DEVICES": "2"}

    def run(out: Path, *extra: str, strategy: bool = True) -> list[dict]:
        done = run_cli("train", str(path), "--out", str(out), "--limit", str(LIMIT),
                       "--epochs", "2", "--precision", "float32", *extra,
                       *(("--strategy", "mirrored") if strategy else ()), env=two, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        return records.read_history(out)

    local = run(tmp_path / "local", strategy=False)
    mirrored = run(tmp_path / "mirrored")
    for a, b in zip(local, mirrored, strict=True):
        for key in ("loss", "val_loss"):
            assert a[key] == pytest.approx(b[key], rel=1e-4), (a["epoch"], key)
    scored = json.loads((tmp_path / "mirrored" / records.METRICS_FILE).read_text())
    assert 0 <= scored["test_accuracy_flip"] <= 1
    augmented = run(tmp_path / "augmented", "--augment", "flip+crop4")
    assert augmented[0]["loss"] != mirrored[0]["loss"]


def test_a_sweep_over_recipe_settings_trains_each_and_compare_shows_them(
        home: Path, tmp_path: Path) -> None:
    """`lr={.01,onecycle(.05)}` x `augment={none,flip+crop4}`: four variants trained, each
    with its own recipe recorded, and compare's table has the two settings as columns."""
    path = tmp_path / "sweep.cnn"
    path.write_text("input 32x32x3\nclasses 10\n"
                    "train batch=32 seed=2 lr={.01,onecycle(.05)} augment={none,flip+crop4}\n"
                    "conv8 relu pool2 | dense16 relu\n")
    out = tmp_path / "sweep"
    env = {"HOME": str(home), "CNNSPEC_DATA": ""}
    done = run_cli("sweep", str(path), "--out", str(out), "--limit", "64", "--epochs", "1",
                   "--precision", "float32", "--progress", "none", env=env, timeout=400)
    assert done.returncode == 0, done.stderr[-3000:]
    recorded = sorted(
        (json.dumps(s["settings"]["lr"]), json.dumps(s["settings"]["augment"]["flip"]))
        for s in (json.loads(p.read_text()) for p in out.glob("*/settings.json")))
    assert len(recorded) == 4 and len(set(recorded)) == 4
    table = run_cli("compare", str(out), env=env)
    assert table.returncode == 0, table.stderr[-2000:]
    assert "onecycle(.05)" in table.stdout and "flip+crop4" in table.stdout
    header = next(line for line in table.stdout.splitlines() if "augment" in line)
    assert " lr " in f" {header} "


def test_evaluate_rescores_a_scheduled_ema_run_as_its_metrics_say(reference: Path,
                                                                  home: Path) -> None:
    """`cnnspec evaluate` loads a model.keras whose optimizer has a cnnspec schedule and EMA."""
    scored = json.loads((reference / records.METRICS_FILE).read_text())
    done = run_cli("evaluate", str(reference), env={"HOME": str(home), "CNNSPEC_DATA": ""})
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"test accuracy {scored['test_accuracy']:.4f}" in done.stdout
    assert f"test loss {scored['test_loss']:.4f}" in done.stdout


def test_a_run_interrupted_after_early_stopping_decided_resumes_to_the_same_end(
        home: Path, tmp_path: Path) -> None:
    """Ctrl-C after the epoch that ends the run (here: in an epoch hook, before the final
    save): the message says it was saving the final model, and `--resume` trains no further
    epoch, keeps epoch 1's weights and ends as the uninterrupted run did."""
    from cnnspec import load
    from cnnspec.language.settings import settings_of
    from cnnspec.training.data import load_cifar10
    from cnnspec.training.train import resume_run, train

    def ctrl_c_after_epoch_2(epoch, row):
        if epoch == 2:
            raise KeyboardInterrupt

    path = tmp_path / "early.cnn"
    path.write_text(EARLY)
    spec = load(path)
    data = load_cifar10(env={}, limit=LIMIT)
    out = tmp_path / "run"
    stopped = train(spec, settings_of(spec), data, out, progress="none",
                    callbacks=[wreck_at_epoch_2()()], epoch_hooks=[ctrl_c_after_epoch_2])
    assert stopped.status == "interrupted" and stopped.epochs_completed == 2
    assert "while saving the final model" in records.read_status(out)["reason"]
    finished = resume_run(out, data, progress="none")
    assert finished.status == "completed" and finished.epochs_completed == 2
    assert "early stopping: val_loss did not improve" in finished.reason
    assert finished.metrics["best_epoch"] == 1
    assert finished.metrics["test_loss"] == records.read_history(out)[0]["val_loss"]


def test_an_augmentation_larger_than_the_images_is_refused_before_anything_runs(
        home: Path, tmp_path: Path) -> None:
    """From the command line (the spec itself is refused by `check`, see
    tests/errors/augment_larger_than_image.cnn): one line, exit 2, no run folder."""
    path = tmp_path / "small.cnn"
    path.write_text("input 32x32x3\nclasses 10\nconv8 relu pool2 | dense10\n")
    out = tmp_path / "run"
    done = run_cli("train", str(path), "--out", str(out), "--augment", "flip+cutout40",
                   env={"HOME": str(home), "CNNSPEC_DATA": ""})
    assert done.returncode == 2
    assert (f"cnnspec: error: {path}: augment: cutout40 is larger than the 32x32 images "
            "(after the command-line overrides)") in done.stderr  # the file, as errors name it
    assert "Traceback" not in done.stderr and not out.exists()
