"""Blocks with parameters: `let unit(f, s=1) = conv{f}(s={s}) bn relu`, used as `unit(64, s=2)`.

A use must mean exactly the layers written out by hand (same shapes, parameters, Keras classes);
fmt and JSON must round-trip; arguments may be swept; every mistake is refused at its place.
"""

from __future__ import annotations

import time

import pytest

import cnnspec
from cnnspec.language import ir
from cnnspec.language.format import format_spec
from cnnspec.language.sweep import expand

UNIT = "let unit(f, s=1) = conv{f}(s={s}) bn relu\n"


def _rows(text: str):
    return cnnspec.check(cnnspec.parse(text)).rows


def _meaning(text: str):
    return [(r.text, r.keras_class, r.output_shape, r.trainable, r.non_trainable)
            for r in _rows(text)]


@pytest.mark.parametrize("with_blocks, written_out", [
    (UNIT + "unit(16) unit(32, s=2) gap",
     "conv16 bn relu conv32(s=2) bn relu gap"),
    (UNIT + "unit(s=2, f=8) unit(8,1) unit(f=4) gap",
     "conv8(s=2) bn relu conv8 bn relu conv4 bn relu gap"),
    (UNIT + "let stage(f) = unit({f}, s=2) unit({f})\nstage(16) stage(32) gap",
     "conv16(s=2) bn relu conv16 bn relu conv32(s=2) bn relu conv32 bn relu gap"),
    (UNIT + "(unit(8) pool2)x2 unit(4) x2 |",
     "(conv8 bn relu pool2)x2 (conv4 bn relu)x2 |"),
    ("let u(p, k=3) = conv8(k={k},{p}) l2(.01) relu\nu(valid) u(same, k=1x3) gap",
     "conv8(valid) l2(.01) relu conv8(k=1x3) l2(.01) relu gap"),
    ("let d(r) = drop{r}\nlet plain = d(.25) relu\nconv8 plain d(0.5) gap",
     "conv8 drop.25 relu drop.5 gap"),
    ("let all(s=2) = conv8(s={s})\nall all(s=1) gap", "conv8(s=2) conv8 gap"),
])
def test_a_use_means_the_layers_written_out(with_blocks, written_out):
    assert _meaning(with_blocks) == _meaning(written_out)


def test_fmt_and_json_round_trip():
    text = (UNIT + "let stage( f , k=1 ) = unit({f},s=2) conv{f}(kernel={k}) l2(0.010)\n"
            "stage(16) stage(f=32)  unit( 64 , s = 1 ) gap  # end\n")
    spec = cnnspec.parse(text)
    canonical = format_spec(spec)
    assert canonical == (
        "let unit(f,s=1) = conv{f}(s={s}) bn relu\n"
        "let stage(f,k=1) = unit({f},s=2) conv{f}(kernel={k}) l2(.01)\n"
        "stage(16) stage(f=32) unit(64,s=1) gap  # end\n")
    again = cnnspec.parse(canonical)
    assert again == spec and format_spec(again) == canonical
    assert ir.from_json(ir.to_json(spec)) == spec
    let = spec.statements()[0]
    assert isinstance(let, ir.LetDecl) and [p.name for p in let.params] == ["f", "s"]
    assert [p.default for p in let.params] == [None, "1"]


def test_layers_point_back_at_the_block_and_the_use():
    rows = _rows(UNIT + "conv8\nunit(16) unit(32) gap")
    conv16, conv32 = rows[1], rows[4]
    assert (conv16.line, conv16.column, conv16.defined_at) == (3, 1, 1)
    assert (conv32.line, conv32.column, conv32.defined_at) == (3, 10, 1)
    assert conv16.where == "3 (block at 1)"
    # names come from the let line's layer and the value it got; a second use adds _2
    assert [r.keras_name for r in rows[1:7]] == [
        "conv16_l1c20", "bn_l1c35", "relu_l1c38", "conv32_l1c20", "bn_l1c35_2", "relu_l1c38_2"]


