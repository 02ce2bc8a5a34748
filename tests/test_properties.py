"""Property tests: random valid specs round-trip, agree with Keras; random junk fails cleanly.

The strategy writes spec *text* the way a person might (any argument order, aliases, odd
spacing, comments, blank lines, blocks, groups and repeats), so the parser is exercised on
text, not on IR built by the code under test.
"""

from __future__ import annotations

import math
import time

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import cnnspec
from cnnspec.language import ir
from cnnspec.language.format import format_spec

# every activation word of the language except softmax (a softmax at the end writes the
# spec's own head, generated on purpose in spec_text; tested in test_language.py)
ACTIVATIONS = [
    "relu", "relu6", "elu", "selu", "gelu", "silu", "swish", "mish", "tanh", "sigmoid",
    "hard_sigmoid", "softplus", "softsign", "leaky_relu", "linear",
]
BLOCK_NAMES = ["unit", "stage1", "b_2", "blk", "Head", "c64"]
SEP = st.sampled_from([",", ", ", " , "])


def _time_limited(fn, *args):
    """Run fn, asserting it took under 5 s of this process's CPU time: a bound on pathological
    behaviour (inputs here are at most a few hundred characters; a normal run takes
    milliseconds) that a loaded shared machine does not trip, unlike wall-clock time."""
    start = time.process_time()
    try:
        return fn(*args)
    finally:
        elapsed = time.process_time() - start
        assert elapsed < 5.0, f"{fn.__name__} took {elapsed:.2f}s of CPU on {args!r}"


# -- strategies for spec text ------------------------------------------------------------------


@st.composite
def rate(draw) -> str:
    hundredths = draw(st.integers(0, 95))
    text = f"{hundredths / 100:.2f}".rstrip("0").rstrip(".") or "0"
    if text.startswith("0.") and draw(st.booleans()):
        text = text[1:]  # .25 as well as 0.25
    return text


@st.composite
def penalty(draw) -> str:
    value = draw(st.sampled_from([".01", "0.001", "1e-4", ".5", "2", "0.0100", "2.5E-7", "1e3"]))
    kinds = draw(st.sampled_from([[], [], ["l2"], ["l1"], ["l2", "l1"], ["l1", "l2"]]))
    return "".join(f" {k}({value})" for k in kinds)


@st.composite
def conv(draw, sweep: bool = False) -> str:
    filters = draw(st.integers(1, 8))
    word = f"conv{filters}"
    if sweep and draw(st.booleans()):
        word = "conv{" + ",".join(str(f) for f in draw(
            st.lists(st.integers(1, 8), min_size=2, max_size=3, unique=True))) + "}"
    args = []
    if draw(st.booleans()):
        key = draw(st.sampled_from(["k", "kernel"]))
        args.append(f"{key}={draw(st.sampled_from(['1', '2', '3', '5', '1x3', '3x1', '2x3']))}")
        if sweep and draw(st.booleans()):  # a swept argument, the number kept: conv4(k={3,5})
            args[-1] = f"{key}={{3,5}}"
    if draw(st.booleans()):
        key = draw(st.sampled_from(["s", "stride"]))
        args.append(f"{key}={draw(st.sampled_from(['1', '2', '3', '2x1', '1x2']))}")
    if draw(st.booleans()):
        args.append(draw(st.sampled_from(["same", "valid", "padding=valid", "p=same"])))
    strided = any(a.startswith("s") and not a.endswith("=1") for a in args)
    if not strided and draw(st.integers(0, 3)) == 0:  # Keras: no stride with a dilation
        args.append(f"{draw(st.sampled_from(['d', 'dilation']))}="
                    f"{draw(st.sampled_from(['1', '2', '1x2']))}")
    if draw(st.integers(0, 3)) == 0:
        args.append(draw(st.sampled_from(["nobias", "bias", "bias=false", "bias=true"])))
    args = draw(st.permutations(args))
    if args:
        word += "(" + draw(SEP).join(args) + ")"
    return word + draw(penalty())


