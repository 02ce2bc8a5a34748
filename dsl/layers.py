"""The table of layer words: each word's IR node, arguments, shape rule, counts, Keras builder.

Adding a layer kind is one entry in `_KINDS` (plus its tests): the parser, formatter, checker,
Keras backend and the README's language reference all read this table. Shape arithmetic is the
same as Keras's `compute_conv_output_shape` / pooling rules, ported once here.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Any

from cnnspec import ir

Shape = tuple[int, ...]


class ShapeProblem(Exception):
    """Raised by a shape rule; the checker turns it into a positioned diagnostic."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


@dataclass(frozen=True)
class Param:
    """One argument of a layer word: where it lands in the IR node and what values it accepts.

    kind is "int", "float", "pair" (n or AxB) or "flag" (one of `flags`, written bare).
    """

    field: str
    kind: str
    names: tuple[str, ...] = ()
    low: float | None = None
    low_open: bool = False
    high: float | None = None
    high_open: bool = False
    flags: tuple[str, ...] = ()
    required: bool = False
    doc: str = ""


@dataclass(frozen=True)
class LayerKind:
    """Everything cnnspec knows about one layer word."""

    word: str
    node: type[ir.Layer]
    doc: str
    keras_class: str = ""
    number: Param | None = None
    options: tuple[Param, ...] = ()
    fixed: dict[str, Any] = field(default_factory=dict)
    # rule(layer, input shape) -> output shape; raises ShapeProblem
    shape: Callable[[Any, Shape], Shape] = lambda layer, s: s
    # (trainable, non-trainable) parameter counts for this input shape
    params: Callable[[Any, Shape], tuple[int, int]] = lambda layer, s: (0, 0)
    # multiply-accumulates for one image
    macs: Callable[[Any, Shape, Shape], int] = lambda layer, s, out: 0
    # (kernel, stride) along rows and cols for the receptive field; None: covers everything
    window: Callable[[Any], tuple[tuple[int, int], tuple[int, int]] | None] = (
        lambda layer: ((1, 1), (1, 1))
    )
    # build(layer, keras, name) -> a Keras layer
    keras: Callable[[Any, Any, str], Any] | None = None
    # weight modifiers (l1, l2) attach to the preceding weighted layer instead of adding one
    modifier: bool = False


def _spatial(layer_text: str, shape: Shape) -> tuple[int, int, int]:
    # The checker prefixes every message with the layer's text, so it is not repeated here.
    if len(shape) != 3:
        raise ShapeProblem(
            f"needs an image-shaped input (H×W×C), got a flat vector of {shape[0]}",
            "move it before `|`/flatten/gap, or use a dense layer here",
        )
    return shape[0], shape[1], shape[2]


def _out_len(n: int, k: int, s: int, padding: str) -> int:
    """Keras's output length for one spatial axis (dilation 1)."""
    if padding == "same":
        return (n + s - 1) // s
    return (n - k) // s + 1 if n >= k else 0


def fmt_shape(shape: Shape) -> str:
    return "×".join(str(d) for d in shape)


def _conv_shape(layer: ir.Conv, shape: Shape) -> Shape:
    h, w, _ = _spatial(f"conv{layer.filters}", shape)
    (kh, kw), (sh, sw) = layer.kernel, layer.stride
    oh, ow = _out_len(h, kh, sh, layer.padding), _out_len(w, kw, sw, layer.padding)
    if oh <= 0 or ow <= 0:
        raise ShapeProblem(
            f"input is {fmt_shape(shape)}, a {kh}×{kw} valid convolution needs at least {kh}×{kw}",
            "use `same` padding (the default), a smaller kernel, or pool less before it",
        )
    return (oh, ow, layer.filters)


def _pool_shape(word: str) -> Callable[[Any, Shape], Shape]:
    def rule(layer: ir.MaxPool | ir.AvgPool, shape: Shape) -> Shape:
        h, w, c = _spatial(f"{word}{layer.size}", shape)
        k, s = layer.size, layer.stride
        oh, ow = _out_len(h, k, s, layer.padding), _out_len(w, k, s, layer.padding)
        if oh <= 0 or ow <= 0:
            smaller = f"use {word}{min(h, w)}, or " if min(h, w) >= 2 else ""
            raise ShapeProblem(
                f"input is {fmt_shape(shape)}, a {k}×{k} pool needs at least {k}×{k}",
                f"{smaller}remove a pooling layer earlier",
            )
        return (oh, ow, c)

    return rule


def _gap_shape(layer: ir.GlobalAvgPool, shape: Shape) -> Shape:
    return (_spatial("gap", shape)[2],)


