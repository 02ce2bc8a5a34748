"""Train a checked spec on CIFAR-10 exactly as the notebook did, but fast, resumable and recorded.

Why it is built this way:

* Faithful. The notebook ran `compile(loss='categorical_crossentropy', optimizer='sgd',
  metrics=['accuracy'])` and `fit(x/255, to_categorical(y), batch_size=32, epochs=10,
  validation_data=test, shuffle=True)`. We use the same loss on one-hot labels (sparse
  cross-entropy on integer labels is the same maths but *not* the same numbers: it goes through
  log/softmax again and differs in the last bits for ~20% of samples), the same optimizer,
  batch, epochs, per-epoch shuffle and per-epoch validation, and `x / 255` as a float32
  division (not a multiplication by 1/255, which rounds differently).
* Fast. Images stay uint8 (4x less memory than the notebook's float copy); a `tf.data`
  pipeline gathers each batch, casts and scales it inside the graph and prefetches the next
  batch while the current one trains. bench/train_speed.py measures it against the notebook's
  `fit` on float arrays: at least as fast, with less memory. Nothing else is on by default:
  steps_per_execution > 1 and thread settings showed no gain beyond noise, op determinism is
  not needed (seeded runs already match, across processes too) and changes the numbers, XLA
  would change them too, and bf16 is ~10x slower on CPUs without native bf16.
  The one deliberate difference from the notebook: the shuffle order comes from numpy's
  seeded generator instead of Keras's, which is what makes seeded runs and resumes exact.
* Reproducible. With a seed, the shuffle order of epoch e is a pure function of (seed, e),
  weights and dropout masks come from Keras's seeded generators, and two runs give the same
  history to the last digit. Without a seed one is drawn and recorded, so every run can be
  repeated.
* Resumable. Each epoch ends with an atomic checkpoint (model + optimizer state + dropout RNG
  state + history). Because the shuffle order depends only on (seed, epoch), a run resumed
  after Ctrl-C or SIGKILL continues exactly where it stopped: same epochs, same numbers.
* Recorded. Every file of the run folder (see cnnspec.training.records) is written atomically.

Only this module and cnnspec.backend.keras_model import TensorFlow, and only when training starts.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import platform
import secrets
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cnnspec import __version__
from cnnspec.language import ir
from cnnspec.language.checker import DEFAULT_MAX_PARAMS, Report, check
from cnnspec.language.settings import (
    PRECISIONS,
    PROGRESS_MODES,
    REQUESTABLE_PRECISIONS,
    STRATEGIES,
    TrainSettings,
)
from cnnspec.training import records
from cnnspec.training.data import scale_images

if TYPE_CHECKING:
    from cnnspec.training.data import Cifar10

# Measured on the 2-core CPU machine: Keras's per-step overhead is ~1 ms, so running 8 or 32
# steps per call could save at most ~2% of an exp1 step (~35 ms) and <0.5% of an exp7 step;
# in-process A/B runs of 1/8/32 gave identical losses and no gain beyond run-to-run noise.
# Above 1 also coarsens the progress bar and the NaN check, so the default stays at 1.
DEFAULT_STEPS_PER_EXECUTION = 1
_MIXED_POLICY = {"bf16": "mixed_bfloat16"}


class TrainingFailed(Exception):
    """Training stopped because the run cannot go on (e.g. the loss became NaN).

    str(exc) is a complete message for the user; `run_dir` is the folder whose status.json
    now says "failed" with the same reason.
    """

    def __init__(self, message: str, run_dir: Path | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.run_dir = run_dir


@dataclass(frozen=True)
class RunResult:
    """The outcome of `train`/`resume_run`.

    status is "completed" or "interrupted" (failures raise TrainingFailed instead); history has
    one dict per completed epoch with records.HISTORY_FIELDS; metrics is metrics.json's content
    for a completed run, else None.
    """

    run_dir: Path
    status: str
    epochs_planned: int
    history: tuple[dict[str, Any], ...]
    metrics: dict[str, Any] | None = None
    reason: str | None = None
    chief: bool = True  # False on a non-chief worker of a multiworker run: it wrote nothing

    @property
    def epochs_completed(self) -> int:
        return len(self.history)

    @property
    def test_accuracy(self) -> float | None:
        return None if self.metrics is None else self.metrics["test_accuracy"]


class _Diverged(Exception):
    def __init__(self, epoch: int, batch: int, loss: float) -> None:
        super().__init__(f"loss {loss} at epoch {epoch}, batch {batch}")
        self.epoch, self.batch, self.loss = epoch, batch, loss


def nonfinite_name(value: float) -> str:
    """"nan", "inf" or "-inf": which way a loss left the finite numbers.

    Which one a diverging run hits depends on the CPU (the same run overflows to inf on AMX
    machines and to nan on AVX2-only ones), so every value is divergence and the message says
    which it was. Finite values are returned as Python prints them.
    """
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return repr(float(value))


def _divergence_reason(
    name: str, d: _Diverged, epochs: int, steps: int, settings: TrainSettings
) -> str:
    kind = {"nan": "not a number", "inf": "infinite", "-inf": "infinite"}.get(
        nonfinite_name(d.loss), "not finite")
    return (
        f"{name}: training diverged: the loss became {nonfinite_name(d.loss)} ({kind}) in epoch "
        f"{d.epoch}/{epochs} at batch {d.batch}/{steps} ({settings.optimizer}, "
        f"lr={settings.lr:g}). The run stopped; {d.epoch - 1} epoch(s) completed before it. "
        f"Lower the learning rate, e.g. `train lr={settings.lr / 10:g}`."
    )


# -- helpers without TensorFlow ----------------------------------------------------------------


def epoch_order(seed: int, epoch: int, n: int, shuffle: bool = True) -> np.ndarray:
    """The order in which epoch `epoch` (0-based) visits the n training images.

    A pure function of (seed, epoch): this is what makes a resumed run see the same batches as
    an uninterrupted one. numpy's PCG64 stream is stable across numpy versions.
    """
    if not shuffle:
        return np.arange(n, dtype=np.int64)
    return np.random.default_rng([seed, epoch]).permutation(n).astype(np.int64)


def data_fingerprint(data: Cifar10) -> str:
    """A hash of the exact arrays trained on, so `resume` can refuse different data."""
    h = hashlib.blake2b(digest_size=16)
    for array in (data.x_train, data.y_train, data.x_test, data.y_test):
        a = np.ascontiguousarray(array)
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(memoryview(a).cast("B"))
    return h.hexdigest()


def _spec_text(spec: ir.Spec) -> str:
    if spec.source is not None:
        return spec.source
    from cnnspec.language.format import format_spec

    return format_spec(spec)


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _resolve_progress(progress: str | None) -> str:
    if progress is None:
        return "rich" if sys.stdout.isatty() else "plain"
    if progress not in PROGRESS_MODES:
        raise ValueError(f"progress must be one of {', '.join(PROGRESS_MODES)}, not {progress!r}")
    return progress


class ResumeRefused(records.RunFolderError):
    """`--resume` with a different spec, settings, precision or data than the run started with."""


class DataMismatch(ValueError):
    """The spec cannot train on this data (input shape or classes); str(exc) says how to fix."""


def check_data(spec: ir.Spec, data: Cifar10) -> None:
    """DataMismatch unless `spec` can train on `data`: same image shape, enough classes.

    Pure numpy and cheap, so callers (the CLI) run it before TensorFlow starts and before a
    run folder exists: a mismatch is then one clear sentence, not a Keras shape error mid-run.
    """
    for name in ("x_train", "x_test"):
        x = getattr(data, name)
        if x.dtype != np.uint8 or x.ndim != 4:
            raise DataMismatch(
                f"data.{name} must be uint8 images N×H×W×C, got {x.dtype} {x.shape}")
        if tuple(x.shape[1:]) != tuple(spec.input_shape):
            got = "x".join(map(str, x.shape[1:]))
            want = "x".join(map(str, spec.input_shape))
            raise DataMismatch(
                f"{spec.name} declares `input {want}` but the images of {data.source} are "
                f"{got}; write `input {got}` in the spec"
            )
    top = int(max(data.y_train.max(initial=0), data.y_test.max(initial=0)))
    if top >= spec.classes:
        raise DataMismatch(
            f"{spec.name} declares `classes {spec.classes}` but the labels of {data.source} "
            f"go up to {top}; write `classes {top + 1}` in the spec"
        )
    if len(data.x_train) == 0:
        raise DataMismatch("no training images")


_check_data = check_data


def _history_row(
    epoch: int, logs: dict[str, Any], seconds: float, train_seconds: float, images: int
) -> dict[str, Any]:
    def value(key: str) -> float | None:
        v = logs.get(key)
        return None if v is None else float(v)

    return {
        "epoch": epoch,
        "loss": value("loss"),
        "accuracy": value("accuracy"),
        "val_loss": value("val_loss"),
        "val_accuracy": value("val_accuracy"),
        "seconds": round(seconds, 3),
        "images_per_second": round(images / train_seconds, 1) if train_seconds > 0 else None,
    }


def _epoch_line(row: dict[str, Any], epochs: int) -> str:
    parts = [f"epoch {row['epoch']}/{epochs}"]
    for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
        if row.get(key) is not None:
            parts.append(f"{key} {row[key]:.4f}")
    parts.append(f"{row['seconds']:.1f}s")
    if row.get("images_per_second"):
        parts.append(f"{row['images_per_second']:,.0f} img/s")
    return "  ".join(parts)


# -- TensorFlow side ---------------------------------------------------------------------------


def _import_tf() -> tuple[Any, Any]:
    from cnnspec.backend.keras_model import import_keras

    keras = import_keras()
    import tensorflow as tf

    return tf, keras


def _make_optimizer(keras: Any, s: TrainSettings) -> Any:
    if s.optimizer == "sgd":
        return keras.optimizers.SGD(learning_rate=s.lr, momentum=s.momentum)
    if s.optimizer == "rmsprop":
        return keras.optimizers.RMSprop(learning_rate=s.lr, momentum=s.momentum)
    if s.momentum:
        raise ValueError(f"momentum applies to sgd and rmsprop, not {s.optimizer}")
    classes = {"adam": "Adam", "adamw": "AdamW", "nadam": "Nadam", "adagrad": "Adagrad"}
    if s.optimizer not in classes:
        raise ValueError(f"unknown optimizer {s.optimizer!r}")
    return getattr(keras.optimizers, classes[s.optimizer])(learning_rate=s.lr)


def build_training_model(report: Report, keras: Any, precision: str = "float32") -> Any:
    """The spec's Keras model under the given precision (not compiled).

    "bf16" builds every layer under Keras's mixed_bfloat16 policy (bfloat16 compute, float32
    weights) except the final softmax, which stays float32 so probabilities and the loss are
    computed in full precision. The global policy is restored afterwards.
    """
    from cnnspec.backend.keras_model import build_model

    if precision == "float32":
        return build_model(report, keras)
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(_MIXED_POLICY[precision])
    try:
        model = build_model(report, keras)
    finally:
        keras.config.set_dtype_policy(previous)
    model.layers[-1].dtype_policy = "float32"  # the implicit classifier softmax
    return model


def _compile(model: Any, keras: Any, settings: TrainSettings, steps_per_execution: int) -> None:
    model.compile(
        optimizer=_make_optimizer(keras, settings),
        loss=settings.loss,  # "categorical_crossentropy", as in the notebook
        metrics=["accuracy"],
        steps_per_execution=steps_per_execution,
    )


class _Pipeline:
    """tf.data input: uint8 arrays held once as tensors, batches scaled inside the graph."""

    def __init__(
        self, tf: Any, data: Cifar10, batch: int, classes: int, with_train: bool = True
    ) -> None:
        self.tf = tf
        self.batch = batch
        self.classes = classes
        self.n_train = len(data.x_train)
        if with_train:
            self.x_train = tf.constant(data.x_train)
            self.y_train = tf.constant(data.y_train.astype(np.int32))
        self.x_test = tf.constant(data.x_test)
        self.y_test = tf.constant(data.y_test.astype(np.int32))

    def _batches(self, x: Any, y: Any, order: np.ndarray, labels: bool = True) -> Any:
        tf = self.tf
        classes = self.classes

        def grab(index: Any) -> Any:
            images = scale_images(tf, tf.gather(x, index))
            if not labels:
                return images
            return images, tf.one_hot(tf.gather(y, index), classes, dtype=tf.float32)

        ds = tf.data.Dataset.from_tensor_slices(order).batch(self.batch)
        ds = ds.map(grab, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        return ds.prefetch(tf.data.AUTOTUNE)

    def train(self, order: np.ndarray) -> Any:
        return self._batches(self.x_train, self.y_train, order)

    def test(self, labels: bool = True) -> Any:
        order = np.arange(int(self.x_test.shape[0]), dtype=np.int64)
        return self._batches(self.x_test, self.y_test, order, labels)


def _make_callbacks(
    keras: Any, mode: str, epochs: int, steps: int, console_print: Callable[[str], None]
) -> tuple[Any, Any, Any]:
    """(clock, guard, progress) Keras callbacks, defined here so Keras is imported lazily."""
    Base = keras.callbacks.Callback

    class Clock(Base):  # type: ignore[misc, valid-type]
        """Wall time of the epoch and of its training phase (validation excluded)."""

        def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
            self.start = time.perf_counter()
            self.train_end: float | None = None

        def on_test_begin(self, logs: Any = None) -> None:
            if self.train_end is None:
                self.train_end = time.perf_counter()

        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            self.end = time.perf_counter()
            if self.train_end is None:
                self.train_end = self.end

    class Guard(Base):  # type: ignore[misc, valid-type]
        """Stop at the first batch whose running loss is NaN or infinite."""

        def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
            self.epoch = epoch

        def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
            loss = (logs or {}).get("loss")
            if loss is not None and not math.isfinite(float(loss)):
                raise _Diverged(self.epoch + 1, batch + 1, float(loss))

    class Progress(Base):  # type: ignore[misc, valid-type]
        """A rich bar per epoch (terminal) or one plain line per epoch (pipes, logs)."""

        def __init__(self) -> None:
            super().__init__()
            self.bar: Any = None
            self.task: Any = None

        def start(self) -> None:
            if mode != "rich":
                return
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self.bar = Progress(
                TextColumn("epoch {task.fields[epoch]}/{task.fields[epochs]}"),
                BarColumn(bar_width=24),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                TextColumn("{task.fields[metrics]}"),
            )
            self.bar.start()

        def stop(self) -> None:
            if self.bar is not None:
                self.bar.stop()
                self.bar = None

        def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
            if self.bar is not None:
                self.task = self.bar.add_task(
                    "train", total=steps, epoch=epoch + 1, epochs=epochs, metrics=""
                )

        def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
            if self.bar is None or self.task is None:
                return
            logs = logs or {}
            text = "  ".join(
                f"{short} {float(logs[k]):.4f}"
                for k, short in (("loss", "loss"), ("accuracy", "acc")) if k in logs
            )
            self.bar.update(self.task, completed=batch + 1, metrics=text)

        def epoch_done(self, row: dict[str, Any]) -> None:
            if mode == "plain":
                console_print(_epoch_line(row, epochs))
            elif self.bar is not None and self.task is not None:
                text = "  ".join(
                    f"{short} {row[k]:.4f}"
                    for k, short in (("loss", "loss"), ("accuracy", "acc"),
                                     ("val_loss", "val_loss"), ("val_accuracy", "val_acc"))
                    if row.get(k) is not None
                )
                self.bar.update(self.task, completed=steps, metrics=text)

    return Clock(), Guard(), Progress()


def _seed_variables(model: Any) -> list[Any]:
    """The dropout layers' RNG state variables, in layer order."""
    return [v for v in model.non_trainable_variables if v.path.endswith("seed_generator_state")]


