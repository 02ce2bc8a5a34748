"""Residuals and branches: `add(...)` and `concat(...)` in the IR, checker, formatter and CLI.

The published networks (ResNet-20, ResNet-9) are compared with hand-built Keras models in
test_examples.py; this file covers the language around them.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import EXAMPLES, ROOT, run_cli

import cnnspec
from cnnspec.language import ir
from cnnspec.language.format import format_spec
from cnnspec.language.sweep import expand


def _rows(text: str):
    return cnnspec.check(cnnspec.parse(text)).rows


def test_merges_parse_into_branches():
    spec = cnnspec.parse(
        "conv8 add(conv8 bn relu conv8 bn) relu concat(conv4(k=1), pool3(s=1,same))")
    residual, concat = spec.body[1], spec.body[3]
    assert isinstance(residual, ir.Merge) and residual.op == "add"
    assert len(residual.branches) == 1 and len(residual.branches[0]) == 5
    assert isinstance(concat, ir.Merge) and concat.op == "concat" and len(concat.branches) == 2
    assert (residual.span.line, residual.span.column, residual.span.end_column) == (1, 7, 34)
    assert spec.is_graph() and not cnnspec.parse("conv8 (relu)x2 |").is_graph()


def test_residual_adds_the_input_and_concat_stacks_channels():
    rows = _rows(
        "input 8x8x3\nconv8 add(conv8 bn relu) concat(conv4(k=1), relu, pool3(s=1,same)) gap")
    add = next(r for r in rows if r.keras_class == "Add")
    assert add.inputs == ("conv8_l2c1", "relu_l2c20") and add.output_shape == (8, 8, 8)
    concat = next(r for r in rows if r.keras_class == "Concatenate")
    assert concat.output_shape == (8, 8, 4 + 8 + 8)
    assert concat.inputs == ("conv4_l2c33", "relu_l2c45", "pool3_l2c51")
    # layers inside merges read the merge's input and are one level deeper
    assert [(r.keras_name, r.depth) for r in rows if r.depth] == [
        ("conv8_l2c11", 1), ("bn_l2c17", 1), ("relu_l2c20", 1),
        ("conv4_l2c33", 1), ("relu_l2c45", 1), ("pool3_l2c51", 1)]
    assert next(r for r in rows if r.keras_name == "conv4_l2c33").inputs == ("add_l2c7",)


def test_nested_merges_and_receptive_field():
    rows = _rows("input 16x16x3\nconv4 add(conv4 add(conv4 conv4)) gap")
    adds = [r for r in rows if r.keras_class == "Add"]
    assert [r.depth for r in adds] == [1, 0]
    # the longest path has four 3×3 convs: 9×9
    assert adds[-1].receptive_field == (9, 9)


def test_projection_shortcut():
    rows = _rows("conv16 add(conv32(s=2) bn relu conv32 bn, conv32(k=1,s=2)) relu gap")
    add = next(r for r in rows if r.keras_class == "Add")
    assert add.output_shape == (16, 16, 32) and len(add.inputs) == 2


@pytest.mark.parametrize("text, message, hint", [
    ("conv16 add(conv32(s=2) bn) gap",
     "add: the branch gives 16×16×32 but its input is 32×32×16; add needs equal shapes",
     "add(..., conv32(k=1,s=2))"),
    ("conv16 add(conv16, conv8) gap",
     "add: branch 2 gives 32×32×8 but branch 1 is 32×32×16",
     "end branch 2 with a projection to 32×32×16, e.g. conv16(k=1)"),
    ("conv16 concat(conv8, conv8(s=2)) gap",
     "concat: branch 2 gives 16×16×8 but branch 1 is 32×32×8", "stride or pool every branch"),
    ("conv16 | add(dense4) dense2", "add: the branch gives 4 but its input is 16384",
     "make every branch end in one shape"),
])
def test_mismatched_merges_are_refused_at_the_merge(text, message, hint):
    with pytest.raises(cnnspec.SpecError) as info:
        cnnspec.check(cnnspec.parse(text))
    assert message in str(info.value) and hint in str(info.value), str(info.value)
    assert info.value.column == text.index(message.split(":")[0]) + 1


def test_other_rules_keep_their_place_inside_branches():
    with pytest.raises(cnnspec.SpecError) as info:
        cnnspec.check(cnnspec.parse("input 4x4x3\nconv8 add(pool2 pool2 pool2) gap"))
    assert (info.value.line, info.value.column) == (2, 23)
    assert "pool2: input is 1×1×8" in str(info.value)


def test_fmt_json_and_sweeps_go_through_merges():
    text = "conv8  add( conv8 drop{.1,.2} ,conv8(k=1) )  concat(relu,bn? relu) gap\n"
    spec = cnnspec.parse(text)
    canonical = format_spec(spec)
    assert canonical == "conv8 add(conv8 drop{.1,.2}, conv8(k=1)) concat(relu, bn? relu) gap\n"
    assert cnnspec.parse(canonical) == spec
    assert ir.from_json(ir.to_json(spec)) == spec
    variants = expand(spec)
    assert [v.name for v in variants] == [
        "spec[drop=.1,+bn]", "spec[drop=.1,-bn]", "spec[drop=.2,+bn]", "spec[drop=.2,-bn]"]
    last = variants[-1].spec
    assert format_spec(last) == "conv8 add(conv8 drop.2, conv8(k=1)) concat(relu, relu) gap\n"
    with pytest.raises(cnnspec.SpecError) as info:
        cnnspec.parse("conv8 concat(relu, bn? (relu?)x2) gap")
    assert "this branch of `concat` is empty in some variants" in str(info.value)
    assert info.value.column == 20
    assert [r.keras_class for r in cnnspec.check(last).rows].count("Concatenate") == 1


@pytest.mark.parametrize(("text", "column"), [
    ("let b = bn?\nconv8 concat(relu, b) gap", 20),  # the `-bn` variant: concat(relu, input)
    ("let b = bn?\nconv8 add(b) gap", 11),  # the `-bn` variant would be input + input
    ("let a = relu?\nlet b = a a\nconv8 concat(conv8, b) gap", 21),  # through two blocks
])
def test_a_branch_a_block_can_leave_empty_is_refused(text, column):
    """A branch made only of a block whose whole body is optional is empty in some variant,
    exactly like `concat(relu, bn?)`: the `?` inside the block must not hide it."""
    with pytest.raises(cnnspec.SpecError) as info:
        cnnspec.parse(text)
    assert "is empty in some variants" in str(info.value)
    assert (info.value.line, info.value.column) == (text.count("\n") + 1, column)
    assert "block `" in str(info.value)


def test_a_block_that_always_leaves_a_layer_is_a_good_branch():
    variants = expand(cnnspec.parse("let b = bn? relu\nconv8 add(b) gap"))
    assert len(variants) == 2  # `relu` stays in both, so each add has a real branch
    for v in variants:
        assert [r.keras_class for r in cnnspec.check(v.spec).rows].count("Add") == 1


@pytest.mark.parametrize(("text", "place"), [
    # a network ending in a merge: at the merge, not at `relu` inside its last branch
    ("conv8 add(conv8 bn, conv8(k=1) relu)", (1, 7, "add(conv8 bn, conv8(k=1) relu)")),
    # ending in a block: at its use, not inside the `let` line
    ("let r(f) = add(conv{f} bn)\nconv8 r(8)", (2, 7, "r(8)")),
    ("let h = conv8 relu\nconv8 h", (2, 7, "h")),
    ("conv8 relu", (1, 7, "relu")),
])
def test_an_unflat_end_is_shown_where_the_network_ends(text, place):
    with pytest.raises(cnnspec.SpecError) as info:
        cnnspec.check(cnnspec.parse(text))
    (d,) = info.value.diagnostics
    assert d.message.startswith("the classifier dense10 needs a flat input")
    line, column, underlined = place
    assert (d.span.line, d.span.column) == (line, column)
    source_line = text.split("\n")[line - 1]
    assert source_line[column - 1:d.span.end_column - 1] == underlined


@pytest.mark.parametrize("merge", [
    "add(conv16(s=2))", "add(conv8(s=3))", "add(conv16)", "add(conv8(k=3,s=2x1))",
    "add(conv8(s=4) relu)",
])
def test_a_suggested_projection_shortcut_fixes_the_residual(merge):
    """The hint's conv, added as the second branch as it says, makes the spec check."""
    text = f"conv8 {merge} gap"
    with pytest.raises(cnnspec.SpecError) as info:
        cnnspec.check(cnnspec.parse(text))
    hint = info.value.diagnostics[0].hint
    assert hint.startswith("add a projection shortcut as a second branch, e.g. add(..., ")
    shortcut = hint.rsplit("add(..., ", 1)[1][:-1]
    fixed = text.replace(merge, f"{merge[:-1]}, {shortcut})")
    assert cnnspec.check(cnnspec.parse(fixed)).rows[-1].output_shape == (10,)