def _dense_shape(layer: ir.Dense, shape: Shape) -> Shape:
    if len(shape) != 1:
        raise ShapeProblem(
            f"needs a flat input, got {fmt_shape(shape)}",
            "add `|` (flatten) or `gap` before it; Keras would apply it to the last axis only",
        )
    return (layer.units,)


def _regularizer(layer: ir.Conv | ir.Dense, keras: Any) -> Any:
    if layer.l1 is not None and layer.l2 is not None:
        return keras.regularizers.L1L2(l1=layer.l1, l2=layer.l2)
    if layer.l2 is not None:
        return keras.regularizers.L2(layer.l2)
    if layer.l1 is not None:
        return keras.regularizers.L1(layer.l1)
    return None


_PADDING = Param("padding", "flag", ("padding", "p"), flags=("same", "valid"), doc="same|valid")

_CONV = LayerKind(
    word="conv",
    node=ir.Conv,
    keras_class="Conv2D",
    doc="2-D convolution: conv<filters>, 3×3 stride 1 `same` unless k=, s=, valid",
    number=Param("filters", "int", low=1, required=True),
    options=(
        Param("kernel", "pair", ("k", "kernel"), low=1, doc="kernel size: k=5 or k=1x3"),
        Param("stride", "pair", ("s", "stride"), low=1, doc="stride: s=2 or s=1x2"),
        _PADDING,
    ),
    shape=_conv_shape,
    params=lambda layer, s: (
        layer.kernel[0] * layer.kernel[1] * s[-1] * layer.filters + layer.filters,
        0,
    ),
    macs=lambda layer, s, out: out[0] * out[1] * layer.kernel[0] * layer.kernel[1] * s[-1]
    * layer.filters,
    window=lambda layer: (layer.kernel, layer.stride),
    keras=lambda layer, keras, name: keras.layers.Conv2D(
        layer.filters, layer.kernel, strides=layer.stride, padding=layer.padding,
        kernel_regularizer=_regularizer(layer, keras), name=name,
    ),
)


def _pool_kind(word: str, node: type[ir.Layer], doc: str, keras_class: str) -> LayerKind:
    return LayerKind(
        word=word,
        node=node,
        doc=doc,
        keras_class=keras_class,
        number=Param("size", "int", low=1, required=True),
        options=(
            Param("stride", "int", ("s", "stride"), low=1, doc="stride, default = size"),
            replace(_PADDING, doc="valid (default) | same"),
        ),
        shape=_pool_shape(word),
        window=lambda layer: ((layer.size, layer.size), (layer.stride, layer.stride)),
        keras=lambda layer, keras, name: getattr(keras.layers, keras_class)(
            pool_size=layer.size, strides=layer.stride, padding=layer.padding, name=name
        ),
    )


_ACTIVATIONS = (
    "relu", "relu6", "elu", "selu", "gelu", "silu", "swish", "mish", "tanh", "sigmoid",
    "hard_sigmoid", "softmax", "softplus", "softsign", "leaky_relu", "linear",
)


def _activation_kind(fn: str) -> LayerKind:
    return LayerKind(
        word=fn,
        node=ir.Activation,
        keras_class="Activation",
        doc=f"activation layer `{fn}`",
        fixed={"fn": fn},
        keras=lambda layer, keras, name: keras.layers.Activation(layer.fn, name=name),
    )


def _modifier_kind(word: str) -> LayerKind:
    return LayerKind(
        word=word,
        node=ir.Layer,
        doc=f"{word.upper()} weight penalty on the preceding conv/dense: {word}(.01)",
        number=Param(word, "float", low=0, low_open=True, required=True),
        modifier=True,
    )


