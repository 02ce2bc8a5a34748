"""The typed IR: frozen dataclasses every later stage reads, so no stage ever looks at text again.

A spec keeps its line structure (statements, comments, blank lines) so that `fmt` can rewrite a
file without losing anything; `layers()` flattens it into the sequence of layers the checker and
the Keras backend walk. Every node carries the span of the text it came from; spans take no part
in equality, so `parse(format(spec)) == spec` compares meaning, not layout.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, fields, is_dataclass
from typing import Any, ClassVar

from cnnspec.language.errors import Span
from cnnspec.language.frozen import fast_init

Shape = tuple[int, ...]
Value = int | float | str | tuple[int, ...]


def _span() -> Any:
    return field(default=None, compare=False, repr=False, kw_only=True)


# -- layers ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Layer:
    """Base of every layer node. `text` is how the layer was written (for names and messages)."""

    span: Span | None = _span()
    weighted: ClassVar[bool] = False


@dataclass(frozen=True)
class Conv(Layer):
    """2-D convolution. kernel, stride and dilation are (rows, cols); padding is same or valid;
    bias=False drops the bias (a conv followed by BN does not need one)."""

    filters: int
    kernel: tuple[int, int] = (3, 3)
    stride: tuple[int, int] = (1, 1)
    padding: str = "same"
    l1: float | None = None
    l2: float | None = None
    dilation: tuple[int, int] = (1, 1)
    bias: bool = True
    weighted: ClassVar[bool] = True


@dataclass(frozen=True)
class DepthwiseConv(Layer):
    """Depthwise convolution (Keras DepthwiseConv2D): each input channel gets `multiplier`
    filters of its own; C channels in, C×multiplier out. Penalties go on the depthwise kernel."""

    kernel: tuple[int, int] = (3, 3)
    stride: tuple[int, int] = (1, 1)
    padding: str = "same"
    multiplier: int = 1
    dilation: tuple[int, int] = (1, 1)
    bias: bool = True
    l1: float | None = None
    l2: float | None = None
    weighted: ClassVar[bool] = True


@dataclass(frozen=True)
class SeparableConv(Layer):
    """Depthwise then 1×1 pointwise convolution in one layer (Keras SeparableConv2D).
    Penalties go on both kernels."""

    filters: int
    kernel: tuple[int, int] = (3, 3)
    stride: tuple[int, int] = (1, 1)
    padding: str = "same"
    multiplier: int = 1
    dilation: tuple[int, int] = (1, 1)
    bias: bool = True
    l1: float | None = None
    l2: float | None = None
    weighted: ClassVar[bool] = True


@dataclass(frozen=True)
class MaxPool(Layer):
    """Max pooling with Keras `MaxPool2D(size, stride)` semantics; stride defaults to size."""

    size: int = 2
    stride: int = 2
    padding: str = "valid"


@dataclass(frozen=True)
class AvgPool(Layer):
    """Average pooling, same arithmetic as MaxPool."""

    size: int = 2
    stride: int = 2
    padding: str = "valid"


@dataclass(frozen=True)
class GlobalAvgPool(Layer):
    """Average over the spatial axes: H×W×C becomes C."""


@dataclass(frozen=True)
class GlobalMaxPool(Layer):
    """Maximum over the spatial axes: H×W×C becomes C."""


@dataclass(frozen=True)
class BatchNorm(Layer):
    """Batch normalisation over channels: 2 trainable and 2 non-trainable numbers per channel.
    momentum and epsilon are Keras's (defaults 0.99 and 0.001)."""

    momentum: float = 0.99
    epsilon: float = 0.001


@dataclass(frozen=True)
class Rescale(Layer):
    """Multiply by a constant (Keras Rescaling): ResNet-9's ×0.125 before its softmax."""

    scale: float = 1.0


@dataclass(frozen=True)
class Activation(Layer):
    """A separate activation layer; fn is the Keras activation name."""

    fn: str = "relu"


@dataclass(frozen=True)
class Dropout(Layer):
    """Dropout with rate in [0, 1)."""

    rate: float = 0.5


@dataclass(frozen=True)
class Flatten(Layer):
    """Flatten to a vector. bar=True when written as `|` (the trunk/head boundary)."""

    bar: bool = False


@dataclass(frozen=True)
class Dense(Layer):
    """Fully connected layer, on a flat input; bias=False drops the bias."""

    units: int
    l1: float | None = None
    l2: float | None = None
    bias: bool = True
    weighted: ClassVar[bool] = True