@pytest.mark.parametrize(("text", "sizes"), [
    ("conv8 add(conv8(valid)) gap", "32×32 into 30×30"),  # a 1×1 stride cannot take 2 away
    ("conv8 add(conv8(k=5,valid)) gap", "32×32 into 28×28"),
    ("conv8 pool2 add(conv8, conv8(s=2)) gap", "8×8 into 16×16"),  # nor grow anything
])
def test_no_projection_is_suggested_where_none_can_fix_the_sizes(text, sizes):
    with pytest.raises(cnnspec.SpecError) as info:
        cnnspec.check(cnnspec.parse(text))
    hint = info.value.diagnostics[0].hint
    assert "no 1×1 projection turns" in hint and sizes in hint
    assert "k=1" not in hint


@pytest.mark.parametrize(("text", "message", "column", "hint"), [
    # it said "unexpected `(`; expected `(`": the `(` after a space opens a group
    ("conv8 add (conv8) gap", "`(` must touch `add`, with no space between", 11, "write add(...)"),
    ("conv8 concat (conv8) gap", "`(` must touch `concat`", 14, "write concat(...)"),
    ("let r (f) = add(conv{f})\nconv8 r(8) gap", "`(` must touch `r`", 7, "write r(...)"),
    ("train lr=onecycle (.4)\nconv8 gap", "`(` must touch `onecycle`", 19,
     "write onecycle(...)"),
    # not a schedule: no word there takes arguments, so "write sgd(...)" would be wrong
    ("train optimizer=sgd (x)\nconv8 gap", "unexpected `(` after `sgd`", 21,
     "only a schedule takes arguments here"),
    # it said "empty argument list" with an example of a layer's arguments
    ("conv8 add() gap", "empty merge `add()`", 10, "add(conv16 bn relu)"),
    ("conv8 concat( ) gap", "empty merge `concat()`", 13, "concat(conv16 bn relu)"),
    ("conv8() gap", "empty argument list `()`", 6, "conv64(k=5)"),
    # it said "alternatives do not nest"
    ("let r(op) = {op}(conv8)\nconv8 r(add) gap", "unexpected `{`", 13,
     "a parameter stands for a number or an argument's value, not a word"),
    ("drop{{.25}} gap", "unexpected `{`", 6, "alternatives do not nest"),
    # a merge split over lines: it said "a group must ..." (or nothing, after a `,`)
    ("conv8 add(conv8 relu\n) gap", "`(` is not closed on this line", 10,
     "a merge must open and close on one line"),
    ("conv8 concat(conv8,\n conv8) gap", "`(` is not closed on this line", 13,
     "a merge must open and close on one line"),
    ("conv8 (relu\n) gap", "`(` is not closed on this line", 7,
     "a group must open and close on one line"),
])
def test_merge_and_brace_mistakes_are_named_for_what_they_are(text, message, column, hint):
    with pytest.raises(cnnspec.SpecError) as info:
        cnnspec.parse(text)
    d = info.value.diagnostics[0]
    assert message in d.message and d.span.line == 1 and d.span.column == column, d
    assert hint in d.hint


