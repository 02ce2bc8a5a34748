"""cnnspec: a small, exact language for convolutional networks.

Public API: `parse`, `load`, `check`, `format_spec`, `to_keras`, and the one error type `SpecError`.
Importing this package does not import TensorFlow; only `to_keras` and training do.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cnnspec.language.errors import SpecError
    from cnnspec.language.parse import load, parse

__all__ = ["SpecError", "check", "format_spec", "load", "parse", "to_keras"]
__version__ = "0.1.0"  # the only place: pyproject.toml, `--version` and run records read it

# Imported on first use, not with the package: `import cnnspec.cli.entry` (the command's entry
# point) must cost next to nothing, so a Ctrl-C while the command line loads is caught there.
_LAZY = {"SpecError": "cnnspec.language.errors", "load": "cnnspec.language.parse",
         "parse": "cnnspec.language.parse"}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'cnnspec' has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value  # the next use finds it without coming here
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


def check(spec: Any, **kwargs: Any) -> Any:
    """Shape-check a spec; see cnnspec.language.checker.check."""
    _a_spec("check", spec)
    from cnnspec.language.checker import check as _check

    return _check(spec, **_budget(kwargs))


def format_spec(spec: Any) -> str:
    """Canonical text of a spec; see cnnspec.language.format.format_spec."""
    _a_spec("format_spec", spec)
    from cnnspec.language.format import format_spec as _format

    return _format(spec)


def to_keras(spec: Any, **kwargs: Any) -> Any:
    """Compile a spec to a Keras model (imports TensorFlow); see cnnspec.backend.keras_model."""
    _a_spec("to_keras", spec)  # before TensorFlow is imported: a slip costs no seconds
    _budget(kwargs)
    from cnnspec.backend.keras_model import to_keras as _to_keras

    return _to_keras(spec, **kwargs)


def _a_spec(caller: str, spec: Any) -> None:
    """spec, or TypeError when it is not one: passing the text itself is the likely slip, and
    without this it failed deep inside with an AttributeError about a method of str."""
    from cnnspec.language.ir import Spec

    if not isinstance(spec, Spec):
        how = (f"; parse the text first: cnnspec.{caller}(cnnspec.parse(text))"
               if isinstance(spec, str) else "")
        raise TypeError(f"{caller}() takes a Spec from cnnspec.parse or cnnspec.load, "
                        f"not {type(spec).__name__}{how}")


def _budget(kwargs: dict[str, Any]) -> dict[str, Any]:
    """kwargs, or an error when its max_params is no parameter budget (a whole number >= 1):
    NaN would turn the budget off unnoticed, -1 refuse every model."""
    budget = kwargs.get("max_params", 1)
    if isinstance(budget, bool) or not isinstance(budget, int):
        raise TypeError(f"max_params must be a whole number, not {budget!r}")
    if budget < 1:
        raise ValueError(f"max_params must be at least 1, not {budget}")
    return kwargs
