"""The Keras side of a run: TensorFlow imported lazily, the model built and compiled.

Only this module (through cnnspec.backend.keras_model) imports TensorFlow for training, and
only when training starts, so parse/check/summary and the CLI's flag checks stay instant.
"""

from __future__ import annotations

from typing import Any

from cnnspec.language.checker import Report
from cnnspec.language.settings import TrainSettings

_MIXED_POLICY = {"bf16": "mixed_bfloat16"}


def import_tf() -> tuple[Any, Any]:
    """(tensorflow, keras), imported now: the first call costs seconds, later ones nothing."""
    from cnnspec.backend.keras_model import import_keras

    keras = import_keras()
    import tensorflow as tf

    return tf, keras


def make_optimizer(keras: Any, s: TrainSettings) -> Any:
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


def build_training_model(report: Report, keras: Any, precision: str = "float32", *,
                         prepare: bool = True) -> Any:
    """The spec's Keras model under the given precision (not compiled).

    "bf16" builds every layer under Keras's mixed_bfloat16 policy (bfloat16 compute, float32
    weights) except the final softmax, which stays float32 so probabilities and the loss are
    computed in full precision. The global policy is restored afterwards. A bf16 model also
    gets the training-only speed-ups (cnnspec.backend.keras_model.prepare_training: fused batch
    norms, one-pass L2 penalties); load_checkpoint applies the same to a resumed model, so a
    resumed run computes exactly what an uninterrupted one does. `prepare=False` leaves them
    out (bench/step_profile.py times the model before and after them).
    """
    from cnnspec.backend.keras_model import build_model, prepare_training

    if precision == "float32":
        return build_model(report, keras)
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(_MIXED_POLICY[precision])
    try:
        model = build_model(report, keras)
    finally:
        keras.config.set_dtype_policy(previous)
    model.layers[-1].dtype_policy = "float32"  # the implicit classifier softmax
    return prepare_training(model) if prepare else model


def compile_model(model: Any, keras: Any, settings: TrainSettings,
                  steps_per_execution: int) -> None:
    """The notebook's compile: its loss on one-hot labels, the optimizer, accuracy."""
    model.compile(
        optimizer=make_optimizer(keras, settings),
        loss=settings.loss,  # "categorical_crossentropy", as in the notebook
        metrics=["accuracy"],
        steps_per_execution=steps_per_execution,
    )