@pytest.mark.parametrize(("text", "hint"), [
    ("conv8 concat(" + ", ".join(["conv1"] * 10_001) + ") gap",
     "a real CNN has far fewer layers"),  # wide, nothing repeated
    ("\n".join(["let b0 = conv8"] + [f"let b{i} = add(b{i - 1}, b{i - 1})" for i in range(1, 16)])
     + "\nconv8 b15 gap", "a real CNN has far fewer layers"),  # blocks doubling, no `x`
    ("conv8 (relu x200)x100 gap", "lower the repeat counts (xN)"),
    ("let u = (relu x200)x100\nconv8 u gap", "lower the repeat counts (xN)"),  # inside a block
])
def test_too_many_layers_suggests_lower_repeats_only_where_something_repeats(text, hint):
    with pytest.raises(cnnspec.SpecError) as info:
        cnnspec.check(cnnspec.parse(text))
    (d,) = info.value.diagnostics
    assert "over the limit of 10,000" in d.message and d.hint.startswith(hint)


def test_a_shape_problem_in_one_branch_does_not_hide_the_next_branchs():
    """Every branch reads the merge's input, so each is checked from it: "every error is
    listed" holds inside merges too (the walk used to stop at the first branch's problem)."""
    with pytest.raises(cnnspec.SpecError) as info:
        cnnspec.check(cnnspec.parse("conv8 add(conv8(k=40,valid), conv8(k=50,valid)) gap"))
    assert [(d.span.column, d.message.split(":")[0]) for d in info.value.diagnostics] == [
        (11, "conv8(k=40,valid)"), (30, "conv8(k=50,valid)")]
    # nested: the inner merge's branch fails, the outer merge's second branch still checks
    with pytest.raises(cnnspec.SpecError) as info:
        cnnspec.check(cnnspec.parse(
            "conv8 add(add(conv8(k=40,valid)) relu, conv4(k=40,valid)) gap"))
    assert [d.span.column for d in info.value.diagnostics] == [15, 40]
    # after a merge with a broken branch the shapes are unknown: nothing more is reported
    with pytest.raises(cnnspec.SpecError) as info:
        cnnspec.check(cnnspec.parse("conv8 add(conv8(k=40,valid), conv8) conv8(k=99,valid) gap"))
    assert [d.span.column for d in info.value.diagnostics] == [11]