def test_arguments_can_be_swept():
    spec = cnnspec.parse(UNIT + "unit({16,32}) unit(8, s={1,2}) gap")
    variants = expand(spec)
    assert [v.name for v in variants] == [
        "spec[unit@2:1=16,unit@2:15=s=1]", "spec[unit@2:1=16,unit@2:15=s=2]",
        "spec[unit@2:1=32,unit@2:15=s=1]", "spec[unit@2:1=32,unit@2:15=s=2]"]
    last = format_spec(variants[-1].spec).splitlines()[-1]
    assert last == "unit(32) unit(8,s=2) gap"
    assert [r.output_shape for r in cnnspec.check(variants[-1].spec).rows][:6] == [
        (32, 32, 32)] * 3 + [(16, 16, 8)] * 3
    assert format_spec(spec).splitlines()[-1] == "unit({16,32}) unit(8,s={1,2}) gap"


@pytest.mark.parametrize("network", [
    "let b = drop{.1,.2}\nconv8 b conv8 b |",  # a plain block used twice
    "let b = drop{.1,.2}\nlet u(f) = conv{f} b\nu(8) u(16) |",  # ... through a block's uses
])
def test_a_choice_in_a_plain_block_is_one_sweep_point_at_every_use(network):
    variants = expand(cnnspec.parse(network))
    rates = [[layer.rate for layer in v.spec.layers() if isinstance(layer, ir.Dropout)]
             for v in variants]
    assert rates == [[0.1, 0.1], [0.2, 0.2]]  # README, Sweeps: the same rate in both places


def test_a_bad_value_is_reported_at_the_use_that_wrote_it():
    with pytest.raises(cnnspec.SpecError) as info:
        cnnspec.parse(UNIT + "unit(16)\nunit(0)")
    assert (info.value.line, info.value.column) == (3, 6)
    assert "conv filters must be at least 1, got 0" in str(info.value)


def test_a_shape_error_in_a_block_is_reported_at_its_layer():
    with pytest.raises(cnnspec.SpecError) as info:
        cnnspec.check(cnnspec.parse("input 4x4x3\nlet v(f) = conv{f}(valid)\nv(8) v(8) gap"))
    assert (info.value.line, info.value.column) == (2, 12)
    assert "input is 2×2×8, a 3×3 valid convolution needs at least 3×3" in str(info.value)
    assert "(in the block used at 3:6)" in str(info.value)  # the second use, not the first