def _seed_states(model: Any) -> list[list[int]]:
    """Dropout RNG states (Keras does not save them in .keras files)."""
    return [[int(x) for x in v.numpy().tolist()] for v in _seed_variables(model)]


def _restore_seed_states(model: Any, states: list[list[int]]) -> None:
    variables = _seed_variables(model)
    if len(variables) != len(states):
        raise ValueError(
            f"checkpoint has {len(states)} RNG states, the model has {len(variables)}"
        )
    for var, state in zip(variables, states, strict=True):
        var.assign(np.asarray(state, dtype=var.dtype))


def _copy_state(source: Any, target: Any) -> None:
    """Weights, RNG states and optimizer state of `source` into the same model `target`."""
    pairs = [(list(source.variables), list(target.variables)),
             (list(source.optimizer.variables), list(target.optimizer.variables))]
    for src, dst in pairs:
        if len(src) != len(dst):
            raise ValueError(f"checkpoint has {len(src)} variables where the model has {len(dst)}")
        for a, b in zip(src, dst, strict=True):
            if tuple(a.shape) != tuple(b.shape):
                raise ValueError(f"checkpoint variable {a.path} {a.shape} does not fit {b.path}")
            b.assign(a.value)


def _score(
    model: Any, pipeline: _Pipeline, y_test: np.ndarray, label_names: Sequence[str]
) -> dict[str, Any]:
    """Test loss/accuracy (Keras's own, as val_loss/val_accuracy) and per-class accuracy."""
    result = model.evaluate(pipeline.test(), verbose=0, return_dict=True)
    probs = model.predict(pipeline.test(labels=False), verbose=0)
    predicted = np.asarray(probs).argmax(axis=1)
    return _metrics(
        float(result["loss"]), float(result["accuracy"]), predicted, y_test, pipeline.classes,
        label_names)


