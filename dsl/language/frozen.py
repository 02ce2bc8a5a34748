"""A faster `__init__` for the frozen dataclasses the parser and checker build by the thousand.

A frozen dataclass's generated `__init__` stores each field with `object.__setattr__(self,
name, value)`, a call per field: building a Conv node cost about twice as long as the same
class without `frozen`. `fast_init` gives such a class an `__init__` with the very same
signature (positional and keyword-only fields, defaults, `__post_init__`) that writes the
fields straight into the instance's `__dict__`, which is all `object.__setattr__` does for
them. Everything else stays the dataclass's own: equality, hashing, repr, `replace`, and
assignment after construction still raises FrozenInstanceError.

Classes it cannot give the same behaviour (slots, InitVar, init=False fields, default
factories) keep the generated `__init__`, and so does every class on a Python whose
`dataclasses` lacks the private markers `_supported` reads (tests/test_frozen.py).
"""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

__all__ = ["fast_init"]

T = TypeVar("T", bound=type)


def _supported(cls: type) -> bool:
    if not (dataclasses.is_dataclass(cls) and cls.__dataclass_params__.frozen
            and cls.__dataclass_params__.init and "__slots__" not in cls.__dict__):
        return False
    # Telling an InitVar from a field takes dataclasses' private markers; a Python without
    # them gets the generated __init__ (slower, never wrong) rather than an import error.
    plain = getattr(dataclasses, "_FIELD", None)
    classvar = getattr(dataclasses, "_FIELD_CLASSVAR", None)
    if plain is None or classvar is None:
        return False
    all_fields = cls.__dataclass_fields__.values()
    kinds = [getattr(f, "_field_type", None) for f in all_fields]
    if any(kind is not plain and kind is not classvar for kind in kinds):
        return False  # an InitVar, or a field this version marks some other way
    return all(f.init and f.default_factory is dataclasses.MISSING
               for f in dataclasses.fields(cls))


def fast_init(cls: T) -> T:
    """Give a frozen dataclass the faster `__init__` (see the module's docstring); a class it
    does not support is returned unchanged."""
    if not _supported(cls):
        return cls
    fields = dataclasses.fields(cls)
    env: dict[str, Any] = {}
    positional, keyword = [], []
    for f in fields:
        if f.default is dataclasses.MISSING:
            param = f.name
        else:
            env[f"_default_{f.name}"] = f.default
            param = f"{f.name}=_default_{f.name}"
        (keyword if f.kw_only else positional).append(param)
    params = ", ".join(["self", *positional, *(["*", *keyword] if keyword else [])])
    body = ["    _d = self.__dict__"] + [f"    _d[{f.name!r}] = {f.name}" for f in fields]
    if hasattr(cls, "__post_init__"):
        body.append("    self.__post_init__()")
    source = f"def __init__({params}):\n" + "\n".join(body) + "\n"
    exec(source, env)  # noqa: S102  (generated from the class's own field names, as dataclasses does)
    init = env["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    init.__module__ = cls.__module__
    init.__doc__ = cls.__init__.__doc__
    init.__annotations__ = dict(cls.__init__.__annotations__)  # inspect.signature, get_type_hints
    cls.__init__ = init  # type: ignore[misc]
    return cls
