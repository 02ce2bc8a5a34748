"""The table of layer words: each word's IR node, arguments, shape rule, counts, Keras builder.

Adding a layer kind is one entry in `_KINDS` (plus its tests): the parser, formatter, checker,
Keras backend and the README's language reference all read this table. Shape arithmetic is the
same as Keras's `compute_conv_output_shape` / pooling rules, ported once here.
"""

from __future__ import annotations

import difflib
import math
import struct
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from cnnspec.language import ir

Shape = tuple[int, ...]


class ShapeProblem(Exception):
    """Raised by a shape rule; the checker turns it into a positioned diagnostic."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


class ValueProblem(Exception):
    """A written value that its parameter does not accept; the parser positions it."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message, self.hint = message, hint


@dataclass(frozen=True)
class Param:
    """One argument of a layer word: where it lands in the IR node and what values it accepts.

    kind names an entry of PARAM_KINDS: "int", "float", "pair" (n or AxB), "flag" (one of
    `flags`, written bare) or "switch" (a bool written bare as flags[0] / flags[1], e.g.
    `bias` / `nobias`, or as name=true|false).
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


MAX_INT_DIGITS = 18  # any whole number longer is absurd here, and int() refuses 4,300 digits


def shown(raw: str, limit: int = 40) -> str:
    """Written text quoted in a message, cut short: a token can be a megabyte long."""
    return raw if len(raw) <= limit else raw[:limit] + "..."


def whole(raw: str, what: str) -> int:
    """A whole number from its digits, refusing absurd lengths before int() sees them."""
    if len(raw) > MAX_INT_DIGITS:
        raise ValueProblem(f"{what} is too large: {shown(raw)}", "no real network needs this")
    return int(raw)


def check_range(param: Param, value: float, what: str) -> None:
    """Raise ValueProblem when value is outside the param's range, in the parser's wording."""
    low_ok = param.low is None or (value > param.low if param.low_open else value >= param.low)
    high_ok = param.high is None or (value < param.high if param.high_open else value <= param.high)
    if low_ok and high_ok:
        return
    if param.high is not None:
        lo = "(" if param.low_open else "["
        hi = ")" if param.high_open else "]"
        rng = f"{lo}{format_number(param.low or 0)}, {format_number(param.high)}{hi}"
        raise ValueProblem(f"{what} must be in {rng}, got {format_number(value)}")
    if param.low_open:
        raise ValueProblem(f"{what} must be greater than {format_number(param.low)}, got {value}")
    raise ValueProblem(f"{what} must be at least {format_number(param.low)}, got {value}")


def _read_flag(param: Param, raw: str, token: str, what: str) -> Any:
    if token != "WORD" or raw not in param.flags:
        close = difflib.get_close_matches(raw, list(param.flags), n=1, cutoff=0.6)
        raise ValueProblem(
            f"{what} must be one of {', '.join(param.flags)}, not {raw}",
            f"did you mean `{close[0]}`?" if close else None,
        )
    return raw


def _read_switch(param: Param, raw: str, token: str, what: str) -> Any:
    if token == "WORD" and raw in param.flags:
        return raw == param.flags[0]
    if token == "WORD" and raw in ("true", "false"):
        return raw == "true"
    raise ValueProblem(f"{what} must be true or false, not {shown(raw)}",
                       f"write `{param.flags[0]}` or `{param.flags[1]}`")


def _read_pair(param: Param, raw: str, token: str, what: str) -> Any:
    if token == "SHAPE":
        dims = tuple(whole(x, what) for x in raw.split("x"))
        if len(dims) != 2:
            raise ValueProblem(f"{what} takes one size or two (AxB), not {shown(raw)}")
    elif token == "NUMBER" and raw.isdigit():
        dims = (whole(raw, what),) * 2
    else:
        raise ValueProblem(f"{what} must be a whole number or AxB, not {raw}")
    for d in dims:
        check_range(param, d, what)
    return dims


def _read_int(param: Param, raw: str, token: str, what: str) -> Any:
    if token != "NUMBER":
        raise ValueProblem(f"{what} must be a number, not {raw}")
    if not raw.isdigit():
        digits = _digits_of(raw)
        if digits is not None:  # `1e3`, `3.0`: a whole number, written another way
            raise ValueProblem(f"{what} is a whole number written in digits alone, not "
                               f"{shown(raw)}", f"write {digits}")
        raise ValueProblem(f"{what} must be a whole number, not {shown(raw)}")
    value = whole(raw, what)
    check_range(param, value, what)
    return value


def _digits_of(raw: str) -> str | None:
    """The digits of a number written with a fraction or an exponent that is whole all the
    same (`1e3` -> 1000, `3.0` -> 3); None for any other (`2.5`, `1e400`, `1e30`)."""
    try:
        value = float(raw)
    except ValueError:
        return None
    if not math.isfinite(value) or not value.is_integer() or value >= 10**MAX_INT_DIGITS:
        return None
    return str(int(value))


def _read_float(param: Param, raw: str, token: str, what: str) -> Any:
    if token != "NUMBER":
        raise ValueProblem(f"{what} must be a number, not {raw}")
    value = float(raw)
    if not math.isfinite(value):  # 1e999 reads as inf, which fmt could not write back
        raise ValueProblem(f"{what} is too large: {shown(raw)}")
    if 0 < abs(value) < FLOAT32_TINY:  # bn(eps=1e-320) would train with eps 0: NaN
        raise ValueProblem(
            f"{what} is too small: {shown(raw)} is 0 or a denormal in float32 and bfloat16, "
            f"which the model computes in (the least normal value is {FLOAT32_TINY:.3g})")
    check_range(param, value, what)
    problem = float32_problem(what, value, shown(raw), param.high, param.high_open)
    if problem is not None:
        raise ValueProblem(problem)
    return value


FLOAT32_TINY = 1.1754943508222875e-38  # numpy.finfo(numpy.float32).tiny, without numpy
FLOAT32_MAX = 3.4028234663852886e38  # numpy.finfo(numpy.float32).max


def float32_problem(what: str, value: float, text: str, high: float | None,
                    high_open: bool) -> str | None:
    """Why a number in range cannot be what the model computes with (float32), or None: past
    float32's largest it is infinite (`weight_decay=1e300` trained as inf: a diverged run
    blamed on the learning rate); below an open upper bound it may round up to the bound
    (`drop.99999999` is a rate of 1). One rule for a spec's value and a flag's."""
    if abs(value) > FLOAT32_MAX and _float32_overflows(value):  # (the largest float32 is
        return (f"{what} is too large: {text} is infinite in float32, which the model "
                "computes in")  # written 3.4028235e38, a little above FLOAT32_MAX: no inf)
    if high_open and high is not None and _float32(value) >= high:
        return (f"{what} must be below {format_number(high)}, and {text} is "
                f"{format_number(high)} in float32, which the model computes in")
    return None


def _float32_overflows(value: float) -> bool:
    """Whether value rounds to infinity in float32 (not merely lies above its largest)."""
    try:
        return math.isinf(_float32(value))
    except OverflowError:  # struct refuses what is far past the largest float32
        return True


def _float32(value: float) -> float:
    """value rounded to float32 (as the model holds it), without numpy."""
    return float(struct.unpack("f", struct.pack("f", value))[0])


@dataclass(frozen=True)
class ParamKind:
    """How one kind of argument is read from its token and written back: the one place each
    kind is handled (the parser, the formatter and the settings all go through here)."""

    # read(param, raw text, token type NUMBER|WORD|SHAPE, what for messages) -> typed value
    read: Callable[[Param, str, str, str], Any]
    # write(param, value) -> the argument's canonical text inside `( )`
    write: Callable[[Param, Any], str]
    bare: bool = False  # may be written without `name=`, as one of its flags


PARAM_KINDS: dict[str, ParamKind] = {
    "int": ParamKind(_read_int, lambda p, v: f"{p.names[0]}={format_number(v)}"),
    "float": ParamKind(_read_float, lambda p, v: f"{p.names[0]}={format_number(v)}"),
    "pair": ParamKind(
        _read_pair, lambda p, v: f"{p.names[0]}={v[0]}" if v[0] == v[1] else (
            f"{p.names[0]}={v[0]}x{v[1]}")),
    "flag": ParamKind(_read_flag, lambda p, v: str(v), bare=True),
    "switch": ParamKind(_read_switch, lambda p, v: p.flags[0] if v else p.flags[1], bare=True),
}


def read_value(param: Param, raw: str, token: str, what: str) -> Any:
    """The typed value of one written argument, or ValueProblem saying why not."""
    return PARAM_KINDS[param.kind].read(param, raw, token, what)


def write_value(param: Param, value: Any) -> str:
    """The canonical text of one argument: `k=5`, `s=1x2`, `valid`, `nobias`, `m=.9`."""
    return PARAM_KINDS[param.kind].write(param, value)


def takes_bare(param: Param, word: str) -> bool:
    """Whether `word` written alone in an argument list sets this param (`valid`, `nobias`)."""
    return PARAM_KINDS[param.kind].bare and word in param.flags


# The window of a layer that sees one position (relu, bn, dropout): it leaves the receptive
# field as it is, which the checker tells by identity
UNIT_WINDOW = ((1, 1), (1, 1))


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
    # a valid spelling, for hints ("e.g. conv32") and for tests that try every word
    example: str = ""
    # rule(layer, input shape) -> output shape; raises ShapeProblem
    shape: Callable[[Any, Shape], Shape] = lambda layer, s: s
    # (trainable, non-trainable) parameter counts for this input shape
    params: Callable[[Any, Shape], tuple[int, int]] = lambda layer, s: (0, 0)
    # multiply-accumulates for one image
    macs: Callable[[Any, Shape, Shape], int] = lambda layer, s, out: 0
    # (kernel, stride) along rows and cols for the receptive field; None: covers everything
    window: Callable[[Any], tuple[tuple[int, int], tuple[int, int]] | None] = (
        lambda layer: UNIT_WINDOW
    )
    # build(layer, keras, name) -> a Keras layer
    keras: Callable[[Any, Any, str], Any] | None = None
    # weight modifiers (l1, l2) attach to the preceding weighted layer instead of adding one
    modifier: bool = False

    @property
    def spelling(self) -> str:
        """The example, or the bare word when it needs nothing more."""
        return self.example or self.word


def _spatial(layer_text: str, shape: Shape) -> tuple[int, int, int]:
    # The checker prefixes every message with the layer's text, so it is not repeated here.
    if len(shape) != 3:
        raise ShapeProblem(
            f"needs an image-shaped input (H×W×C), got a flat vector of {shape[0]}",
            "move it before `|`/flatten/gap, or use a dense layer here",
        )
    return shape[0], shape[1], shape[2]


def _out_len(n: int, k: int, s: int, padding: str) -> int:
    """Keras's output length for one spatial axis (k is the dilated kernel's extent)."""
    if padding == "same":
        return (n + s - 1) // s
    return (n - k) // s + 1 if n >= k else 0


def fmt_shape(shape: Shape) -> str:
    return "×".join(str(d) for d in shape)


def _extent(layer: Any) -> tuple[int, int]:
    """The rows and cols a (dilated) kernel spans: (k - 1)·d + 1."""
    (kh, kw), (dh, dw) = layer.kernel, layer.dilation
    return (kh - 1) * dh + 1, (kw - 1) * dw + 1


def _conv_out(layer: Any, shape: Shape, channels: int) -> Shape:
    """Output shape of any conv of the table (conv, dwconv, sepconv) with `channels` maps."""
    h, w, _ = _spatial("", shape)
    (sh, sw), (dh, dw) = layer.stride, layer.dilation
    if max(sh, sw) > 1 and max(dh, dw) > 1:  # Keras refuses this when the layer is built
        raise ShapeProblem(
            "a stride above 1 together with a dilation above 1 is not supported by Keras",
            "use s=1 with the dilation (and pool or stride elsewhere), or drop d=",
        )
    eh, ew = _extent(layer)
    oh, ow = _out_len(h, eh, sh, layer.padding), _out_len(w, ew, sw, layer.padding)
    if oh <= 0 or ow <= 0:
        kh, kw = layer.kernel
        span = f" (dilated to {eh}×{ew})" if (eh, ew) != (kh, kw) else ""
        raise ShapeProblem(
            f"input is {fmt_shape(shape)}, a {kh}×{kw}{span} valid convolution needs at least "
            f"{eh}×{ew}",
            "use `same` padding (the default), a smaller kernel, or pool less before it",
        )
    return (oh, ow, channels)


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


def _dense_shape(layer: ir.Dense, shape: Shape) -> Shape:
    if len(shape) != 1:
        raise ShapeProblem(
            f"needs a flat input, got {fmt_shape(shape)}",
            "add `|` (flatten) or `gap` before it; Keras would apply it to the last axis only",
        )
    return (layer.units,)


def _regularizer(layer: Any, keras: Any) -> Any:
    if layer.l1 is not None and layer.l2 is not None:
        return keras.regularizers.L1L2(l1=layer.l1, l2=layer.l2)
    if layer.l2 is not None:
        return keras.regularizers.L2(layer.l2)
    if layer.l1 is not None:
        return keras.regularizers.L1(layer.l1)
    return None


_PADDING = Param("padding", "flag", ("padding", "p"), flags=("same", "valid"), doc="same|valid")
_KERNEL = Param("kernel", "pair", ("k", "kernel"), low=1, doc="kernel size: k=5 or k=1x3")
_STRIDE = Param("stride", "pair", ("s", "stride"), low=1, doc="stride: s=2 or s=1x2")
_DILATION = Param("dilation", "pair", ("d", "dilation"), low=1, doc="dilation: d=2 or d=1x2")
_BIAS = Param("bias", "switch", ("bias",), flags=("bias", "nobias"), doc="nobias: no bias")
_MULTIPLIER = Param("multiplier", "int", ("m", "multiplier"), low=1,
                    doc="depth multiplier: m=2 filters per input channel")
_CONV_ARGS = (_KERNEL, _STRIDE, _PADDING, _DILATION, _BIAS)


def _conv_window(layer: Any) -> tuple[tuple[int, int], tuple[int, int]]:
    return _extent(layer), layer.stride


def _bias(layer: Any, count: int) -> int:
    return count if layer.bias else 0


_CONV = LayerKind(
    word="conv",
    node=ir.Conv,
    keras_class="Conv2D",
    doc="2-D convolution: conv<filters>, 3×3 stride 1 `same` with bias unless k=, s=, valid, "
        "d=, nobias",
    example="conv32",
    number=Param("filters", "int", low=1, required=True),
    options=_CONV_ARGS,
    shape=lambda layer, s: _conv_out(layer, s, layer.filters),
    params=lambda layer, s: (
        layer.kernel[0] * layer.kernel[1] * s[-1] * layer.filters + _bias(layer, layer.filters),
        0,
    ),
    macs=lambda layer, s, out: out[0] * out[1] * layer.kernel[0] * layer.kernel[1] * s[-1]
    * layer.filters,
    window=_conv_window,
    keras=lambda layer, keras, name: keras.layers.Conv2D(
        layer.filters, layer.kernel, strides=layer.stride, padding=layer.padding,
        dilation_rate=layer.dilation, use_bias=layer.bias,
        kernel_regularizer=_regularizer(layer, keras), name=name,
    ),
)

_DWCONV = LayerKind(
    word="dwconv",
    node=ir.DepthwiseConv,
    keras_class="DepthwiseConv2D",
    doc="depthwise convolution: one 3×3 filter per input channel (m= per channel); takes the "
        "conv's k=, s=, valid, d=, nobias",
    example="dwconv(s=2)",
    options=(*_CONV_ARGS, _MULTIPLIER),
    shape=lambda layer, s: _conv_out(layer, s, _spatial("", s)[2] * layer.multiplier),
    params=lambda layer, s: (
        layer.kernel[0] * layer.kernel[1] * s[-1] * layer.multiplier
        + _bias(layer, s[-1] * layer.multiplier), 0),
    macs=lambda layer, s, out: out[0] * out[1] * layer.kernel[0] * layer.kernel[1] * out[2],
    window=_conv_window,
    keras=lambda layer, keras, name: keras.layers.DepthwiseConv2D(
        layer.kernel, strides=layer.stride, padding=layer.padding,
        depth_multiplier=layer.multiplier, dilation_rate=layer.dilation, use_bias=layer.bias,
        depthwise_regularizer=_regularizer(layer, keras), name=name,
    ),
)

_SEPCONV = LayerKind(
    word="sepconv",
    node=ir.SeparableConv,
    keras_class="SeparableConv2D",
    doc="separable convolution: depthwise 3×3 then pointwise 1×1 to <filters>; takes the "
        "conv's arguments and m=",
    example="sepconv16",
    number=Param("filters", "int", low=1, required=True),
    options=(*_CONV_ARGS, _MULTIPLIER),
    shape=lambda layer, s: _conv_out(layer, s, layer.filters),
    params=lambda layer, s: (
        layer.kernel[0] * layer.kernel[1] * s[-1] * layer.multiplier
        + s[-1] * layer.multiplier * layer.filters + _bias(layer, layer.filters), 0),
    macs=lambda layer, s, out: out[0] * out[1] * s[-1] * layer.multiplier * (
        layer.kernel[0] * layer.kernel[1] + layer.filters),
    window=_conv_window,
    keras=lambda layer, keras, name: keras.layers.SeparableConv2D(
        layer.filters, layer.kernel, strides=layer.stride, padding=layer.padding,
        depth_multiplier=layer.multiplier, dilation_rate=layer.dilation, use_bias=layer.bias,
        depthwise_regularizer=_regularizer(layer, keras),
        pointwise_regularizer=_regularizer(layer, keras), name=name,
    ),
)


def _pool_kind(word: str, node: type[ir.Layer], doc: str, keras_class: str) -> LayerKind:
    return LayerKind(
        word=word,
        node=node,
        doc=doc,
        keras_class=keras_class,
        example=f"{word}2",
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


def _global_pool_kind(word: str, node: type[ir.Layer], doc: str, keras_class: str) -> LayerKind:
    return LayerKind(
        word=word,
        keras_class=keras_class,
        node=node,
        doc=doc,
        shape=lambda layer, s: (_spatial(word, s)[2],),
        window=lambda layer: None,
        keras=lambda layer, keras, name: getattr(keras.layers, keras_class)(name=name),
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
        example=f"{word}(.01)",
        number=Param(word, "float", low=0, low_open=True, required=True),
        modifier=True,
    )


_KINDS: tuple[LayerKind, ...] = (
    _CONV,
    _DWCONV,
    _SEPCONV,
    _pool_kind("pool", ir.MaxPool, "max pooling, Keras MaxPool2D(N, N): pool<N>", "MaxPooling2D"),
    _pool_kind("avgpool", ir.AvgPool, "average pooling: avgpool<N>", "AveragePooling2D"),
    _global_pool_kind("gap", ir.GlobalAvgPool, "global average pooling: H×W×C becomes C",
                      "GlobalAveragePooling2D"),
    _global_pool_kind("gmp", ir.GlobalMaxPool, "global max pooling: H×W×C becomes C",
                      "GlobalMaxPooling2D"),
    LayerKind(
        word="bn",
        keras_class="BatchNormalization",
        node=ir.BatchNorm,
        doc="batch normalisation (2 trainable + 2 non-trainable per channel); m= momentum "
            "(.99), eps= epsilon (.001)",
        options=(
            Param("momentum", "float", ("m", "momentum"), low=0, high=1,
                  doc="moving-average momentum, default .99"),
            Param("epsilon", "float", ("eps", "epsilon"), low=0, low_open=True,
                  doc="added to the variance, default .001"),
        ),
        params=lambda layer, s: (2 * s[-1], 2 * s[-1]),
        keras=lambda layer, keras, name: keras.layers.BatchNormalization(
            momentum=layer.momentum, epsilon=layer.epsilon, name=name),
    ),
    LayerKind(
        word="drop",
        keras_class="Dropout",
        node=ir.Dropout,
        doc="dropout: drop.25 (rate in [0, 1))",
        example="drop.25",
        number=Param("rate", "float", low=0, high=1, high_open=True, required=True),
        keras=lambda layer, keras, name: keras.layers.Dropout(layer.rate, name=name),
    ),
    LayerKind(
        word="scale",
        keras_class="Rescaling",
        node=ir.Rescale,
        doc="multiply by a constant: scale.125",
        example="scale.125",
        number=Param("scale", "float", low=0, low_open=True, required=True),
        keras=lambda layer, keras, name: keras.layers.Rescaling(layer.scale, name=name),
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
        doc="fully connected: dense<units>, on a flat input; nobias drops the bias",
        example="dense512",
        number=Param("units", "int", low=1, required=True),
        options=(_BIAS,),
        shape=_dense_shape,
        params=lambda layer, s: (s[0] * layer.units + _bias(layer, layer.units), 0),
        macs=lambda layer, s, out: s[0] * layer.units,
        window=lambda layer: None,
        keras=lambda layer, keras, name: keras.layers.Dense(
            layer.units, use_bias=layer.bias, kernel_regularizer=_regularizer(layer, keras),
            name=name,
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
# JSON reads layer nodes by class name: the table is where they come from (modifiers build none)
ir.NODE_TYPES.update({k.node.__name__: k.node for k in _KINDS if k.node is not ir.Layer})
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
        from decimal import Decimal  # here: rare, and the import costs a millisecond

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
    mantissa = round(10 ** (exponent - whole), 1)
    if mantissa >= 10:  # 9.96e+29 rounds to 1.0e+30, not 10.0e+29
        mantissa, whole = mantissa / 10, whole + 1
    return f"about {mantissa:.1f}e+{whole}"


def format_layer(layer: ir.Layer) -> str:
    """The canonical text of one layer, modifiers included: `dense512 l2(.01)`."""
    kind = kind_of(layer)
    if isinstance(layer, ir.Flatten) and layer.bar:
        return "|"
    text = kind.word
    if kind.number is not None:
        text += format_number(getattr(layer, kind.number.field))
    args = []
    for opt, default in OPTION_DEFAULTS[kind.word]:  # the layer's options, defaults left out
        value = getattr(layer, opt.field)
        if value != (layer.size if default is SIZE_DEFAULT else default):
            args.append(write_value(opt, value))
    if args:
        text += "(" + ",".join(args) + ")"
    if layer.weighted:  # only layers with a kernel take penalties
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


SIZE_DEFAULT = object()  # a pool's stride defaults to its size (see default_for)
# Each word's options with their defaults, worked out once: format_layer runs for every layer
# the checker reports, so it must not look defaults up option by option.
OPTION_DEFAULTS: dict[str, tuple[tuple[Param, Any], ...]] = {
    kind.word: tuple(
        (opt, SIZE_DEFAULT if default_for(kind, opt, {"size": SIZE_DEFAULT}) is SIZE_DEFAULT
         else default_for(kind, opt, {}))
        for opt in kind.options)
    for kind in _KINDS
}
