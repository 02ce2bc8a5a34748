"""The Keras side of a run: TensorFlow imported lazily, the model built and compiled.

Only this module (through cnnspec.backend.keras_model) imports TensorFlow for training, and
only when training starts, so parse/check/summary and the CLI's flag checks stay instant.
"""

from __future__ import annotations

import math
from typing import Any

from cnnspec.language.checker import Report
from cnnspec.language.settings import TrainSettings
from cnnspec.training.recipe import OptimizerChoice, make_loss
from cnnspec.training.schedules import (
    Constant,
    Horizon,
    Schedule,
    keras_learning_rate,
    make_schedule,
)

_MIXED_POLICY = {"bf16": "mixed_bfloat16"}


def dtype_policy(precision: str) -> str:
    """The Keras dtype policy a precision builds its layers under (the final softmax aside)."""
    return _MIXED_POLICY.get(precision, "float32")


def import_tf() -> tuple[Any, Any]:
    """(tensorflow, keras), imported now: the first call costs seconds, later ones nothing.

    Keras also learns cnnspec's learning-rate schedule class here, so a checkpoint or
    model.keras of a scheduled run loads wherever training code loads one."""
    from cnnspec.backend.keras_model import import_keras
    from cnnspec.training.schedules import register_keras_objects

    keras = import_keras()
    import tensorflow as tf

    register_keras_objects()

    return tf, keras


def learning_rate_schedule(settings: TrainSettings) -> Schedule:
    """The run's learning rate as a cnnspec.training.schedules schedule: the spec's schedule
    (`lr=onecycle(.4,warm=.2)`), or a constant for a plain rate (`lr=.01`)."""
    lr = settings.lr
    if isinstance(lr, int | float):
        return Constant(lr=float(lr))
    return make_schedule(lr.kind, **lr.params())


def horizon_of(settings: TrainSettings, train_images: int) -> Horizon:
    """Steps per epoch (the last batch may be short) and epochs: what a schedule spans."""
    return Horizon(math.ceil(train_images / settings.batch), settings.epochs)


def make_optimizer(keras: Any, s: TrainSettings, horizon: Horizon | None = None) -> Any:
    """The Keras optimizer the settings name, with their momentum, Nesterov, decoupled weight
    decay and EMA (cnnspec.training.recipe.OptimizerChoice), stepping the learning-rate
    schedule over `horizon`. A plain rate is handed to Keras as the float it always was, so
    runs without a schedule keep their numbers. ValueError for a combination that cannot
    train (momentum with adam)."""
    if isinstance(s.lr, int | float):
        rate: Any = float(s.lr)
    elif horizon is None:
        raise ValueError("a learning-rate schedule needs the run's horizon (steps, epochs)")
    else:
        rate = keras_learning_rate(learning_rate_schedule(s), horizon)
    choice = OptimizerChoice(name=s.optimizer, momentum=s.momentum, nesterov=s.nesterov,
                             weight_decay=s.weight_decay, ema=s.ema)
    return choice.build(keras, rate)


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
                  steps_per_execution: int, horizon: Horizon | None = None) -> None:
    """The notebook's compile: its loss on one-hot labels (with the settings' label
    smoothing, if any), the optimizer, accuracy. A bf16 model's L2 penalties under plain SGD
    are then applied inside the update step (cnnspec.backend.l2_penalty.fold_l2_into_sgd)."""
    from cnnspec.backend.l2_penalty import fold_l2_into_sgd

    model.compile(
        optimizer=make_optimizer(keras, settings, horizon),
        # "categorical_crossentropy", as in the notebook, unless label smoothing is asked for
        loss=make_loss(keras, settings.label_smoothing),
        metrics=["accuracy"],
        steps_per_execution=steps_per_execution,
    )
    fold_l2_into_sgd(model)  # bf16 layers' L2 under plain SGD: applied in the update step