def _metrics(
    loss: float,
    accuracy: float,
    predicted: np.ndarray,
    y_test: np.ndarray,
    classes: int,
    label_names: Sequence[str],
) -> dict[str, Any]:
    truth = np.asarray(y_test)
    per_class = []
    for k in range(classes):
        mask = truth == k
        count = int(mask.sum())
        correct = int((predicted[mask] == k).sum())
        per_class.append({
            "class": k,
            "label": label_names[k] if k < len(label_names) else str(k),
            "images": count,
            "correct": correct,
            "accuracy": correct / count if count else None,
        })
    return {
        "test_loss": loss,
        "test_accuracy": accuracy,
        "test_images": int(len(truth)),
        "per_class": per_class,
    }


def _write_checkpoint(run_dir: Path, model: Any, history: list[dict[str, Any]], seed: int,
                      ) -> None:
    """The end-of-epoch checkpoint: model file first, then the state naming it (atomically)."""
    name = records.checkpoint_model_name(len(history))
    with records.atomic_path(records.checkpoint_dir(run_dir) / name) as tmp:
        model.save(tmp)
    records.write_checkpoint_state(run_dir, {
        "epochs_completed": len(history),
        "model": name,
        "history": history,
        "seed_states": _seed_states(model),
        "effective_seed": seed,
    })
    records.prune_checkpoints(run_dir, keep=name)