@st.composite
def depthwise(draw) -> str:
    """dwconv or sepconv<N>, with any of their arguments."""
    word = draw(st.sampled_from(["dwconv", f"sepconv{draw(st.integers(1, 8))}"]))
    args = []
    if draw(st.booleans()):
        args.append(f"k={draw(st.sampled_from(['1', '2', '3', '1x3']))}")
    if draw(st.booleans()):
        args.append(f"s={draw(st.sampled_from(['1', '2', '2x1']))}")
    elif draw(st.integers(0, 2)) == 0:
        args.append(f"d={draw(st.sampled_from(['2', '1x2']))}")
    if draw(st.booleans()):
        args.append(f"{draw(st.sampled_from(['m', 'multiplier']))}={draw(st.integers(1, 3))}")
    if draw(st.booleans()):
        args.append(draw(st.sampled_from(["valid", "same", "nobias"])))
    args = draw(st.permutations(args))
    return word + ("(" + draw(SEP).join(args) + ")" if args else "") + draw(penalty())


@st.composite
def batchnorm(draw) -> str:
    args = []
    if draw(st.booleans()):
        args.append(f"{draw(st.sampled_from(['m', 'momentum']))}="
                    f"{draw(st.sampled_from(['0', '.9', '0.99', '1']))}")
    if draw(st.booleans()):
        args.append(f"{draw(st.sampled_from(['eps', 'epsilon']))}="
                    f"{draw(st.sampled_from(['1e-5', '.001', '0.1']))}")
    args = draw(st.permutations(args))
    return "bn" + ("(" + draw(SEP).join(args) + ")" if args else "")


@st.composite
def pool(draw, sweep: bool = False) -> str:
    word = draw(st.sampled_from(["pool", "avgpool"]))
    size = draw(st.integers(1, 3))
    word += "{1,2}" if sweep and draw(st.booleans()) else str(size)
    args = []
    if draw(st.booleans()):
        args.append(f"{draw(st.sampled_from(['s', 'stride']))}={draw(st.integers(1, 3))}")
    if draw(st.booleans()):
        args.append(draw(st.sampled_from(["same", "valid"])))
    args = draw(st.permutations(args))
    return word + ("(" + draw(SEP).join(args) + ")" if args else "")


@st.composite
def dropout(draw, sweep: bool = False) -> str:
    if sweep and draw(st.booleans()):
        # distinct values: the same alternative twice is an error (two variants, one name)
        return "drop{" + ",".join(draw(st.lists(rate(), min_size=2, max_size=3,
                                                unique_by=float))) + "}"
    return f"drop{draw(rate())}"


def plain(sweep: bool = False) -> st.SearchStrategy[str]:
    return st.one_of(
        st.just("bn"), batchnorm(), st.sampled_from(ACTIVATIONS), dropout(sweep=sweep),
        st.sampled_from(["scale.125", "scale2", "scale0.5"]),
    )


@st.composite
def items(draw, layer: st.SearchStrategy[str], blocks: list[str], sweep: bool, depth: int = 0):
    """A list of item texts: layers, block uses, groups with or without a repeat."""
    out = []
    for _ in range(draw(st.integers(0 if depth else 1, 4))):
        choice = draw(st.integers(0, 9))
        if choice <= 5 or (choice <= 8 and depth >= 2) or (choice == 9 and not blocks):
            text = draw(layer)
            if draw(st.integers(0, 5)) == 0:
                times = draw(st.integers(1, 3))
                text = f"({text})x{times}" if " " in text else f"{text} x{times}"
        elif choice <= 8 and depth < 2:
            inner = draw(items(layer, blocks, sweep, depth + 1))
            if not inner:
                inner = [draw(layer)]
            text = "(" + " ".join(inner) + ")"
            if draw(st.booleans()):
                text += f"x{draw(st.integers(1, 3))}"
        else:
            text = draw(st.sampled_from(blocks)) if blocks else draw(layer)
            if draw(st.booleans()):
                text += f" x{draw(st.integers(1, 2))}"
        if sweep and draw(st.integers(0, 6)) == 0 and not text.endswith("?"):
            text = f"({text})?" if " " in text else f"{text}?"
        out.append(text)
    return out


