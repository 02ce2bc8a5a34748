"""cnnspec: a small, exact language for convolutional networks.

Public API: `parse`, `load`, `check`, `format_spec`, `to_keras`, and the one error type `SpecError`.
Importing this package does not import TensorFlow; only `to_keras` and training do.
"""

from __future__ import annotations

from typing import Any

from cnnspec.language.errors import SpecError
from cnnspec.language.parse import load, parse

__all__ = ["SpecError", "check", "format_spec", "load", "parse", "to_keras"]
__version__ = "0.1.0"  # the only place: pyproject.toml, `--version` and run records read it


def check(spec: Any, **kwargs: Any) -> Any:
    """Shape-check a spec; see cnnspec.language.checker.check."""
    from cnnspec.language.checker import check as _check

    return _check(spec, **kwargs)


def format_spec(spec: Any) -> str:
    """Canonical text of a spec; see cnnspec.language.format.format_spec."""
    from cnnspec.language.format import format_spec as _format

    return _format(spec)


def to_keras(spec: Any, **kwargs: Any) -> Any:
    """Compile a spec to a Keras model (imports TensorFlow); see cnnspec.backend.keras_model."""
    from cnnspec.backend.keras_model import to_keras as _to_keras

    return _to_keras(spec, **kwargs)
