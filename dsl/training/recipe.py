"""Optimizer and loss options of the fast CIFAR-10 recipes, and their evaluation helpers.

What each piece is, and what Keras 3 actually does (read in keras/src/optimizers, 3.15):

* **Optimizer** (`OptimizerChoice.build`): the optimizers train.py offers, plus Nesterov
  momentum for SGD, decoupled weight decay and an EMA of the weights.
* **Weight decay is decoupled, and scaled by the learning rate.** Every Keras 3 optimizer takes
  `weight_decay`; before the update step, `BaseOptimizer._apply_weight_decay` does
  `w <- w - w * wd * lr` with the *current* (scheduled) lr, then the optimizer's own step uses
  the gradient computed at the old w. So SGD with momentum mu is
  `w' = w (1 - lr wd);  m <- mu m - lr g;  w <- w' + m` (Nesterov: `w <- w' + mu m - lr g`),
  and the decay never enters the momentum or Adam's moments. That is AdamW's rule (PyTorch's
  form, lr-scaled), and Keras's AdamW is just Adam with `weight_decay` defaulting to 0.004. It
  differs from `l2()` on a layer, which adds `2 l2 w` to the gradient and so goes through
  momentum and Adam's scaling. It decays every trainable variable: biases and
  BatchNormalization's gamma/beta too. (Page's PyTorch recipe used coupled L2, 5e-4 x batch
  with a per-example lr: with momentum .9 that shrinks weights ~10x more per step than
  Keras's decoupled 5e-4 at the same lr.)
* **Label smoothing** (`make_loss`): Keras's CategoricalCrossentropy on the one-hot labels the
  loop uses, with targets `y (1 - e) + e / classes`. Without smoothing the loss stays the
  string "categorical_crossentropy", exactly what runs used before, so their numbers do not
  move by a bit.
* **EMA of weights** (`OptimizerChoice(ema=mu)`): Keras's `use_ema`. After each update the
  optimizer sets `average <- mu average + (1 - mu) w` (`average <- w` at the first step); the
  averages are optimizer variables, so checkpoints save and restore them and resumes stay
  exact. Two Keras behaviours need care, both handled by `ema_callback`/`ema_weights`:
    - `fit` ends with `optimizer.finalize_variable_values`, which *overwrites* the model's
      weights with the averages. train.py calls `fit` once per epoch, so without care every
      epoch would restart from the average (a different algorithm, and one that changes with
      the number of fit calls). `ema_callback` keeps a copy of the trained weights at the
      end of each epoch and puts it back at the end of `fit`.
    - Validation inside `fit` and `evaluate`/`predict` use the model's weights, i.e. the
      trained ones. `ema_callback` swaps the averages in for them (exact copies, not
      Keras's SwapEMAWeights, whose add/subtract swap changes the last bits of the trained
      weights), and `ema_weights(model)` does the same around any block: the final
      evaluation and saving model.keras, so the saved model is the EMA model that was scored.
    - Keras averages the trainable variables only: BatchNormalization's moving mean and
      variance stay those of the trained weights (Page's PyTorch EMA averaged them too).
* **Test-time flip** (`flip_tta`): the mean of the softmax on x and on x mirrored, reported
  beside the plain accuracy.
* **Early stopping** (`early_stopping`): a pure function of the history rows, so a resumed run
  decides exactly as the uninterrupted one did and knows which epoch was best.

TensorFlow and Keras are imported only inside the functions that need them.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

OPTIMIZERS = {"sgd": "SGD", "rmsprop": "RMSprop", "adam": "Adam", "adamw": "AdamW",
              "nadam": "Nadam", "adagrad": "Adagrad"}
_WITH_MOMENTUM = ("sgd", "rmsprop")


def _number(value: Any, name: str, low: float, high: float | None = None,
            open_high: bool = False) -> None:
    ok = not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)
    if ok and value >= low and (high is None or (value < high if open_high else value <= high)):
        return
    upper = "" if high is None else f" and {'<' if open_high else '<='} {high:g}"
    raise ValueError(f"{name} must be a number >= {low:g}{upper}, not {value!r}")


@dataclass(frozen=True)
class OptimizerChoice:
    """The optimizer and its options. weight_decay None = the Keras default (none, except
    AdamW's 0.004); ema None = off, else the EMA momentum (e.g. 0.99)."""

    name: str = "sgd"
    momentum: float = 0.0
    nesterov: bool = False
    weight_decay: float | None = None
    ema: float | None = None

    def __post_init__(self) -> None:
        if self.name not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {self.name!r}; use one of "
                             f"{', '.join(OPTIMIZERS)}")
        _number(self.momentum, "momentum", 0.0, 1.0, open_high=True)
        if self.momentum and self.name not in _WITH_MOMENTUM:
            raise ValueError(f"momentum applies to sgd and rmsprop, not {self.name}")
        if not isinstance(self.nesterov, bool):
            raise ValueError(f"nesterov must be true or false, not {self.nesterov!r}")
        if self.nesterov and (self.name != "sgd" or not self.momentum):
            raise ValueError("nesterov applies to sgd with momentum > 0")
        if self.weight_decay is not None:
            _number(self.weight_decay, "weight_decay", 0.0)
        if self.ema is not None:
            _number(self.ema, "ema", 0.0, 1.0, open_high=True)

    def build(self, keras: Any, learning_rate: Any) -> Any:
        """The Keras optimizer; learning_rate is a float or a Keras schedule
        (schedules.keras_learning_rate)."""
        options: dict[str, Any] = {"learning_rate": learning_rate}
        if self.name in _WITH_MOMENTUM:
            options["momentum"] = self.momentum
        if self.nesterov:
            options["nesterov"] = True
        if self.weight_decay is not None:
            options["weight_decay"] = self.weight_decay
        if self.ema is not None:
            options.update(use_ema=True, ema_momentum=self.ema)
        return getattr(keras.optimizers, OPTIMIZERS[self.name])(**options)