@pytest.mark.parametrize("text, message, where", [
    (UNIT + "unit gap", "block `unit` needs a value for `f`", (2, 1)),
    (UNIT + "unit(1, 2, 3) gap", "block `unit` takes 1 to 2 arguments, got 3", (2, 12)),
    ("let u(f) = conv{f}\nu(1, 2) gap", "block `u` takes 1 argument, got 2", (2, 6)),
    (UNIT + "unit(8, t=2) gap", "block `unit` has no parameter `t`", (2, 9)),
    (UNIT + "unit(8, f=2) gap", "unit: `f` is given twice", (2, 9)),
    (UNIT + "unit{8,16} gap", "block `unit` takes arguments, not alternatives", (2, 1)),
    ("let u(f) = conv{g}\nu(1) gap", "block `u` has no parameter `g`", (1, 17)),
    ("let u(f) = conv{f} u({f})\nu(1) gap", "block `u` uses itself", (1, 20)),
    ("let u = conv8 u\nu gap", "block `u` uses itself", (1, 15)),
    ("let u(f, f) = conv{f}\nu(1) gap", "block `u` lists the parameter `f` twice", (1, 10)),
    ("let u(3) = conv8\nu(1) gap", "a block parameter is a name, not 3", (1, 7)),
    ("let u(f={1,2}) = conv{f}\nu gap", "the default of `f` must be one value", (1, 7)),
    ("let u(f) = conv{f} drop{.25,.5}\nu(8) gap",
     "sweep alternatives inside a block with parameters are not supported", (1, 20)),
    ("let u(f) = conv{f} relu?\nu(8) gap",
     "sweep alternatives inside a block with parameters are not supported", (1, 20)),
    ("let u(f) = cnov{f}\nu(1) gap", "unknown layer word `cnov`", (1, 12)),
    ("let u = conv8\nu(16) gap", "block `u` takes no arguments or alternatives", (2, 1)),
    # u({8,16}) would be two variants of one network
    ("let u(f) = add(conv8)\nconv8 u({8,16}) gap", "block `u` never uses its parameter `f`",
     (1, 7)),
    ("let u(f, s=1) = conv{f}\nu(8) gap", "block `u` never uses its parameter `s`", (1, 10)),
    # "unknown layer word `x`" before; the README says repeat counts are not parameters
    ("let u(f) = conv{f}\nconv8 u(8) x{f} gap",
     "a repeat count is a number: it cannot be a block's parameter or swept", (2, 12)),
    ("conv8 relu x{2,3} gap",
     "a repeat count is a number: it cannot be a block's parameter or swept", (1, 12)),
])
def test_block_errors(text, message, where):
    with pytest.raises(cnnspec.SpecError) as info:
        cnnspec.check(cnnspec.parse(text))
    assert message in str(info.value)
    assert (info.value.line, info.value.column) == where, str(info.value)


@pytest.mark.parametrize(("text", "message", "hint", "column"), [
    ("let r(f, g={f}) = add(conv{g})\nconv8 r(8) gap",
     "the default of `g` cannot refer to a parameter (`{f}`)", "give `g` a value, e.g. g=1", 10),
    ("let r(f={8,16}) = add(conv{f})\nconv8 r gap",
     "the default of `f` must be one value", "r(..., f={8,16})", 7),
    ("let r(f={8}) = add(conv{f})\nconv8 r gap", "the default of `f` takes no braces",
     "write f=8", 7),
])
def test_a_bad_default_is_one_problem_with_its_own_hint(text, message, hint, column):
    """The parameter stays a parameter: its uses in the body (`conv{g}`) and of the block
    (`r`, `r(8)`) are not reported as wrong too, as they were ("block `r` has no parameter
    `g`", "its parameters are none")."""
    with pytest.raises(cnnspec.SpecError) as info:
        cnnspec.check(cnnspec.parse(text))
    (only,) = info.value.diagnostics
    assert message in only.message and hint in only.hint
    assert (only.span.line, only.span.column) == (1, column)


@pytest.mark.parametrize(("text", "where", "underlined", "hint"), [
    ("let u(f) = conv{f}(k={1,3})", (1, 22), "{1,3}",
     "(conv{f}(..., k={k}) in the body) and sweep it where the block is used: u(..., k={1,3})"),
    ("let u(f) = conv{f} drop{.25,.5}", (1, 20), "drop{.25,.5}",
     "(drop{r} in the body) and sweep it where the block is used: u(..., r={.25,.5})"),
    ("let u(f) = conv{f} conv8(k={1,3})", (1, 20), "conv8(k={1,3})",
     "(conv8(..., k={k}) in the body) and sweep it where the block is used: u(..., k={1,3})"),
    ("let u(f) = conv{f} conv{8,16}", (1, 20), "conv{8,16}",
     "(conv{n} in the body) and sweep it where the block is used: u(..., n={8,16})"),
    ("let u(f) = conv{f}({valid,same})", (1, 20), "{valid,same}",
     "(conv{f}({p}) in the body) and sweep it where the block is used: u(..., p={valid,same})"),
    # a name the block has already would tie two places to one value: the hint picks another
    ("let u(n) = conv{n} conv{16,32}", (1, 20), "conv{16,32}",
     "(conv{n2} in the body) and sweep it where the block is used: u(..., n2={16,32})"),
    # the number and an argument together: no single parameter is the same sweep
    ("let u(f) = conv{8,16}(k={1,3}) conv{f}", (1, 12), "conv{8,16}(k={1,3})",
     "make each swept part a parameter of the block and sweep it where the block is used: "
     "u(..., n={...})"),
])
def test_alternatives_in_a_block_with_parameters_are_shown_and_rewritten_as_a_parameter(
        text, where, underlined, hint):
    """The caret covers the alternatives from their `{` (it began one column late), and the
    hint writes this very sweep as a parameter (it always said `r={.25,.5}`)."""
    with pytest.raises(cnnspec.SpecError) as info:
        cnnspec.parse(text + "\nu(8) gap")
    (d,) = info.value.diagnostics
    assert d.message == "sweep alternatives inside a block with parameters are not supported"
    assert (d.span.line, d.span.column) == where
    assert text[d.span.column - 1:d.span.end_column - 1] == underlined
    assert d.hint.endswith(hint)


