"""Hardening of the language front end (issue 9): settings that check must train, bounded
sweeps, bounded input, linear checking, every error listed, suggestions, block rows.

Expected values are derived in the tests (arithmetic, itertools, numpy), never copied from the
implementation's output.
"""

from __future__ import annotations

import importlib
import itertools
import json
import random
import sys
import tracemalloc
import types

import hypothesis
import hypothesis.strategies as st
import numpy as np
import pytest
from conftest import SPECS
from test_properties import spec_text

import cnnspec
from cnnspec.language import settings as settings_mod
from cnnspec.language import sweep
from cnnspec.language.checker import MAX_LAYERS
from cnnspec.language.diff import diff_reports
from cnnspec.language.errors import WINDOW
from cnnspec.language.parse import FRAMEWORK_WORDS, MAX_PROBLEMS, MAX_SPEC_BYTES
from cnnspec.language.settings import (
    MAX_SEED,
    OPTIMIZERS,
    TrainSettings,
    setting_problems,
    validate,
)


def error(text: str, **check_kwargs) -> cnnspec.SpecError:
    with pytest.raises(cnnspec.SpecError) as info:
        cnnspec.check(cnnspec.parse(text, filename="t.cnn"), **check_kwargs)
    return info.value


# -- 8. whatever check accepts must train ------------------------------------------------------


def test_momentum_with_adam_is_refused_at_the_momentum_setting():
    text = "input 32x32x3\ntrain optimizer=adam lr=.001 momentum=.9\nconv8 relu |\n"
    err = error(text)
    (d,) = err.diagnostics
    line2 = text.split("\n")[1]
    assert d.span.line == 2
    assert d.span.column == line2.index("momentum") + 1
    assert d.span.end_column == len(line2) + 1  # `momentum=.9` is the last thing on the line
    assert "momentum" in d.message and "adam" in d.message
    assert d.hint and "sgd" in d.hint
    assert "t.cnn:2:" in str(err)


class _Recorder:
    """Stands in for a keras.optimizers class: keeps the arguments it was built with."""

    def __init__(self, **kwargs):
        self.kwargs = kwargs


def _fake_keras():
    names = ("SGD", "RMSprop", "Adam", "AdamW", "Nadam", "Adagrad")
    return types.SimpleNamespace(optimizers=types.SimpleNamespace(
        **{n: type(n, (_Recorder,), {}) for n in names}))


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
@pytest.mark.parametrize("momentum", ["0", ".9"])
def test_every_optimizer_and_momentum_that_checks_builds(optimizer, momentum):
    """check accepts a combination exactly when the trainer's optimizer factory builds it."""
    from cnnspec.training.train import _make_optimizer

    spec = cnnspec.parse(f"train optimizer={optimizer} momentum={momentum}\n|")
    try:
        cnnspec.check(spec)
        accepted = True
    except cnnspec.SpecError:
        accepted = False
    settings = settings_mod.settings_of(spec)
    try:
        _make_optimizer(_fake_keras(), settings)
        builds = True
    except ValueError:
        builds = False
    assert accepted == builds
    # and the pure validator (for command-line overrides) agrees with both
    assert (validate(settings) is None) == builds


def test_validate_for_command_line_overrides():
    assert validate(TrainSettings()) is None
    bad = TrainSettings().override(optimizer="adam", momentum=0.9)
    message = validate(bad)
    assert message is not None and "momentum" in message and "adam" in message
    assert [p.key for p in setting_problems(bad)] == ["momentum"]
    # values no spec could hold but a command line can
    for field, value in (("momentum", 1.5), ("lr", 0.0), ("batch", 0), ("epochs", 0),
                         ("seed", MAX_SEED + 1), ("lr", float("inf")), ("batch", 2.5)):
        problems = setting_problems(TrainSettings().override(**{field: value}))
        assert [p.key for p in problems] == [field], (field, value)
    assert validate(TrainSettings().override(optimizer="rmsprop", momentum=0.9)) is None


def test_seed_range_is_what_numpy_accepts():
    # numpy (under keras.utils.set_random_seed) takes 0 .. 2**32-1; derive the edge from numpy
    np.random.seed(2**32 - 1)
    with pytest.raises(ValueError):
        np.random.seed(2**32)
    assert MAX_SEED == 2**32 - 1
    cnnspec.check(cnnspec.parse(f"train seed={2**32 - 1}\n|"))
    err = error("train seed=99999999999\n|")
    assert err.line == 1 and err.column == len("train seed=") + 1
    assert "seed" in str(err)


def test_a_spec_settings_problem_and_a_shape_problem_are_both_listed():
    text = "train optimizer=nadam momentum=.5\ndense10 conv8\n"
    lines = sorted(d.span.line for d in error(text).diagnostics)
    assert lines == [1, 2]


# -- 1. sweeps are counted, not built; samples are drawn, not enumerated -----------------------


def _refused_without_building(monkeypatch, call) -> cnnspec.SpecError:
    """call() must raise SpecError without building a variant or allocating much."""
    def no_build(*args, **kwargs):
        raise AssertionError("a variant was built")

    monkeypatch.setattr(sweep, "_choose", no_build)
    tracemalloc.start()
    try:
        with pytest.raises(cnnspec.SpecError) as info:
            call()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 2_000_000, peak  # the old code listed 2**60 tuples
    return info.value


def test_sixty_optional_layers_are_refused_without_building(monkeypatch):
    text = "bn? " * 60 + "|\n"
    assert len(text) <= 242
    spec = cnnspec.parse(text)
    assert sweep.variant_count(spec) == 2**60
    err = _refused_without_building(monkeypatch, lambda: sweep.check_all_variants(spec))
    assert f"{2**60:,}" in str(err) and "--sample" in str(err)
    _refused_without_building(monkeypatch, lambda: sweep.expand(spec))
    # nine five-way points, and a sample over the limit, are refused the same way
    five = cnnspec.parse("conv{1,2,3,4,5} " * 9 + "|")
    err = _refused_without_building(monkeypatch, lambda: sweep.expand(five))
    assert f"{5**9:,}" in str(err)
    _refused_without_building(monkeypatch, lambda: sweep.expand(five, sample=300))


def test_count_matches_expansion_with_blocks_repeats_and_nesting():
    text = ("let b = conv{8,16} relu?\n"
            "b b b (drop{.1,.2})x3 (conv8 relu?)? |\n"
            "train lr={.1,.2,.3}\n")
    spec = cnnspec.parse(text)
    # one choice per written point, whatever the uses: b's two points, drop, the outer `?`,
    # the inner `?` and lr; the count is an upper bound, as it is computed without building
    grid = 2 * 2 * 2 * 2 * 2 * 3
    assert sweep.variant_count(spec) == grid
    # the inner `?` is a choice only where the outer one keeps its part: 2 + 1 ways, not 4
    expected = 2 * 2 * 2 * (2 + 1) * 3
    variants = sweep.expand(spec, max_variants=grid)
    assert len(variants) == expected
    assert len({v.name for v in variants}) == expected
    with pytest.raises(cnnspec.SpecError):  # the limit is on the grid: refused unbuilt
        sweep.expand(spec, max_variants=grid - 1)


GRID_TEXT = "conv{8,16} relu pool2 drop{.25,.5} |\ntrain lr={.01,.1,.5}\n"
GRID_AXES = ([("conv", "8"), ("conv", "16")], [("drop", ".25"), ("drop", ".5")],
             [("lr", ".01"), ("lr", ".1"), ("lr", ".5")])


def test_the_full_grid_is_the_product_in_source_order():
    spec = cnnspec.parse(GRID_TEXT)
    expected = [tuple(c) for c in itertools.product(*GRID_AXES)]
    assert [v.choices for v in sweep.expand(spec)] == expected