def make_loss(keras: Any, label_smoothing: float = 0.0) -> Any:
    """The loss for one-hot labels: the notebook's "categorical_crossentropy" unchanged, or
    Keras's CategoricalCrossentropy with label smoothing e in (0, 1)."""
    _number(label_smoothing, "label_smoothing", 0.0, 1.0, open_high=True)
    if not label_smoothing:
        return "categorical_crossentropy"
    return keras.losses.CategoricalCrossentropy(label_smoothing=label_smoothing)


# -- EMA ---------------------------------------------------------------------------------------


def _ema_pairs(model: Any) -> list[tuple[Any, Any]]:
    """(model variable, its average) for an optimizer with use_ema, else []."""
    optimizer = getattr(model, "optimizer", None)
    optimizer = getattr(optimizer, "inner_optimizer", optimizer)  # LossScaleOptimizer
    if optimizer is None or not getattr(optimizer, "use_ema", False) or not optimizer.built:
        return []
    return [(var, avg) for var, avg in zip(optimizer._trainable_variables,
                                           optimizer._model_variables_moving_average,
                                           strict=True) if avg is not None]


@contextlib.contextmanager
def ema_weights(model: Any) -> Iterator[None]:
    """Inside the block the model's weights are the EMA; after it, exactly the trained ones.

    A no-op for an optimizer without EMA (or not built yet), so callers need not ask.
    """
    pairs = _ema_pairs(model)
    trained = [np.array(var.numpy(), copy=True) for var, _ in pairs]
    for var, avg in pairs:
        var.assign(avg.value)
    try:
        yield
    finally:
        for (var, _), value in zip(pairs, trained, strict=True):
            var.assign(value)


def ema_callback(keras: Any) -> Any:
    """A Keras callback for `fit` with an EMA optimizer (harmless without one).

    Validation, evaluate and predict run on the EMA weights; the trained weights are kept
    through `fit`'s final overwrite, so each per-epoch `fit` continues the trained weights.
    """

    class EmaWeights(keras.callbacks.Callback):  # type: ignore[misc, name-defined]
        def __init__(self) -> None:
            super().__init__()
            self._swap: contextlib.ExitStack | None = None
            self._trained: list[np.ndarray] | None = None

        def _enter(self) -> None:
            if self._swap is None:
                self._swap = contextlib.ExitStack()
                self._swap.enter_context(ema_weights(self.model))

        def _leave(self) -> None:
            if self._swap is not None:
                self._swap.close()
                self._swap = None

        def on_test_begin(self, logs: Any = None) -> None:
            self._enter()

        def on_test_end(self, logs: Any = None) -> None:
            self._leave()

        def on_predict_begin(self, logs: Any = None) -> None:
            self._enter()

        def on_predict_end(self, logs: Any = None) -> None:
            self._leave()

        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            pairs = _ema_pairs(self.model)
            self._trained = [np.array(var.numpy(), copy=True) for var, _ in pairs]

        def on_train_end(self, logs: Any = None) -> None:
            if self._trained is not None:
                for (var, _), value in zip(_ema_pairs(self.model), self._trained, strict=True):
                    var.assign(value)
                self._trained = None

    return EmaWeights()