@pytest.mark.parametrize("levels", [16, 60, 400])
def test_block_chains_are_refused_quickly(levels):
    """Each block using the one before twice doubles the layers: 2**400 if built."""
    twice = ["let b0(f) = conv{f}"] + [
        f"let b{i}(f) = b{i - 1}({{f}}) b{i - 1}({{f}})" for i in range(1, levels)]
    start = time.process_time()
    with pytest.raises(cnnspec.SpecError) as info:
        cnnspec.parse("\n".join([*twice, f"b{levels - 1}(8) gap"]))
    assert time.process_time() - start < 5
    assert "blocks with parameters" in str(info.value)
    # at the use that would build them all, on the last line
    assert (info.value.line, info.value.column) == (levels + 1, 1)
    assert f"in this use of `b{levels - 1}`" in str(info.value)


def test_deep_chains_are_refused_without_recursion_errors():
    chain = ["let b0(f) = conv{f}"] + [f"let b{i}(f) = b{i - 1}({{f}})" for i in range(1, 2000)]
    with pytest.raises(cnnspec.SpecError) as info:
        cnnspec.parse("\n".join([*chain, "b1999(8) gap"]))
    assert "blocks with parameters nest more than 32 deep" in str(info.value)
    # 30 levels are fine
    ok = "\n".join([*chain[:30], "b29(8) gap"])
    assert len(_rows(ok)) == 1 + 1 + 2


def test_too_deep_a_chain_is_placed_at_the_use_written_in_the_network():
    chain = ["let b0(f) = conv{f}"] + [f"let b{i}(f) = b{i - 1}({{f}})" for i in range(1, 40)]
    # a use of b31 builds 32 blocks, one inside the other: the limit, accepted
    assert len(_rows("\n".join([*chain[:32], "b31(8) gap"]))) == 1 + 1 + 2
    # b32 builds 33: refused where it is used (line 34), not at an inner block's `let` line,
    # each of which is fine alone
    with pytest.raises(cnnspec.SpecError) as info:
        cnnspec.parse("\n".join([*chain[:33], "conv8 b32(8) gap"]))
    err = info.value
    assert (err.line, err.column) == (34, 7)
    assert "in this use of `b32` (down to `b0`)" in str(err)


def test_blocks_with_parameters_build_the_same_keras_model():
    keras = pytest.importorskip("keras")
    from cnnspec.backend.keras_model import build_model

    ours = build_model(cnnspec.check(cnnspec.parse(UNIT + "unit(8) unit(16, s=2) |")), keras)
    by_hand = build_model(cnnspec.check(cnnspec.parse(
        "conv8 bn relu conv16(s=2) bn relu |")), keras)
    assert [type(x) for x in ours.layers] == [type(x) for x in by_hand.layers]
    assert [tuple(x.output.shape) for x in ours.layers] == [
        tuple(x.output.shape) for x in by_hand.layers]
    assert ours.count_params() == by_hand.count_params()


