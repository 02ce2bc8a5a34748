"""Spec to an ordinary Keras model. The only compile-time module that imports TensorFlow.

Layers are built from the checker's rows, so the model has exactly the layers, order and names
that `cnnspec summary` printed; nothing is decided here that the checker did not decide.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
from collections.abc import Iterator
from typing import Any

from cnnspec.language import ir
from cnnspec.language.checker import DEFAULT_MAX_PARAMS, Report, check
from cnnspec.language.layers import kind_of

# `cnnspec train --verbose` (or this variable set to 1) keeps TensorFlow's own log lines.
VERBOSE_ENV = "CNNSPEC_TF_LOGS"


def tf_logs_wanted() -> bool:
    """Whether the user asked to see TensorFlow's log lines (--verbose, or $CNNSPEC_TF_LOGS=1)."""
    return os.environ.get(VERBOSE_ENV, "").strip().lower() in ("1", "true", "yes")


def show_tf_logs() -> None:
    """Let TensorFlow's log lines through (for --verbose); call before the first import."""
    os.environ[VERBOSE_ENV] = "1"
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "0"


@contextlib.contextmanager
def _stderr_fd_silenced() -> Iterator[None]:
    """Send file descriptor 2 to a temporary file for the body; replay it if the body fails.

    Why at the descriptor, not sys.stderr: TensorFlow 2.21 writes its start-up lines (oneDNN,
    "Could not find cuda drivers", "All log messages before absl::InitializeLog()") from C++
    before absl logging is initialised, so TF_CPP_MIN_LOG_LEVEL cannot stop them; they go
    straight to fd 2. Nothing numerical is switched off (oneDNN stays on): only the lines are
    hidden. If the import fails, everything it wrote is put back on stderr before the error
    propagates, so a real problem (a missing library, a bad install) is still explained; a
    Ctrl-C during the import is not a problem, and replaying the lines then only printed
    TensorFlow's noise above "interrupted".
    """
    with contextlib.suppress(AttributeError, ValueError, OSError):
        sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no fd 2 at all (a daemon): nothing to hide
        yield
        return
    try:
        with tempfile.TemporaryFile() as sink:
            os.dup2(sink.fileno(), 2)
            try:
                yield
            except Exception:  # not KeyboardInterrupt: Ctrl-C is no problem to explain
                with contextlib.suppress(AttributeError, ValueError, OSError):
                    sys.stderr.flush()
                os.dup2(saved, 2)
                sink.seek(0)
                with contextlib.suppress(OSError):
                    os.write(2, sink.read())
                raise
            finally:
                with contextlib.suppress(AttributeError, ValueError, OSError):
                    sys.stderr.flush()
                os.dup2(saved, 2)
    finally:
        os.close(saved)


def import_keras() -> Any:
    """Keras (on TensorFlow) without TensorFlow's start-up log lines, unless they are wanted.

    The lines are noise for every user of `train`, `evaluate` and `to_keras` on a CPU machine;
    `--verbose` ($CNNSPEC_TF_LOGS=1) keeps them. Later C++ log lines are filtered by
    TF_CPP_MIN_LOG_LEVEL=3 (a user's own setting is respected), and absl's and TensorFlow's
    Python loggers are limited to errors: a sweep builds a new model per variant, and
    TensorFlow's logger warned "triggered tf.function retracing" between its progress lines.
    """
    if "keras" in sys.modules and "tensorflow" in sys.modules:
        import keras

        return keras
    if tf_logs_wanted():
        import keras

        return keras
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    with _stderr_fd_silenced():
        import keras  # imports TensorFlow, which prints
    with contextlib.suppress(ImportError):
        from absl import logging as absl_logging

        absl_logging.set_verbosity(absl_logging.ERROR)
    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    return keras


def build_model(report: Report, keras: Any | None = None) -> Any:
    """A Keras model from a checked report; layer names are the report's names.

    A straight stack is a `keras.Sequential`, exactly as before graphs existed (so every
    seed spec and run record keeps its model); a spec with merges is a functional
    `keras.Model` wired from each row's inputs. Both use only built-in layers (Add,
    Concatenate, never Lambda), so they save and load as `.keras` in safe mode.
    """
    keras = keras or import_keras()
    if report.is_graph:
        return _functional(report, keras)
    model = keras.Sequential(name=_model_name(report.name))
    model.add(keras.Input(shape=report.input_shape, name="input"))
    for row in report.rows:
        model.add(kind_of(row.layer).keras(row.layer, keras, row.keras_name))
    return model


_MERGE_LAYERS = {"add": lambda keras, name: keras.layers.Add(name=name),
                 "concat": lambda keras, name: keras.layers.Concatenate(axis=-1, name=name)}


def _functional(report: Report, keras: Any) -> Any:
    inputs = keras.Input(shape=report.input_shape, name="input")
    tensors = {"input": inputs}
    x = inputs
    for row in report.rows:
        if isinstance(row.layer, ir.Merge):
            layer = _MERGE_LAYERS[row.layer.op](keras, row.keras_name)
            x = layer([tensors[name] for name in row.inputs])
        else:
            layer = kind_of(row.layer).keras(row.layer, keras, row.keras_name)
            x = layer(tensors[row.inputs[0]] if row.inputs else x)
        tensors[row.keras_name] = x
    return keras.Model(inputs, x, name=_model_name(report.name))


def to_keras(spec: ir.Spec, max_params: int = DEFAULT_MAX_PARAMS) -> Any:
    """Check a spec (raising SpecError on problems), then build its Keras model."""
    return build_model(check(spec, max_params=max_params))


def _model_name(name: str) -> str:
    cleaned = "".join(c if c.isascii() and (c.isalnum() or c in "_-.") else "_" for c in name)
    # TensorFlow refuses a root scope name that does not start with [A-Za-z0-9.] (`]a`, `_x`)
    return cleaned if cleaned[:1].isalnum() or cleaned[:1] == "." else "cnnspec" + cleaned


def prepare_training(model: Any) -> Any:
    """`model` with the speed-ups that exist only while it trains in this process; returns it.

    Call it on a model built for training and on one loaded from a checkpoint (a saved model is
    plain Keras, so it loads without them). For bf16 layers only: batch norms train through
    TensorFlow's fused kernel (cnnspec.backend.fused_bn), L2 penalties take one pass each way
    (cnnspec.backend.l2_penalty; under plain SGD their gradient is folded into the update step)
    and dropout draws 8 or 16 random bits per value (cnnspec.backend.fast_dropout). Nothing
    changes for float32 layers, in the model's config or in what `model.save` writes, so
    `keras.models.load_model` reads the file with or without cnnspec.
    """
    from cnnspec.backend.fast_dropout import speed_up_dropouts
    from cnnspec.backend.fused_bn import fuse_batch_norms
    from cnnspec.backend.l2_penalty import fold_l2_into_sgd, speed_up_l2_penalties

    fuse_batch_norms(model)
    speed_up_l2_penalties(model)
    fold_l2_into_sgd(model)  # a compiled model's (a checkpoint's); compile_model does a new one's
    speed_up_dropouts(model)
    return model


# The compute dtypes whose layers prepare_training rewrites (fused batch norm, one-pass L2,
# dropout from random bits): only bf16 layers; float32 ones stay the notebook's exactly.
BF16_DTYPES = ("bfloat16",)


def all_layers(model: Any) -> list[Any]:
    """Every layer of `model`, nested models' layers included, in order."""
    found = []
    for layer in getattr(model, "layers", []):
        found.append(layer)
        found += all_layers(layer)
    return found