# -- structure ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Group:
    """Parenthesised items, written `( ... )`."""

    items: tuple[Item, ...]
    span: Span | None = _span()


@dataclass(frozen=True)
class Repeat:
    """An item written `item xN`: the item N times in a row."""

    body: Item
    times: int
    span: Span | None = _span()


@dataclass(frozen=True)
class BlockRef:
    """Use of a block defined by `let NAME = ...`, or `let NAME(params) = ...`.

    For a block with parameters, args holds the arguments as written (canonical text, e.g.
    `64`, `s=2`) and items the block's body built with them, once per use: each use is a
    different network part. For a block without parameters items is None and the body is
    the `let` line's (looked up by name), as it always was.
    """

    name: str
    span: Span | None = _span()
    args: tuple[str, ...] = ()
    items: tuple[Item, ...] | None = None


@dataclass(frozen=True)
class TemplateLayer:
    """A layer or block use inside a block with parameters that refers to them: `conv{f}`,
    `conv64(s={s})`, `unit({f})`. Kept as canonical text, for `fmt`; each use of the block
    builds it with that use's values (into BlockRef.items), so no later stage sees one."""

    text: str
    span: Span | None = _span()


@dataclass(frozen=True)
class Alternatives:
    """A sweep point such as `drop{.25,.5}`: one layer per alternative.

    text is the canonical spelling, key the readable name used in variant names (`drop`),
    labels the spelling of each alternative (`.25`, `.5`).
    """

    text: str
    key: str
    labels: tuple[str, ...]
    options: tuple[Layer, ...]
    span: Span | None = _span()


@dataclass(frozen=True)
class Merge:
    """Parallel branches from one input, merged: op "add" (Keras Add) or "concat" (Keras
    Concatenate, along channels). With one branch the other term is the input itself:
    `add(f)` is the residual input + f(input)."""

    op: str
    branches: tuple[tuple[Item, ...], ...]
    span: Span | None = _span()


# Markers in Spec.flow(): the walk enters a merge, moves to its next branch, or leaves it.
@dataclass(frozen=True)
class Fork:
    """Flow marker: a merge starts; its branches all read the current tensor."""

    merge: Merge


@dataclass(frozen=True)
class NextBranch:
    """Flow marker: the previous branch of the merge ended; the next starts from the fork."""

    merge: Merge


@dataclass(frozen=True)
class Join:
    """Flow marker: the last branch ended; the merge combines the branches' outputs."""

    merge: Merge


@dataclass(frozen=True)
class Optional:
    """A sweep point `item?`: variants with and without the item."""

    body: Item
    span: Span | None = _span()


Item = Layer | Group | Repeat | BlockRef | Alternatives | Optional | TemplateLayer | Merge

# -- statements --------------------------------------------------------------------------------


@dataclass(frozen=True)
class InputDecl:
    """`input HxWxC`: the shape of one image."""

    shape: Shape
    span: Span | None = _span()


@dataclass(frozen=True)
class ClassesDecl:
    """`classes N`: the implicit classifier `denseN softmax` closes the network."""

    count: int
    span: Span | None = _span()


@dataclass(frozen=True)
class Setting:
    """One `key=value` of a `train` line. choices holds sweep alternatives, else is empty."""

    key: str
    value: Value
    choices: tuple[Value, ...] = ()
    span: Span | None = _span()


@dataclass(frozen=True)
class TrainDecl:
    """`train key=value ...`: training settings that make the file a complete experiment."""

    settings: tuple[Setting, ...]
    span: Span | None = _span()


@dataclass(frozen=True)
class BlockParam:
    """One parameter of `let NAME(f, s=1) = ...`: its name and default (canonical text; None
    when every use must give it)."""

    name: str
    default: str | None = None
    span: Span | None = _span()


@dataclass(frozen=True)
class LetDecl:
    """`let NAME = items`, or `let NAME(params) = items`: a reusable block. In a block with
    parameters, the items that refer to them are TemplateLayers."""

    name: str
    items: tuple[Item, ...]
    span: Span | None = _span()
    params: tuple[BlockParam, ...] = ()


@dataclass(frozen=True)
class LayerLine:
    """A line of layers; the network is all layer lines read in order."""

    items: tuple[Item, ...]
    span: Span | None = _span()


Statement = InputDecl | ClassesDecl | TrainDecl | LetDecl | LayerLine


@dataclass(frozen=True)
class Line:
    """One source line: a statement, a comment, both, or neither (a blank line)."""

    statement: Statement | None = None
    comment: str | None = None


