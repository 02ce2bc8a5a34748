"""Spec to an ordinary Keras model. The only compile-time module that imports TensorFlow.

Layers are built from the checker's rows, so the model has exactly the layers, order and names
that `cnnspec summary` printed; nothing is decided here that the checker did not decide.
"""

from __future__ import annotations

import os
from typing import Any

from cnnspec import ir
from cnnspec.checker import DEFAULT_MAX_PARAMS, Report, check
from cnnspec.layers import kind_of


def import_keras() -> Any:
    """Keras with TensorFlow's start-up chatter turned down."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras

    return keras


def build_model(report: Report, keras: Any | None = None) -> Any:
    """A `keras.Sequential` from a checked report; layer names are the report's names."""
    keras = keras or import_keras()
    model = keras.Sequential(name=_model_name(report.name))
    model.add(keras.Input(shape=report.input_shape, name="input"))
    for row in report.rows:
        model.add(kind_of(row.layer).keras(row.layer, keras, row.keras_name))
    return model


def to_keras(spec: ir.Spec, max_params: int = DEFAULT_MAX_PARAMS) -> Any:
    """Check a spec (raising SpecError on problems), then build its Keras model."""
    return build_model(check(spec, max_params=max_params))


def _model_name(name: str) -> str:
    cleaned = "".join(c if c.isascii() and (c.isalnum() or c in "_-.") else "_" for c in name)
    # TensorFlow refuses a root scope name that does not start with [A-Za-z0-9.] (`]a`, `_x`)
    return cleaned if cleaned[:1].isalnum() or cleaned[:1] == "." else "cnnspec" + cleaned
