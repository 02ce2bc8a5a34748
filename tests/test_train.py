"""Tests for training.train and training.records on real CIFAR-10 images (the bundled sample).

Runs are tiny (256 training images, 2 epochs of exp1) so the file stays well under a minute, but
they go through everything a real run does: the tf.data pipeline, checkpoints, every record of
the run folder, SIGKILL + resume, Ctrl-C, divergence, re-evaluation.
"""

from __future__ import annotations

import json
import math
import os
import re
import struct
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest
from conftest import kill_when

from cnnspec import load
from cnnspec.language.settings import TrainSettings, resolve_settings
from cnnspec.training import records
from cnnspec.training.data import load_cifar10

ROOT = Path(__file__).resolve().parents[1]
EXP1 = ROOT / "specs" / "exp1.cnn"
LIMIT = 256
EPOCHS = 2
STEPS = LIMIT // 32
SCORES = ("epoch", "loss", "accuracy", "val_loss", "val_accuracy")

# Keras's own model.save trips numpy 2's __array__(copy=...) deprecation; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


@pytest.fixture(scope="module")
def data(home: Path):
    data = load_cifar10(env={}, limit=LIMIT)
    assert data.origin == "bundled sample" and len(data.x_train) == LIMIT
    return data


def exp1_settings(**changes: object) -> TrainSettings:
    spec = load(EXP1)
    base = resolve_settings({s.key: s.value for s in spec.settings})
    return base.override(**{"epochs": EPOCHS, **changes})


@pytest.fixture(scope="module")
def reference(data, tmp_path_factory: pytest.TempPathFactory):
    """One complete seeded run of exp1 that several tests read."""
    from cnnspec.training.train import train

    out = tmp_path_factory.mktemp("runs") / "exp1"
    result = train(load(EXP1), exp1_settings(), data, out, progress="none")
    return result


def scores(history) -> list[tuple]:
    return [tuple(row[k] for k in SCORES) for row in history]


# -- records -----------------------------------------------------------------------------------


def test_atomic_write_keeps_old_file_when_writer_fails(tmp_path: Path) -> None:
    target = tmp_path / "metrics.json"
    records.write_json(target, {"a": 1})
    with pytest.raises(RuntimeError), records.atomic_path(target) as tmp:
        tmp.write_text('{"a": 2, "half')
        raise RuntimeError("killed mid-write")
    assert records.read_json(target) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


def test_history_csv_round_trips_full_precision(tmp_path: Path) -> None:
    rows = [{"epoch": 1, "loss": 0.1 + 0.2, "accuracy": 1 / 3, "val_loss": None,
             "val_accuracy": None, "seconds": 1.5, "images_per_second": 100.0, "lr": 0.1 / 3}]
    records.write_history(tmp_path, rows)
    assert records.read_history_csv(tmp_path / records.HISTORY_CSV) == rows
    assert records.read_history(tmp_path) == rows


# -- a complete run ----------------------------------------------------------------------------