def _save_progress(run_dir: Path, history: list[dict[str, Any]], title: str) -> None:
    from cnnspec.training import plots

    records.write_history(run_dir, history)
    plots.write_learning_curve(run_dir / records.CURVE_FILE, history, title=title)


def _keep_interrupted(run_dir: Path, title: str) -> list[dict[str, Any]]:
    """After Ctrl-C: make every record describe the last checkpoint; return its history.

    Ctrl-C can land anywhere, including between writing an epoch's model file and the
    state.json that names it, or between the checkpoint and history.json. The checkpoint's
    state.json is the one record that switches atomically, so history, the learning curve,
    model.keras (for `evaluate`) and the status are all rewritten from it, never from the
    epoch count in memory: `evaluate`, `compare` and `--resume` then agree on the epoch.
    """
    state = records.read_checkpoint_state(run_dir)
    if state is None:
        for name in (records.HISTORY_JSON, records.HISTORY_CSV, records.MODEL_FILE):
            with contextlib.suppress(FileNotFoundError):
                (run_dir / name).unlink()
        return []
    history = list(state["history"])
    records.prune_checkpoints(run_dir, keep=state["model"])
    _save_progress(run_dir, history, title)
    records.atomic_copy(records.checkpoint_dir(run_dir) / state["model"],
                        run_dir / records.MODEL_FILE)
    return history


class _RunRecords:
    """What a run writes as it goes, the same with or without a strategy.

    Under a strategy only the chief writes (`chief` False: a worker that writes nothing, yet
    keeps the history in memory for its RunResult). `model` is set once the model exists.
    """

    def __init__(self, run_dir: Path, name: str, epochs: int, seed: int,
                 history: list[dict[str, Any]], chief: bool = True) -> None:
        self.run_dir, self.name, self.epochs, self.seed = run_dir, name, epochs, seed
        self.history, self.chief = history, chief
        self.model: Any = None

    def status(self, status: str, reason: str | None = None) -> None:
        if self.chief:
            records.write_status(self.run_dir, status, reason,
                                 epochs_completed=len(self.history), epochs_planned=self.epochs)

    def save_progress(self) -> None:
        if self.chief:
            _save_progress(self.run_dir, self.history, self.name)

    def epoch_done(self, row: dict[str, Any]) -> None:
        """One more epoch: its row, then the checkpoint, history and curve, then the status."""
        self.history.append(row)
        if self.chief:
            _write_checkpoint(self.run_dir, self.model, self.history, self.seed)
        self.save_progress()
        self.status("running")


def _guarded_run(rec: _RunRecords, body: Callable[[], dict[str, Any] | None], bar: Any,
                 mode: str, divergence: Callable[[_Diverged], str]) -> RunResult:
    """Run `body` (the epochs and the final save; returns the metrics) and record its end.

    The one place for how a run ends, with or without a strategy: completed; diverged
    (TrainingFailed, the epochs so far kept); interrupted (Ctrl-C: every record rewound to the
    last checkpoint, a RunResult to resume from); any other error (status failed, re-raised).
    """
    try:
        metrics = body()
    except _Diverged as d:
        bar.stop()
        reason = divergence(d)
        if rec.history:
            rec.save_progress()
        rec.status("failed", reason)
        raise TrainingFailed(reason, rec.run_dir if rec.chief else None) from None
    except KeyboardInterrupt:
        bar.stop()
        if rec.chief:
            rec.history[:] = _keep_interrupted(rec.run_dir, rec.name)
        done = len(rec.history)
        where = (f"during epoch {done + 1}/{rec.epochs}" if done < rec.epochs
                 else "while saving the final model")
        reason = (
            f"interrupted (Ctrl-C) {where}; {done} epoch(s) completed and "
            "checkpointed; resume to continue"
        )
        rec.status("interrupted", reason)
        if mode != "none":
            _print(reason)
        return RunResult(rec.run_dir, "interrupted", rec.epochs, tuple(rec.history), None,
                         reason, chief=rec.chief)
    except BaseException as exc:
        bar.stop()
        rec.status("failed", f"{type(exc).__name__}: {exc}")
        raise
    rec.status("completed")
    return RunResult(rec.run_dir, "completed", rec.epochs, tuple(rec.history), metrics, None,
                     chief=rec.chief)


# -- the run -----------------------------------------------------------------------------------