@st.composite
def merge(draw, sweep: bool = False, depth: int = 0) -> str:
    """`add(...)`/`concat(...)` with 1-3 branches whose shapes agree: residuals (one branch),
    sums of shape-keeping branches, concatenations of 1×1 convs and same-size pools, nested."""
    op = draw(st.sampled_from(["add", "concat"]))
    keep_size = ["conv3(k=1)", "conv2", "pool3(s=1,same)", "dwconv", "sepconv4(nobias)",
                 "avgpool2(s=1,same)"]
    branch_layer = st.one_of(plain(sweep), st.sampled_from(keep_size)) if op == "concat" else (
        plain(sweep))
    branches = []
    for _ in range(draw(st.integers(1, 3))):
        parts = draw(st.lists(branch_layer, min_size=1, max_size=3))
        if depth < 1 and draw(st.integers(0, 3)) == 0:
            parts.insert(draw(st.integers(0, len(parts))), draw(merge(sweep, depth + 1)))
        branches.append(" ".join(parts))
    return f"{op}(" + draw(SEP).join(branches) + ")"


def trunk_layer(sweep: bool) -> st.SearchStrategy[str]:
    return st.one_of(conv(sweep), conv(sweep), depthwise(), pool(sweep), plain(sweep),
                     merge(sweep))


@st.composite
def dense(draw) -> str:
    bias = draw(st.sampled_from(["", "", "", "(nobias)", "(bias=false)"]))
    return f"dense{draw(st.integers(1, 12))}{bias}" + draw(penalty())


def head_layer(sweep: bool) -> st.SearchStrategy[str]:
    return st.one_of(dense(), dense(), plain(sweep))


COMMENT = st.text(
    st.characters(blacklist_characters="\n", blacklist_categories=("Cs",)), max_size=12
).map(lambda t: "#" + t)

SETTINGS = [
    ("optimizer", "opt", ["sgd", "adam", "rmsprop"]),
    ("lr", "learning_rate", [".01", "0.1", "1e-3", "1"]),
    ("momentum", "momentum", [".9", "0"]),
    ("batch", "batch_size", ["16", "32"]),
    ("epochs", "epochs", ["1", "3"]),
    ("seed", "seed", ["0", "7"]),
    ("shuffle", "shuffle", ["true", "false"]),
    ("validation", "validation", ["test", "none"]),
]