def test_run_folder_holds_every_record(reference, data) -> None:
    run = reference.run_dir
    assert reference.status == "completed"
    for name in (records.SPEC_FILE, records.SETTINGS_FILE, records.HISTORY_CSV,
                 records.HISTORY_JSON, records.METRICS_FILE, records.MODEL_FILE,
                 records.CURVE_FILE, records.STATUS_FILE):
        assert (run / name).is_file(), name
    assert (run / records.SPEC_FILE).read_text() == EXP1.read_text()

    settings = records.read_json(run / records.SETTINGS_FILE)
    assert settings["settings"] == exp1_settings().to_dict()
    assert settings["effective_seed"] == 1
    assert settings["precision"] == "float32"
    assert settings["data"]["train_images"] == LIMIT
    assert settings["data"]["origin"] == "bundled sample"
    assert settings["model"]["params"] > 0 and settings["model"]["macs_per_image"] > 0
    assert set(settings["versions"]) >= {"cnnspec", "tensorflow", "keras"}

    history = records.read_history(run)
    assert [row["epoch"] for row in history] == [1, 2]
    assert all(set(row) == set(records.HISTORY_FIELDS) for row in history)
    assert all(row[k] is not None for row in history for k in records.HISTORY_FIELDS)
    assert records.read_history_csv(run / records.HISTORY_CSV) == history
    assert (run / records.HISTORY_CSV).read_text().splitlines()[0] == ",".join(
        records.HISTORY_FIELDS)
    assert scores(history) == scores(reference.history)

    metrics = records.read_json(run / records.METRICS_FILE)
    assert metrics == reference.metrics
    assert metrics["test_images"] == len(data.x_test)
    assert [c["label"] for c in metrics["per_class"]] == list(data.label_names)
    assert sum(c["images"] for c in metrics["per_class"]) == len(data.x_test)
    correct = sum(c["correct"] for c in metrics["per_class"])
    assert metrics["test_accuracy"] == pytest.approx(correct / len(data.x_test), abs=1e-6)
    # the final validation is the test split scored by the same model
    assert metrics["test_accuracy"] == history[-1]["val_accuracy"]

    png = (run / records.CURVE_FILE).read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and png[12:16] == b"IHDR"
    width, height = struct.unpack(">II", png[16:24])
    assert width >= 400 and height >= 200 and len(png) > 10_000

    assert zipfile.is_zipfile(run / records.MODEL_FILE)
    status = records.read_status(run)
    assert status["status"] == "completed" and status["epochs_completed"] == EPOCHS
    state = records.read_checkpoint_state(run)
    assert state["epochs_completed"] == EPOCHS
    assert sorted(p.name for p in records.checkpoint_dir(run).iterdir()) == [
        "epoch-0002.keras", "state.json"]


def test_seeded_runs_give_identical_histories(reference, data, tmp_path, capsys) -> None:
    from cnnspec.training.train import train

    again = train(load(EXP1), exp1_settings(), data, tmp_path / "again", progress="plain")
    assert scores(again.history) == scores(reference.history)
    assert again.metrics == reference.metrics
    # plain progress (not a terminal): one line per epoch
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split("  ")[0] for line in lines] == ["epoch 1/2", "epoch 2/2"]
    assert all("val_accuracy" in line and "img/s" in line for line in lines)


def test_evaluate_run_reproduces_metrics(reference, data) -> None:
    from cnnspec.training.train import evaluate_run

    scored = evaluate_run(reference.run_dir, data)
    recorded = records.read_json(reference.run_dir / records.METRICS_FILE)
    assert scored["test_accuracy"] == recorded["test_accuracy"]
    assert scored["test_loss"] == recorded["test_loss"]
    assert scored["per_class"] == recorded["per_class"]


# -- stopping and resuming ---------------------------------------------------------------------

KILL_SCRIPT = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    import keras
    from cnnspec import load
    from cnnspec.training.data import load_cifar10
    from cnnspec.language.settings import resolve_settings
    from cnnspec.training.train import train

    spec_path, out, marker, limit = sys.argv[1:5]
    spec = load(spec_path)
    settings = resolve_settings({s.key: s.value for s in spec.settings}).override(epochs=2)

    class Hang(keras.callbacks.Callback):
        # Park the process inside epoch 2, after epoch 1's checkpoint, until it is killed.
        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch
        def on_train_batch_end(self, batch, logs=None):
            if self.epoch == 1 and batch == 2:
                Path(marker).write_text("epoch 2, batch 3")
                time.sleep(600)

    train(spec, settings, load_cifar10(env={}, limit=int(limit)), out, progress="none",
          callbacks=[Hang()])