def train(
    spec: ir.Spec,
    settings: TrainSettings,
    data: Cifar10,
    out_dir: str | Path,
    *,
    precision: str = "float32",
    steps_per_execution: int | None = None,
    progress: str | None = None,
    resume: bool = False,
    max_params: int = DEFAULT_MAX_PARAMS,
    callbacks: Sequence[Any] = (),
    strategy: str = "none",
    cluster: str | Sequence[str] | None = None,
    task_index: int | None = None,
    report: Report | None = None,
) -> RunResult:
    """Train `spec` on `data` with `settings`, writing the run folder `out_dir`.

    report: the spec's checked report when the caller already has it (`cnnspec run` checks each
    spec once, before the first one trains); None checks the spec here.

    precision: "float32" (faithful, default), "bf16" (mixed bfloat16, softmax in float32) or
    "auto" (bf16 where the CPU has native bf16 units, else float32; see cnnspec.backend.cpu). The
    default stays float32 here so library callers get the notebook's numbers on every machine;
    the command line defaults to auto. settings.json records the precision actually used, what
    was asked for and why; a resumed run keeps the recorded one.
    steps_per_execution: train steps per graph call; None means DEFAULT_STEPS_PER_EXECUTION.
    progress: "rich" (a bar per epoch), "plain" (a line per epoch) or "none"; None picks rich
    when stdout is a terminal, else plain.
    resume: continue from out_dir's checkpoint if it has one (the spec, settings and data must
    be the ones it was started with); without it, a folder that already holds a run is an error.
    callbacks: extra Keras callbacks, called during every epoch.
    strategy: "none" (model.fit in this process), "mirrored" (tf.distribute.MirroredStrategy
    over the local devices) or "multiworker" (MultiWorkerMirroredStrategy; the cluster comes from
    `cluster` ("host:port,host:port") + `task_index`, else from $TF_CONFIG). Under a strategy the
    batch is the global batch, split evenly over the replicas (see `distributed`), and
    only the chief writes `out_dir`; the other workers write nothing.

    Returns a RunResult with status "completed", or "interrupted" after Ctrl-C (the last
    completed epoch is checkpointed; `resume_run` continues). Raises TrainingFailed when the loss
    becomes NaN or infinite, SpecError for a spec that does not check, ValueError for bad
    arguments. status.json says which, with the reason.
    """
    if precision not in REQUESTABLE_PRECISIONS:
        raise ValueError(
            f"precision must be one of {', '.join(REQUESTABLE_PRECISIONS)}, not {precision!r}")
    from cnnspec.backend.cpu import resolve_precision

    requested = precision
    precision, reason = resolve_precision(requested)
    choice = {"precision_requested": requested, "precision_reason": reason}
    spe = DEFAULT_STEPS_PER_EXECUTION if steps_per_execution is None else steps_per_execution
    if spe < 1:
        raise ValueError(f"steps_per_execution must be at least 1, not {spe}")
    mode = _resolve_progress(progress)
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {', '.join(STRATEGIES)}, not {strategy!r}")
    if report is None:
        report = check(spec, max_params=max_params)  # SpecError before any TensorFlow import
    _check_data(spec, data)
    run_dir = Path(out_dir)
    text = _spec_text(spec)
    fingerprint = data_fingerprint(data)
    if strategy != "none":
        with contextlib.ExitStack() as chief_lock:  # the chief enters the folder's lock in it
            return _train_replicated(
                spec, settings, data, run_dir, report, text, fingerprint, precision=precision,
                steps_per_execution=spe, mode=mode, resume=resume, callbacks=callbacks,
                strategy=strategy, cluster=cluster, task_index=task_index, lock=chief_lock,
                choice=choice,
            )
    if not resume:
        refuse_existing_run(run_dir)  # before the lock: a refused folder is left untouched
    with records.run_lock(run_dir):
        return _train_single(
            spec, settings, data, run_dir, report, text, fingerprint, precision=precision,
            steps_per_execution=spe, mode=mode, resume=resume, callbacks=callbacks,
            choice=choice)


def refuse_existing_run(run_dir: str | Path) -> None:
    """FileExistsError if `run_dir` already holds a run (a new run must not overwrite it)."""
    folder = Path(run_dir)
    if (folder / records.SETTINGS_FILE).exists() or (folder / records.STATUS_FILE).exists():
        raise FileExistsError(
            f"{folder} already holds a run; resume it with `cnnspec train --resume {folder}`, "
            "or pick another folder")


def _read_run_state(
    run_dir: Path, resume: bool
) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """(settings.json, checkpoint state) of a folder, each checked enough to be used.

    Run under the folder's lock. A record that is missing a key or has the wrong type would
    otherwise surface as a KeyError deep in the trainer; it is a RunFolderError naming the file.
    """
    settings_path = run_dir / records.SETTINGS_FILE
    recorded = records.read_json(settings_path) if settings_path.is_file() else None
    if recorded is not None:
        check_settings_record(recorded, settings_path)
    state = records.read_checkpoint_state(run_dir) if resume and recorded is not None else None
    if state is not None:
        check_state_record(state, run_dir)
    return recorded, state


def check_settings_record(recorded: Any, path: Path) -> None:
    """RunFolderError unless settings.json has what resume/evaluate read from it."""
    from dataclasses import fields

    def bad(what: str) -> records.RunFolderError:
        return records.RunFolderError(f"{path}: corrupted record: {what}")

    if not isinstance(recorded, dict):
        raise bad("not a JSON object")
    need = {"spec": dict, "settings": dict, "effective_seed": int, "precision": str,
            "steps_per_execution": int, "data": dict}
    for key, kind in need.items():
        if not isinstance(recorded.get(key), kind) or isinstance(recorded.get(key), bool):
            raise bad(f"'{key}' is missing or not a {kind.__name__}")
    for key in ("name", "sha256"):
        if not isinstance(recorded["spec"].get(key), str):
            raise bad(f"'spec.{key}' is missing")
    for key, kind in (("source", str), ("train_images", int), ("fingerprint", str)):
        if not isinstance(recorded["data"].get(key), kind):
            raise bad(f"'data.{key}' is missing")
    names = {f.name for f in fields(TrainSettings)}
    unknown = set(recorded["settings"]) - names
    if unknown:  # missing ones take their defaults (a run recorded before they existed)
        raise bad(f"unknown setting(s) {', '.join(sorted(unknown))}")
    for key in ("epochs", "batch"):
        value = recorded["settings"].get(key)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise bad(f"'settings.{key}' must be a positive whole number")
    if recorded["precision"] not in PRECISIONS:
        raise bad(f"unknown precision {recorded['precision']!r}")


def check_state_record(state: Any, run_dir: Path) -> None:
    """RunFolderError unless checkpoint/state.json names a model file that exists, etc."""
    path = records.checkpoint_dir(run_dir) / records.CHECKPOINT_STATE

    def bad(what: str) -> records.RunFolderError:
        return records.RunFolderError(f"{path}: corrupted record: {what}")

    if not isinstance(state, dict):
        raise bad("not a JSON object")
    if not isinstance(state.get("epochs_completed"), int):
        raise bad("'epochs_completed' is missing")
    model = state.get("model")
    if not isinstance(model, str) or "/" in model or not model.endswith(".keras"):
        raise bad("'model' must name the checkpoint's .keras file")
    if not (records.checkpoint_dir(run_dir) / model).is_file():
        raise bad(f"its model file {model} is missing")
    history = state.get("history")
    if (not isinstance(history, list) or len(history) != state["epochs_completed"]
            or not all(isinstance(r, dict) and r.get("epoch") == i + 1
                       for i, r in enumerate(history))):
        raise bad("'history' must hold one row per completed epoch")
    seeds = state.get("seed_states")
    if not isinstance(seeds, list) or not all(
            isinstance(x, list) and all(isinstance(v, int) for v in x) for x in seeds):
        raise bad("'seed_states' must be a list of integer lists")