@st.composite
def spec_text(draw, sweep: bool = False) -> str:
    """The text of a syntactically and semantically valid spec (shapes permitting)."""
    header = []
    if draw(st.booleans()):
        h, w = draw(st.integers(6, 24)), draw(st.integers(6, 24))
        header.append(f"input {h}x{w}x{draw(st.integers(1, 4))}")
    classes = 10
    if draw(st.booleans()):
        classes = draw(st.integers(2, 12))
        header.append(f"classes {classes}")
    if draw(st.booleans()):
        chosen = draw(st.lists(st.sampled_from(SETTINGS), min_size=1, max_size=4,
                               unique_by=lambda s: s[0]))
        parts = []
        for key, alias, values in chosen:
            name = draw(st.sampled_from([key, alias]))
            if sweep and draw(st.booleans()):
                parts.append(f"{name}={{{','.join(values)}}}")
            else:
                parts.append(f"{name}={draw(st.sampled_from(values))}")
        header.append("train " + " ".join(parts))
    header = draw(st.permutations(header))

    blocks: list[str] = []
    lets = []
    if draw(st.integers(0, 2)) == 0:  # a block with parameters, and ways to use it
        strided = draw(st.booleans())  # a parameter the body never uses is refused
        body = ["conv{f}(s={s})" if strided else "conv{f}"]
        body += draw(st.lists(plain(), max_size=2))
        if draw(st.booleans()):
            body.append(f"conv{{f}}(k={draw(st.integers(1, 3))})")
        lets.append(f"let pb(f{', s=1' if strided else ''}) = " + " ".join(body))
        uses = ["pb(4)", "pb(f=1)", "pb( 5 )"]
        if strided:
            uses += ["pb(2,s=2)", "pb(s=1, f=3)", "pb( 5 , 1 )"]
        if sweep:
            uses += ["pb({2,3})"] + (["pb(4,s={1,2})"] if strided else [])
        blocks += draw(st.lists(st.sampled_from(uses), min_size=1, max_size=3, unique=True))
    for name in draw(st.lists(st.sampled_from(BLOCK_NAMES), max_size=2, unique=True)):
        body = draw(items(trunk_layer(sweep), list(blocks), sweep, depth=1))
        body = body or [draw(trunk_layer(sweep))]
        lets.append(f"let {name} = " + " ".join(body))
        blocks.append(name)

    trunk = draw(items(trunk_layer(sweep), blocks, sweep))
    cut = draw(st.sampled_from(["|", "|", "gap", "gmp", "flatten"]))
    head = draw(st.lists(head_layer(sweep), max_size=3))
    own_head = draw(st.sampled_from(["", "", "", "dense", "allconv"]))
    if own_head == "dense":  # its own head: ends in softmax, no implicit classifier
        body = [*trunk, cut, *head, f"dense{classes}", "softmax"]
    elif own_head == "allconv":  # All-CNN style: no dense layer at all
        body = [*trunk, f"conv{classes}(k=1)", draw(st.sampled_from(["gap", "gmp"])), "softmax"]
    else:
        body = [*trunk, cut, *head]

    # break the layers over lines at random item boundaries; comments and blank lines anywhere
    lines: list[str] = [*header, *lets]
    current: list[str] = []
    for text in body:
        current.append(text)
        if draw(st.integers(0, 4)) == 0:
            lines.append(draw(st.sampled_from([" ", "  ", "\t"])).join(current))
            current = []
    if current:
        lines.append(" ".join(current))
    out = []
    for line in lines:
        if draw(st.integers(0, 5)) == 0:
            out.append(draw(st.sampled_from(["", "   "])))
        if draw(st.integers(0, 3)) == 0:
            line += draw(st.sampled_from([" ", "  "])) + draw(COMMENT)
        out.append(draw(st.sampled_from(["", " "])) + line)
    ending = draw(st.sampled_from(["\n", "", "\n\n"]))
    return "\n".join(out) + ending


# -- (a) format round trip, (b) JSON round trip ------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(spec_text(sweep=False) | spec_text(sweep=True))
def test_format_round_trips_and_is_idempotent(text):
    spec = cnnspec.parse(text)
    canonical = format_spec(spec)
    again = cnnspec.parse(canonical)
    assert again == spec, canonical
    assert format_spec(again) == canonical
    # nothing the text said is lost: same number of lines, same comments
    assert len(again.lines) == len(spec.lines)
    assert [ln.comment for ln in again.lines] == [ln.comment for ln in spec.lines]


@settings(max_examples=100, deadline=None)
@given(spec_text(sweep=False) | spec_text(sweep=True))
def test_json_round_trips(text):
    spec = cnnspec.parse(text)
    encoded = ir.to_json(spec)
    decoded = ir.from_json(encoded)
    assert decoded == spec
    assert ir.to_json(decoded) == encoded  # spans, source and filename survive too
    if not spec.has_sweep():
        assert decoded.layers() == spec.layers()


# -- (c) the checker agrees with Keras ---------------------------------------------------------


def _count(weights) -> int:
    return sum(math.prod(w.shape) for w in weights)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.filter_too_much,
                                                                 HealthCheck.too_slow])
@given(spec_text(sweep=False))
def test_checker_agrees_with_keras(text):
    spec = cnnspec.parse(text)
    try:
        report = cnnspec.check(spec)
    except cnnspec.SpecError:
        assume(False)
    keras = pytest.importorskip("keras")
    from cnnspec.backend.keras_model import build_model

    model = build_model(report, keras)
    # a graph is a functional model: Keras orders its layers itself and lists the input
    layers = [x for x in model.layers if not isinstance(x, keras.layers.InputLayer)]
    assert len(layers) == len(report.rows)
    assert isinstance(model, keras.Sequential) == (not spec.is_graph())
    if isinstance(model, keras.Sequential):
        assert [x.name for x in layers] == [r.keras_name for r in report.rows]
    for row in report.rows:
        layer = model.get_layer(row.keras_name)
        where = f"{row.text} ({row.keras_name}) in\n{text}"
        assert type(layer).__name__ == row.keras_class, where
        assert tuple(layer.output.shape) == (None, *row.output_shape), where
        given = layer.input[0] if isinstance(layer.input, list) else layer.input
        assert tuple(given.shape) == (None, *row.input_shape), where
        if row.inputs:  # wired to the tensors the checker says
            sources = layer.input if isinstance(layer.input, list) else [layer.input]
            assert [t.shape for t in sources] == [
                model.get_layer(n).output.shape if n != "input" else model.input.shape
                for n in row.inputs], where
        assert layer.count_params() == row.params, where
        assert _count(layer.trainable_weights) == row.trainable, where
        assert _count(layer.non_trainable_weights) == row.non_trainable, where
    assert model.count_params() == report.params
    assert report.rows[-1].output_shape == (spec.classes,)