@pytest.mark.parametrize("let", [
    "let b(r) = conv8 drop{r}",
    "let b(f, r) = conv{f} drop{r}",
    "let b(p) = conv8 pool{p}",
    "let b(s) = conv8(s={s})",
    "let b(k) = conv8(k={k})",
    "let b(p) = conv8({p})",
    "let b(w) = conv8 l2({w})",
    "let b(m) = conv8 bn(momentum={m})",
    "let b(v) = conv8 scale{v}",
    # the layer's own number a parameter too: the argument after it is still read as such
    "let b(f, p) = conv{f}({p})",
    "let b(f, c) = conv{f}(bias={c})",
    "let b(f, s) = conv{f}(s={s})",
])
def test_the_example_use_in_a_missing_value_hint_checks(let):
    """The hint's `e.g. b(...)` is a use that works: written in place of the bare use, the
    spec checks (the check, not a copy of the hint, says the example fits)."""
    with pytest.raises(cnnspec.SpecError) as info:
        cnnspec.parse(f"{let}\nb gap")
    hint = info.value.diagnostics[0].hint
    example = hint.split("e.g. ", 1)[1]
    assert example.startswith("b(")
    cnnspec.check(cnnspec.parse(f"input 32x32x3\n{let}\n{example} gap"))


def test_no_example_use_where_no_value_fits():
    # leaky_relu takes no number, so no value of `a` makes `leaky_relu{a}` a layer
    with pytest.raises(cnnspec.SpecError) as info:
        cnnspec.parse("let b(a) = conv8 leaky_relu{a}\nb gap")
    assert info.value.diagnostics[0].hint == "its parameters: b(a)"


def _doubling_chain(levels: int) -> str:
    """b0 is two layers; each b_i uses b_(i-1) twice: b_levels builds 2 * 2**levels layers
    from 2**(levels + 1) - 1 uses."""
    lines = ["input 8x8x3", "let b0(f) = relu drop{f}"] + [
        f"let b{i}(f) = b{i - 1}({{f}}) b{i - 1}({{f}})" for i in range(1, levels + 1)]
    return "\n".join([*lines, f"b{levels}(.1) |"]) + "\n"


def test_uses_of_blocks_are_not_counted_as_layers():
    # 2 * 2**12 = 8,192 layers from 8,191 uses: each under the 10,000 limit, so it checks
    # (it was refused as "more than 10,000 layers" when uses counted as layers)
    report = cnnspec.check(cnnspec.parse(_doubling_chain(12)))
    assert len(report.rows) == 2 * 2**12 + 3  # with `|` and the implicit dense10 softmax
    # one level more: 16,383 uses, refused at the use written in the network (line 16)
    with pytest.raises(cnnspec.SpecError) as info:
        cnnspec.parse(_doubling_chain(13))
    assert "build more than 10,000 uses of blocks in this use of `b13`" in str(info.value)
    assert (info.value.line, info.value.column) == (16, 1)


@pytest.mark.parametrize(("use", "example"), [
    ("b(g=8)", "b(64)"),            # `g` is no parameter: left out of the example
    ("b(8, f=9)", "b(8, s=1)"),     # `f` given twice: its second value left out
])
def test_the_example_use_leaves_out_the_arguments_refused(use, example):
    let = "let b(f, s) = conv{f}(s={s}) relu" if "s=" in example else "let b(f) = conv{f} relu"
    with pytest.raises(cnnspec.SpecError) as info:
        cnnspec.parse(f"{let}\n{use} gap")
    (missing,) = [d for d in info.value.diagnostics if "needs a value" in d.message]
    assert missing.hint.endswith(f"e.g. {example}")
    cnnspec.check(cnnspec.parse(f"{let}\n{example} gap"))