def test_a_second_bar_from_a_block_names_the_use_that_made_it():
    with pytest.raises(cnnspec.SpecError) as info:
        cnnspec.check(cnnspec.parse("let v = | relu\nconv8 v v"))
    (d,) = info.value.diagnostics
    assert d.message == ("a second `|`: a spec has one trunk/head boundary "
                         "(in the block used at 2:9)")
    assert (d.span.line, d.span.column) == (1, 9)


def test_merge_words_are_not_block_names():
    with pytest.raises(cnnspec.SpecError) as info:
        cnnspec.parse("let add = conv8\nconv8 gap")
    assert "`add` cannot name a block" in str(info.value)


def test_blocks_with_parameters_hold_merges():
    text = ("let block(f, s=1) = add(conv{f}(s={s}) bn relu conv{f} bn, conv{f}(k=1,s={s})) relu\n"
            "conv16 block(16) block(32, s=2) gap")
    rows = _rows(text)
    adds = [r for r in rows if r.keras_class == "Add"]
    assert [r.output_shape for r in adds] == [(32, 32, 16), (16, 16, 32)]
    assert [r.keras_name for r in adds] == ["add_l1c21", "add_l1c21_2"]


def test_summary_diff_and_fmt_on_graph_examples(tmp_path):
    result = run_cli("summary", str(EXAMPLES / "resnet20.cnn"))
    assert result.returncode == 0, result.stderr
    assert "add ← relu_l9c47, bn_l10c" in result.stdout.replace("\n", " ") or "add ←" in (
        result.stdout)
    assert "  conv32(s=2) l2(.0001)" in result.stdout  # inside the merge: indented
    assert "274,442" in result.stdout
    result = run_cli("fmt", "--check", *(str(EXAMPLES / f"{n}.cnn")
                                          for n in ("resnet20", "resnet9", "allcnn_c")))
    assert result.returncode == 0, result.stdout + result.stderr
    variant = tmp_path / "resnet20_wide.cnn"
    variant.write_text((EXAMPLES / "resnet20.cnn").read_text().replace(
        "block(64) x2", "block(64) x1"))
    result = run_cli("diff", str(EXAMPLES / "resnet20.cnn"), str(variant))
    assert result.returncode == 0, result.stderr
    assert "removed" in result.stdout and "274,442" in result.stdout


def test_graph_summary_does_not_import_tensorflow():
    code = (
        "import sys, cnnspec\n"
        "from cnnspec.cli.main import summary_table\n"
        "for name in ('resnet20', 'resnet9', 'allcnn_c'):\n"
        "    report = cnnspec.check(cnnspec.load('examples/' + name + '.cnn'))\n"
        "    summary_table(report, name)\n"
        "print(','.join(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras')))\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            cwd=ROOT, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ""


def test_each_branch_of_a_merge_may_cross_the_trunk_head_boundary_once():
    """`|` is counted along each way from the input, not over the whole text: two branches
    that each flatten and end in a dense layer are two heads added, one `|` per way (it was
    refused as "a second `|`"). The model is the one built by hand in Keras."""
    import keras

    text = "input 8x8x3\nconv8 add(conv8 | dense4, conv8 | dense4)"
    report = cnnspec.check(cnnspec.parse(text))
    inputs = keras.Input((8, 8, 3))
    trunk = keras.layers.Conv2D(8, 3, padding="same")(inputs)
    heads = [keras.layers.Dense(4)(keras.layers.Flatten()(
        keras.layers.Conv2D(8, 3, padding="same")(trunk))) for _ in range(2)]
    out = keras.layers.Dense(10, activation="softmax")(keras.layers.Add()(heads))
    by_hand = keras.Model(inputs, out)
    assert report.params == by_hand.count_params()
    model = cnnspec.to_keras(cnnspec.parse(text))
    assert model.count_params() == by_hand.count_params()
    assert model.output_shape == by_hand.output_shape == (None, 10)
    # a `|` after such a merge, or in a branch after the trunk's own, is a second on its way
    for second, column in (("conv8 add(conv8 | dense4, conv8 | dense4) | dense4", 43),
                           ("conv8 | add(dense4 | dense4, dense4)", 20)):
        with pytest.raises(cnnspec.SpecError) as info:
            cnnspec.check(cnnspec.parse(second))
        (d,) = info.value.diagnostics
        assert d.message.startswith("a second `|`") and d.span.column == column
