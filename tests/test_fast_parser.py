"""The fast parser (cnnspec/lalr_fast.py) against Lark itself: same trees, same IR, same errors.

FastLALR drives the grammar's own LALR tables with Lark's own lexer regexes and hands every
text it does not take to Lark. These tests hold it to that: on valid specs both paths give
equal trees (token positions included) and equal IR (spans included, compared as JSON); on
broken specs the fast path declines exactly where Lark raises, and the SpecError is the same.
"""

from __future__ import annotations

import sys
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest
from conftest import EXAMPLES, ROOT, SPECS
from hypothesis import given, settings
from hypothesis import strategies as st
from lark import Token, Tree
from lark.exceptions import UnexpectedInput
from test_properties import JUNK, LANGUAGE, mutated, spec_text

import cnnspec
from cnnspec.language import ir
from cnnspec.language.checker import Row, _row
from cnnspec.language.lalr_fast import Token as FastToken
from cnnspec.language.lalr_fast import Tree as FastTree

# `cnnspec.language.parse` the function shadows the module of the same name
parse_module = sys.modules["cnnspec.language.parse"]

FILES = sorted(SPECS.glob("*.cnn")) + sorted(EXAMPLES.glob("*.cnn"))
ERROR_FILES = sorted((ROOT / "tests" / "errors").glob("*.cnn"))


def _position(tok: Token) -> tuple:
    return tuple(getattr(tok, name) for name in Token.__slots__)


def assert_same_tree(fast: Any, lark: Tree | Token) -> None:
    """Equal shapes, rule names, token types and values, and every token position. (The fast
    path builds lalr_fast's own Tree and Token, which have the fields of Lark's.)"""
    if isinstance(lark, Token):
        assert isinstance(fast, FastToken), (fast, lark)
        assert _position(fast) == _position(lark), (fast, lark)
        return
    assert isinstance(fast, FastTree) and fast.data == lark.data, (fast, lark)
    assert len(fast.children) == len(lark.children), (fast, lark)
    for a, b in zip(fast.children, lark.children, strict=True):
        assert_same_tree(a, b)


def lark_tree(text: str) -> Tree | None:
    try:
        return parse_module._lark().parse(text)
    except UnexpectedInput:
        return None


def outcome(text: str, fast: bool) -> tuple[str, str]:
    """("ok", IR as JSON with spans) or ("error", the rendered SpecError), parse then check."""
    try:
        spec = cnnspec.parse(text, filename="t.cnn", fast=fast)
    except cnnspec.SpecError as exc:
        return "error", str(exc)
    encoded = ir.to_json(spec)
    try:
        cnnspec.check(spec)
    except cnnspec.SpecError as exc:
        return "error", str(exc)
    return "ok", encoded


def assert_paths_agree(text: str) -> None:
    source = text if text.endswith("\n") else text + "\n"
    fast_tree = parse_module._fast().parse(source)
    reference = lark_tree(source)
    # the fast path declines exactly the texts Lark rejects
    assert (fast_tree is None) == (reference is None), text
    if reference is not None:
        assert_same_tree(fast_tree, reference)
    assert outcome(text, fast=True) == outcome(text, fast=False)


def test_the_fast_path_is_in_use():
    fast = parse_module._fast()
    assert fast is not None, "FastLALR refused the grammar; every parse goes through Lark"
    assert fast.parse("conv32 relu | dense10\n") is not None
    assert fast.parse("conv32 relu | dense10 )\n") is None  # Lark's error, not ours


@pytest.mark.parametrize("path", FILES + ERROR_FILES, ids=lambda p: p.stem)
def test_files_agree(path: Path):
    assert_paths_agree(path.read_text("utf-8"))


@pytest.mark.parametrize("text", [
    "", "\n", "# only a comment", "relu", "relu\r\n|\r\n", "conv8(k=3,valid)", "conv8 (relu)",
    "drop{.25,.5} | dense{4,8}(x) l2(.01)", "train lr={.1,.01} opt=adam", "x2", "relu x2 x3",
    "input 3x3", "input 32x32x3 relu", "let let = relu", "relu (relu", "drop{{.1}}",
    "conv8(k=)", "pool3(s=2)?", "(relu)x2?", "input\tx", "\f relu \t|", "relu\rrelu",
])
def test_corner_cases_agree(text):
    assert_paths_agree(text)


@settings(max_examples=200, deadline=None)
@given(spec_text(sweep=False) | spec_text(sweep=True))
def test_valid_specs_agree(text):
    assert cnnspec.parse(text)  # the strategy writes valid specs
    assert_paths_agree(text)


@settings(max_examples=300, deadline=None)
@given(mutated())
def test_mutated_specs_agree(text):
    assert_paths_agree(text)


@settings(max_examples=200, deadline=None)
@given(st.text(st.sampled_from(LANGUAGE + JUNK), max_size=60))
def test_random_text_agrees(text):
    assert_paths_agree(text)


# -- the checker's fast Row construction --------------------------------------------------------


def test_fast_rows_are_rows():
    """checker._row builds the same frozen Row as Row(...), only faster."""
    values = {f.name: f.name for f in fields(Row)}
    row = _row(**values)
    assert row == Row(**values) and type(row) is Row
    assert vars(row) == vars(Row(**values))
    with pytest.raises(AttributeError):
        row.text = "changed"  # still frozen


def test_checker_rows_have_every_field():
    """_row skips __init__, so a Row field the checker forgets to pass would go missing."""
    report = cnnspec.check(cnnspec.parse((SPECS / "exp7.cnn").read_text("utf-8")))
    names = {f.name for f in fields(Row)}
    assert all(set(vars(row)) == names for row in report.rows)
