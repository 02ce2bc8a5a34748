"""The layer words added for graph networks, each against a Keras layer built here by hand.

conv without bias and with dilation, dwconv (DepthwiseConv2D), sepconv (SeparableConv2D), gmp
(GlobalMaxPooling2D), scale (Rescaling), bn's momentum/epsilon and dense without bias. The
expected shapes, parameter counts and configs come from Keras, never from cnnspec: the spec's
one layer is compared with a hand-written Keras layer on the same input.
"""

from __future__ import annotations

import math

import pytest

import cnnspec
from cnnspec.language import ir
from cnnspec.language.format import format_spec
from cnnspec.language.layers import KINDS

INPUT = (9, 7, 3)


def _cases(keras):
    L = keras.layers
    return [
        ("conv5(nobias)", L.Conv2D(5, 3, padding="same", use_bias=False)),
        ("conv5(d=2)", L.Conv2D(5, 3, padding="same", dilation_rate=2)),
        ("conv5(d=2,valid)", L.Conv2D(5, 3, dilation_rate=2)),
        ("conv5(k=2x3,d=1x2,valid,nobias)",
         L.Conv2D(5, (2, 3), dilation_rate=(1, 2), use_bias=False)),
        ("dwconv", L.DepthwiseConv2D(3, padding="same")),
        ("dwconv(s=2,m=2,nobias)",
         L.DepthwiseConv2D(3, strides=2, padding="same", depth_multiplier=2, use_bias=False)),
        ("dwconv(k=5,valid)", L.DepthwiseConv2D(5)),
        ("dwconv(d=2) l2(.01)", L.DepthwiseConv2D(
            3, padding="same", dilation_rate=2,
            depthwise_regularizer=keras.regularizers.L2(0.01))),
        ("sepconv8", L.SeparableConv2D(8, 3, padding="same")),
        ("sepconv8(k=5,s=2,m=2,nobias)", L.SeparableConv2D(
            8, 5, strides=2, padding="same", depth_multiplier=2, use_bias=False)),
        ("sepconv8(d=2,valid) l1(.001)", L.SeparableConv2D(
            8, 3, dilation_rate=2, depthwise_regularizer=keras.regularizers.L1(0.001),
            pointwise_regularizer=keras.regularizers.L1(0.001))),
        ("gmp", L.GlobalMaxPooling2D()),
        ("scale.125", L.Rescaling(0.125)),
        ("scale2", L.Rescaling(2.0)),
        ("bn", L.BatchNormalization()),
        ("bn(m=.9,eps=.00001)", L.BatchNormalization(momentum=0.9, epsilon=1e-5)),
        ("bn(momentum=0,epsilon=.1)", L.BatchNormalization(momentum=0.0, epsilon=0.1)),
    ]


def _count(weights) -> int:
    return sum(math.prod(w.shape) for w in weights)


def _config(layer) -> dict:
    config = dict(layer.get_config())
    config.pop("name")
    return config


@pytest.fixture(scope="module")
def built():
    """Every case's checked report, our model and the hand-built model, built once."""
    keras = pytest.importorskip("keras")
    from cnnspec.backend.keras_model import build_model

    out = []
    for text, theirs in _cases(keras):
        spec = cnnspec.parse(f"input {'x'.join(map(str, INPUT))}\n{text} flatten")
        report = cnnspec.check(spec)
        ours = build_model(report, keras).layers[0]
        model = keras.Sequential([keras.Input(INPUT), theirs])
        out.append((text, report.rows[0], ours, model.layers[0]))
    return out


def test_new_words_match_hand_built_keras_layers(built):
    for text, row, ours, theirs in built:
        assert type(ours) is type(theirs), text
        assert row.keras_class == type(theirs).__name__, text
        assert (None, *row.output_shape) == tuple(theirs.output.shape), text
        assert row.trainable == _count(theirs.trainable_weights), text
        assert row.non_trainable == _count(theirs.non_trainable_weights), text
        assert _config(ours) == _config(theirs), text


def test_dense_without_bias_matches_keras():
    keras = pytest.importorskip("keras")
    from cnnspec.backend.keras_model import build_model

    report = cnnspec.check(cnnspec.parse("input 4x4x2\n| dense6(nobias) relu"))
    ours = build_model(report, keras).get_layer(report.rows[1].keras_name)
    theirs = keras.Sequential([keras.Input((32,)), keras.layers.Dense(6, use_bias=False)]).layers[0]
    assert _config(ours) == _config(theirs)
    assert report.rows[1].params == theirs.count_params() == 32 * 6


