"""Targeted tests of the language: what each construct parses to, what the checker computes
and refuses, how errors are placed and worded, and which files must stay as they are.

Expected values are worked out by hand (or taken from the notebook) in the tests themselves.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
from conftest import EXAMPLES, ROOT, SPECS

import cnnspec
from cnnspec.language import ir
from cnnspec.language.checker import DEFAULT_MAX_PARAMS, MAX_LAYERS
from cnnspec.language.errors import Span
from cnnspec.language.layers import KINDS


def body(text: str) -> tuple:
    return cnnspec.parse(text).body


def layers(text: str) -> tuple:
    return cnnspec.parse(text).layers()


def error(text: str, **check_kwargs) -> cnnspec.SpecError:
    """The SpecError that parsing, then checking, `text` raises (the test fails if none)."""
    with pytest.raises(cnnspec.SpecError) as info:
        cnnspec.check(cnnspec.parse(text, filename="t.cnn"), **check_kwargs)
    return info.value


def rows(text: str):
    return cnnspec.check(cnnspec.parse(text)).rows


# -- what text means ---------------------------------------------------------------------------


def test_card_line():
    got = body("conv32 relu bn pool3 drop.25 | dense512 l2(.01) drop.5")
    assert got == (
        ir.Conv(32, kernel=(3, 3), stride=(1, 1), padding="same"),
        ir.Activation("relu"),
        ir.BatchNorm(),
        ir.MaxPool(size=3, stride=3, padding="valid"),
        ir.Dropout(0.25),
        ir.Flatten(bar=True),
        ir.Dense(512, l2=0.01),
        ir.Dropout(0.5),
    )
    # each node knows where it was written
    columns = [node.span.column for node in got]
    assert columns == [1, 8, 13, 16, 22, 30, 32, 49]
    assert got[6].span == Span(1, 32, 1, 40)  # the dense word; l2 folds into it


@pytest.mark.parametrize("text, expected", [
    ("conv64", ir.Conv(64)),
    ("conv64(k=5)", ir.Conv(64, kernel=(5, 5))),
    ("conv64(kernel=1x3)", ir.Conv(64, kernel=(1, 3))),
    ("conv64(s=2)", ir.Conv(64, stride=(2, 2))),
    ("conv64(stride=2x1)", ir.Conv(64, stride=(2, 1))),
    ("conv128(valid)", ir.Conv(128, padding="valid")),
    ("conv128(padding=valid)", ir.Conv(128, padding="valid")),
    ("conv8(valid,k=5,s=2)", ir.Conv(8, kernel=(5, 5), stride=(2, 2), padding="valid")),
    ("conv8( s=2 , k=5 , valid )", ir.Conv(8, kernel=(5, 5), stride=(2, 2), padding="valid")),
    ("conv8(k=3,s=1,same)", ir.Conv(8)),
    ("conv8 l1(.5) l2(1e-3)", ir.Conv(8, l1=0.5, l2=0.001)),
    ("pool2", ir.MaxPool(2, 2)),
    ("pool3", ir.MaxPool(3, 3)),
    ("pool3(s=2)", ir.MaxPool(3, 2)),
    ("pool3(stride=1,same)", ir.MaxPool(3, 1, "same")),
    ("avgpool2", ir.AvgPool(2, 2)),
    ("avgpool3(s=1)", ir.AvgPool(3, 1)),
    ("gap", ir.GlobalAvgPool()),
    ("drop.5", ir.Dropout(0.5)),
    ("drop0.25", ir.Dropout(0.25)),
    ("drop0", ir.Dropout(0.0)),
    ("flatten", ir.Flatten(bar=False)),
    ("|", ir.Flatten(bar=True)),
    ("tanh", ir.Activation("tanh")),
    ("dense10 l2(0.010)", ir.Dense(10, l2=0.01)),
])
def test_layer_forms(text, expected):
    assert body(text) == (expected,)


def test_conv_kernel_stride_valid_shapes():
    # 32x32x3 input, worked by hand: valid 5x5 -> 28; same stride 2 -> ceil(32/2) = 16;
    # valid 3x3 stride 2 -> (32 - 3) // 2 + 1 = 15; 1x3 valid -> 32x30
    assert rows("conv4(k=5,valid) |")[0].output_shape == (28, 28, 4)
    assert rows("conv4(s=2) |")[0].output_shape == (16, 16, 4)
    assert rows("conv4(s=2,valid) |")[0].output_shape == (15, 15, 4)
    assert rows("conv4(k=1x3,valid) |")[0].output_shape == (32, 30, 4)
    assert rows("conv4(s=3) |")[0].output_shape == (11, 11, 4)  # ceil(32/3)


def test_pool_stride_shapes():
    # MaxPool2D(3, 3) on 32 -> (32 - 3) // 3 + 1 = 10 (the notebook); stride 2 -> 15;
    # same padding, stride 1 -> 32
    assert rows("pool3 |")[0].output_shape == (10, 10, 3)
    assert rows("pool3(s=2) |")[0].output_shape == (15, 15, 3)
    assert rows("pool3(s=1,same) |")[0].output_shape == (32, 32, 3)
    assert rows("avgpool2 |")[0].output_shape == (16, 16, 3)


def test_repetition_equals_writing_it_out():
    twice = "conv64 relu bn conv64 relu bn | dense5"
    assert layers("(conv64 relu bn)x2 | dense5") == layers(twice)
    assert layers("conv64 x3 |") == layers("conv64 conv64 conv64 |")
    assert layers("((relu)x2 bn)x3 |") == layers("relu relu bn " * 3 + "|")
    a, b = rows("(conv64 relu bn)x2 | dense5"), rows(twice)
    assert [(r.output_shape, r.trainable, r.non_trainable) for r in a] == [
        (r.output_shape, r.trainable, r.non_trainable) for r in b]
    # repeated layers get distinct Keras names
    names = [r.keras_name for r in a]
    assert len(set(names)) == len(names)
    assert body("(conv64 relu)x2")[0] == ir.Repeat(
        ir.Group((ir.Conv(64), ir.Activation("relu"))), 2)


def test_repeat_count_is_refused_after_a_penalty():
    # `dense8 l2(.01) x2` used to drop the x2 silently
    err = error("| dense8 l2(.01) x2")
    assert "`x2` cannot follow the weight penalty `l2`" in str(err)
    assert "(dense8 l2(.01))x2" in str(err)
    assert (err.line, err.column) == (1, 18)
    assert layers("| (dense8 l2(.01))x2") == (ir.Flatten(bar=True),) + (ir.Dense(8, l2=.01),) * 2


def test_let_blocks():
    text = "let unit = conv64 relu bn\nlet stage = unit unit pool2\nstage drop.25 | dense5"
    written = "conv64 relu bn conv64 relu bn pool2 drop.25 | dense5"
    assert layers(text) == layers(written)
    spec = cnnspec.parse(text)
    assert set(spec.blocks) == {"unit", "stage"}
    assert spec.body[0] == ir.BlockRef("stage")
    assert layers("let u = conv8\nu x3 |") == layers("conv8 conv8 conv8 |")


@pytest.mark.parametrize("text, message, where", [
    ("let u = relu\nlet u = bn\nu |", "block `u` is defined twice", (2, 5)),
    ("let conv = relu\n|", "`conv` cannot name a block", (1, 5)),
    ("let conv32 = relu\n|", "`conv32` cannot name a block", (1, 5)),
    ("let x2 = relu\n|", "`x2` cannot name a block", (1, 5)),
    ("let input = relu\n|", "`input` cannot name a block", (1, 5)),
    ("u |\nlet u = relu", "block `u` is used before it is defined", (1, 1)),
    ("let u = relu\nu(k=3) |", "block `u` takes no arguments or alternatives", (2, 1)),
])
def test_let_block_errors(text, message, where):
    err = error(text)
    assert message in str(err)
    assert (err.line, err.column) == where


def test_multi_line_specs_and_comments():
    text = textwrap.dedent("""\
        # a full-line comment
        input 28x28x1   # trailing comment
        classes 5

        conv8 relu  # first stage
        pool2
          | dense16 # head
        """)
    spec = cnnspec.parse(text)
    assert spec.input_shape == (28, 28, 1)
    assert spec.classes == 5
    assert len(spec.lines) == 7
    assert spec.lines[0] == ir.Line(None, "# a full-line comment")
    assert spec.lines[3] == ir.Line(None, None)
    assert spec.lines[4].comment == "# first stage"
    assert spec.layers() == layers("conv8 relu pool2 | dense16")
    # layer lines are read in order, as one sequence
    assert [r.output_shape for r in cnnspec.check(spec).rows][:3] == [
        (28, 28, 8), (28, 28, 8), (14, 14, 8)]
    # comments survive formatting
    assert "# trailing comment" in cnnspec.format_spec(spec)
    # CRLF line ends and tabs mean the same
    assert cnnspec.parse(text.replace("\n", "\r\n").replace("  ", "\t")) == spec


def test_header_defaults():
    spec = cnnspec.parse("conv8 |")
    assert spec.input_shape == (32, 32, 3)
    assert spec.classes == 10
    report = cnnspec.check(spec)
    assert report.input_shape == (32, 32, 3)
    assert report.rows[0].input_shape == (32, 32, 3)
    # the implicit classifier: dense10 softmax on the flattened 32*32*8
    *_, dense, softmax = report.rows
    assert (dense.keras_class, dense.output_shape, dense.trainable) == (
        "Dense", (10,), 32 * 32 * 8 * 10 + 10)
    assert dense.implicit and softmax.implicit
    assert (softmax.keras_class, softmax.layer) == ("Activation", ir.Activation("softmax"))
    assert cnnspec.check(cnnspec.parse("classes 3\n|")).output_shape == (3,)


def test_train_settings():
    spec = cnnspec.parse(
        "train optimizer=adam lr=.001 momentum=.9 batch=64 epochs=20 seed=3 shuffle=false "
        "validation=none\n|"
    )
    got = {s.key: s.value for s in spec.settings}
    assert got == {"optimizer": "adam", "lr": 0.001, "momentum": 0.9, "batch": 64,
                   "epochs": 20, "seed": 3, "shuffle": "false", "validation": "none"}
    aliases = cnnspec.parse("train opt=sgd learning_rate=1 batch_size=8\n|").settings
    assert [(s.key, s.value) for s in aliases] == [("optimizer", "sgd"), ("lr", 1.0),
                                                    ("batch", 8)]
    # settings may be spread over several train lines
    assert len(cnnspec.parse("train lr=.1\ntrain epochs=2\n|").settings) == 2


@pytest.mark.parametrize("text, message, hint", [
    ("train foo=1", "unknown training setting `foo`", "known: optimizer, lr"),
    ("train bacth=32", "unknown training setting `bacth`", "did you mean `batch`?"),
    ("train optimizer=adma", "optimizer must be one of", "did you mean `adam`?"),
    ("train batch=1.5", "batch must be a whole number, not 1.5", None),
    ("train lr=0", "lr must be greater than 0", None),
    ("train momentum=1", "momentum must be in [0, 1), got 1", None),
    ("train epochs=2 epochs=3", "`train epochs` is given twice", "keep one"),
])
def test_train_setting_errors(text, message, hint):
    err = error(text + "\n|")
    assert message in str(err)
    if hint:
        assert hint in str(err)
    assert err.line == 1 and err.column > 6


# -- what the checker computes -----------------------------------------------------------------


def test_params_macs_and_receptive_field_by_hand():
    r = rows("conv32 |")
    conv = r[0]
    assert conv.trainable == 3 * 3 * 3 * 32 + 32 == 896  # the notebook's 896
    assert conv.macs == 32 * 32 * 3 * 3 * 3 * 32
    assert conv.receptive_field == (3, 3)
    assert conv.activation_bytes == 32 * 32 * 32 * 4
    assert rows("conv8 conv8 |")[1].receptive_field == (5, 5)  # two 3x3 convs
    assert rows("conv8 pool2 |")[1].receptive_field == (4, 4)  # 3 + (2 - 1) * 1
    assert rows("conv8(s=2) conv8 |")[1].receptive_field == (7, 7)  # 3 + (3 - 1) * 2
    assert rows("conv8(k=1x5) |")[0].receptive_field == (1, 5)
    bn = rows("conv8 bn |")[1]
    assert (bn.trainable, bn.non_trainable) == (2 * 8, 2 * 8)
    dense = rows("pool2 | dense7")[2]  # 16 * 16 * 3 = 768 inputs
    assert (dense.trainable, dense.macs) == (768 * 7 + 7, 768 * 7)
    assert rows("conv8 gap")[1].output_shape == (8,)


def test_report_totals():
    report = cnnspec.check(cnnspec.load(SPECS / "exp1.cnn"))
    assert report.params == sum(r.params for r in report.rows)
    assert report.trainable + report.non_trainable == report.params
    assert report.macs == sum(r.macs for r in report.rows)
    table = report.to_dict()
    assert table["totals"]["params"] == report.params
    assert json.loads(json.dumps(table)) == table


# -- what the checker refuses ------------------------------------------------------------------


def test_spatial_size_reaching_zero():
    # 32 -> 10 -> 3 -> 1, and the fourth 3x3 pool has nothing to pool
    err = error("conv8\npool3 pool3 pool3 pool3 |")
    assert (err.line, err.column) == (2, 19)
    assert "pool3: input is 1×1×8, a 3×3 pool needs at least 3×3" in str(err)
    err = error("input 8x8x1\nconv4(k=9,valid) |")
    assert "input is 8×8×1, a 9×9 valid convolution needs at least 9×9" in str(err)
    assert (err.line, err.column) == (2, 1)


@pytest.mark.parametrize("text", ["drop1.5 |", "drop1 |", "drop1.0 |"])
def test_dropout_rate_outside_range(text):
    err = error(text)
    assert "drop rate must be in [0, 1)" in str(err)
    assert (err.line, err.column) == (1, 1)


def test_penalty_after_a_layer_without_weights():
    err = error("conv8 relu l2(.01) |")
    assert "l2 needs a layer with weights before it, but follows `relu`" in str(err)
    assert (err.line, err.column) == (1, 12)
    assert "follows `conv8 x2`" in str(error("conv8 x2 l2(.01) |"))
    assert "follows nothing on its line" in str(error("l1(.1) |"))
    # a weighted layer on the line before is not its layer: the hint says where it goes
    err = error("conv8\nl2(.01) | dense4")
    assert "follows nothing on its line" in str(err) and (err.line, err.column) == (2, 1)
    assert "goes on its layer's line, right after it" in str(err)


def test_dense_before_flatten():
    err = error("conv8 dense10 |")
    assert "dense10: needs a flat input, got 32×32×8" in str(err)
    assert "add `|` (flatten) or `gap` before it" in str(err)
    assert (err.line, err.column) == (1, 7)


def test_image_layers_after_flatten():
    err = error("| conv8")
    assert "conv8: needs an image-shaped input (H×W×C), got a flat vector of 3072" in str(err)
    assert "pool2: needs an image-shaped input" in str(error("| pool2"))


def test_classifier_needs_a_flat_input():
    err = error("conv8 relu")
    assert "the classifier dense10 needs a flat input, but the network ends at 32×32×8" in str(
        err)
    assert (err.line, err.column) == (1, 7)


def test_parameter_budget():
    # 32*32*64 = 65536 inputs into 10**6 units: 65,537,000,000 parameters in that layer alone
    err = error("conv64 | dense1000000")
    assert "over the budget of 1,000,000,000" in str(err)
    assert "dense1000000 alone has 65,537,000,000" in str(err)
    assert (err.line, err.column) == (1, 10)
    assert DEFAULT_MAX_PARAMS == 10**9


def test_budget_over_in_the_implicit_classifier_points_at_classes():
    # pool32 leaves 1x1x8, so the implicit dense10**8 reads 8 inputs: (8 + 1) * 10**8 =
    # 900,000,000 parameters alone, over a budget of 10**8. The user never wrote that layer:
    # the error points at the `classes` line that sized it, and its hint says so.
    err = error("classes 100000000\nconv8 pool32 |", max_params=10**8)
    assert "the classifier dense100000000 alone has 900,000,000" in str(err)
    assert (err.line, err.column) == (1, 9)
    assert "use fewer classes" in err.diagnostics[0].hint
    # no `classes` line (the default 10): at the end of the written network, the `|`
    # 1000*1000*8 = 8,000,000 flat inputs into the dense10: 80,000,010 parameters alone
    err = error("input 1000x1000x3\nconv8 relu |", max_params=10**7)
    assert "the classifier dense10 alone has 80,000,010" in str(err)
    assert (err.line, err.column) == (2, 12)
    # a written layer still gets its own hint
    assert "use fewer units" in error("conv64 | dense1000000").diagnostics[0].hint


def test_custom_max_params():
    spec = cnnspec.load(SPECS / "exp1.cnn")
    total = cnnspec.check(spec).params
    assert cnnspec.check(spec, max_params=total).params == total
    with pytest.raises(cnnspec.SpecError, match="over the budget of"):
        cnnspec.check(spec, max_params=total - 1)


def test_second_bar():
    err = error("conv8 | dense8 | dense4")
    assert "a second `|`" in str(err)
    assert (err.line, err.column) == (1, 16)
    rows("conv8 | dense8 flatten dense4")  # an explicit flatten is allowed


def test_softmax_before_implicit_classifier():
    # a trailing softmax writes the spec's own head; 8 values are not 10 classes
    err = error("conv8 | dense8 softmax")
    assert "softmax ends the network, so it writes its own head, but it gives 8 values" in str(
        err)
    assert (err.line, err.column) == (1, 16)
    rows("conv8 softmax | dense8")  # elsewhere it is just an activation


def test_own_head_turns_the_implicit_classifier_off():
    own = rows("classes 7\nconv8 | dense7 softmax")
    assert [r.text for r in own] == ["conv8", "|", "dense7", "softmax"]
    assert not any(r.implicit for r in own) and own[-1].keras_name == "softmax_l2c16"
    allconv = rows("conv10(k=1) relu gap softmax")
    assert [r.keras_class for r in allconv][-2:] == ["GlobalAveragePooling2D", "Activation"]
    assert allconv[-1].output_shape == (10,)
    # without the softmax the implicit head is there, as for every seed spec
    assert [r.keras_name for r in rows("conv10(k=1) relu gap")][-2:] == [
        "classifier_dense10", "classifier_softmax"]
    # a softmax inside a block that ends the network counts too
    assert rows("let head = gap softmax\nconv10 head")[-1].text == "softmax"


def test_own_head_must_give_the_classes():
    err = error("conv10(k=1) relu softmax")
    assert "it gives 32×32×10, not a vector of 10 (`classes 10`)" in str(err)
    assert "put `gap` or `|` before the softmax" in str(err)
    assert (err.line, err.column) == (1, 18)
    err = error("classes 3\nconv8 gap softmax")
    assert "gives 8 values and `classes 3` needs 3" in str(err)
    assert "end with `dense3 softmax`" in str(err)


def test_all_problems_reported_at_once():
    err = error("cnov8 relu dropp.5 |\ntrain lrr=.1")
    assert len(err.diagnostics) == 3
    assert [(d.span.line, d.span.column) for d in err.diagnostics] == [(1, 1), (1, 12), (2, 7)]
    err = error("conv8 | dense4 | dense4 softmax")
    assert len(err.diagnostics) == 2


def test_sweeps_are_not_checked_directly():
    err = error("conv8 drop{.25,.5} |")
    assert "sweep alternatives" in str(err)


def test_absurd_repeat_counts_are_refused_quickly(monkeypatch):
    # quickly = before anything is unrolled (a count, not a clock: holds on any machine)
    def unrolled(self):
        raise AssertionError("the network was unrolled")

    monkeypatch.setattr(ir.Spec, "layers", unrolled)
    monkeypatch.setattr(ir.Spec, "layers_with_uses", unrolled)
    err = error("conv8 (relu x1000)x1000 |")
    assert f"over the limit of {MAX_LAYERS:,}" in str(err)
    assert "1,000,002 layers" in str(err)
    assert (err.line, err.column) == (1, 7)
    # blocks that double each other: 2**20 layers in a few lines
    text = "let a = relu relu\n" + "".join(
        f"let {n} = {p} {p}\n" for p, n in zip("abcdefghijklmnopqrs", "bcdefghijklmnopqrst",
                                              strict=True)) + "t |"
    assert "1,048,577 layers" in str(error(text))


@pytest.mark.parametrize("text", ["conv8 l2(1e999) |", "train lr=1e999\n|"])
def test_infinite_numbers_are_refused(text):
    # float("1e999") is inf, which the formatter could not write back as a number
    assert "is too large: 1e999" in str(error(text))


def test_deep_nesting_is_refused():
    err = error("(" * 200 + "relu" + ")" * 200 + " |")
    assert "nest more than" in str(err)


def test_brackets_nest_32_deep_as_the_readme_says():
    cnnspec.parse("(" * 32 + "relu" + ")" * 32 + " |")
    assert "brackets nest more than 32 deep" in str(error("(" * 33 + "relu" + ")" * 33 + " |"))


# -- error messages: suggestions, positions, the error object ----------------------------------


@pytest.mark.parametrize("text, suggestion", [
    ("cnov32 |", "conv32"),
    ("conv32 dropp.5 |", "drop.5"),
    ("rleu |", "relu"),
    ("conv32 btn |", "bn"),
    ("densse10 |", "dense10"),
    ("let unit = relu\nunti |", "unit"),
])
def test_did_you_mean(text, suggestion):
    assert f"did you mean `{suggestion}`?" in str(error(text))


def test_no_suggestion_that_repeats_the_word():
    text = str(error("drop1e5 |"))
    assert "did you mean `drop1e5`" not in text
    assert "cannot read the number in `drop1e5`" in text


def test_stray_and_unclosed_brackets():
    err = error("conv32 ] relu |")
    assert "unexpected character ']'" in str(err)
    assert "use ( ) for groups" in str(err)
    assert (err.line, err.column) == (1, 8)
    err = error("conv32 (relu bn |")
    assert "`(` is not closed on this line" in str(err)
    assert (err.line, err.column) == (1, 8)  # at the `(` itself
    err = error("conv32 relu) |")
    assert "unmatched `)`" in str(err)
    assert (err.line, err.column) == (1, 12)
    err = error("(conv32\nrelu) |")
    assert "`(` is not closed" in str(err) and err.line == 1


def test_spec_error_exposes_its_place(tmp_path):
    path = tmp_path / "bad.cnn"
    path.write_text("input 32x32x3\nconv32 relu cnov64 |\n")
    with pytest.raises(cnnspec.SpecError) as info:
        cnnspec.load(path)
    err = info.value
    assert (err.filename, err.line, err.column) == (str(path), 2, 13)
    assert str(err).splitlines() == [
        f"{path}:2:13: error: unknown layer word `cnov64`",
        "    conv32 relu cnov64 |",
        "                ^^^^^^",
        "  hint: did you mean `conv64`?",
    ]
    missing = tmp_path / "missing.cnn"
    with pytest.raises(cnnspec.SpecError) as info:
        cnnspec.load(missing)
    assert info.value.filename == str(missing) and info.value.line is None
    assert isinstance(info.value, Exception)


def test_error_shows_the_right_line_despite_odd_line_breaks():
    # \f, \x1c and \u2028 are line breaks to str.splitlines but not to the parser
    err = error("# a\u2028b\x1cc\nrelu\fcnov |")
    assert err.line == 2
    # ... and the line is shown with its form feed as a visible sign, so the caret line below
    # it is the very next line of the terminal, under the same characters
    shown = str(err).split("\n")
    assert shown[1:3] == ["    relu\u240ccnov |", "         ^^^^"]


@pytest.mark.parametrize(("text", "shown"), [
    ("conv8 \x1b[31m zz\n", "    conv8 \u241b[31m zz"),  # an escape cannot recolour the terminal
    ("conv32 relu\rpool2 gap\r", "    conv32 relu\u240dpool2 gap"),  # CR-only line endings
    ("add()\x0b\u2029gap\n", "    add()\u240b\ufffdgap"),
    ("conv8 \x7f gap\n", "    conv8 \u2421 gap"),
])
def test_control_characters_in_the_shown_line_are_visible_signs(text: str, shown: str) -> None:
    lines = str(error(text)).split("\n")
    assert lines[1] == shown
    assert lines[2].strip() and set(lines[2].strip()) == {"^"}
    assert all(ch.isprintable() for line in lines for ch in line)


# -- the layer table against Keras -------------------------------------------------------------


def _spec_for(word: str) -> str:
    if KINDS[word].modifier:
        return f"input 9x7x3\nconv5 {word}(.01) |"
    example = {"conv": "conv5(k=3x2,s=2)", "pool": "pool2(s=1)", "avgpool": "avgpool3",
               "drop": "drop.3", "dense": "dense6", "flatten": "flatten", "gap": "gap"}
    written = example.get(word, KINDS[word].spelling)  # new words: the table's example
    if word in ("dense",):
        return f"input 9x7x3\n| {written}"
    if word in ("gap", "gmp", "flatten"):
        return f"input 9x7x3\nconv4 {written} dense3"
    return f"input 9x7x3\nconv4 {written} |"


@pytest.mark.parametrize("word", sorted(KINDS))
def test_every_layer_word_matches_keras(word):
    keras = pytest.importorskip("keras")
    from cnnspec.backend.keras_model import build_model

    report = cnnspec.check(cnnspec.parse(_spec_for(word)))
    model = build_model(report, keras)
    assert len(model.layers) == len(report.rows)
    for row, layer in zip(report.rows, model.layers, strict=True):
        assert tuple(layer.output.shape) == (None, *row.output_shape), row.text
        assert layer.count_params() == row.params, row.text
        assert sum(int(w.numpy().size) for w in layer.non_trainable_weights) == (
            row.non_trainable), row.text
    if KINDS[word].modifier:
        reg = model.layers[0].kernel_regularizer
        assert float(reg.get_config()[word]) == pytest.approx(0.01)


# -- files that must stay as they are ----------------------------------------------------------

FILES = sorted(SPECS.glob("*.cnn")) + sorted(EXAMPLES.glob("*.cnn"))


@pytest.mark.parametrize("path", FILES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_repository_specs_check_and_are_canonical(path):
    spec = cnnspec.load(path)
    report = cnnspec.check(spec)
    assert report.output_shape == (spec.classes,)
    assert cnnspec.format_spec(spec) == path.read_text("utf-8")


def test_there_are_seed_specs_and_examples():
    names = {p.name for p in FILES}
    assert {f"exp{n}.cnn" for n in range(1, 8)} <= names
    assert len(FILES) >= 10


@pytest.mark.parametrize("messy, canonical", [
    ("conv32( k=3 , s=1 , same )  relu", "conv32 relu\n"),
    ("drop0.250 pool3(s=3) conv64(kernel=5x5)", "drop.25 pool3 conv64(k=5)\n"),
    ("dense5   l2(0.010)", "dense5 l2(.01)\n"),
    ("( conv8 relu ) x2", "(conv8 relu)x2\n"),
    ("conv8 x2", "conv8 x2\n"),
    ("conv8(valid,k=1x3)", "conv8(k=1x3,valid)\n"),
    ("input 28x28x1  #  note ", "input 28x28x1  #  note\n"),
    ("train opt=adam learning_rate=1e-3", "train optimizer=adam lr=.001\n"),
    ("drop{0.25,.5}?", "drop{.25,.5}?\n"),
])
def test_canonical_spelling(messy, canonical):
    assert cnnspec.format_spec(cnnspec.parse(messy)) == canonical


def test_json_round_trip_of_a_seed_spec():
    spec = cnnspec.load(SPECS / "exp6.cnn")
    text = ir.to_json(spec)
    assert ir.from_json(text) == spec
    assert ir.to_json(ir.from_json(text)) == text
    with pytest.raises(ValueError):
        ir.from_json(json.dumps({"kind": "Conv", "filters": 3}))


def test_front_end_does_not_import_tensorflow():
    code = textwrap.dedent("""
        import sys
        import cnnspec
        spec = cnnspec.parse("conv32 relu | dense10")
        cnnspec.check(spec)
        cnnspec.format_spec(spec)
        cnnspec.check(cnnspec.load(%r))
        heavy = sorted(m for m in sys.modules
                       if m.split(".")[0] in ("tensorflow", "keras", "tf_keras", "jax", "torch"))
        print(",".join(heavy))
    """) % str(SPECS / "exp6.cnn")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            cwd=ROOT, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ""


@pytest.mark.parametrize("text", [
    "conv64(k={3,5}) gap\n", "conv8(bias={true,false}) gap\n", "conv8(s={1,2}) gap\n",
    "pool2(s={1,2}) gap\n", "gap | dense8(bias={true,false})\n", "conv8({valid,same}) gap\n",
    "drop.25 conv16(k={1,3},s={1,2}) gap\n",
])
def test_fmt_keeps_the_number_of_a_layer_whose_arguments_are_swept(text: str) -> None:
    """fmt wrote `conv64(k={3,5})` as `conv(k={3,5})`, a spec that no longer checks: the
    canonical text of a sweep point over arguments keeps the layer's number."""
    from cnnspec.language.format import format_spec
    from cnnspec.language.sweep import expand

    spec = cnnspec.parse(text, name="s")
    canonical = format_spec(spec)
    assert canonical == text  # each is written canonically already
    again = cnnspec.parse(canonical, name="s")
    assert again == spec
    assert [v.name for v in expand(again)] == [v.name for v in expand(spec)]


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n",
                                  "input 32x32x3\ntrain epochs=2\n"])