_KINDS: tuple[LayerKind, ...] = (
    _CONV,
    _pool_kind("pool", ir.MaxPool, "max pooling, Keras MaxPool2D(N, N): pool<N>", "MaxPooling2D"),
    _pool_kind("avgpool", ir.AvgPool, "average pooling: avgpool<N>", "AveragePooling2D"),
    LayerKind(
        word="gap",
        keras_class="GlobalAveragePooling2D",
        node=ir.GlobalAvgPool,
        doc="global average pooling: H×W×C becomes C",
        shape=_gap_shape,
        window=lambda layer: None,
        keras=lambda layer, keras, name: keras.layers.GlobalAveragePooling2D(name=name),
    ),
    LayerKind(
        word="bn",
        keras_class="BatchNormalization",
        node=ir.BatchNorm,
        doc="batch normalisation (2 trainable + 2 non-trainable per channel)",
        params=lambda layer, s: (2 * s[-1], 2 * s[-1]),
        keras=lambda layer, keras, name: keras.layers.BatchNormalization(name=name),
    ),
    LayerKind(
        word="drop",
        keras_class="Dropout",
        node=ir.Dropout,
        doc="dropout: drop.25 (rate in [0, 1))",
        number=Param("rate", "float", low=0, high=1, high_open=True, required=True),
        keras=lambda layer, keras, name: keras.layers.Dropout(layer.rate, name=name),
    ),
    LayerKind(
        word="flatten",
        keras_class="Flatten",
        node=ir.Flatten,
        doc="flatten to a vector (`|` does the same and marks the trunk/head boundary)",
        shape=lambda layer, s: (math.prod(s),),
        window=lambda layer: None,
        keras=lambda layer, keras, name: keras.layers.Flatten(name=name),
    ),
    LayerKind(
        word="dense",
        keras_class="Dense",
        node=ir.Dense,
        doc="fully connected: dense<units>, on a flat input",
        number=Param("units", "int", low=1, required=True),
        shape=_dense_shape,
        params=lambda layer, s: (s[0] * layer.units + layer.units, 0),
        macs=lambda layer, s, out: s[0] * layer.units,
        window=lambda layer: None,
        keras=lambda layer, keras, name: keras.layers.Dense(
            layer.units, kernel_regularizer=_regularizer(layer, keras), name=name
        ),
    ),
    *(_activation_kind(fn) for fn in _ACTIVATIONS),
    _modifier_kind("l2"),
    _modifier_kind("l1"),
)


def _index(kinds: tuple[LayerKind, ...]) -> dict[str, LayerKind]:
    table: dict[str, LayerKind] = {}
    for kind in kinds:
        if kind.word in table:
            raise RuntimeError(f"layer word {kind.word!r} is defined twice")
        table[kind.word] = kind
    return table


KINDS: dict[str, LayerKind] = _index(_KINDS)
# node class -> the first kind that builds it (what the loop in kind_of would find)
_KIND_OF_NODE: dict[type, LayerKind] = {kind.node: kind for kind in reversed(_KINDS)}


def kind_of(layer: ir.Layer) -> LayerKind:
    """The table entry a node was built from."""
    cls = type(layer)
    if cls is not ir.Activation and cls in _KIND_OF_NODE:  # the common case, one lookup
        return _KIND_OF_NODE[cls]
    if isinstance(layer, ir.Activation):
        return KINDS[layer.fn]
    if isinstance(layer, ir.Flatten):
        return KINDS["flatten"]
    for kind in _KINDS:
        if kind.node is type(layer):
            return kind
    raise KeyError(type(layer).__name__)


def format_number(value: float | int) -> str:
    """Shortest faithful positional spelling, leading zero dropped: 0.25 -> .25, 1e-05 -> .00001."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return str(value)
    text = repr(float(value))
    if "e" in text or "n" in text:  # 1e-05, inf, nan: Decimal writes the digits out
        text = format(Decimal(text), "f")
    if "." not in text:
        text += ".0"
    return text[1:] if text.startswith("0.") and text != "0.0" else text


def count_text(total: int) -> str:
    """A count for a message: exact with separators, or `about 1.2e+18060` when the digits
    would be unreadable (or over Python's int-to-str limit)."""
    if total < 10**24:
        return f"{total:,}"
    exponent = math.log10(total)
    whole = math.floor(exponent)
    return f"about {10 ** (exponent - whole):.1f}e+{whole}"


def format_layer(layer: ir.Layer) -> str:
    """The canonical text of one layer, modifiers included: `dense512 l2(.01)`."""
    kind = kind_of(layer)
    if isinstance(layer, ir.Flatten) and layer.bar:
        return "|"
    text = kind.word
    if kind.number is not None:
        text += format_number(getattr(layer, kind.number.field))
    args = []
    known = {"size": getattr(layer, "size", None)} if kind.options else {}
    for opt in kind.options:
        value = getattr(layer, opt.field)
        if value == default_for(kind, opt, known):
            continue
        if opt.kind == "flag":
            args.append(str(value))
        elif opt.kind == "pair":
            a, b = value
            args.append(f"{opt.names[0]}={a}" if a == b else f"{opt.names[0]}={a}x{b}")
        else:
            args.append(f"{opt.names[0]}={format_number(value)}")
    if args:
        text += "(" + ",".join(args) + ")"
    if layer.weighted:  # only conv and dense take penalties
        for mod in ("l1", "l2"):
            value = getattr(layer, mod, None)
            if value is not None:
                text += f" {mod}({format_number(value)})"
    return text


def default_for(kind: LayerKind, opt: Param, values: dict[str, Any]) -> Any:
    """Default of an option given the values already known (used while building a node)."""
    if opt.field == "stride" and kind.node in (ir.MaxPool, ir.AvgPool):
        return values.get("size")
    return kind.node.__dataclass_fields__[opt.field].default