def test_macs_by_hand():
    rows = cnnspec.check(cnnspec.parse(
        "input 16x16x4\ndwconv(m=2) sepconv16(nobias) conv8(d=2,nobias) gap")).rows
    pixels = 16 * 16
    assert rows[0].macs == pixels * 9 * 4 * 2  # one 3×3 filter per output map
    assert rows[1].macs == pixels * 8 * (9 + 16)  # depthwise on 8 maps, then 8 -> 16 pointwise
    assert rows[2].macs == pixels * 9 * 16 * 8  # dilation changes where, not how many
    # receptive field: 3, then 5, then a 3×3 kernel dilated 2 spans 5 more: 9
    assert [r.receptive_field for r in rows[:3]] == [(3, 3), (5, 5), (9, 9)]


@pytest.mark.parametrize("messy, canonical", [
    ("conv8(bias=false)", "conv8(nobias)"),
    ("conv8(bias, d=1x1)", "conv8"),
    ("conv8( nobias , dilation=2 )", "conv8(d=2,nobias)"),
    ("dwconv(multiplier=1,k=3)", "dwconv"),
    ("sepconv8(nobias,m=3)", "sepconv8(nobias,m=3)"),
    ("bn(momentum=0.99,epsilon=0.001)", "bn"),
    ("bn(epsilon=1e-5, momentum=.9)", "bn(m=.9,eps=.00001)"),
    ("scale0.125", "scale.125"),
    ("gmp", "gmp"),
    ("dense4(bias=true)", "dense4"),
])
def test_canonical_spelling_of_new_words(messy, canonical):
    spec = cnnspec.parse(f"{messy} flatten")
    assert format_spec(spec) == f"{canonical} flatten\n"
    assert cnnspec.parse(format_spec(spec)) == spec
    assert ir.from_json(ir.to_json(spec)) == spec


@pytest.mark.parametrize("text, message", [
    ("conv8(d=2,s=2) gap", "a stride above 1 together with a dilation above 1"),
    ("conv8(bias=maybe) gap", "conv bias must be true or false, not maybe"),
    ("dwconv(m=0) gap", "dwconv m must be at least 1"),
    ("dwconv8 gap", "`dwconv` takes no number"),
    ("sepconv gap", "`sepconv` needs its filters"),
    ("bn(m=1.5) gap", "bn m must be in [0, 1], got 1.5"),
    ("bn(eps=0) gap", "bn eps must be greater than 0"),
    ("scale0 gap", "scale must be greater than 0, got 0"),
    ("gmp |", "flatten"),  # a vector is flat already: fine, so this one passes
    ("| gmp", "gmp: needs an image-shaped input"),
    ("input 4x4x3\nconv8(d=3,valid) gap", "a 3×3 (dilated to 7×7) valid convolution needs"),
])
def test_new_word_errors(text, message):
    try:
        cnnspec.check(cnnspec.parse(text))
    except cnnspec.SpecError as exc:
        assert message in str(exc), str(exc)
    else:
        assert message == "flatten", f"{text!r} was accepted"


def test_every_table_node_reads_back_from_json():
    """ir.NODE_TYPES is derived from the layer table: no layer kind can be missing there."""
    for kind in KINDS.values():
        if not kind.modifier:
            assert ir.NODE_TYPES[kind.node.__name__] is kind.node
            assert kind.example == "" or cnnspec.parse(f"input 9x9x3\n{kind.example} flatten")


@pytest.mark.parametrize(("line", "name", "column"), [
    ("conv8(foo=1) |", "foo", 7),
    ("conv8(strides=2) |", "strides", 7),
    ("leaky_relu(alpha=.2) |", "alpha", 12),
    ("conv8(k={3,5},foo=1) |", "foo", 15),
])
def test_an_unknown_argument_name_is_underlined_itself(line, name, column):
    """The caret goes under the name the layer does not have, not under its value."""
    with pytest.raises(cnnspec.SpecError) as info:
        cnnspec.parse(f"input 8x8x3\n{line}\n")
    err = info.value
    assert f"has no argument `{name}`" in str(err)
    span = err.diagnostics[0].span
    assert (span.line, span.column, span.end_column) == (2, column, column + len(name))