def test_a_spec_without_layers_says_so(text: str) -> None:
    err = error(text)
    assert [d.message for d in err.diagnostics] == ["the spec has no layers"]
    assert "conv32 relu pool2 | dense64" in str(err)


@pytest.mark.parametrize("text", ["conv8 bn(eps=1e-320) |", "conv8 l2(1e-40) |",
                                  "train lr=1e-45\n|"])
def test_numbers_that_vanish_in_float32_are_refused(text):
    """1e-320 is a float64 denormal: in float32 (and bf16) it is 0, so `bn(eps=1e-320)`
    would divide by a zero variance. The least normal float32 is numpy's, not ours."""
    import numpy as np

    assert "is too small" in str(error(text))
    tiny = float(np.finfo(np.float32).tiny)
    cnnspec.parse(f"conv8 bn(eps={tiny!r}) |")  # the least normal value itself is fine
    assert "is too small" in str(error(f"conv8 bn(eps={float(np.nextafter(tiny, 0))!r}) |"))


def test_a_rate_that_is_1_in_float32_is_refused():
    """drop.99999999 passes `< 1` in Python but the model holds the rate in float32, where it
    is 1 (numpy says so, independently): refused; the largest float32 below 1 is kept."""
    import numpy as np

    assert np.float32(0.99999999) == 1.0
    assert "is 1 in float32" in str(error("conv8 drop.99999999 |"))
    below = float(np.nextafter(np.float32(1), np.float32(0)))
    cnnspec.parse(f"conv8 drop{below!r} |".replace("drop0.", "drop."))


def test_load_of_a_name_holding_nul_is_a_spec_error():
    with pytest.raises(cnnspec.SpecError, match="the file name holds a NUL character"):
        cnnspec.load("a\x00b.cnn")  # os.open raised ValueError: embedded null byte


def test_a_leading_byte_order_mark_is_no_error():
    """`cnnspec check` reads files as utf-8-sig; an editor may send the mark along, and the
    language server and the API refused it as an unexpected character at 1:1."""
    assert len(cnnspec.check(cnnspec.parse("\ufeffconv8 relu |")).rows) == 5
    err = error("\ufeffconv8 rleu |")  # positions count the mark, as the client's text does
    assert (err.line, err.column) == (1, 8)
    from cnnspec.editor import analysis

    assert analysis.diagnostics("\ufeffconv8 relu |\n") == []
