"""cnnspec.editor.analysis: what the language server answers, on small texts, with expected values
computed here by hand (not read back from the checker)."""

from __future__ import annotations

from cnnspec.editor import analysis as a

SPEC = """input 32x32x3
train lr=.01 batch=32
let unit(f) = conv{f} bn relu
conv8 unit(8) pool2 drop.25 |
"""


def test_clean_spec_has_no_diagnostics():
    assert a.diagnostics(SPEC) == []


def test_unknown_word_range_covers_the_token_and_carries_the_hint():
    (p,) = a.diagnostics("conv8 cnov8 pool2 |\n")
    assert p.range == (0, 6, 0, 11)  # `cnov8`, 0-based, end exclusive
    assert p.severity == a.ERROR
    assert "unknown layer word `cnov8`" in p.message
    assert "hint: did you mean `conv8`?" in p.message


def test_every_problem_is_reported():
    problems = a.diagnostics("conv8 cnov8 pool2 drop1.5 |\nreluu\n")
    assert len(problems) >= 2
    assert {p.range[0] for p in problems} == {0, 1}


def test_sweep_problem_names_the_variant():
    (p,) = a.diagnostics("input 4x4x3\nconv8 pool{2,8} |\n")
    assert p.message.startswith("in variant spec[pool=8]:")
    assert p.range[:2] == (1, 6)


def test_hover_on_a_layer():
    text = a.hover(SPEC, 3, 1)
    params = 3 * 3 * 3 * 8 + 8  # 3x3 kernel, 3 channels in, 8 filters, plus bias
    macs = 32 * 32 * 8 * 3 * 3 * 3
    assert "Conv2D" in text and "conv8_l4c1" in text
    assert "32×32×3 → 32×32×8" in text
    assert f"params {params:,} (trainable {params:,}, non-trainable 0)" in text
    assert f"MACs {macs / 1e3:.2f}k" in text
    assert "RF 3" in text


def test_hover_on_a_block_use_gives_its_expansion_and_totals():
    text = a.hover(SPEC, 3, 7)
    conv = 3 * 3 * 8 * 8 + 8
    bn_t, bn_n = 2 * 8, 2 * 8
    assert "**unit** = conv8 bn relu" in text
    assert f"params {conv + bn_t + bn_n:,} (trainable {conv + bn_t:,}, non-trainable {bn_n})" \
        in text


def test_hover_on_setting_and_header():
    assert "learning rate" in a.hover(SPEC, 1, 7) and "default: `0.01`" in a.hover(SPEC, 1, 7)
    model = a.hover(SPEC, 0, 2)
    c1 = 3 * 3 * 3 * 8 + 8
    c2 = 3 * 3 * 8 * 8 + 8
    dense = 16 * 16 * 8 * 10 + 10
    assert f"params {c1 + c2 + 32 + dense:,}" in model


def test_hover_never_fails_on_bad_input():
    assert "Conv2D" in a.hover("conv8 cnov", 0, 2)
    assert a.hover("x", 5, 5) is None
    assert a.hover("", 0, 0) is None


def test_completion():
    labels = {c.label for c in a.completions(SPEC, 4, 0)}
    assert {"conv32", "bn", "relu", "unit", "let"} <= labels
    keys = {c.label for c in a.completions("train ", 0, 6)}
    assert {"lr", "batch", "optimizer", "epochs"} <= keys
    values = {c.label for c in a.completions("train optimizer=", 0, 16)}
    assert values == {"sgd", "adam", "adamw", "rmsprop", "nadam", "adagrad"}
    assert a.completions("conv8 # ", 0, 8) == []
    assert a.completions("x", 9, 9)  # a position past the end still completes layer words