@pytest.mark.parametrize("k, seed", [(1, 0), (3, 0), (5, 7), (11, 2), (12, 1), (40, 3)])
def test_a_sample_is_a_sorted_subset_of_the_grid(k, seed):
    spec = cnnspec.parse(GRID_TEXT)
    grid = [tuple(c) for c in itertools.product(*GRID_AXES)]
    got = sweep.expand(spec, sample=k, seed=seed)
    positions = [grid.index(v.choices) for v in got]
    assert len(got) == min(k, len(grid))
    assert positions == sorted(set(positions))  # distinct, in grid order
    # the seed's draw, as random.sample over the grid's positions
    if k < len(grid):
        assert positions == sorted(random.Random(seed).sample(range(len(grid)), k))
    for v in got:  # and each variant really is what its name says
        chosen = dict(v.choices)
        conv = v.spec.layers()[0]
        assert conv.filters == int(chosen["conv"])
        assert settings_mod.settings_of(v.spec).lr == float(chosen["lr"])
    assert sweep.expand(spec, sample=3, seed=5) == sweep.expand(spec, sample=3, seed=5)


def test_a_sample_of_a_sweep_over_the_limit_is_drawn_without_enumerating():
    spec = cnnspec.parse("input 8x8x1\n" + "relu? " * 60 + "|\n")
    got = sweep.expand(spec, sample=4, seed=9)
    indices = sorted(random.Random(9).sample(range(2**60), 4))
    for v, index in zip(got, indices, strict=True):
        # `+` is choice 0 and the last point varies fastest: point i is bit 59-i
        signs = [label for _, label in v.choices]
        assert signs == ["-" if index >> (59 - i) & 1 else "+" for i in range(60)]
        assert len(v.spec.layers()) == signs.count("+") + 1  # the kept relus and the `|`
    # larger than range() can take: still k distinct, sorted, valid variants
    huge = cnnspec.parse("relu? " * 70 + "|\n")
    got = sweep.expand(huge, sample=5, seed=1)
    picks = [tuple(label for _, label in v.choices) for v in got]
    assert len(set(picks)) == 5 and picks == sorted(picks)
    assert sweep.check_all_variants(huge, sample=5, seed=1)


def test_sample_limits():
    spec = cnnspec.parse(GRID_TEXT)
    with pytest.raises(cnnspec.SpecError, match="at least 1"):
        sweep.expand(spec, sample=0)
    five = cnnspec.parse("conv{1,2,3,4,5} " * 9 + "|")
    with pytest.raises(cnnspec.SpecError, match="over the limit of 256"):
        sweep.expand(five, sample=257)
    assert len(sweep.expand(five, sample=256)) == 256


def test_check_command_takes_max_variants(cli, tmp_path):
    path = tmp_path / "grid.cnn"
    path.write_text(GRID_TEXT)
    refused = cli("check", "--max-variants", "11", str(path))
    assert refused.returncode == 1 and "over the limit of 11" in refused.stderr
    assert "Traceback" not in refused.stderr
    ok = cli("check", "--max-variants", "12", str(path))
    assert ok.returncode == 0 and "12 variants" in ok.stdout


def test_expand_samples_a_sweep_over_the_limit(cli, tmp_path):
    path = tmp_path / "big.cnn"
    path.write_text("bn? " * 60 + "|\n")
    out = cli("expand", str(path), "--sample", "3", "--sample-seed", "2", "--json")
    assert out.returncode == 0, out.stderr
    assert len(json.loads(out.stdout)) == 3


# -- 2. keys written twice get unique, readable names ------------------------------------------


def test_repeated_keys_on_one_line_get_distinct_names():
    text = "conv{8,16} conv{8,16} relu |\nconv{4,5}\n"
    keys = [p.key for p in sweep.sweep_points(cnnspec.parse(text))]
    first = text.index("conv")
    second = text.index("conv", first + 1)
    assert keys == [f"conv@1:{first + 1}", f"conv@1:{second + 1}", "conv@2"]
    names = [v.name for v in sweep.expand(cnnspec.parse(text))]
    assert len(set(names)) == len(names) == 8


@pytest.mark.parametrize("text", [
    "conv{4,8} relu bn? pool2 drop{.25,.5} | dense8\ntrain lr={.01,.05}\n",
    "conv8 add(conv8, conv8 bn)? relu concat(relu, bn? relu) gap\n",  # `,` inside a key
    "conv{8,16} conv{8,16} relu |\nconv{4,5}\n",  # keys with @line:col
    "conv8({valid,same}, {bias,nobias}) conv4(k={3,5}) relu |\n",  # `,` inside a label
    "let u(f) = conv{f} relu\nconv8 u({8,16}) u(4)? |\n",
])
def test_variant_named_gives_back_each_variant_expand_makes(text):
    """`train --resume` of a sweep's run rebuilds its variant from the sweep text and the
    recorded name: for every variant, the name leads back to the very same spec. The stem
    holds a `[` too, as a file name may."""
    variants = sweep.expand(cnnspec.parse(text, name="s[x", filename="f.cnn"))
    assert len(variants) > 1
    for v in variants:
        again = cnnspec.parse(text, name=v.name, filename="f.cnn")
        assert sweep.variant_named(again, v.name) == v.spec
    assert sweep.variant_named(cnnspec.parse(text, name="s"), "s[nothing=1]") is None
    assert sweep.variant_named(cnnspec.parse(text, name="s"), "s") is None


def test_an_argument_swept_by_position_is_named_by_its_value():
    """`conv8({valid,same})` was named `conv=None=valid`: the label took the missing key."""
    text = "conv8({valid,same}, {bias,nobias}) conv4(k={3,5}) relu |\n"
    names = [v.name for v in sweep.expand(cnnspec.parse(text, name="s"))]
    assert names[:3] == ["s[conv@1:1=valid,bias,conv@1:36=k=3]",
                         "s[conv@1:1=valid,bias,conv@1:36=k=5]",
                         "s[conv@1:1=valid,nobias,conv@1:36=k=3]"]
    assert len(names) == 8 and not any("None" in n for n in names)


@hypothesis.settings(max_examples=60, deadline=None)
@hypothesis.given(st.lists(st.lists(st.sampled_from(["conv{8,16}", "drop{.1,.2}", "bn?",
                                                       "relu?", "relu"]),
                                    min_size=1, max_size=4), min_size=1, max_size=3))
def test_sweep_keys_are_always_unique(rows):
    text = "\n".join(" ".join(r) for r in rows) + " |\n"
    points = sweep.sweep_points(cnnspec.parse(text))
    keys = [p.key for p in points]
    assert len(set(keys)) == len(keys)
    for p in points:  # readable: the word, and a position only when needed
        assert p.key.split("@")[0] in ("conv", "drop", "bn", "relu")


# -- 3. bounded input --------------------------------------------------------------------------


def test_dev_zero_is_refused_after_reading_at_most_the_cap():
    tracemalloc.start()
    try:
        with pytest.raises(cnnspec.SpecError) as info:
            cnnspec.load("/dev/zero")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 * MAX_SPEC_BYTES
    assert info.value.filename == "/dev/zero"
    assert f"larger than {MAX_SPEC_BYTES:,} bytes" in str(info.value)