class _OverLimit(Exception):
    """Spec.flow_within passed its limit: the walk stops there."""


DEFAULT_INPUT: Shape = (32, 32, 3)
DEFAULT_CLASSES = 10


@dataclass(frozen=True)
class Spec:
    """A whole .cnn file. name is the file stem (used for run folders), not part of equality."""

    lines: tuple[Line, ...]
    name: str = field(default="spec", compare=False)
    source: str | None = field(default=None, compare=False, repr=False)
    filename: str | None = field(default=None, compare=False, repr=False)

    def statements(self) -> tuple[Statement, ...]:
        """The lines' statements, in order. Kept on the (frozen) spec once worked out: `check`
        asks for them several times (settings, blocks, body, sweeps)."""
        try:
            return self.__dict__["_statements"]  # type: ignore[no-any-return]
        except KeyError:
            found = self.__dict__["_statements"] = tuple(
                ln.statement for ln in self.lines if ln.statement is not None)
            return found

    @property
    def input_shape(self) -> Shape:
        for line in self.lines:
            if isinstance(line.statement, InputDecl):
                return line.statement.shape
        return DEFAULT_INPUT

    @property
    def classes(self) -> int:
        for line in self.lines:
            if isinstance(line.statement, ClassesDecl):
                return line.statement.count
        return DEFAULT_CLASSES

    @property
    def settings(self) -> tuple[Setting, ...]:
        decls = [st for st in self.statements() if isinstance(st, TrainDecl)]
        return tuple(s for st in decls for s in st.settings)

    @property
    def blocks(self) -> dict[str, tuple[Item, ...]]:
        return {s.name: s.items for s in self.statements() if isinstance(s, LetDecl)}

    @property
    def body(self) -> tuple[Item, ...]:
        """The network's items, all layer lines joined in order (blocks not yet inlined)."""
        return tuple(i for s in self.statements() if isinstance(s, LayerLine) for i in s.items)

    def layers(self) -> tuple[Layer, ...]:
        """The network as a flat sequence of layers: blocks inlined, repeats unrolled.

        Sweep points must be expanded first (cnnspec.language.sweep); here they raise ValueError.
        """
        blocks = self.blocks
        out: list[Layer] = []

        def walk(items: Iterable[Item]) -> None:
            for item in items:
                if isinstance(item, Layer):
                    out.append(item)
                elif isinstance(item, Group):
                    walk(item.items)
                elif isinstance(item, Repeat):
                    for _ in range(item.times):
                        walk((item.body,))
                elif isinstance(item, BlockRef):
                    walk(blocks[item.name] if item.items is None else item.items)
                elif isinstance(item, Merge):
                    for branch in item.branches:
                        walk(branch)
                else:
                    raise ValueError("spec has sweep alternatives; expand it into variants first")

        walk(self.body)
        return tuple(out)

    def layers_with_uses(self) -> tuple[tuple[Layer, Span | None], ...]:
        """`layers()`, each with the span of the block use it came through (None when written
        in the network directly): `unit64` on line 9 for the conv64 of `let unit64 = ...` on
        line 7. With nested blocks it is the outermost use, the one in the network's lines."""
        return tuple(step for step in self.flow() if isinstance(step[0], Layer))

    def is_graph(self) -> bool:
        """Whether the network has merges (a functional model) or is a straight stack."""
        def merges(items: Iterable[Item]) -> bool:
            for item in items:
                if isinstance(item, Merge):
                    return True
                if isinstance(item, Group) and merges(item.items):
                    return True
                if isinstance(item, Repeat | Optional) and merges((item.body,)):
                    return True
                if isinstance(item, BlockRef) and merges(
                        self.blocks.get(item.name, ()) if item.items is None else item.items):
                    return True
            return False

        return merges(self.body)

    def flow(self) -> tuple[tuple[Layer | Fork | NextBranch | Join, Span | None], ...]:
        """The network in the order the checker walks it: every layer (blocks inlined, repeats
        unrolled) with its block use as in layers_with_uses, and around each merge's branches
        the markers Fork, NextBranch (between branches) and Join."""
        steps = self.flow_within(None)
        assert steps is not None  # no limit: never cut short
        return steps

    def flow_within(
        self, limit: int | None
    ) -> tuple[tuple[Layer | Fork | NextBranch | Join, Span | None], ...] | None:
        """`flow()`, or None as soon as the layers and merges passed (what `layer_count`
        counts) exceed limit: the checker bounds the walk and counts in one pass instead of
        counting first (a spec of a few characters can unroll to a million layers)."""
        blocks = self.blocks
        out: list[tuple[Layer | Fork | NextBranch | Join, Span | None]] = []
        left = limit  # layers and merges still allowed (None: no limit)

        def walk(items: Iterable[Item], use: Span | None) -> None:
            nonlocal left
            for item in items:
                if isinstance(item, Layer):
                    out.append((item, use))
                    if left is not None:
                        left -= 1
                        if left < 0:
                            raise _OverLimit
                elif isinstance(item, Merge):
                    out.append((Fork(item), use))
                    for i, branch in enumerate(item.branches):
                        if i:
                            out.append((NextBranch(item), use))
                        walk(branch, use)
                    out.append((Join(item), use))
                    if left is not None:
                        left -= 1
                        if left < 0:
                            raise _OverLimit
                elif isinstance(item, Group):
                    walk(item.items, use)
                elif isinstance(item, Repeat):
                    for _ in range(item.times):
                        walk((item.body,), use)
                elif isinstance(item, BlockRef):
                    walk(blocks[item.name] if item.items is None else item.items,
                         use if use is not None else item.span)
                else:
                    raise ValueError("spec has sweep alternatives; expand it into variants first")

        try:
            walk(self.body, None)
        except _OverLimit:
            return None
        return tuple(out)

    def layer_count(self, item: Item | None = None) -> int:
        """How many layers `layers()` yields (for one item, or all), without unrolling anything.

        Repeats multiply, so a few characters (`(relu x1000)x1000`) can stand for a million
        layers; the checker uses this to refuse such a spec before walking it.
        """
        return sum(self.layer_counts((item,) if item is not None else None))

    def layer_counts(self, items: Iterable[Item] | None = None) -> list[int]:
        """The layer count of each item (default: each item of the body), in one pass.

        One pass matters: the blocks table is built once and each block counted once, so this
        is linear in the spec's size (asking `layer_count(item)` per item rebuilt the table
        every time: quadratic in the number of lines).
        """
        blocks = self.blocks
        memo: dict[str, int] = {}

        def count(it: Item) -> int:
            if isinstance(it, Layer):
                return 1
            if isinstance(it, Group):
                return sum(count(i) for i in it.items)
            if isinstance(it, Repeat):
                return it.times * count(it.body)
            if isinstance(it, BlockRef) and it.items is not None:  # a use with arguments
                return sum(count(i) for i in it.items)
            if isinstance(it, BlockRef):
                if it.name not in memo:  # IR built by hand may use a block above its `let`
                    memo[it.name] = 0  # (and a cycle counts 0 instead of recursing forever)
                    memo[it.name] = sum(count(i) for i in blocks[it.name])
                return memo[it.name]
            if isinstance(it, Optional):
                return count(it.body)
            if isinstance(it, Merge):  # its branches' layers and the merge layer
                return 1 + sum(count(i) for branch in it.branches for i in branch)
            return 1  # one alternative of a sweep point

        # blocks in the order they are defined: a block only uses blocks defined above it, so
        # each is counted once from counts already known (no recursion through block chains)
        for name, block_items in blocks.items():
            memo[name] = sum(count(i) for i in block_items)
        return [count(it) for it in (self.body if items is None else items)]

    def has_sweep(self) -> bool:
        def sweeps(items: Iterable[Item]) -> bool:
            for item in items:
                if isinstance(item, Layer):
                    continue
                if isinstance(item, Alternatives | Optional):
                    return True
                if isinstance(item, Group) and sweeps(item.items):
                    return True
                if isinstance(item, Repeat) and sweeps((item.body,)):
                    return True
                if isinstance(item, BlockRef) and item.items is not None and sweeps(item.items):
                    return True
                if isinstance(item, Merge) and any(sweeps(b) for b in item.branches):
                    return True
            return False

        # the body, the blocks (the last `let` of a name, as in `blocks`) and the settings,
        # read in one pass over the statements: `check` asks this of every spec
        blocks: dict[str, tuple[Item, ...]] = {}
        for st in self.statements():
            if isinstance(st, LayerLine):
                if sweeps(st.items):
                    return True
            elif isinstance(st, LetDecl):
                blocks[st.name] = st.items
            elif isinstance(st, TrainDecl) and any(s.choices for s in st.settings):
                return True
        return any(sweeps(items) for items in blocks.values())