def _load_checkpoint(keras: Any, run_dir: Path, state: dict[str, Any]) -> Any:
    """The checkpoint's model with its dropout RNG states; ResumeRefused naming the file if it
    does not load (damaged, truncated) or does not fit the run (another model's checkpoint)."""
    path = records.checkpoint_dir(run_dir) / state["model"]
    try:
        model = keras.models.load_model(path)
        _restore_seed_states(model, state["seed_states"])
    except Exception as exc:  # noqa: BLE001 - Keras raises many kinds for a bad .keras file
        why = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
        raise ResumeRefused(
            f"cannot resume {run_dir}: its checkpoint {path} does not load or does not fit "
            f"the run ({why}); the run folder is left as it was") from None
    return model


def _start_or_resume(
    run_dir: Path, resume: bool, text: str, settings: TrainSettings, precision: str,
    fingerprint: str,
) -> tuple[dict[str, Any] | None, dict[str, Any] | None, bool]:
    """New run or resume, decided under the folder's lock: (settings record, checkpoint state,
    already completed). A resume of a different run, or a new run into a used folder, raises."""
    recorded, state = _read_run_state(run_dir, resume)
    done = False
    if resume and recorded is not None:
        _same_run_or_raise(run_dir, recorded, text, settings, precision, fingerprint)
        status = records.read_status(run_dir)
        done = status is not None and status.get("status") == "completed"
    elif not resume:
        refuse_existing_run(run_dir)  # again, under the lock: another writer may have been first
    return recorded, state, done


def _run_seed(recorded: dict[str, Any] | None, settings: TrainSettings) -> int:
    """The recorded seed of a resumed run; else the settings' seed, or a fresh random one."""
    if recorded:
        return recorded["effective_seed"]  # type: ignore[no-any-return]
    return settings.seed if settings.seed is not None else secrets.randbelow(2**31 - 1)


def _train_single(
    spec: ir.Spec,
    settings: TrainSettings,
    data: Cifar10,
    run_dir: Path,
    report: Report,
    text: str,
    fingerprint: str,
    *,
    precision: str,
    steps_per_execution: int,
    mode: str,
    resume: bool,
    callbacks: Sequence[Any],
    choice: dict[str, str] | None = None,
) -> RunResult:
    """`train` without a strategy (model.fit in this process), holding the folder's lock."""
    spe = steps_per_execution
    recorded, state, done = _start_or_resume(run_dir, resume, text, settings, precision,
                                             fingerprint)
    if done:
        return load_result(run_dir)
    seed = _run_seed(recorded, settings)

    tf, keras = _import_tf()
    keras.utils.set_random_seed(seed)
    # the checkpoint is loaded before anything in the folder is written: one that does not load
    # or does not fit refuses the resume and leaves the run as it was
    model: Any = _load_checkpoint(keras, run_dir, state) if state else None
    records.remove_temporaries(run_dir)
    if recorded is None:
        records.atomic_write_text(run_dir / records.SPEC_FILE, text)
        recorded = _settings_record(
            spec, report, settings, data, precision, spe, seed, fingerprint, tf, keras, choice)
        records.write_json(run_dir / records.SETTINGS_FILE, recorded)

    epochs = settings.epochs
    rec = _RunRecords(run_dir, spec.name, epochs, seed,
                      list(state["history"]) if state else [])
    rec.model = model
    rec.status("running")
    steps = math.ceil(len(data.x_train) / settings.batch)
    clock, guard, bar = _make_callbacks(keras, mode, epochs, steps, _print)

    def body() -> dict[str, Any]:
        if state:
            if mode != "none":
                _print(_resuming_line(spec.name, len(rec.history) + 1, epochs, precision))
        else:
            rec.model = build_training_model(report, keras, precision)
            _compile(rec.model, keras, settings, spe)
        model = rec.model
        pipeline = _Pipeline(tf, data, settings.batch, spec.classes)
        validation = pipeline.test() if settings.validation == "test" else None
        bar.start()
        for epoch in range(len(rec.history), epochs):
            order = epoch_order(seed, epoch, pipeline.n_train, settings.shuffle)
            fitted = model.fit(
                pipeline.train(order),
                epochs=epoch + 1,
                initial_epoch=epoch,
                validation_data=validation,
                verbose=0,
                shuffle=False,  # the order above is the shuffle
                callbacks=[clock, guard, bar, *callbacks],
            )
            logs = {k: v[-1] for k, v in fitted.history.items() if v}
            row = _history_row(
                epoch + 1, logs, clock.end - clock.start, clock.train_end - clock.start,
                pipeline.n_train,
            )
            rec.epoch_done(row)
            bar.epoch_done(row)
        bar.stop()
        with records.atomic_path(run_dir / records.MODEL_FILE) as tmp:
            model.save(tmp)
        metrics = _score(model, pipeline, data.y_test, data.label_names)
        metrics["epochs"] = len(rec.history)
        records.write_json(run_dir / records.METRICS_FILE, metrics)
        return metrics

    return _guarded_run(rec, body, bar, mode,
                        lambda d: _divergence_reason(spec.name, d, epochs, steps, settings))


def _print(line: str) -> None:
    print(line, flush=True)


def _resuming_line(name: str, epoch: int, epochs: int, precision: str) -> str:
    """`resuming exp7 at epoch 3/10 in bf16 (recorded in the run)`: it keeps its precision.

    A run started in bf16 on an AMX machine continues in bf16 on an AVX2 one (correct, but
    slow there: bf16 is emulated), never silently in another precision; the line says so.
    """
    from cnnspec.backend.cpu import resolve_precision

    here, _ = resolve_precision("auto")
    note = "" if here == precision else f"; auto would pick {here} on this CPU"
    return f"resuming {name} at epoch {epoch}/{epochs} in {precision} (recorded in the run{note})"


