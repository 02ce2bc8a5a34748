"""The language server's copy of a document (cnnspec.editor.documents) against an oracle
written here from the protocol's rules: lines end at \\n, \\r\\n or \\r (nothing else), a
character counts its code units in the agreed encoding, and a position past a line's end is
that line's end. The parser's line model (\\n only) is the other side of every conversion."""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from cnnspec.editor.documents import Document

# the characters that broke pygls's copy (str.splitlines breaks at them), line breaks, a
# character outside the BMP (2 UTF-16 units, 4 UTF-8 bytes) and plain ones
ALPHABET = st.sampled_from(["a", "b", " ", "\n", "\r", "\r\n", "\u2028", "\u2029", "\x0b",
                            "\x0c", "\x1c", "\x85", "é", "😋", "中"])
TEXTS = st.lists(ALPHABET, max_size=30).map("".join)
ENCODINGS = st.sampled_from(["utf-16", "utf-8", "utf-32"])


def _units(text: str, encoding: str) -> int:
    codec = {"utf-16": "utf-16-le", "utf-8": "utf-8", "utf-32": "utf-32-le"}[encoding]
    width = {"utf-16": 2, "utf-8": 1, "utf-32": 4}[encoding]
    return len(text.encode(codec)) // width


def _client_lines(text: str) -> list[tuple[int, int]]:
    """(start, end) of each line, by the protocol's rule, worked out independently."""
    out, start, i = [], 0, 0
    while i < len(text):
        if text[i] in "\r\n":
            out.append((start, i))
            i += 2 if text[i:i + 2] == "\r\n" else 1
            start = i
        else:
            i += 1
    out.append((start, len(text)))
    return out


def _oracle_position(text: str, offset: int, encoding: str) -> tuple[int, int]:
    for n, (start, end) in enumerate(_client_lines(text)):
        if start <= offset <= end:
            return n, _units(text[start:offset], encoding)
    raise AssertionError("an offset inside a line break")


def _boundaries(text: str) -> list[int]:
    """Offsets that are not inside a \\r\\n pair."""
    return [i for i in range(len(text) + 1) if not (text[i - 1:i + 1] == "\r\n" and i > 0)]


@settings(max_examples=300, deadline=None)
@given(TEXTS, ENCODINGS)
def test_positions_and_offsets_agree_with_the_protocols_rules(text, encoding):
    doc = Document(text, 1, encoding)
    for offset in _boundaries(text):
        line, character = _oracle_position(text, offset, encoding)
        assert doc.position(offset) == (line, character)
        assert doc.offset(line, character) == offset


@settings(max_examples=200, deadline=None)
@given(TEXTS, ENCODINGS, st.integers(0, 40), st.integers(0, 40))
def test_a_position_past_a_line_or_the_text_is_clamped_to_its_end(text, encoding, line,
                                                                  character):
    doc = Document(text, 1, encoding)
    lines = _client_lines(text)
    if line >= len(lines):
        assert doc.offset(line, character) == len(text)
        return
    start, end = lines[line]
    if character >= _units(text[start:end], encoding):
        assert doc.offset(line, character) == end


@settings(max_examples=300, deadline=None)
@given(TEXTS, ENCODINGS, st.data())
def test_edits_land_where_the_client_put_them(text, encoding, data):
    """A series of incremental edits (ranges worked out by the oracle in the text as the edits
    before left it) gives the text the client has."""
    doc = Document(text, 1, encoding)
    for _ in range(data.draw(st.integers(1, 4))):
        cuts = _boundaries(text)
        start = data.draw(st.sampled_from(cuts))
        end = data.draw(st.sampled_from([c for c in cuts if c >= start]))
        new = data.draw(TEXTS)
        where = (*_oracle_position(text, start, encoding), *_oracle_position(text, end, encoding))
        doc = doc.edited([(where, new)], 2)
        text = text[:start] + new + text[end:]
        assert doc.text == text
    assert doc.edited([(None, "whole")], 3).text == "whole"


@settings(max_examples=300, deadline=None)
@given(TEXTS, ENCODINGS)
def test_parser_positions_count_lines_at_newlines_only(text, encoding):
    """The parser's (line, index) of each offset, as `str.split("\\n")` sees it, maps to the
    client's position of that offset and back."""
    doc = Document(text, 1, encoding)
    starts = [0] + [m.end() for m in re.finditer("\n", text)]
    for offset in _boundaries(text):
        line = max(n for n, s in enumerate(starts) if s <= offset)
        parser = (line, offset - starts[line])
        client = _oracle_position(text, offset, encoding)
        assert doc.to_client(*parser) == client
        assert doc.to_parser(*client) == parser


def test_a_character_past_a_parser_line_stays_on_that_line():
    doc = Document("ab\ncd", 1)
    assert doc.to_client(0, 99) == (0, 2)
    assert doc.to_client(7, 0) == (1, 2)
