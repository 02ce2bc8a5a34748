"""frozen.fast_init: the same class as the dataclass generates, only a faster `__init__`.

Each test builds the class twice from one definition, once left to dataclasses and once
given fast_init, and compares what a caller can observe: signature, stored fields, defaults,
__post_init__, equality, hashing, repr, replace, errors, and that assignment still fails.
"""

from __future__ import annotations

import dataclasses
import inspect
from dataclasses import FrozenInstanceError, InitVar, dataclass, field
from typing import ClassVar

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cnnspec.language.frozen import fast_init


def is_fast(cls: type) -> bool:
    """fast_init's __init__ writes through a local `_d` (the instance's __dict__)."""
    return "_d" in cls.__init__.__code__.co_varnames


def node_class() -> type:
    """A frozen node like the IR's: positional, defaulted and keyword-only fields, a class
    variable, and a __post_init__ that derives a field (through object.__setattr__, as the
    IR's do)."""

    @dataclass(frozen=True)
    class Node:
        kind: ClassVar[str] = "node"
        width: int
        rate: float = 0.5
        tags: tuple[str, ...] = ()
        span: object = field(default=None, kw_only=True, compare=False)
        area: int = field(default=0, kw_only=True)

        def __post_init__(self) -> None:
            object.__setattr__(self, "area", self.width * self.width)

    return Node


def test_fast_init_replaces_the_generated_init() -> None:
    plain, fast = node_class(), fast_init(node_class())
    assert fast.__init__ is not plain.__init__
    assert is_fast(fast) and not is_fast(plain)
    assert plain.__init__.__qualname__ == fast.__init__.__qualname__
    assert fast.__init__.__qualname__ == "node_class.<locals>.Node.__init__"


def test_same_signature_and_type_hints() -> None:
    plain, fast = node_class(), fast_init(node_class())
    assert inspect.signature(fast.__init__) == inspect.signature(plain.__init__)
    assert fast.__init__.__annotations__ == plain.__init__.__annotations__


@given(width=st.integers(-5, 50), rate=st.floats(allow_nan=False),
       tags=st.lists(st.text(max_size=3)).map(tuple), span=st.none() | st.integers())
def test_same_instances(width: int, rate: float, tags: tuple[str, ...], span: object) -> None:
    plain_cls, fast_cls = node_class(), fast_init(node_class())
    for args, kwargs in [((width,), {}), ((width, rate), {"span": span}),
                         ((width,), {"tags": tags, "rate": rate, "area": 7})]:
        a, b = plain_cls(*args, **kwargs), fast_cls(*args, **kwargs)
        assert vars(a) == vars(b)  # every field stored, __post_init__ run (area = width²)
        assert b.area == width * width
        assert repr(a) == repr(b)  # (both classes have the same qualified name)
        assert hash(a) == hash(b)
        assert b == fast_cls(*args, **{**kwargs, "span": "elsewhere"})  # span: compare=False
        assert dataclasses.replace(b, width=width + 1).area == (width + 1) ** 2


def test_same_errors_and_still_frozen() -> None:
    fast = fast_init(node_class())
    with pytest.raises(TypeError):
        fast()  # width is required
    with pytest.raises(TypeError):
        fast(1, 0.5, (), None)  # span is keyword-only
    with pytest.raises(TypeError):
        fast(1, colour="red")
    node = fast(3)
    with pytest.raises(FrozenInstanceError):
        node.width = 4
    assert node.kind == "node" and "kind" not in vars(node)  # a ClassVar is not a field


def unsupported_classes() -> list[type]:
    @dataclass(frozen=True, slots=True)
    class Slotted:
        x: int

    @dataclass(frozen=True)
    class WithInitVar:
        x: int
        scale: InitVar[int] = 1

    @dataclass(frozen=True)
    class WithFactory:
        xs: list[int] = field(default_factory=list)

    @dataclass(frozen=True)
    class NotInInit:
        x: int
        y: int = field(default=0, init=False)

    @dataclass
    class Mutable:
        x: int

    class NotADataclass:
        pass

    return [Slotted, WithInitVar, WithFactory, NotInInit, Mutable, NotADataclass]


@pytest.mark.parametrize("cls", unsupported_classes(), ids=lambda c: c.__name__)
def test_unsupported_classes_keep_their_init(cls: type) -> None:
    before = cls.__init__
    assert fast_init(cls) is cls
    assert cls.__init__ is before


def test_without_dataclasses_private_markers_every_class_keeps_its_init(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A Python whose dataclasses has no `_FIELD` marker: slower, not an import error."""
    cls = node_class()  # (this Python's dataclasses needs the marker to build the class)
    monkeypatch.delattr(dataclasses, "_FIELD")
    before = cls.__init__
    assert fast_init(cls) is cls and cls.__init__ is before and not is_fast(cls)
    assert cls(2).area == 4


def test_the_ir_nodes_have_it() -> None:
    """What the parser builds by the thousand does get the faster __init__."""
    from cnnspec.language import ir
    from cnnspec.language.errors import Span

    for cls in (ir.Conv, ir.Dense, ir.Dropout, Span):
        assert is_fast(cls), cls