# -- JSON --------------------------------------------------------------------------------------

# Structure nodes are listed here; every layer node is added by `layers` from its table
# of layer words, so a layer kind cannot be missing here (and break from_json).
NODE_TYPES: dict[str, type] = {
    cls.__name__: cls
    for cls in (
        Group, Repeat, BlockRef, TemplateLayer, Merge, Alternatives, Optional, InputDecl,
        ClassesDecl,
        Setting, TrainDecl, BlockParam, LetDecl, LayerLine, Line, Spec, Span,
    )
}


def _encode(obj: Any) -> Any:
    if is_dataclass(obj) and not isinstance(obj, type):
        out: dict[str, Any] = {"kind": type(obj).__name__}
        for f in fields(obj):
            out[f.name] = _encode(getattr(obj, f.name))
        return out
    if isinstance(obj, tuple | list):
        return [_encode(x) for x in obj]
    return obj


def _decode(obj: Any) -> Any:
    if isinstance(obj, dict):
        cls = NODE_TYPES[obj["kind"]]
        return cls(**{k: _decode(v) for k, v in obj.items() if k != "kind"})
    if isinstance(obj, list):
        return tuple(_decode(x) for x in obj)
    return obj


def to_json(spec: Spec, indent: int | None = None) -> str:
    """The spec as JSON, spans included; `from_json(to_json(s))` rebuilds it exactly.
    TypeError for anything but a Spec (text gave `"conv8 |"`, which from_json then refused)."""
    import json  # here: parse, check and summary never need it

    if not isinstance(spec, Spec):
        raise TypeError(f"to_json() takes a Spec from cnnspec.parse or cnnspec.load, not "
                        f"{type(spec).__name__}")
    return json.dumps(_encode(spec), indent=indent)