# -- test-time augmentation --------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class FlipTTA:
    """Accuracy on the images as given and with test-time flip, and both probability arrays."""

    accuracy: float
    flip_accuracy: float
    probabilities: np.ndarray  # softmax on x, (N, classes)
    flip_probabilities: np.ndarray  # (softmax(x) + softmax(flip(x))) / 2


def flip_probabilities(tf: Any, model: Any, images: Any) -> tuple[Any, Any]:
    """(softmax of the images, mean of it and the softmax of their mirror images), float32:
    the maths of test-time flip, for one batch, eagerly or inside a tf.function. A plain call
    of the model, never Keras's `predict`, which under a multiworker strategy gathers across
    workers (cnnspec.training.evaluation scores on the chief alone)."""
    plain = tf.cast(model(images, training=False), tf.float32)
    mirrored = tf.cast(model(tf.reverse(images, axis=[2]), training=False), tf.float32)
    return plain, (plain + mirrored) / 2


def flip_tta(model: Any, images: Any, labels: np.ndarray, batch: int = 256) -> FlipTTA:
    """Evaluate with test-time horizontal flip.

    images: an NHWC array already scaled as the model expects (scored `batch` at a time), or
    a tf.data Dataset of such batches, with or without labels (the pipeline's `test()` or
    `test(labels=False)`; labels in it are ignored). labels: integer classes (N,), in the
    same order. Call inside `ema_weights(model)` to score the EMA weights.
    """
    import tensorflow as tf

    if not isinstance(images, tf.data.Dataset):
        images = tf.data.Dataset.from_tensor_slices(np.asarray(images)).batch(batch)
    if isinstance(images.element_spec, tuple):
        images = images.map(lambda x, *_: x)
    pairs = [flip_probabilities(tf, model, x) for x in images]
    plain = np.concatenate([np.asarray(p) for p, _ in pairs])
    averaged = np.concatenate([np.asarray(a) for _, a in pairs])
    truth = np.asarray(labels)
    return FlipTTA(
        accuracy=float(np.mean(plain.argmax(axis=1) == truth)),
        flip_accuracy=float(np.mean(averaged.argmax(axis=1) == truth)),
        probabilities=plain,
        flip_probabilities=averaged,
    )


# -- early stopping ----------------------------------------------------------------------------


@dataclass(frozen=True)
class EarlyStopping:
    """Stop when `monitor` has not improved by more than min_delta for `patience` epochs.

    mode "auto" minimises a loss and maximises an accuracy.
    """

    patience: int
    monitor: str = "val_loss"
    mode: str = "auto"
    min_delta: float = 0.0

    def __post_init__(self) -> None:
        if isinstance(self.patience, bool) or not isinstance(self.patience, int) \
                or self.patience < 1:
            raise ValueError(f"patience must be a whole number of epochs >= 1, "
                             f"not {self.patience!r}")
        if self.mode not in ("auto", "min", "max"):
            raise ValueError(f"mode must be auto, min or max, not {self.mode!r}")
        if self.mode == "auto" and not self.monitor.endswith(("loss", "accuracy")):
            raise ValueError(f"say mode min or max for {self.monitor!r}")
        _number(self.min_delta, "min_delta", 0.0)

    @property
    def minimise(self) -> bool:
        return self.mode == "min" or (self.mode == "auto" and self.monitor.endswith("loss"))


@dataclass(frozen=True)
class StopDecision:
    """After the last epoch of a history: stop or not, and the best epoch so far (its
    `epoch` number, 1-based) with its value; None before any finite value."""

    stop: bool
    best_epoch: int | None
    best_value: float | None
    epochs_since_best: int


def early_stopping(history: Sequence[Mapping[str, Any]], rule: EarlyStopping) -> StopDecision:
    """Whether to stop after the last row of `history`, as Keras's EarlyStopping would.

    An epoch improves on the best when its value beats it by more than min_delta (a tie is not
    an improvement, so the earliest best epoch is kept). A missing, None or NaN value never
    improves. ValueError if no row has the monitored key (e.g. validation is off).
    """
    if history and not any(rule.monitor in row for row in history):
        raise ValueError(f"early stopping monitors {rule.monitor!r}, which the history does "
                         f"not record")
    best_epoch: int | None = None
    best: float | None = None
    since = 0
    for i, row in enumerate(history):
        value = row.get(rule.monitor)
        finite = value is not None and math.isfinite(value)
        if finite and (best is None or (
                value < best - rule.min_delta if rule.minimise
                else value > best + rule.min_delta)):
            best, best_epoch, since = float(value), int(row.get("epoch", i + 1)), 0
        else:
            since += 1
    return StopDecision(stop=since >= rule.patience, best_epoch=best_epoch, best_value=best,
                        epochs_since_best=since)