# -- (d) junk and mutations fail with SpecError only, quickly ----------------------------------

LANGUAGE = list("abcdefghijklmnopqrstuvwxyz_ABCXZ0123456789.x|(){},=?# \t\n")
JUNK = list("[]-+;:'\"\\!@$%^&*<>/~`\r\f\x00\x0b\u00e9\u00d7\u2028\U0001f600")
_ = cnnspec.parse("relu |")  # build the parser once, outside the timed examples


def _front_end(text: str) -> None:
    """parse + check, as `cnnspec check` would; only SpecError may escape."""
    try:
        spec = _time_limited(cnnspec.parse, text)
    except cnnspec.SpecError as exc:
        _assert_well_formed(exc, text)
        return
    # whatever parses also formats back to itself
    assert cnnspec.parse(format_spec(spec)) == spec
    try:
        _time_limited(cnnspec.check, spec)
    except cnnspec.SpecError as exc:
        _assert_well_formed(exc, text)


def _assert_well_formed(exc: cnnspec.SpecError, text: str) -> None:
    rendered = str(exc)
    assert rendered and "Traceback" not in rendered and "Token(" not in rendered
    assert exc.diagnostics
    if exc.line is not None:
        assert 1 <= exc.line <= text.count("\n") + 1
        assert exc.column >= 1


@settings(max_examples=300, deadline=None)
@given(st.text(st.sampled_from(LANGUAGE + JUNK), max_size=60))
def test_random_text_fails_cleanly(text):
    _front_end(text)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from([
    "conv32", "conv8(k=3,valid)", "relu", "bn", "pool3", "pool2(s=1)", "drop.25", "|", "gap",
    "dense16", "l2(.01)", "l1(1e-3)", "(", ")", "x2", "x999", "?", "{", "}", ",", "=",
    "let", "u", "input", "32x32x3", "classes", "10", "train", "lr=.1", "softmax", "\n", "#c",
    "drop{", "conv8(k=", "{.1,.2}", "s=", "1x3", "u =",
    "dwconv(s=2)", "sepconv8(d=2,nobias)", "nobias", "bn(m=.9)", "scale.125", "gmp", "d=2",
    "add(", "concat(", "add(relu)", "concat(conv4, relu)", "add(conv8(s=2))", "let r(f) =",
    "{f}", "r(2)", "r(f=3, g=1)",
]), max_size=20).map(" ".join))
def test_random_token_soup_fails_cleanly(text):
    _front_end(text)


@st.composite
def mutated(draw) -> str:
    text = draw(spec_text(sweep=draw(st.booleans())))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["delete", "insert", "replace", "duplicate"]))
        i = draw(st.integers(0, len(text)))
        char = draw(st.sampled_from(LANGUAGE + JUNK))
        if op == "delete":
            text = text[:i] + text[i + 1:]
        elif op == "insert":
            text = text[:i] + char + text[i:]
        elif op == "replace":
            text = text[:i] + char + text[i + 1:]
        else:  # repeat a slice: long runs of digits, brackets, repeats
            j = draw(st.integers(i, min(len(text), i + 6)))
            text = text[:j] + text[i:j] * draw(st.integers(2, 8)) + text[j:]
    return text


@settings(max_examples=300, deadline=None)
@given(mutated())
def test_mutated_specs_fail_cleanly(text):
    _front_end(text)