def test_spec_size_cap_is_exact(tmp_path):
    line = "#" + "a" * 62 + "\n"  # 64 bytes
    at_cap = tmp_path / "at_cap.cnn"
    at_cap.write_text(line * (MAX_SPEC_BYTES // 64) + "")
    assert at_cap.stat().st_size == MAX_SPEC_BYTES
    assert len(cnnspec.load(at_cap).lines) == MAX_SPEC_BYTES // 64
    over = tmp_path / "over.cnn"
    over.write_text(line * (MAX_SPEC_BYTES // 64) + "|")
    with pytest.raises(cnnspec.SpecError, match="larger than") as info:
        cnnspec.load(over)
    assert info.value.filename == str(over)
    # the API refuses the same text without reading a file, and echoes none of it
    with pytest.raises(cnnspec.SpecError) as info:
        cnnspec.parse("relu " * (MAX_SPEC_BYTES // 5 + 1))
    assert len(str(info.value)) < 300


def test_directories_and_non_utf8_are_refused_with_the_file_name(tmp_path):
    with pytest.raises(cnnspec.SpecError, match="directory") as info:
        cnnspec.load(tmp_path)
    assert info.value.filename == str(tmp_path)
    bad = tmp_path / "bad.cnn"
    bad.write_bytes(b"input 32x32x3\nconv8 \xff\xfe relu\n|\n")
    with pytest.raises(cnnspec.SpecError, match="not UTF-8") as info:
        cnnspec.load(bad)
    assert "line 2" in str(info.value) and info.value.filename == str(bad)


def test_a_byte_order_mark_is_not_part_of_the_spec(tmp_path):
    """Windows editors start UTF-8 files with a BOM; it was refused at 1:1 as a character."""
    bom = tmp_path / "bom.cnn"
    bom.write_bytes(b"\xef\xbb\xbfinput 32x32x3\nconv8 relu |\n")
    assert cnnspec.load(bom) == cnnspec.parse("input 32x32x3\nconv8 relu |\n", name="bom",
                                              filename=str(bom))
    bom.write_bytes(b"\xef\xbb\xbfconv8 cnov8 |\n")  # positions count from after the mark
    with pytest.raises(cnnspec.SpecError) as info:
        cnnspec.load(bom)
    assert (info.value.line, info.value.column) == (1, 7)


def test_cli_check_of_dev_zero_and_a_huge_line(cli, tmp_path):
    out = cli("check", "/dev/zero", timeout=60)
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert "/dev/zero" in out.stderr and len(out.stderr) < 500
    huge = tmp_path / "huge.cnn"
    huge.write_text("conv8 relu " * 80_000 + "]\n")  # 880 kB on one line, an error at its end
    out = cli("check", str(huge), timeout=120)
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert max(len(line) for line in out.stderr.splitlines()) < 200
    assert f"{huge}:1:{880_001}:" in out.stderr


@pytest.mark.parametrize("before, after", [(0, 200), (20, 200), (500, 500), (5000, 3), (5000, 0)])
def test_long_source_lines_are_cut_to_a_window_with_the_caret_in_place(before, after):
    text = "relu " * before + "foo" + " relu" * after + " |"
    with pytest.raises(cnnspec.SpecError) as info:
        cnnspec.parse(text)
    rendered = str(info.value).split("\n")
    assert rendered[0].startswith(f"<spec>:1:{5 * before + 1}: error: unknown layer word `foo`")
    shown, carets = rendered[1], rendered[2]
    assert len(shown) <= 4 + WINDOW + 2 * len("...")
    start = carets.index("^")
    width = len(carets) - start
    assert shown[start:start + width] == "foo"
    assert shown.startswith("    ...") == (5 * before > WINDOW // 2)
    if len(text) <= WINDOW:
        assert shown == "    " + text


# -- 4. checking is linear in the spec's size --------------------------------------------------


def _calls(function, *args) -> int:
    """Python-level calls (and generator resumptions) made by function(*args): a count that
    does not depend on the machine's speed or load."""
    count = 0

    def profile(frame, event, arg):
        nonlocal count
        if event == "call":
            count += 1

    sys.setprofile(profile)
    try:
        function(*args)
    except cnnspec.SpecError:
        pass
    finally:
        sys.setprofile(None)
    return count


def _lines_spec(n: int) -> str:
    return "input 32x32x3\nlet u = conv8 relu\n" + "u\nconv8 relu\n" * n + "gap\n"


def test_checking_work_grows_linearly_with_the_number_of_lines():
    small, large = (cnnspec.parse(_lines_spec(n)) for n in (500, 2000))
    ratio = _calls(cnnspec.check, large) / _calls(cnnspec.check, small)
    assert ratio < 5, ratio  # linear: about 4; the old per-layer rescan: about 16
    ratio = _calls(cnnspec.parse, _lines_spec(2000)) / _calls(cnnspec.parse, _lines_spec(500))
    assert ratio < 5, ratio
    # over the layer limit the same holds, and the refusal is placed where the limit is passed
    over_small, over_large = (cnnspec.parse("conv8 relu\n" * n) for n in (6000, 24000))
    ratio = _calls(cnnspec.check, over_large) / _calls(cnnspec.check, over_small)
    assert ratio < 5, ratio
    err = error("conv8 relu\n" * 6000)
    # two layers a line: line k ends at 2k layers, which first exceeds MAX_LAYERS at k = M/2 + 1
    assert err.line == MAX_LAYERS // 2 + 1
    assert f"unrolls to {2 * 6000:,} layers" in str(err)


# -- 5. every error is listed, also after a shape error ----------------------------------------


def _at(text: str, needle: str, nth: int = 0) -> tuple[int, int]:
    """(line, column) of the nth occurrence of needle in text, 1-based."""
    index = -1
    for _ in range(nth + 1):
        index = text.index(needle, index + 1)
    line = text.count("\n", 0, index) + 1
    return line, index - (text.rfind("\n", 0, index) + 1) + 1


def test_rules_without_shapes_are_checked_after_a_shape_error():
    text = "input 8x8x3\nconv8 dense10\nrelu | conv8 | relu\ndense16 softmax\n"
    err = error(text)
    got = [(d.span.line, d.span.column, d.message.split(":")[0]) for d in err.diagnostics]
    dense = _at(text, "dense10")
    second_bar = _at(text, "|", 1)
    # the trailing softmax writes its own head, whose output needs the shapes: not guessed
    assert got == [(*dense, "dense10"),
                   (*second_bar, "a second `|`")]


def test_word_problems_and_shape_errors_are_listed_together():
    text = ("input 8x8x3\n"
            "conv8 pool2 pool2 pool2 pool2\n"   # 8 -> 4 -> 2 -> 1 -> pool2 on 1x1: error
            "relu l2(.01) drop1.5\n"            # a penalty without weights, a bad rate
            "| dense10 | softmax\n"             # a second bar (the own head needs shapes)
            "train optimizer=adam momentum=.9\n")
    err = error(text)
    expected = [_at(text, "pool2", 3), _at(text, "l2("), _at(text, "drop1.5"),
                _at(text, "|", 1), _at(text, "momentum")]
    assert [(d.span.line, d.span.column) for d in err.diagnostics] == expected


def test_a_word_problem_that_changes_shapes_reports_no_guessed_shape_errors():
    # an unknown word could be anything: no shape errors are guessed around it
    err = error("input 8x8x3\ncnov8 pool2 pool2 pool2 pool2 |\n")
    assert [d.message for d in err.diagnostics] == ["unknown layer word `cnov8`"]
    # a dropped bad layer after a softmax does not make the softmax look last
    err = error("conv8 | dense10 softmax drop1.5\n")
    assert len(err.diagnostics) == 1 and "drop rate" in err.diagnostics[0].message


# -- 9. Lark internals that differ: the fast path gives way to Lark itself ---------------------

parse_module = importlib.import_module("cnnspec.language.parse")
lalr_fast = importlib.import_module("cnnspec.language.lalr_fast")

MISMATCH_TEXTS = [
    "input 32x32x3\nlet u = conv8 relu\nu u pool2 drop{.25,.5}? | dense16 l2(.01)\n",
    "conv32 relu | dense10 )\n",       # a syntax error: Lark's message either way
    "conv8 cnov8 relu\nrelu l2(.01)\n",  # word problems
    "input 8x8x3\nconv8 pool2 pool2 pool2 pool2 |\n",  # a shape error
]


def _outcome(text: str, fast: bool) -> tuple[str, str]:
    try:
        spec = cnnspec.parse(text, filename="t.cnn", fast=fast)
        if not spec.has_sweep():
            cnnspec.check(spec)
        return "ok", cnnspec.language.ir.to_json(spec)
    except cnnspec.SpecError as exc:
        return "error", str(exc)


@pytest.fixture
def fresh_fast_path(monkeypatch, tmp_path):
    """Rebuild the fast parser under the test's patches, and again after them; its tables are
    read from Lark again (an empty cache folder), not from the ones kept on disk."""
    monkeypatch.setenv("CNNSPEC_CACHE_DIR", str(tmp_path))
    parse_module._fast.cache_clear()
    parse_module._FAST_FAILED.clear()
    reference = [_outcome(t, fast=False) for t in MISMATCH_TEXTS]
    yield reference
    parse_module._fast.cache_clear()
    parse_module._FAST_FAILED.clear()


class _NotShift:
    """Stands in for lark's Shift action after a rename: every action reads as a reduction."""


def _fail(*args, **kwargs):
    raise AttributeError("'tuple' object has no attribute 'match'")


@pytest.mark.parametrize("patch", [
    "setup: Shift renamed", "setup: lalr_fast cannot be imported", "first use: AttributeError",
    "first use: a different tree",
])
def test_a_lark_internals_mismatch_falls_back_to_lark(monkeypatch, fresh_fast_path, patch):
    if patch == "setup: Shift renamed":
        monkeypatch.setattr(lalr_fast, "_shift_action", lambda: _NotShift)  # every action reads
        # as a reduction -> KeyError
    elif patch == "setup: lalr_fast cannot be imported":
        monkeypatch.setitem(sys.modules, "cnnspec.language.lalr_fast", None)  # -> ImportError
    elif patch == "first use: AttributeError":  # passes the self-test, fails on real text
        real = lalr_fast.FastLALR.parse
        monkeypatch.setattr(lalr_fast.FastLALR, "parse", lambda self, text: (
            real(self, text) if text == parse_module._SELF_TEST else _fail()))
    else:  # a tree that silently differs: caught by the self-test before any use
        real = lalr_fast.FastLALR.parse
        monkeypatch.setattr(lalr_fast.FastLALR, "parse",
                            lambda self, text: None if (t := real(self, text)) is None
                            else type(t)("start", t.children[1:]))
    got = [_outcome(t, fast=True) for t in MISMATCH_TEXTS]
    assert got == fresh_fast_path  # the same IR and the same messages as Lark alone
    assert parse_module._FAST_FAILED, "the mismatch went unnoticed"
    assert [kind for kind, _ in got] == ["ok", "error", "error", "error"]


def test_the_fast_path_is_used_when_nothing_differs():
    parse_module._fast.cache_clear()
    parse_module._FAST_FAILED.clear()
    assert parse_module._fast() is not None and not parse_module._FAST_FAILED


# -- 6. words from other frameworks get our word as a suggestion -------------------------------


@pytest.mark.parametrize("written, suggested", [
    ("batchnorm", "bn"), ("BatchNormalization", "bn"), ("batchnormalization", "bn"),
    ("maxpool", "pool2"), ("maxpool3", "pool3"), ("maxpool2d", "pool2"), ("MaxPool2D", "pool2"),
    ("dropout", "drop.25"), ("dropout.5", "drop.5"),
    ("fc", "dense512"), ("fc128", "dense128"), ("linear512", "dense512"),
    ("conv2d", "conv32"), ("Conv2D", "conv32"),
    ("avgpool2d", "avgpool2"),
    ("cnov64", "conv64"), ("rleu", "relu"), ("dens512", "dense512"),  # typos still work
])
def test_suggestions(written, suggested):
    before, after = ("conv8 relu | ", "") if suggested.startswith("dense") else (
        "conv8 relu ", " |")
    err = error(before + written + after)
    (d,) = err.diagnostics
    assert (d.span.line, d.span.column) == (1, len(before) + 1)
    assert d.hint.startswith(f"did you mean `{suggested}`?"), d.hint
    # and the suggestion is a word that checks in its place
    cnnspec.check(cnnspec.parse(before + suggested + after))


def test_our_own_words_are_not_rewritten():
    # `linear` is an activation and `flatten` a layer: both check as they are
    report = cnnspec.check(cnnspec.parse("conv8 linear flatten dense4"))
    assert [r.keras_class for r in report.rows[:4]] == ["Conv2D", "Activation", "Flatten",
                                                        "Dense"]


# -- 7. rows from a block show where the block is used -----------------------------------------


def test_exp6_block_rows_show_the_use_line_and_the_definition_line():
    lines = (SPECS / "exp6.cnn").read_text("utf-8").split("\n")
    define = next(i for i, t in enumerate(lines, 1) if t.startswith("let unit64"))
    use = next(i for i, t in enumerate(lines, 1) if t.startswith("unit64 unit64"))
    report = cnnspec.check(cnnspec.load(SPECS / "exp6.cnn"))
    block_rows = [r for r in report.rows if r.defined_at is not None]
    assert [r.text for r in block_rows] == ["conv64", "relu", "bn"] * 2
    assert {(r.line, r.defined_at) for r in block_rows} == {(use, define)}
    assert all(r.where == f"{use} (block at {define})" for r in block_rows)
    # every other written row is on the line whose text holds it
    for r in report.rows:
        if r.defined_at is None and not r.implicit:
            assert r.text.split(" ")[0] in lines[r.line - 1], (r.text, r.line)
    seen = [r.line for r in report.rows if not r.implicit]
    assert seen == sorted(seen)  # the network reads top to bottom, blocks included
    layers = report.to_dict()["layers"]
    assert {(x["line"], x["defined_at"]) for x in layers if x["defined_at"]} == {(use, define)}


def test_nested_blocks_show_the_outermost_use(cli, tmp_path):
    text = "let a = relu\nlet b = a bn\nconv8\nb b |\n"
    report = cnnspec.check(cnnspec.parse(text))
    from_blocks = [(r.text, r.line, r.defined_at) for r in report.rows if r.defined_at]
    assert from_blocks == [("relu", 4, 1), ("bn", 4, 2)] * 2
    path = tmp_path / "nested.cnn"
    path.write_text(text)
    out = cli("summary", str(path))
    assert out.returncode == 0 and "4 (block at 1)" in out.stdout and "4 (block at 2)" in out.stdout


def test_diff_rows_carry_the_use_line():
    a = cnnspec.check(cnnspec.load(SPECS / "exp6.cnn"))
    b = cnnspec.check(cnnspec.parse("let unit64 = conv64 relu bn\n" + "\n" * 5
                                    + "conv32 relu bn pool2 drop.25\nunit64 pool2 |"))
    d = diff_reports(a, b).to_dict()
    sides = [c["b"] for c in d["changes"] if c["b"] and c["b"]["defined_at"]]
    assert sides and all((s["line"], s["defined_at"]) == (8, 1) for s in sides)


# -- 10. numbers derived by hand ---------------------------------------------------------------


def test_macs_of_exp6_valid_conv():
    report = cnnspec.check(cnnspec.load(SPECS / "exp6.cnn"))
    (row,) = [r for r in report.rows if r.text == "conv128(valid)"]
    side = 32 // 2 // 2  # two pool2 before it
    assert row.input_shape == (side, side, 128)
    out = (side - 3) // 1 + 1  # valid: (n - k) // s + 1
    assert row.output_shape == (out, out, 128)
    assert row.macs == out * out * 3 * 3 * 128 * 128
    assert row.trainable == 3 * 3 * 128 * 128 + 128


@pytest.mark.parametrize("layer, k, s, padding", [
    ("conv16(k=5,s=2,valid)", 5, 2, "valid"),
    ("conv16(k=3,s=2)", 3, 2, "same"),
    ("conv16(k=3,s=3,valid)", 3, 3, "valid"),
    ("conv16(k=7,s=4)", 7, 4, "same"),
])
def test_macs_of_strided_convs(layer, k, s, padding):
    n, c_in, c_out = 32, 3, 16
    out = (n - k) // s + 1 if padding == "valid" else -(-n // s)
    (row,) = [r for r in cnnspec.check(cnnspec.parse(f"input 32x32x3\n{layer} |")).rows
              if r.keras_class == "Conv2D"]
    assert row.output_shape == (out, out, c_out)
    assert row.macs == out * out * k * k * c_in * c_out


def test_receptive_field_of_strided_stacks_grows_and_is_capped():
    # (text, kernel rows, kernel cols, stride rows, stride cols)
    stack = [("conv8(k=3,s=2)", 3, 3, 2, 2), ("relu", 1, 1, 1, 1),
             ("conv8(k=1x5,s=2)", 1, 5, 2, 2), ("pool2", 2, 2, 2, 2),
             ("conv8(k=3)", 3, 3, 1, 1), ("conv8(k=5,s=1x2)", 5, 5, 1, 2),
             ("avgpool3(s=1,same)", 3, 3, 1, 1), ("conv8(k=3)", 3, 3, 1, 1)]
    h, w = 20, 40
    report = cnnspec.check(cnnspec.parse(f"input {h}x{w}x3\n" + " ".join(t for t, *_ in stack)
                                         + " |"))
    rf, jump = [1, 1], [1, 1]
    expected = []
    for _, kh, kw, sh, sw in stack:
        rf = [rf[0] + (kh - 1) * jump[0], rf[1] + (kw - 1) * jump[1]]
        jump = [jump[0] * sh, jump[1] * sw]
        expected.append((min(rf[0], h), min(rf[1], w)))
    got = [r.receptive_field for r in report.rows[:len(stack)]]
    assert got == expected
    assert expected[-1][0] == h  # the stack really reaches the cap on the rows...
    assert expected[2][1] < w and max(e[1] for e in expected) <= w  # ...and grows on the cols
    assert [e[1] for e in expected] == sorted(e[1] for e in expected)


def test_diff_marks_a_layer_whose_parameters_change_as_changed():
    a = cnnspec.check(cnnspec.parse("input 32x32x3\nconv8 | dense16"))
    b = cnnspec.check(cnnspec.parse("input 32x32x3\nconv8 pool2 | dense16"))
    d = diff_reports(a, b)
    ops = [(c.op, (c.a or c.b).text) for c in d.changes]
    assert ops == [("same", "conv8"), ("added", "pool2"), ("changed", "|"),
                   ("changed", "dense16"), ("same", "dense10"), ("same", "softmax")]
    (dense,) = [c for c in d.changes if c.a and c.a.text == "dense16"]
    assert dense.a.params == 32 * 32 * 8 * 16 + 16
    assert dense.b.params == 16 * 16 * 8 * 16 + 16
    assert dense.a.output_shape == dense.b.output_shape == (16,)  # changed by params alone


def test_a_megabyte_of_junk_words_stops_at_the_problem_limit():
    text = "fooo " * 200_000  # a million characters, every word unknown
    with pytest.raises(cnnspec.SpecError) as info:
        cnnspec.parse(text)
    diagnostics = info.value.diagnostics
    assert len(diagnostics) == MAX_PROBLEMS + 1
    assert all(d.message == "unknown layer word `fooo`" for d in diagnostics[:-1])
    assert diagnostics[-1].message.startswith(f"more than {MAX_PROBLEMS} problems")
    assert diagnostics[-1].span.column == 5 * MAX_PROBLEMS + 1  # where reading stopped
    rendered = str(info.value)
    assert max(len(line) for line in rendered.split("\n")) < 200


_NUMS = ",".join(str(i) for i in range(1, 101))


@pytest.mark.parametrize("text, message", [
    ("relu x" + "9" * 5000 + " |", "repeat count x999"),            # int() refuses 4,300 digits
    ("conv" + "9" * 5000 + " |", "conv filters is too large"),
    ("input " + "9" * 5000 + "x3x3\n|", "input sizes have at most 18 digits"),
    ("conv8(k=" + "7" * 5000 + ") |", "conv k is too large"),
    (f"conv{{{_NUMS}}}(k={{{_NUMS}}},s={{{_NUMS}}}) |", "1,000,000 alternatives in one layer"),
    ("let a0 = relu\n" + "".join(f"let a{i} = a{i - 1} relu\n" for i in range(1, 3000))
     + "a2999 |", "nest 129 levels deep"),                           # was a RecursionError
    ("let a0 = relu relu\n" + "".join(f"let a{i} = a{i - 1} a{i - 1}\n" for i in range(1, 100))
     + "a99 |", f"about {2**100 / 10**30:.1f}e+30 layers"),  # 2 layers doubled 99 times
    ("(relu x" + "9" * 18 + ")x" + "9" * 18 + " |", "layers, over the limit"),
    ("aaaa" * 250_000, "unknown layer word `aaaa"),
])
def test_hostile_specs_fail_with_a_short_clear_error(text, message):
    try:
        cnnspec.check(cnnspec.parse(text, filename="t.cnn"))
    except cnnspec.SpecError as exc:
        rendered = str(exc)
    else:
        pytest.fail("accepted")
    assert message in rendered
    assert max(len(line) for line in rendered.split("\n")) < 500


def test_diff_of_a_one_layer_edit_grows_linearly():
    def pair(n):
        return (cnnspec.check(cnnspec.parse(f"conv8 relu x{n} |")),
                cnnspec.check(cnnspec.parse(f"conv8 relu x{n - 1} pool2 |")))

    small, large = pair(500), pair(2000)
    ratio = _calls(diff_reports, *large) / _calls(diff_reports, *small)
    assert ratio < 5, ratio  # SequenceMatcher alone on the equal run: about 16
    d = diff_reports(*large)
    assert len(d.changes) == max(len(large[0].rows), len(large[1].rows))
    # conv8, the 1999 relus both have, softmax; `|` and dense10 see a pooled input: changed
    assert sum(c.op == "same" for c in d.changes) == 1 + 1999 + 1


@hypothesis.settings(max_examples=80, deadline=None,
                     suppress_health_check=[hypothesis.HealthCheck.too_slow])
@hypothesis.given(spec_text(sweep=True), st.integers(1, 6), st.integers(0, 99))
def test_counting_and_sampling_agree_with_expansion(text, k, seed):
    """For any sweep: the count bounds what expansion yields (the grid; a choice inside a part
    a variant leaves out makes no other variant there), every variant is its own, and a
    sample is a sorted subset of k of them."""
    spec = cnnspec.parse(text)
    grid = sweep.variant_count(spec)
    hypothesis.assume(grid <= 512)
    full = sweep.expand(spec, max_variants=grid)
    total = len(full)
    assert total <= grid
    names = [v.name for v in full]
    assert len(set(names)) == total  # every variant has its own name
    assert len({v.choices for v in full}) == total
    got = sweep.expand(spec, sample=k, seed=seed)
    positions = [names.index(v.name) for v in got]
    assert positions == sorted(set(positions)) and len(positions) == min(k, total)
    assert [v.spec for v in got] == [full[i].spec for i in positions]


@pytest.mark.parametrize("text", ["drop{0,0}? |", "drop{.25,0.25} |", "conv8(k={3,3x3}) |",
                                  "train lr={.1,0.1}\n|"])
def test_the_same_alternative_twice_is_refused(text):
    err = error(text)
    (d,) = err.diagnostics
    assert "twice" in d.message and d.span.line == 1


@pytest.mark.parametrize(("total", "text"), [
    (10**30 - 1, "about 1.0e+30"),  # 9.99...e+29 rounds up to the next power, not "10.0e+29"
    (15 * 10**29, "about 1.5e+30"),
    (2 * 10**40, "about 2.0e+40"),
    (10**24 - 1, f"{10**24 - 1:,}"),  # below 10**24 the count is exact
])
def test_count_text_rounds_into_the_next_power_of_ten(total: int, text: str) -> None:
    from cnnspec.language.layers import count_text

    assert count_text(total) == text


@pytest.mark.parametrize(("text", "word", "hint"), [
    ("conv8 l2.01 |", "l2.01", "l2(.01)"),   # was `l22.01`, then `l222.01`, ...
    ("conv8 L2(.01) |", "L2", "l2"),         # was `l22`
    ("conv8 l3(.01) |", "l3", "l2"),         # was `l23`
    ("conv8 l1.5 |", "l1.5", "l1(.5)"),      # was `l21.5`
    ("cnov8 |", "cnov8", "conv8"),           # the number is still kept for other words
])
def test_a_suggested_regulariser_checks_when_applied(text, word, hint):
    (d,) = error(text).diagnostics
    assert d.hint == f"did you mean `{hint}`?"
    cnnspec.check(cnnspec.parse(text.replace(word, hint, 1)))


@pytest.mark.parametrize(("text", "word", "column"), [
    ("conv {8,16} |", "conv", 6),          # was accepted as conv{8,16}
    ("conv8 relu {1,2} |", "relu", 12),    # was "`relu` takes no number"
])
def test_alternatives_must_touch_their_word(text, word, column):
    (d,) = error(text).diagnostics
    assert d.message == f"`{{` must touch `{word}`, with no space between"
    assert (d.span.line, d.span.column) == (1, column)
    assert "a layer word itself cannot be swept" in d.hint


def test_layer_words_as_alternatives_are_told_they_cannot_be_swept():
    """`conv8 {relu,elu}` was told `{` must touch `conv8`; doing so gave "has both a number
    and alternatives", and following that, "conv filters must be a number"."""
    (d,) = error("conv8 {relu,elu} |").diagnostics
    assert d.message == ("alternatives sweep a layer's number or argument, not the layer "
                         "word: `{relu,elu}` cannot be swept")
    assert (d.span.line, d.span.column) == (1, 7)
    assert "write a spec per layer word" in d.hint
    assert all(sweep.check_all_variants(cnnspec.parse("conv8 relu? |")))  # the other way


def test_a_penalty_after_an_optional_layer_is_told_to_go_inside_it():
    """`conv8? l2(.01)` follows a conv; the hint was "put it right after a conv", which it is."""
    (d,) = error("conv8? l2(.01) |").diagnostics
    assert d.hint == "put both in the optional part: (conv8 l2(.01))?"
    for variant in sweep.expand(cnnspec.parse("(conv8 l2(.01))? |")):  # the hint checks
        cnnspec.check(variant.spec)


@pytest.mark.parametrize(("text", "use"), [
    ("let u(r) = drop{r}\nconv8 u |", "u |"),                     # was u(64): a bad rate
    ("let u(f, s) = conv{f}(s={s})\nu(64) |", "u(64) |"),          # was u(64) again
    ("let u(p) = conv8({p})\nu |", "u |"),                         # was u(64): no such arg
    ("let u(k, f) = conv{f}(k={k})\nu(k=3) |", "u(k=3) |"),        # was u(64): one value
    ("let u(f, s) = conv{f}(s={s})\nu |", "u |"),
])
def test_the_example_use_of_a_block_checks(text, use):
    (d,) = error(text).diagnostics
    example = d.hint.split("e.g. ")[1]
    cnnspec.check(cnnspec.parse(text.replace(use, example + " |")))


@pytest.mark.parametrize(("text", "use"), [
    ("let u(p) = conv8 l2({p})\nu |", "u |"),          # was u(same): l2 takes a number
    ("let u(p) = conv8(bias={p})\nu |", "u |"),        # was u(1): bias is true or false
    ("let u(p) = bn(m={p})\nconv8 u |", "u |"),        # bn's m is a momentum in (0, 1)
    ("let u(p) = dwconv(m={p})\nconv8 u |", "u |"),    # dwconv's m a whole multiplier
    ("let u(p) = bn(eps={p})\nconv8 u |", "u |"),
    ("let u(p) = conv8(k=3,d={p})\nu |", "u |"),
])
def test_the_example_value_fits_the_argument_it_stands_for(text, use):
    test_the_example_use_of_a_block_checks(text, use)


@pytest.mark.parametrize(("text", "hint", "fixed"), [
    ("conv8 dropout(.5) |", "did you mean `drop.5`? `dropout(.5)` is written `drop.5` here",
     "conv8 drop.5 |"),   # was `drop.25`, which applied literally gave `drop.25(.5)`
    ("conv8 maxpool(2) |", "did you mean `pool2`? `maxpool(2)` is written `pool2` here",
     "conv8 pool2 |"),
    ("conv8 | fc(10)", "did you mean `dense10`? `fc(10)` is written `dense10` here",
     "conv8 | dense10"),
    ("conv8 global_avg_pool", "did you mean `gap`? `global_avg_pool` is written `gap` here",
     "conv8 gap"),        # was `avgpool`, which needs a size
    ("conv8 depthwise_conv2d |",
     "did you mean `dwconv`? `depthwise_conv2d` is written `dwconv` here",
     "conv8 dwconv |"),   # was `dwconv2d`, an unknown word too
    # Keras's own class names keep the size they are called with (each was an example size)
    ("conv8 | Dense(64)", "did you mean `dense64`? `Dense(64)` is written `dense64` here",
     "conv8 | dense64"),
    ("Conv2D(64, 3) |", "did you mean `conv64`? `Conv2D(64, 3)` is written `conv64` here",
     "conv64 |"),         # Keras: filters, then the kernel
    ("conv8 Dropout(rate=0.5) |",
     "did you mean `drop.5`? `Dropout(rate=0.5)` is written `drop.5` here", "conv8 drop.5 |"),
    ("conv8 dropout(.5, seed=1) |",
     "did you mean `drop.5`? `dropout(.5, seed=1)` is written `drop.5` here", "conv8 drop.5 |"),
    # PyTorch gives the input's size first: nn.Linear(in, out), nn.Conv2d(in, out, k)
    ("conv8 | Linear(512, 10)",
     "did you mean `dense10`? `Linear(512, 10)` is written `dense10` here", "conv8 | dense10"),
    ("Conv2d(3, 32, 3) |",
     "did you mean `conv32`? `Conv2d(3, 32, 3)` is written `conv32` here", "conv32 |"),
    # the activation, written with a capital, is still the activation
    ("conv8 Linear |", "did you mean `linear`? `Linear` is written `linear` here",
     "conv8 linear |"),
])
def test_another_frameworks_layer_gets_our_word_with_its_number(text, hint, fixed):
    (d,) = error(text).diagnostics
    assert d.hint == hint
    cnnspec.check(cnnspec.parse(fixed))


@pytest.mark.parametrize(("text", "hint"), [
    ("conv8 Dropout(1) |", "`Dropout` is written `drop` here, but drop rate must be in [0, 1), "
     "got 1.0; for example drop.25"),  # was "did you mean `drop1`?", refused in turn
    ("conv8 dropout1 |", "`dropout` is written `drop` here, but drop rate must be in [0, 1), "
     "got 1.0; for example drop.25"),
    ("conv8 maxpool0 |", "`maxpool` is written `pool` here, but pool size must be at least 1, "
     "got 0; for example pool2"),
    ("Conv2D(0, 3) |", "`Conv2D` is written `conv` here, but conv filters must be at least 1, "
     "got 0; for example conv32"),
    ("conv8 | Linear(512, 0)", "`Linear` is written `dense` here, but dense units must be at "
     "least 1, got 0; for example dense512"),
    # a misspelling keeps its number, which is refused in turn: was "did you mean `conv0`?"
    ("cnov0 |", "did you mean `conv`? but conv filters must be at least 1, got 0; for example "
     "conv32"),
    ("conv8 drp1e |", "did you mean `drop`? but drop rate is written in plain digits after the "
     "word, not 1e; for example drop.25"),  # was a ValueError out of parse()
    ("conv8 L20 |", "did you mean `l2`? but l2 must be greater than 0, got 0.0; for example "
     "l2(.01)"),  # was "did you mean `l2(0)`?"
    ("conv8 l3 |", "did you mean `l2(.01)`? a penalty takes its factor in brackets"),  # `l2`
    # a misspelt word with its number in a call keeps that number: was `conv32`
    ("conv8 cnov(64) |", "did you mean `conv64`? `cnov(64)` is written `conv64` here"),
    ("conv8 drpo(.5) |", "did you mean `drop.5`? `drpo(.5)` is written `drop.5` here"),
    ("conv8 cnov(0) |", "did you mean `conv32`? `conv` takes its filters after the word"),
    # a block whose name starts like a layer word is offered as the block
    ("let conv1x1 = conv8(k=1) relu\ncnov1x1 | dense10", "did you mean `conv1x1`?"),
    ("let pool2x2 = pool2\nconv8 pol2x2 | dense10", "did you mean `pool2x2`?"),
])
def test_a_foreign_layer_whose_number_we_refuse_is_not_offered_as_a_word(text, hint):
    (d,) = error(text).diagnostics
    assert d.hint == hint


@hypothesis.settings(max_examples=300, deadline=None)
@hypothesis.given(word=st.sampled_from([w for w, _ in FRAMEWORK_WORDS]
                                       + ["cnov", "drpo", "pooll", "dens", "Conv", "avgpol",
                                          "drp", "scal", "sclae"]),
                  number=st.sampled_from(["", "0", "1", ".5", "1.5", "2", "3", "64", "1e3",
                                          "1e", "1e.5", "0e.5", "2e"]),  # `drp1e` crashed
                  call=st.booleans())
def test_every_word_an_unknown_word_hint_offers_is_read(word, number, call):
    """`did you mean `W`?`: W, put where the unknown word stood, is read without a problem;
    where the number written is what is refused (`cnov0`, `Dropout(1)`), the hint says so and
    its example is read."""
    written = f"{word}({number})" if call and number else word + number
    try:
        cnnspec.parse(f"conv8 {written} |")
    except cnnspec.SpecError as e:
        for d in e.diagnostics:
            if d.message != f"unknown layer word `{written.partition('(')[0]}`":
                continue
            hint = d.hint or ""
            if ", but " in hint or "? but " in hint:
                offered = hint.rpartition("for example ")[2]
            elif hint.startswith("did you mean `"):
                offered = hint.split("`")[1]
            else:
                continue
            cnnspec.parse(f"conv8 {offered} |")  # raises if the offered word is refused


@pytest.mark.parametrize(("text", "message", "hint"), [
    ("conv8 l1(0) |", "l1 must be greater than 0, got 0.0",
     "a penalty of 0 is none: leave `l1(...)` out"),
    ("conv8 l2({.01,.1}) |", "sweeps over l2 are not supported",
     "sweep it through a block: `let d(w) = dense512 l2({w})`, then `d({.01,.1})`"),
])
def test_a_penalty_refused_says_what_to_write(text, message, hint):
    (d,) = error(text).diagnostics
    assert (d.message, d.hint) == (message, hint)
    # the way the hint gives is a spec that checks, with the two variants asked for
    if "block" in hint:
        spec = cnnspec.parse("let d(w) = dense512 l2({w})\nconv8 | d({.01,.1})\n")
        assert len(sweep.check_all_variants(spec)) == 2


@pytest.mark.parametrize(("word", "what"), [
    ("upsample2", "UpSampling2D"),     # was "did you mean `scale2`?", which multiplies values
    ("hard_swish", "hard swish"),      # was `swish`, another function
    ("dropout2d.5", "spatial dropout"),  # was `drop2d.5`, unreadable
])
def test_a_layer_we_do_not_have_is_named_not_swapped_for_a_lookalike(word, what):
    (d,) = error(f"conv8 {word} |").diagnostics
    assert d.message == f"unknown layer word `{word}`"
    assert d.hint == f"cnnspec has no {what} layer; see the layer words in README.md"


def test_a_value_without_a_name_after_a_named_one_is_named_so():
    """It was "`f` is given twice", though `f` was given once."""
    (d,) = error("let b(f,s=1) = conv{f}(s={s})\nb(f=3,2) gap").diagnostics
    assert d.message == "block `b`: a value without a name after a named one"
    assert (d.span.line, d.span.column) == (2, 7)


def test_one_class_is_refused():
    """`classes 1`: the implicit dense1 softmax gives 1.0 whatever the input."""
    (d,) = error("classes 1\nconv8 gap").diagnostics
    assert d.message == "classes must be at least 2, got 1"
    cnnspec.check(cnnspec.parse("classes 2\nconv8 gap"))


def test_a_layer_named_like_its_number_is_named_once():
    (d,) = error("let u(r) = scale{r}\nu(same) gap").diagnostics
    assert d.message == "scale must be a number, not same"  # was `scale scale must ...`


@pytest.mark.parametrize(("text", "hint"), [
    ("conv8 cnov | dense4", "did you mean `conv32`? `conv` takes its filters after the word"),
    ("conv8 drpo | dense4", "did you mean `drop.25`? `drop` takes its rate after the word"),
    ("conv8 cnov64 | dense4", "did you mean `conv64`?"),  # the number written is kept
])
def test_a_misspelt_word_that_needs_a_number_is_suggested_with_one(text, hint):
    """`conv` alone is the next error (`conv` needs its filters): the hint shows a use that
    checks."""
    with pytest.raises(cnnspec.SpecError) as info:
        cnnspec.parse(text)
    (problem,) = info.value.diagnostics
    assert problem.hint == hint
    fixed = text.replace(text.split()[1], hint.split("`")[1])
    cnnspec.check(cnnspec.parse(fixed))


@pytest.mark.parametrize(("text", "hint"), [
    # the number a word means, written out: 2.5e-1 is .25 and 1e-3 is .001, by arithmetic
    ("conv8 drop2.5e-1 | dense4", "write drop.25"),
    ("conv8 drop1e-3 | dense4", "write drop.001"),
    # no word to name: `l21e-2` may be l2 with 1e-2, and 1e-400 is no float at all
    ("conv8 | dense4 l21e-2", "write it out in full"),
    ("conv8 drop1e-400 | dense4", "write it out in full"),
    # a sign, not an exponent
    ("conv8 drop-3 | dense4", "numbers are written without a sign"),
])
def test_a_minus_in_a_layer_word_says_what_to_write(text: str, hint: str) -> None:
    with pytest.raises(cnnspec.SpecError) as info:
        cnnspec.parse(text)
    assert "unexpected character '-'" in str(info.value)
    assert hint in (info.value.diagnostics[0].hint or "")


@pytest.mark.parametrize(("value", "count"), [
    # a call's swept arguments multiply: 101 * 101, past the limit though each is far below
    ("onecycle({V},{V})", 101 * 101),
    # alternatives of a setting add up: the call's 101 * 101 and one more value
    ("{onecycle({V},{V}), .1}", 101 * 101 + 1),
    # schedule terms multiply too
    ("onecycle({V})+onecycle({V})", 101 * 101),
])
def test_too_many_setting_alternatives_are_counted_exactly(value: str, count: int) -> None:
    from cnnspec.language.parse import MAX_LAYER_OPTIONS

    assert count > MAX_LAYER_OPTIONS
    values = ",".join(f".{i:03d}" for i in range(1, 102))  # 101 different rates
    with pytest.raises(cnnspec.SpecError) as info:
        cnnspec.parse(f"conv8 | dense4\ntrain lr={value.replace('V', values)}\n")
    assert f"`lr` has {count:,} alternatives, over the limit of {MAX_LAYER_OPTIONS:,}" in str(
        info.value)


def test_a_long_list_of_names_stays_one_line() -> None:
    from cnnspec.language.errors import some

    names = [f"run{i}" for i in range(8)]
    assert some(names) == "run0, run1, run2 and 5 more"
    assert some(names[:3]) == "run0, run1, run2"  # nothing left over: no "and 0 more"
    assert some(names[:1]) == "run0"
    assert some(names, shown=7) == "run0, run1, run2, run3, run4, run5, run6 and 1 more"


@pytest.mark.parametrize(("line", "glued", "column"), [
    ("conv8 drop.5relu |", "drop.5relu", 7),
    ("conv8 drop.5conv16 |", "drop.5conv16", 7),
    ("conv8 scale.125gap", "scale.125gap", 7),
    ("conv8 drop.25add(relu) |", "drop.25add", 7),
])
def test_a_word_glued_to_a_decimal_word_is_refused(line: str, glued: str, column: int) -> None:
    """The lexer ends `drop.5` at its decimals, so `drop.5relu` was two layers, silently."""
    with pytest.raises(cnnspec.SpecError) as info:
        cnnspec.parse(f"input 8x8x3\n{line}\n")
    err = info.value
    assert f"`{glued}` runs two words together" in str(err)
    assert (err.line, err.column) == (2, column)
    assert err.diagnostics[0].span.end_column == column + len(glued)  # the caret under both


def test_a_repeat_may_touch_a_decimal_word() -> None:
    # `drop.25x2` is the language's repeat of drop.25: two dropout layers, as README says
    spec = cnnspec.parse("input 8x8x3\nconv8 drop.25x2 |\n")
    assert [r.text for r in cnnspec.check(spec).rows][:4] == [
        "conv8", "drop.25", "drop.25", "|"]


@pytest.mark.parametrize(("written", "suggested"), [
    ("relux2", "relu x2"),     # was `relu2`, refused: relu takes no number
    ("bnx2", "bn x2"),
    ("sofmax8", "softmax"),    # was `softmax8`, refused again
])
def test_a_suggestion_is_a_word_that_checks(written: str, suggested: str) -> None:
    text = "input 8x8x3\nconv8 {} gap dense4\n"
    (d,) = error(text.format(written)).diagnostics
    assert d.hint.startswith(f"did you mean `{suggested}`?"), d.hint
    cnnspec.check(cnnspec.parse(text.format(suggested)))


@pytest.mark.parametrize(("line", "expected", "hint"), [
    # inside brackets only their own `,` or closing fits after a whole value (Lark's merged
    # states listed "a layer, `|`, `(`, or the end of the line" for all of these)
    ("conv8(k=3 |", "`,` or `)`", None),
    ("train lr=onecycle(.4 |", "`,` or `)`", None),
    ("conv8 drop{.1,.2 |", "`,` or `}`", None),
    ("conv8 drop{.1 .2} |", "`,` or `}`", None),
    ("conv8(k=3 (relu) |", "`,` or `)`", None),
    # a train line goes on with settings, separated by spaces
    ("train lr=.1 |", "another setting such as epochs=10, a comment or the end of the line",
     None),
    ("train lr=.1,epochs=2", "another setting such as epochs=10, a comment or the end of the line",
     "settings are separated by spaces"),
    ("conv8, relu |", "a layer, `|`, `(`, a comment or the end of the line",
     "layers are separated by spaces"),
    ("conv8 | dense10, softmax", "a layer, `(`, a comment or the end of the line",  # one `|`
     "layers are separated by spaces"),
    ("input 32x32x3, 10", "a comment or the end of the line", "input takes one size"),
    ("classes 10, 20", "a comment or the end of the line", "classes takes one count"),
    ("conv8 (k=3) |", "a layer, `|`, `(`, or the end of the line",
     "arguments touch their word: conv8(k=3)"),
])
def test_a_syntax_error_says_what_fits_there(line: str, expected: str, hint: str | None) -> None:
    with pytest.raises(cnnspec.SpecError) as info:
        cnnspec.parse(f"input 8x8x3\n{line}\n")
    (d,) = info.value.diagnostics
    assert d.message.endswith(f"; expected {expected}"), d.message
    if hint is not None:
        assert hint in d.hint


@pytest.mark.parametrize(("text", "message", "hint"), [
    # a whole number written with an exponent or a fraction: the digits to write instead
    ("classes 1e3\nconv8 | dense4", "classes is a whole number written in digits alone, not 1e3",
     "write 1000"),
    ("train epochs=1e1\nconv8 | dense4",
     "epochs is a whole number written in digits alone, not 1e1", "write 10"),
    ("train batch=3.0\nconv8 | dense4",
     "batch is a whole number written in digits alone, not 3.0", "write 3"),
    ("train batch=1.5\nconv8 | dense4", "batch must be a whole number, not 1.5", None),
    # sizes too long to read are said to be so (they were "sizes >= 1", which they are)
    ("input 100000000000000000000x1x1\nconv8 |",
     "input sizes have at most 18 digits, not 100000000000000000000x1x1", "e.g. 32x32x3"),
    # an unclosed argument list is not called a group
    ("conv8(k=3\n", "`(` is not closed on this line", "an argument list must close on its line"),
    ("train lr=onecycle(.4\nconv8 |", "`(` is not closed on this line",
     "an argument list must close on its line: lr=onecycle(.4)"),
    ("(conv8 relu\n", "`(` is not closed on this line", "a group must open and close"),
])
def test_messages_say_what_is_wrong(text: str, message: str, hint: str | None) -> None:
    with pytest.raises(cnnspec.SpecError) as info:
        cnnspec.check(cnnspec.parse(text))
    (d,) = info.value.diagnostics
    assert message in d.message
    if hint is None:
        assert d.hint is None
    else:
        assert hint in d.hint



@pytest.mark.parametrize(("text", "message", "hint"), [
    # kernel notation is not a glued repeat: `pool2 x2` would be two pools
    ("conv8 pool2x2 |", "cannot read the number in `pool2x2`", "e.g. pool2"),
    ("conv3x3 |", "cannot read the number in `conv3x3`", "e.g. conv32"),
    # a block named train... is no train line
    ("let trainable = conv8 relu\ntrainable, pool2 |", "unexpected `,`",
     "layers are separated by spaces"),
    ("let trainable = conv8 relu\ntrainable conv8(k=3\n", "`(` is not closed",
     "an argument list must close on its line: conv8(k=3)"),
    # argument values are not layer words: the `{` is only apart from its word
    ("conv8 {valid,same} |", "`{` must touch `conv8`",
     "an argument's alternatives go inside its brackets: conv8({valid,same})"),
    # a merge's bracket is no group after a space
    ("conv8 add(k=3) |", "unexpected `=`", None),
    # what is glued after a word's decimals, each told the fix that works
    ("conv8 drop.25x2relu |", "`drop.25x2relu` runs two words together",
     "`drop.25x2 relu`"),
    ("conv8 drop.5e2 |", "`drop.5e2` runs two words together", "takes no exponent"),
    ("conv8 drop.25X2 |", "`drop.25X2` runs two words together",
     "a repeat is written with a small x: `drop.25x2`"),
    # a whole-number word's exponent: the digits, or no number that would do
    ("conv8 | dense1e-0", "unexpected character '-'", "write dense1"),
    ("conv8 | dense1e-3", "unexpected character '-'", "write it out in full"),
])
def test_hints_reviewed_against_their_literal_fix(text: str, message: str,
                                                  hint: str | None) -> None:
    with pytest.raises(cnnspec.SpecError) as info:
        cnnspec.check(cnnspec.parse(f"input 8x8x3\n{text}\n"))
    (d,) = info.value.diagnostics
    assert message in d.message, d.message
    if hint is None:
        assert d.hint is None, d.hint
    else:
        assert hint in d.hint, d.hint


def test_the_literal_fixes_check() -> None:
    for fixed in ("conv8 drop.25x2 relu |", "conv8 pool2 |", "conv8 | dense1",
                  "conv8({valid,same}) |"):
        text = f"input 8x8x3\n{fixed}\n"
        spec = cnnspec.parse(text)
        if spec.has_sweep():
            assert all(sweep.check_all_variants(spec))
        else:
            cnnspec.check(spec)


@pytest.mark.parametrize(("before", "inside"), [
    ("conv8(k=3", "args"), ("train lr=onecycle(.4", "args"), ("let u(f) = conv{f}(s=", "args"),
    ("conv8 add(relu", "merge"), ("conv8 concat(relu, gap", "merge"),
    ("conv8 (relu", "("), ("(relu", "("), ("conv8 drop{.1", "{"),
    ("conv8(k={3", "{"), ("add(conv8(k=3), relu", "merge"), ("conv8(k=3)", None),
    ("3(relu", "("),  # a number is no word: a group, as before
])
def test_open_bracket_says_what_the_innermost_bracket_opens(before: str, inside: str | None):
    from cnnspec.language.parse import open_bracket

    assert open_bracket(before) == inside


def test_an_argument_list_left_open_inside_alternatives_is_named_so():
    # the innermost open bracket is the `{`; the `(` left open is conv8's argument list
    (d,) = error("conv8(k={3,5\n").diagnostics
    assert d.message.startswith("`(` is not closed on this line")
    assert d.hint == "an argument list must close on its line: conv8(k=3)"


@pytest.mark.parametrize(("word", "given", "after_word", "says"), [
    ("l2", "1e", False, "l2 must be a number, not 1e"),
    ("drop", "1e", True, "drop rate is written in plain digits after the word, not 1e"),
    ("drop", "1", True, "drop rate must be in [0, 1), got 1.0"),
    ("l2", "1e-3", False, None),  # an exponent is fine in a penalty's brackets
])
def test_the_refused_number_check_never_raises(word, given, after_word, says):
    from cnnspec.language.layers import KINDS
    from cnnspec.language.parse import _number_refused

    assert _number_refused(KINDS[word], given, after_word) == says