""")


def test_sigkill_mid_epoch_then_resume_continues_exactly(reference, home, tmp_path) -> None:
    from cnnspec.training.train import resume_run

    out, marker = tmp_path / "killed", tmp_path / "inside-epoch-2"
    env = {**os.environ, "HOME": str(home), "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.Popen(
        [sys.executable, "-c", KILL_SCRIPT, str(EXP1), str(out), str(marker), str(LIMIT)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    kill_when(proc, marker.exists, "epoch 2")
    assert records.read_status(out)["status"] == "running"  # it never got to say anything else
    assert records.read_checkpoint_state(out)["epochs_completed"] == 1
    assert [row["epoch"] for row in records.read_history(out)] == [1]
    recorded = json.loads((out / "settings.json").read_text())["data"]
    assert recorded["origin"] == "bundled sample"

    result = resume_run(out, progress="none")  # reloads the recorded data source itself
    # ... and the record still says how that source was found, not `--data`
    assert json.loads((out / "settings.json").read_text())["data"] == recorded
    assert result.status == "completed"
    assert [row["epoch"] for row in result.history] == [1, 2]
    assert records.read_history(out) == list(result.history)
    assert records.read_status(out)["status"] == "completed"
    # the same numbers as the run that was never interrupted
    assert scores(result.history) == scores(reference.history)
    assert result.metrics == reference.metrics


def test_ctrl_c_stops_cleanly_and_resume_finishes(reference, data, tmp_path) -> None:
    import keras

    from cnnspec.training.train import resume_run, train

    class CtrlC(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch

        def on_train_batch_end(self, batch, logs=None):
            if self.epoch == 1 and batch == 4:
                raise KeyboardInterrupt

    out = tmp_path / "interrupted"
    result = train(load(EXP1), exp1_settings(), data, out, progress="none", callbacks=[CtrlC()])
    assert result.status == "interrupted" and result.epochs_completed == 1
    status = records.read_status(out)
    assert status["status"] == "interrupted" and "Ctrl-C" in status["reason"]
    assert [row["epoch"] for row in records.read_history(out)] == [1]
    assert (out / records.MODEL_FILE).is_file()  # the last completed epoch's model

    finished = resume_run(out, data, progress="none")
    assert finished.status == "completed"
    assert scores(finished.history) == scores(reference.history)


@pytest.mark.parametrize("where", ["checkpoint-state", "history"])
def test_ctrl_c_while_epoch_2_is_saved_leaves_records_of_one_epoch(
        where, reference, data, tmp_path, monkeypatch) -> None:
    """Ctrl-C inside the epoch-2 save: every record must describe the same epoch.

    "checkpoint-state": after epoch 2's model file is written, before state.json names it (the
    checkpoint is still epoch 1). "history": after the checkpoint switched to epoch 2, before
    history.json says so. Either way history, status, model.keras and the checkpoint agree,
    `evaluate` scores model.keras to the recorded val_loss, and resume finishes exactly.
    """
    from cnnspec.training.train import evaluate_run, resume_run, train

    target = "write_checkpoint_state" if where == "checkpoint-state" else "write_history"
    real = getattr(records, target)

    def interrupted(run_dir, rows_or_state):
        epochs = (rows_or_state["epochs_completed"] if where == "checkpoint-state"
                  else len(rows_or_state))
        if epochs == 2:
            monkeypatch.setattr(records, target, real)  # once: the handler writes records too
            raise KeyboardInterrupt
        real(run_dir, rows_or_state)

    monkeypatch.setattr(records, target, interrupted)
    out = tmp_path / "saving"
    result = train(load(EXP1), exp1_settings(), data, out, progress="none")
    monkeypatch.setattr(records, target, real)
    kept = 1 if where == "checkpoint-state" else 2
    assert result.status == "interrupted" and result.epochs_completed == kept

    state = records.read_checkpoint_state(out)
    status = records.read_status(out)
    history = records.read_history(out)
    assert state["epochs_completed"] == kept
    assert [row["epoch"] for row in history] == list(range(1, kept + 1))
    assert [row["epoch"] for row in state["history"]] == list(range(1, kept + 1))
    assert status["status"] == "interrupted" and status["epochs_completed"] == kept
    assert f"{kept} epoch(s) completed" in status["reason"]
    assert records.read_history_csv(out / records.HISTORY_CSV) == history
    # model.keras is the checkpoint's model, and no other epoch's file is left beside it
    assert sorted(p.name for p in records.checkpoint_dir(out).iterdir()) == [
        records.checkpoint_model_name(kept), records.CHECKPOINT_STATE]
    assert (out / records.MODEL_FILE).read_bytes() == (
        records.checkpoint_dir(out) / state["model"]).read_bytes()
    # what evaluate sees is what history says: the same model, the same test split
    assert evaluate_run(out, data)["test_loss"] == pytest.approx(history[-1]["val_loss"],
                                                                 rel=1e-6)
    assert scores(history) == scores(reference.history[:kept])

    finished = resume_run(out, data, progress="none")
    assert finished.status == "completed"
    assert scores(finished.history) == scores(reference.history)


def test_nan_loss_fails_the_run(data, tmp_path) -> None:
    from cnnspec.training.train import TrainingFailed, train

    out = tmp_path / "diverged"
    with pytest.raises(TrainingFailed) as info:
        train(load(EXP1), exp1_settings(lr=1e6), data, out, progress="none")
    message = str(info.value)
    # Which non-finite value the loss reaches depends on the CPU's kernels (nan on AVX2-only
    # machines, inf on AMX ones); both are divergence, and the message names the one it was.
    assert re.search(r"the loss became (nan \(not a number\)|-?inf \(infinite\))", message), \
        message
    assert "diverged" in message and "lr=1e+06" in message
    status = records.read_status(out)
    assert status["status"] == "failed" and status["reason"] == message
    assert not (out / records.MODEL_FILE).exists()


@pytest.mark.parametrize(("value", "name"), [
    (float("nan"), "nan"), (math.inf, "inf"), (-math.inf, "-inf"),
    (1e308 * 10, "inf"),  # an overflow, as a diverging loss does on AMX machines
    (math.inf - math.inf, "nan"),
    (-(1e308 * 10), "-inf"),
])
def test_every_nonfinite_loss_is_named(value: float, name: str) -> None:
    from cnnspec.training.train import nonfinite_name

    assert nonfinite_name(value) == name


def test_refuses_to_overwrite_or_resume_something_else(reference, data) -> None:
    from cnnspec.training.train import train

    with pytest.raises(FileExistsError):
        train(load(EXP1), exp1_settings(), data, reference.run_dir, progress="none")
    with pytest.raises(ValueError, match="settings differ"):
        train(load(EXP1), exp1_settings(lr=0.5), data, reference.run_dir, progress="none",
              resume=True)


def _records_of(run: Path) -> dict[str, bytes]:
    return {str(p.relative_to(run)): p.read_bytes() for p in sorted(run.rglob("*"))
            if p.is_file() and p.name != records.LOCK_FILE}


@pytest.mark.parametrize("change", ["data", "spec", "precision"])
def test_resume_refuses_different_data_spec_or_precision(change, reference, data) -> None:
    """Each difference on its own is refused, says which, and changes no record."""
    from cnnspec import parse
    from cnnspec.training.train import ResumeRefused, train

    spec, run_data, precision = load(EXP1), data, "float32"
    if change == "data":  # the first 224 of the 256 images: a different fingerprint
        run_data = load_cifar10(env={}, limit=LIMIT - 32)
        message = f"the data differ from the {LIMIT:,} training images of"
    elif change == "spec":  # one extra comment line: the text trained is not the text recorded
        spec = parse(EXP1.read_text() + "# edited\n", filename=str(EXP1), name="exp1")
        message = "the spec text differs"
    else:
        precision = "bf16"
        message = "precision was float32, not bf16"
    before = _records_of(reference.run_dir)
    with pytest.raises(ResumeRefused, match="cannot resume") as info:
        train(spec, exp1_settings(), run_data, reference.run_dir, progress="none",
              precision=precision, resume=True)
    assert message in str(info.value)
    assert "settings differ" not in str(info.value)  # only what differs is named
    assert _records_of(reference.run_dir) == before


def test_epoch_order_is_a_seeded_permutation_that_changes_every_epoch() -> None:
    import numpy as np

    from cnnspec.training.train import epoch_order

    n = 1000
    orders = [epoch_order(7, e, n) for e in range(3)]
    for order in orders:
        assert order.shape == (n,) and order.dtype == np.int64
        assert np.array_equal(np.sort(order), np.arange(n))  # every image exactly once
        assert not np.array_equal(order, np.arange(n))  # and actually shuffled
    assert not np.array_equal(orders[0], orders[1])
    assert not np.array_equal(orders[1], orders[2])
    assert np.array_equal(epoch_order(7, 1, n), orders[1])  # a pure function of (seed, epoch)
    assert not np.array_equal(epoch_order(8, 1, n), orders[1])
    # `train shuffle=false`: the identity, every epoch
    spec_settings = resolve_settings({"shuffle": "false"})
    assert spec_settings.shuffle is False
    for e in range(3):
        assert np.array_equal(epoch_order(7, e, n, spec_settings.shuffle), np.arange(n))


@pytest.mark.parametrize("optimizer", ["sgd", "adam", "adamw", "rmsprop", "nadam", "adagrad"])
def test_every_optimizer_trains_one_short_epoch(optimizer, data, tmp_path) -> None:
    import math

    from cnnspec import parse
    from cnnspec.language.settings import OPTIMIZERS
    from cnnspec.training.train import train

    assert optimizer in OPTIMIZERS
    tiny = parse("input 32x32x3\nclasses 10\nconv4 relu pool4 | dense8 relu\n", name="tiny")
    settings = TrainSettings(optimizer=optimizer, lr=0.001, epochs=1, batch=32, seed=1)
    result = train(tiny, settings, data, tmp_path / optimizer, progress="none")
    assert result.status == "completed"
    (row,) = result.history
    assert math.isfinite(row["loss"]) and math.isfinite(row["val_loss"])
    assert 0 <= row["accuracy"] <= 1
    recorded = records.read_json(tmp_path / optimizer / records.SETTINGS_FILE)
    assert recorded["settings"]["optimizer"] == optimizer
    import keras

    saved = keras.models.load_model(tmp_path / optimizer / records.MODEL_FILE)
    assert type(saved.optimizer).__name__.lower() == optimizer  # SGD, Adam, AdamW, RMSprop, ...
    assert int(saved.optimizer.iterations) == math.ceil(LIMIT / 32)  # one epoch of steps


def test_resume_of_completed_run_returns_it(reference, data) -> None:
    from cnnspec.training.train import resume_run

    again = resume_run(reference.run_dir, data, progress="none")
    assert again.status == "completed" and again.history == reference.history


def test_bf16_keeps_softmax_in_float32(home) -> None:
    from cnnspec.language.checker import check
    from cnnspec.training.train import _import_tf, build_training_model

    _, keras = _import_tf()
    model = build_training_model(check(load(EXP1)), keras, "bf16")
    assert model.layers[0].compute_dtype == "bfloat16"
    assert model.layers[0].variable_dtype == "float32"
    assert model.layers[-1].compute_dtype == "float32"
    assert keras.config.dtype_policy().name == "float32"  # the global policy is restored
    import numpy as np

    assert model(np.zeros((2, 32, 32, 3), "float32")).dtype.name == "float32"


def test_records_are_strict_json(reference) -> None:
    for name in (records.SETTINGS_FILE, records.METRICS_FILE, records.HISTORY_JSON,
                 records.STATUS_FILE):
        json.loads((reference.run_dir / name).read_text(), parse_constant=pytest.fail)
