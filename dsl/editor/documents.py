"""The editor's copy of an open document, kept in step with the client by the protocol's rules.

Why not pygls's own copy: pygls splits lines with `str.splitlines`, which also breaks at
`\\v`, `\\f`, `\\x1c`-`\\x1e`, `\\x85`, `\\u2028` and `\\u2029`, while the protocol (and every
client) breaks lines only at `\\n`, `\\r\\n` and `\\r`. One such character in a comment put
the server's copy out of step with the editor's: later edits landed in the wrong place, and
a format request then answered with that wrong text for the whole file. pygls also clamps a
position past the end of a line to one character short of it, and loses the empty last line.

Two line models meet here. The client's: lines end at `\\n`, `\\r\\n` or `\\r`, characters
are counted in the negotiated encoding's units (UTF-16 by default, so an emoji is 2). The
parser's (cnnspec.editor.analysis): lines end at `\\n` only, characters are Python string
indices. Positions go through the offset in the text between the two, so a lone `\\r` or
a character outside the BMP never shifts a diagnostic.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cached_property

__all__ = ["Change", "Document"]

_LSP_BREAK = re.compile(r"\r\n|\r|\n")

# (start line, start character, end line, end character) in the client's units, or None for
# a whole-document replacement; and the new text
Change = tuple[tuple[int, int, int, int] | None, str]


def _units(text: str, encoding: str) -> int:
    """How many of the encoding's code units `text` takes."""
    if encoding == "utf-8":
        return len(text.encode("utf-8", "surrogatepass"))
    if encoding == "utf-32":
        return len(text)
    return len(text) + sum(1 for c in text if ord(c) > 0xFFFF)  # utf-16: surrogate pairs


def _index_of_units(line: str, units: int, encoding: str) -> int:
    """The string index in `line` at `units` code units, clamped to the line's length; a
    count falling inside a character's units lands before that character."""
    if encoding == "utf-32":
        return min(max(units, 0), len(line))
    done = 0
    for i, c in enumerate(line):
        width = _units(c, encoding)
        if done + width > units:
            return i
        done += width
    return len(line)


@dataclass(frozen=True)
class Document:
    """An open document's text, its version and the position encoding the client chose."""

    text: str
    version: int | None = None
    encoding: str = "utf-16"
    # each client line as (start offset, end offset without its line break)
    _lines: list[tuple[int, int]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        lines, start = [], 0
        for m in _LSP_BREAK.finditer(self.text):
            lines.append((start, m.start()))
            start = m.end()
        lines.append((start, len(self.text)))  # the last line, empty after a final break
        object.__setattr__(self, "_lines", lines)

    @cached_property
    def _parser_starts(self) -> list[int]:
        """The offset each parser line (ended by `\\n` alone) starts at."""
        return [0] + [m.end() for m in re.finditer("\n", self.text)]

    # -- client positions <-> offsets ------------------------------------------------------

    def offset(self, line: int, character: int) -> int:
        """The offset of a client position; past a line's end is its end, past the last line
        the end of the text (the protocol's rule), a negative one the start."""
        if line < 0:
            return 0
        if line >= len(self._lines):
            return len(self.text)
        start, end = self._lines[line]
        return start + _index_of_units(self.text[start:end], character, self.encoding)

    def position(self, offset: int) -> tuple[int, int]:
        """The client position of an offset (one inside a `\\r\\n` is at the line's end)."""
        offset = min(max(offset, 0), len(self.text))
        line = bisect.bisect_right(self._lines, (offset, len(self.text) + 1)) - 1
        start, end = self._lines[line]
        return line, _units(self.text[start:min(offset, end)], self.encoding)

    # -- parser positions <-> offsets ------------------------------------------------------

    def parser_offset(self, line: int, character: int) -> int:
        """The offset of a 0-based parser position (line ended by `\\n`, string index),
        clamped to the text."""
        starts = self._parser_starts
        if line < 0:
            return 0
        if line >= len(starts):
            return len(self.text)
        end = starts[line + 1] - 1 if line + 1 < len(starts) else len(self.text)
        return min(starts[line] + max(character, 0), end)

    def parser_position(self, offset: int) -> tuple[int, int]:
        offset = min(max(offset, 0), len(self.text))
        line = bisect.bisect_right(self._parser_starts, offset) - 1
        return line, offset - self._parser_starts[line]

    def to_parser(self, line: int, character: int) -> tuple[int, int]:
        """A client position as the parser's (line, character)."""
        return self.parser_position(self.offset(line, character))

    def to_client(self, line: int, character: int) -> tuple[int, int]:
        """A parser position as the client's (line, character)."""
        return self.position(self.parser_offset(line, character))

    # -- edits -----------------------------------------------------------------------------

    def edited(self, changes: Iterable[Change], version: int | None) -> Document:
        """This document after the client's changes, applied in order (each range is in the
        text as the changes before it left it)."""
        text = self.text
        for where, new in changes:
            if where is None:
                text = new
                continue
            current = Document(text, encoding=self.encoding)
            start = current.offset(where[0], where[1])
            end = max(current.offset(where[2], where[3]), start)
            text = text[:start] + new + text[end:]
        return Document(text, version, self.encoding)
