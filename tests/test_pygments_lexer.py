"""The Pygments lexer, found through its entry point as any Pygments user would find it."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

pytest.importorskip("pygments")

from pygments.lexers import get_lexer_by_name, get_lexer_for_filename  # noqa: E402
from pygments.token import (  # noqa: E402
    Comment,
    Error,
    Keyword,
    Name,
    Number,
    Operator,
    Punctuation,
)

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = sorted([*ROOT.glob("specs/**/*.cnn"), *ROOT.glob("examples/**/*.cnn")])

SAMPLE = """# a comment
input 32x32x3
train lr={.01,.05} optimizer=adam
let unit(f, s=1) = conv{f}(s={s}) bn relu
conv64(k=5,valid) drop.25 (unit(64) pool2)x2 bn? add(relu, conv8(k=1)) | dense512
"""


def _tokens(text: str) -> list[tuple[object, str]]:
    lexer = get_lexer_by_name("cnnspec")
    return [(t, v) for t, v in lexer.get_tokens(text) if v.strip()]


def test_registered_by_name_and_filename():
    assert get_lexer_by_name("cnnspec").name == "cnnspec"
    assert get_lexer_for_filename("exp7.cnn").name == "cnnspec"


def test_sample_tokens():
    toks = _tokens(SAMPLE)
    expected = [
        (Comment.Single, "# a comment"),
        (Keyword.Declaration, "input"), (Number, "32x32x3"),
        (Keyword.Declaration, "train"), (Name.Attribute, "lr"), (Operator, "="),
        (Punctuation, "{"), (Number, ".01"), (Punctuation, ","), (Number, ".05"),
        (Punctuation, "}"), (Name.Attribute, "optimizer"), (Operator, "="),
        (Name.Constant, "adam"),
        (Keyword.Declaration, "let"), (Name.Function, "unit"), (Punctuation, "("),
        (Name.Constant, "f"), (Punctuation, ","), (Name.Attribute, "s"), (Operator, "="),
        (Number, "1"), (Punctuation, ")"), (Operator, "="),
        (Name.Builtin, "conv"), (Punctuation, "{"), (Name.Variable, "f"), (Punctuation, "}"),
        (Punctuation, "("), (Name.Attribute, "s"), (Operator, "="), (Punctuation, "{"),
        (Name.Variable, "s"), (Punctuation, "}"), (Punctuation, ")"),
        (Name.Builtin, "bn"), (Name.Builtin, "relu"),
        (Name.Builtin, "conv"), (Number, "64"), (Punctuation, "("), (Name.Attribute, "k"),
        (Operator, "="), (Number, "5"), (Punctuation, ","), (Name.Constant, "valid"),
        (Punctuation, ")"), (Name.Builtin, "drop"), (Number, ".25"),
        (Punctuation, "("), (Name.Function, "unit"), (Punctuation, "("), (Number, "64"),
        (Punctuation, ")"), (Name.Builtin, "pool"), (Number, "2"), (Punctuation, ")"),
        (Operator.Word, "x2"), (Name.Builtin, "bn"), (Operator, "?"),
        (Keyword, "add"), (Punctuation, "("), (Name.Builtin, "relu"), (Punctuation, ","),
        (Name.Builtin, "conv"), (Number, "8"), (Punctuation, "("), (Name.Attribute, "k"),
        (Operator, "="), (Number, "1"), (Punctuation, ")"), (Punctuation, ")"),
        (Operator, "|"), (Name.Builtin, "dense"), (Number, "512"),
    ]
    assert toks == expected


def test_layer_word_with_digits_in_its_name():
    assert _tokens("relu6 l2(.01) sepconv32")[:2] == [(Name.Builtin, "relu6"),
                                                     (Name.Builtin, "l2")]


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_error_tokens_in_shipped_specs(path):
    text = path.read_text()
    toks = list(get_lexer_by_name("cnnspec").get_tokens(text))
    assert not [v for t, v in toks if t in Error], path
    assert "".join(v for _, v in toks) == text if text.endswith("\n") else True


def test_garbage_gives_no_error_tokens():
    toks = _tokens("conv8 @@ ]] ((( {{ ~ \x00 x")
    assert not [v for t, v in toks if t in Error]


def test_indented_headers_are_headers():
    """The grammar allows blanks before `train`/`input`/`classes` (cnnspec check takes it);
    they were coloured as block names."""
    toks = _tokens("  train lr=.1 epochs=2\n\tinput 32x32x3\n classes 10\nconv8 relu |\n")
    assert [(t, v) for t, v in toks if v in ("train", "input", "classes")] == [
        (Keyword.Declaration, "train"), (Keyword.Declaration, "input"),
        (Keyword.Declaration, "classes")]
    assert [(t, v) for t, v in toks if v in ("lr", "epochs")] == [
        (Name.Attribute, "lr"), (Name.Attribute, "epochs")]


@pytest.mark.parametrize("text", [
    "input 32x32x3\nconv{8 # todo\n",  # a half-typed sweep with a comment after it
    "train augment={flip # later\n",
    # blanks other than space and tab (Pygments turns \r into \n itself)
    "conv8 {relu\v x\n", "input 32\vx\n", "train lr=onecycle(.4\x1c,warm=.2)\n",
    "conv8(k=3\u2028)\n",
])
def test_half_typed_lines_give_no_error_tokens(text):
    toks = list(get_lexer_by_name("cnnspec").get_tokens(text))
    assert not [v for t, v in toks if t in Error]
    assert "".join(v for _, v in toks) == text
    if "#" in text:
        assert [t for t, v in toks if v.startswith("#")] == [Comment.Single]


@given(st.text(alphabet="conv8 relu{}(),#\r\n\t\v\x1c=|.x?+trainput", max_size=60))
@settings(max_examples=300, deadline=None)
def test_no_text_gives_an_error_token(text):
    toks = list(get_lexer_by_name("cnnspec").get_tokens(text))
    assert not [v for t, v in toks if t in Error]