def test_definition_and_references():
    assert a.definition(SPEC, 3, 8) == (2, 4, 2, 8)
    assert a.references(SPEC, 3, 8) == [(2, 4, 2, 8), (3, 6, 3, 10)]
    assert a.references(SPEC, 3, 8, include_declaration=False) == [(3, 6, 3, 10)]
    assert a.definition(SPEC, 3, 1) is None  # conv8 is not a block
    text = "let u = conv8 relu  # u again\nu u(x)\n"
    assert a.references(text, 1, 0) == [(0, 4, 0, 5), (1, 0, 1, 1), (1, 2, 1, 3)]


def test_symbols():
    syms = a.symbols(SPEC)
    assert [(s.kind, s.name) for s in syms] == [
        ("header", "input 32x32x3"), ("header", "train lr=.01 batch=32"), ("block", "unit")]
    assert syms[2].selection == (2, 4, 2, 8)


def test_formatting():
    assert a.formatted("conv8   relu  drop0.25 |\n") == "conv8 relu drop.25 |\n"
    assert a.formatted("conv8 cnov |\n") is None


def test_no_tensorflow_or_pygls():
    import subprocess
    import sys

    code = ("import sys, cnnspec.editor.analysis as a; a.hover('conv8 |', 0, 1); "
            "print(any(m.split('.')[0] in ('tensorflow', 'pygls') for m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "False"


def test_argument_completion_inside_parentheses():
    labels = [c.label for c in a.completions("conv64(k=3,", 0, 11)]
    assert {"k=", "s=", "d=", "valid", "same", "nobias"} <= set(labels)
    assert {c.label for c in a.completions("pool2(", 0, 6)} == {"s=", "padding=", "same",
                                                                "valid"}
    assert {c.label for c in a.completions("bn(", 0, 3)} == {"m=", "eps="}
    assert a.completions("l2(", 0, 3) == []  # takes its number only
    assert "conv32" in {c.label for c in a.completions("add(", 0, 4)}  # a merge holds layers


def test_inlay_hints_match_the_shapes_exp7_writes_by_hand():
    from pathlib import Path

    text = (Path(__file__).resolve().parent.parent / "specs" / "exp7.cnn").read_text()
    hints = a.inlay_hints(text)
    lines = text.split("\n")
    # exp7's comments: `# 32x32x64 -> 16x16x64`, `# 16x16x128 -> 8x8x128`, `# 8192 -> 512 ...`
    assert [label for _, _, label in hints] == ["→ 16×16×64", "→ 8×8×128", "→ 512"]
    for line, character, _ in hints:
        assert lines[line][character:].lstrip().startswith("#")  # at the end of the code
    assert a.inlay_hints("conv8 drop{.1,.2} |") == []  # a sweep: its variants differ
    assert a.inlay_hints("conv8 cnov |") == []


def test_hover_on_a_sweep_shows_its_first_variant_and_says_so():
    """The figures are those of the first variant in grid order (each choice's first value),
    not of a variant drawn at random, and the hover names it: `conv{8,16}` shows conv8."""
    text = "conv{8,16} relu drop{.25,.5} |\n"
    shown = a.hover(text, 0, 1)
    params = 3 * 3 * 3 * 8 + 8
    assert f"params {params:,}" in shown and "32×32×3 → 32×32×8" in shown
    assert shown.endswith("(variant `spec[conv=8,drop=.25]`, the first of 4)")
    assert "**drop.25**" in a.hover(text, 0, 17)
    assert "variant" not in a.hover("conv8 relu |\n", 0, 1)  # not a sweep: no note
    # a setting's documentation is the same in every variant: no note
    setting = a.hover("train lr={.1,.2}\nconv8 |\n", 0, 7)
    assert setting and "variant" not in setting


def test_definition_and_references_skip_argument_names_and_comments():
    """A block named like an argument (`s`) is not referred to by `conv8(s=2)`, nor by a
    comment; `let s=conv8` written without spaces is still its declaration."""
    text = "let s = conv8 relu\ns conv8(k=3, s=2) s |  # s again\n"
    assert a.definition(text, 1, 0) == (0, 4, 0, 5)
    assert a.definition(text, 1, 13) is None  # the `s` of `s=2`
    assert a.definition(text, 1, 32) is None  # in the comment
    assert a.references(text, 1, 0) == [(0, 4, 0, 5), (1, 0, 1, 1), (1, 18, 1, 19)]
    tight = "let s=conv8 relu\ns s |\n"
    assert a.references(tight, 1, 0) == [(0, 4, 0, 5), (1, 0, 1, 1), (1, 2, 1, 3)]
    assert a.references(tight, 1, 0, include_declaration=False) == [(1, 0, 1, 1), (1, 2, 1, 3)]


def test_header_lines_complete_values_not_layer_words():
    """After `input ` a layer word would not parse; a shape does, and each one offered
    parses as the spec's input (checked by parsing it, not by a list in the test)."""
    import cnnspec

    shapes = [c.label for c in a.completions("input ", 0, 6)]
    assert shapes and "conv32" not in shapes
    for shape in shapes:
        spec = cnnspec.parse(f"input {shape}\nconv8 relu | dense4\n")
        assert "x".join(map(str, cnnspec.check(spec).input_shape)) == shape
    counts = [c.label for c in a.completions("classes ", 0, 8)]
    assert counts and "relu" not in counts
    for count in counts:
        assert cnnspec.check(cnnspec.parse(f"classes {count}\nconv8 relu gap\n")).classes \
            == int(count)
    assert "conv32" in {c.label for c in a.completions("input", 0, 5)}  # the word itself


def test_references_skip_argument_values_and_settings_of_the_same_word():
    # `same` is conv8's padding inside its brackets, `flip` an augmentation on the train line:
    # neither is a use of the block named alike (both texts check)
    same = "let same = relu\nconv8(same) same |\n"
    assert a.references(same, 1, 13) == [(0, 4, 0, 8), (1, 12, 1, 16)]
    flip = "let flip = relu\nconv8 flip |\ntrain augment=flip\n"
    assert a.references(flip, 1, 7) == [(0, 4, 0, 8), (1, 6, 1, 10)]
    # uses inside a merge's branches are uses
    merge = "let u = conv8 relu\nu add(u, u) |\n"
    assert a.references(merge, 1, 0) == [(0, 4, 0, 5), (1, 0, 1, 1), (1, 6, 1, 7),
                                         (1, 9, 1, 10)]


def test_sweep_problems_and_hover_name_variants_after_the_file():
    """As `cnnspec check exp7.cnn` does (`exp7[pool=8]`); they said `spec[pool=8]`."""
    text = "input 4x4x3\nconv8 pool{2,8} |\n"
    (problem,) = a.diagnostics(text, name="exp7")
    assert problem.message.startswith("in variant exp7[pool=8]: pool8:")
    assert "`exp7[pool=2]`" in a.hover(text, 1, 1, name="exp7")


# -- found by a review of the editor answers (2026-12-03) --------------------------------------

CONV8 = 3 * 3 * 3 * 8 + 8  # conv8 on a 32x32x3 input
BN8 = 4 * 8  # gamma, beta (trainable) and the two moving statistics


def test_hover_on_a_repeated_block_shows_one_use():
    """`u x2` writes one use that makes two copies: the hover is the block, not both copies."""
    for text, position in [("input 32x32x3\nlet u = conv8 relu\nu x2 |\n", (2, 0)),
                           ("input 32x32x3\nlet u = conv8 relu\nu x2 |\n", (1, 4)),
                           ("input 32x32x3\nlet u = conv8 relu\n(u pool2)x2 |\n", (2, 1))]:
        shown = a.hover(text, *position)
        assert shown.startswith("**u** = conv8 relu\n"), (text, shown)
        assert f"2 layers · params {CONV8:,} " in shown


def test_hover_on_a_let_line_counts_the_blocks_it_uses():
    text = "input 32x32x3\nlet a = conv8 relu\nlet b = a bn\nb |\n"
    for position in [(2, 4), (3, 0)]:  # the `let` line and the use agree
        shown = a.hover(text, *position)
        assert shown.startswith("**b** = conv8 relu bn\n")
        assert f"3 layers · params {CONV8 + BN8:,} " in shown


def test_keywords_are_offered_for_the_first_word_of_a_line():
    for typed in ("in", "tr", "le", "cl", ""):
        keywords = [c.label for c in a.completions(typed + "\n", 0, len(typed))
                    if c.kind == "keyword"]
        assert keywords == ["input", "classes", "train", "let"], typed
    assert not [c for c in a.completions("conv8 in\n", 0, 8) if c.kind == "keyword"]


def test_arguments_are_offered_inside_swept_or_parameterised_calls():
    conv = {"k=", "s=", "padding=", "same", "valid"}
    for text in ("let unit(f, s=1) = conv{f}(", "conv{8,16}(", "conv8(k=3,"):
        labels = {c.label for c in a.completions(text, 0, len(text))}
        assert conv <= labels and "relu" not in labels, text
    block = "let unit(f, s=1) = conv{f}(s={s})\nunit(64, "
    assert [c.label for c in a.completions(block, 1, 9)] == ["f=", "s="]


def test_train_line_completion_inside_a_call_or_a_set():
    onecycle = [c.label for c in a.completions("train lr=onecycle(.4, ", 0, 22)]
    assert onecycle == ["peak=", "warm=", "final=", "start="]
    assert [c.label for c in a.completions("train lr=onecycle(", 0, 18)] == onecycle
    values = [c.label for c in a.completions("train augment={none, ", 0, 21)]
    assert "flip" in values and "lr" not in values
    crop = [c.label for c in a.completions("train augment=crop4(", 0, 20)]
    assert crop and "lr" not in crop and "flip" not in crop
    assert "epochs" in [c.label for c in a.completions("train lr=.1 ", 0, 12)]


def test_hover_on_a_train_line_with_spaces_inside_values():
    text = ("input 32x32x3\ntrain lr=onecycle(.4, warm=.2) augment={none, flip+crop4}\n"
            "conv8 |\n")
    assert a.hover(text, 1, 23).startswith("**warm** (onecycle's `warm`):")
    assert a.hover(text, 1, 51).startswith("**augment**:")  # on `crop4`, after `, `
    assert a.hover(text, 1, 7).startswith("**lr**:")


def test_an_argument_value_spelt_like_a_block_is_a_value():
    """`conv8(same)` is the padding, though a block is named `same` (references agreed)."""
    text = "input 32x32x3\nlet same = conv8\nconv8(same) same |\n"
    assert a.definition(text, 2, 7) is None
    assert a.hover(text, 2, 7).startswith("**same** (conv's `padding`)")
    assert a.definition(text, 2, 13) == (1, 4, 1, 8)
    assert a.references(text, 1, 4) == [(1, 4, 1, 8), (2, 12, 2, 16)]


def test_hover_on_a_block_repeated_inside_another_shows_one_expansion():
    text = "input 32x32x3\nlet u = conv8 relu\nlet v = u x2\nv |\n"
    for position in [(2, 8), (1, 4)]:  # `u` in v's let line; u's own let line
        shown = a.hover(text, *position)
        assert shown.startswith("**u** = conv8 relu\n") and f"2 layers · params {CONV8:,} " \
            in shown, shown


def test_hover_on_a_let_line_walks_the_network_once(monkeypatch):
    """The let-line hover looked each row's use up with a walk of the whole network: a
    network of 8,000 uses took 20 s. Counted, not timed."""
    walks = []
    real = a._use_nodes
    monkeypatch.setattr(a, "_use_nodes", lambda spec: walks.append(1) or real(spec))
    text = "input 8x8x3\nlet u = relu\nlet v = u\n" + " ".join(["v"] * 300) + " |\n"
    assert a.hover(text, 1, 4).startswith("**u** = relu\n")
    assert len(walks) == 1