def _settings_record(
    spec: ir.Spec,
    report: Report,
    settings: TrainSettings,
    data: Cifar10,
    precision: str,
    steps_per_execution: int,
    seed: int,
    fingerprint: str,
    tf: Any,
    keras: Any,
    choice: dict[str, str] | None = None,
) -> dict[str, Any]:
    """settings.json's content; `choice` adds precision_requested/_reason beside precision."""
    return {
        "spec": {
            "name": spec.name,
            "file": spec.filename,
            "sha256": _sha256(_spec_text(spec)),
        },
        "settings": settings.to_dict(),
        "effective_seed": seed,
        "precision": precision,
        **(choice or {}),
        "steps_per_execution": steps_per_execution,
        "data": {
            "source": str(data.source),
            "origin": data.origin,
            "train_images": int(len(data.x_train)),
            "test_images": int(len(data.x_test)),
            "label_names": list(data.label_names),
            "fingerprint": fingerprint,
        },
        "model": {
            "params": report.params,
            "trainable_params": report.trainable,
            "non_trainable_params": report.non_trainable,
            "macs_per_image": report.macs,
        },
        "versions": {
            "cnnspec": __version__,
            "tensorflow": tf.__version__,
            "keras": keras.__version__,
            "numpy": np.__version__,
            "python": platform.python_version(),
        },
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def _same_run_or_raise(
    run_dir: Path,
    recorded: dict[str, Any],
    text: str,
    settings: TrainSettings,
    precision: str,
    fingerprint: str,
) -> None:
    problems = []
    if recorded["spec"]["sha256"] != _sha256(text):
        problems.append("the spec text differs")
    if recorded["settings"] != settings.to_dict():
        problems.append("the training settings differ")
    if recorded["precision"] != precision:
        problems.append(f"precision was {recorded['precision']}, not {precision}")
    if recorded["data"]["fingerprint"] != fingerprint:
        problems.append(
            f"the data differ from the {recorded['data']['train_images']:,} training images "
            f"of {recorded['data']['source']}"
        )
    if problems:
        raise ResumeRefused(f"cannot resume {run_dir}: " + "; ".join(problems))


def load_result(run_dir: str | Path) -> RunResult:
    """The RunResult recorded in a run folder, without TensorFlow."""
    folder = Path(run_dir)
    status = records.read_status(folder) or {"status": "running"}
    settings = records.read_json(folder / records.SETTINGS_FILE)
    metrics_path = folder / records.METRICS_FILE
    return RunResult(
        folder,
        status["status"],
        settings["settings"]["epochs"],
        tuple(records.read_history(folder)),
        records.read_json(metrics_path) if metrics_path.is_file() else None,
        status.get("reason"),
    )


def read_run_settings(run_dir: str | Path) -> dict[str, Any]:
    """settings.json of a run folder, checked; RunFolderError saying what is wrong if not.

    For `--resume` and `evaluate`: a path that does not exist, is not a folder, or is a folder
    without a run gets one clear sentence instead of a FileNotFoundError/KeyError traceback.
    """
    folder = Path(run_dir)
    if not folder.exists():
        raise records.RunFolderError(f"{folder}: no such run folder")
    if not folder.is_dir():
        raise records.RunFolderError(f"{folder}: not a run folder (not a directory)")
    path = folder / records.SETTINGS_FILE
    if not path.is_file():
        raise records.RunFolderError(
            f"{folder} is not a run folder: it has no {records.SETTINGS_FILE}")
    try:
        recorded = records.read_json(path)
    except OSError as exc:
        raise records.RunFolderError(f"{path}: cannot read ({exc.strerror or exc})") from None
    check_settings_record(recorded, path)
    return recorded


def recorded_data(recorded: dict[str, Any]) -> Cifar10:
    """The data a run was trained on: its recorded source folder and image count.

    `limit` is the recorded number of training images, so a run trained with `--limit 256`
    gets the same 256 images back (and the same fingerprint), not the whole source.
    """
    from cnnspec.training.data import load_cifar10

    info = recorded["data"]
    return load_cifar10(info["source"], limit=info["train_images"])


_load_recorded_data = recorded_data


def resume_run(
    run_dir: str | Path,
    data: Cifar10 | None = None,
    *,
    progress: str | None = None,
    callbacks: Sequence[Any] = (),
    strategy: str = "none",
    cluster: str | Sequence[str] | None = None,
    task_index: int | None = None,
) -> RunResult:
    """Continue an interrupted or killed run to its planned epoch count.

    Spec, settings, precision and seed come from the run folder; `data` defaults to reloading
    the recorded source (and must hash to the recorded fingerprint). The history continues
    without gaps or repeats: epochs after the last checkpoint are trained again from it, with the
    same shuffle order and dropout RNG state they would have had. A completed run is returned
    as it is.
    """
    from cnnspec.language.parse import parse
    from cnnspec.language.settings import TrainSettings as _Settings

    folder = Path(run_dir)
    recorded = read_run_settings(folder)
    spec_path = folder / records.SPEC_FILE
    try:
        text = spec_path.read_text("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise records.RunFolderError(
            f"{spec_path}: cannot read the run's spec ({exc}); the folder is damaged") from None
    spec = parse(text, filename=str(spec_path), name=recorded["spec"]["name"])
    settings = _Settings(**recorded["settings"])
    if data is None:
        data = _load_recorded_data(recorded)
    return train(
        spec, settings, data, folder,
        precision=recorded["precision"],
        steps_per_execution=recorded["steps_per_execution"],
        progress=progress,
        resume=True,
        callbacks=callbacks,
        strategy=strategy,
        cluster=cluster,
        task_index=task_index,
    )


def evaluate_run(run_dir: str | Path, data: Cifar10) -> dict[str, Any]:
    """Re-score a run's saved model.keras on data's test split.

    Returns the same keys as metrics.json (test_loss, test_accuracy, test_images, per_class).
    """
    folder = Path(run_dir)
    recorded = read_run_settings(folder)
    model_path = folder / records.MODEL_FILE
    if not model_path.is_file():
        raise records.RunFolderError(
            f"{folder} has no {records.MODEL_FILE}: the run did not finish an epoch")
    tf, keras = _import_tf()
    try:
        model = keras.models.load_model(model_path)
    except Exception as exc:  # noqa: BLE001 - any failure to read the file means a damaged file
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
        raise records.RunFolderError(
            f"{model_path}: cannot load the model ({type(exc).__name__}: {first}); the file is "
            "damaged") from None
    classes = int(model.output_shape[-1])
    if tuple(model.input_shape[1:]) != data.x_test.shape[1:]:
        raise records.RunFolderError(
            f"{model_path} takes {'x'.join(map(str, model.input_shape[1:]))} images, but the "
            f"data's are {'x'.join(map(str, data.x_test.shape[1:]))}")
    pipeline = _Pipeline(tf, data, recorded["settings"]["batch"], classes, with_train=False)
    return _score(model, pipeline, data.y_test, data.label_names)


# -- under a tf.distribute strategy ------------------------------------------------------------


def _train_replicated(
    spec: ir.Spec,
    settings: TrainSettings,
    data: Cifar10,
    run_dir: Path,
    report: Report,
    text: str,
    fingerprint: str,
    *,
    precision: str,
    steps_per_execution: int,
    mode: str,
    resume: bool,
    callbacks: Sequence[Any],
    strategy: str,
    cluster: str | Sequence[str] | None,
    task_index: int | None,
    lock: contextlib.ExitStack,
    choice: dict[str, str] | None = None,
) -> RunResult:
    """`train` under "mirrored" or "multiworker": the same records, written by the chief only.

    The chief holds the run folder's lock (entered into `lock`, released when the caller's
    stack closes) from before it reads the folder until the run ends.

    The step is cnnspec.training.distributed.Replicated's (not model.fit; see there why). Non-chief
    workers never touch run_dir, yet run every collective in lockstep with the chief: the start
    broadcast and every training step. Validation is local on every worker.
    """
    from cnnspec.training.distributed import Replicated, make_strategy, run_key

    tf, keras = _import_tf()
    # the strategy first: MultiWorkerMirroredStrategy must exist before any other TF op
    dist, chief, worker = make_strategy(tf, strategy, cluster, task_index)
    runner = Replicated(tf, keras, dist, chief, worker, settings.batch)
    if not chief:
        mode = "none"
    epochs = settings.epochs

    # the chief decides: new run or resume, the seed, the first epoch; workers are told
    state: dict[str, Any] | None = None
    recorded: dict[str, Any] | None = None
    done = False
    refusal: BaseException | None = None
    if chief:
        try:
            if not resume:
                refuse_existing_run(run_dir)
            lock.enter_context(records.run_lock(run_dir))  # held until the run ends
            recorded, state, done = _start_or_resume(run_dir, resume, text, settings, precision,
                                                     fingerprint)
        except (ValueError, FileExistsError) as exc:  # RunFolderError/RunLocked are ValueErrors
            refusal = exc
    seed = _run_seed(recorded, settings)
    history: list[dict[str, Any]] = list(state["history"]) if state else []

    model: Any = None
    keras.utils.set_random_seed(seed)
    # Every worker creates the same variables in the same order inside the scope (under
    # MultiWorkerMirroredStrategy each creation is a collective); the chief then copies a
    # checkpoint in, loaded outside the scope so that loading creates no collective variables.
    with runner.scope():
        model = build_training_model(report, keras, precision)
        _compile(model, keras, settings, steps_per_execution)
        model.optimizer.build(model.trainable_variables)
    if chief and state and refusal is None and not done:
        try:  # a checkpoint that does not load or fit: every worker is told to stop (below)
            _copy_state(_load_checkpoint(keras, run_dir, state), model)
            _restore_seed_states(model, state["seed_states"])
        except ValueError as exc:  # ResumeRefused, or _copy_state's "does not fit"
            refusal = exc if isinstance(exc, ResumeRefused) else ResumeRefused(
                f"cannot resume {run_dir}: its checkpoint does not fit the run ({exc})")
    key = run_key(_sha256(text), json.dumps(settings.to_dict(), sort_keys=True), precision,
                  fingerprint)
    flags = runner.agree(
        model, [float(refusal is not None), float(done), float(seed), float(len(history))], key)
    if refusal is not None:
        raise refusal
    if flags[0]:
        raise TrainingFailed(f"the chief refused to start {run_dir}; see its output")
    if flags[1]:
        return load_result(run_dir) if chief else RunResult(
            run_dir, "completed", epochs, (), chief=False)
    seed, first = int(flags[2]), int(flags[3])
    if not chief:
        keras.utils.set_random_seed(seed)  # the dropout states came with the broadcast

    if chief:
        run_dir.mkdir(parents=True, exist_ok=True)
        records.remove_temporaries(run_dir)
        if recorded is None:
            records.atomic_write_text(run_dir / records.SPEC_FILE, text)
            recorded = _settings_record(
                spec, report, settings, data, precision, steps_per_execution, seed, fingerprint,
                tf, keras, choice)
            recorded["distribution"] = {
                "strategy": strategy, "replicas": runner.replicas, "workers": runner.workers}
            records.write_json(run_dir / records.SETTINGS_FILE, recorded)
        records.write_status(
            run_dir, "running", epochs_completed=len(history), epochs_planned=epochs)
        if state and mode != "none":
            _print(_resuming_line(spec.name, len(history) + 1, epochs, precision))
    steps = math.ceil(len(data.x_train) / settings.batch)
    clock, guard, bar = _make_callbacks(keras, mode, epochs, steps, _print)
    pipeline = _Pipeline(tf, data, settings.batch, spec.classes)
    rec = _RunRecords(run_dir, spec.name, epochs, seed, history, chief)
    rec.model = model

    def body() -> dict[str, Any] | None:
        bar.start()
        for epoch in range(first, epochs):
            order = epoch_order(seed, epoch, pipeline.n_train, settings.shuffle)
            logs = runner.fit_epoch(
                model, pipeline, order, epoch, settings.validation == "test",
                [clock, guard, bar, *callbacks])
            row = _history_row(
                epoch + 1, logs, clock.end - clock.start, clock.train_end - clock.start,
                pipeline.n_train,
            )
            rec.epoch_done(row)
            bar.epoch_done(row)
        bar.stop()
        if not chief:
            return None
        with records.atomic_path(run_dir / records.MODEL_FILE) as tmp:
            model.save(tmp)
        scored = runner.evaluate(model, pipeline)
        metrics = _metrics(scored["loss"], scored["accuracy"], scored["predicted"],
                           data.y_test, spec.classes, data.label_names)
        metrics["epochs"] = len(rec.history)
        records.write_json(run_dir / records.METRICS_FILE, metrics)
        return metrics

    return _guarded_run(rec, body, bar, mode,
                        lambda d: _divergence_reason(spec.name, d, epochs, steps, settings))