def from_json(text: str) -> Spec:
    import json

    import cnnspec.language.layers  # noqa: F401  (registers the layer nodes in NODE_TYPES)
    import cnnspec.language.setting_values  # noqa: F401  (schedules, augmentation)

    try:
        spec = _decode(json.loads(text))
    except (KeyError, TypeError, AttributeError, RecursionError) as exc:  # not our nodes
        raise ValueError(f"JSON does not hold a cnnspec Spec ({type(exc).__name__}: {exc})"
                         ) from None
    if not isinstance(spec, Spec):
        raise ValueError("JSON does not hold a cnnspec Spec")
    for field_name, value in (("name", spec.name), ("source", spec.source),
                              ("filename", spec.filename)):
        if not (isinstance(value, str) or (value is None and field_name != "name")):
            raise ValueError(f"JSON holds a spec whose {field_name} is not text: {value!r:.40}")
    _refuse_what_parse_refuses(spec)
    return spec


def _refuse_what_parse_refuses(spec: Spec) -> None:
    """ValueError unless the spec is one `parse` builds: its canonical text parses back to it.

    Why: JSON can be edited by hand, and the checker trusts the IR it is given (`filters: -5`
    was checked as -180 parameters, `filters: "8"` failed deep in the shape rules), while
    every range and type rule lives in the parser. Reading the text back applies them all."""
    from cnnspec.language.errors import SpecError
    from cnnspec.language.format import format_spec
    from cnnspec.language.parse import parse

    try:
        canonical = format_spec(spec)
    except (TypeError, ValueError, AttributeError, KeyError) as exc:  # a field of a wrong type
        raise ValueError(f"JSON holds a spec that cannot be written as text ({exc})") from None
    try:
        again = parse(canonical)
    except SpecError as err:
        d = err.diagnostics[0]
        line = canonical.split("\n")[d.span.line - 1] if d.span else ""
        raise ValueError(f"JSON holds a spec cnnspec refuses: {d.message}"
                         + (f" (in `{line}`)" if line else "")) from None
    for mine, read in zip(spec.lines, again.lines, strict=False):
        if mine != read:  # a field of a wrong type that writes like a good one ("8" for 8)
            raise ValueError("JSON holds a value of the wrong type in the line written as "
                             f"`{format_spec(Spec((mine,))).rstrip()}`")
    if len(spec.lines) != len(again.lines):
        raise ValueError("JSON holds a spec whose text reads back as other lines")


# Every node is built with the faster __init__ of cnnspec.language.frozen (same signature and
# behaviour, fields stored without a call each): the parser builds thousands per second.
for _cls in list(globals().values()):
    if isinstance(_cls, type) and is_dataclass(_cls) and _cls.__module__ == __name__:
        fast_init(_cls)
del _cls
