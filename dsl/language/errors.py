"""The one error type users see, so every stage reports problems the same way: with a place."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from cnnspec.language.frozen import fast_init


@fast_init  # built for every token the parser keeps
@dataclass(frozen=True)
class Span:
    """Where a piece of IR came from: 1-based line and column, end column exclusive."""

    line: int
    column: int
    end_line: int
    end_column: int

    @staticmethod
    def point(line: int, column: int, width: int = 1) -> Span:
        return Span(line, column, line, column + max(width, 1))


# At most this many characters of a source line are shown under a message: a 10 MB line must
# not be echoed to the terminal (or kept in a log) in full.
WINDOW = 100
ELLIPSIS = "..."


def _window(text: str, start: int, width: int) -> tuple[str, str]:
    """The part of a source line to show around a caret, and the caret line under it.

    start is the caret's 0-based column, width its length. A line of at most WINDOW characters
    is shown whole; a longer one is cut to WINDOW characters around the caret, each cut marked
    with ELLIPSIS, and the caret moved and clipped so it still sits under the same characters.
    """
    if len(text) <= WINDOW:
        return text, " " * start + "^" * width
    width = min(width, WINDOW // 2)
    left = max(0, min(start - WINDOW // 3, len(text) - WINDOW))
    right = min(len(text), left + WINDOW)
    prefix = ELLIPSIS if left > 0 else ""
    suffix = ELLIPSIS if right < len(text) else ""
    width = max(1, min(width, right - start)) if start < right else 1
    caret = " " * (len(prefix) + start - left) + "^" * width
    return prefix + text[left:right] + suffix, caret


MAX_MESSAGE = 400


def some(names: list[str] | tuple[str, ...], shown: int = 3) -> str:
    """`a, b, c and 5 more`: a list of names (files, runs, variants) that stays one line in a
    message however long it is."""
    more = len(names) - shown
    return ", ".join(names[:shown]) + (f" and {more} more" if more > 0 else "")


def visible(text: str) -> str:
    """text with every character a terminal would act on instead of show (escape, carriage
    return, form feed, line and paragraph separators, other controls) as one visible
    character: a spec cannot recolour the terminal or break the one line the caret sits under,
    and the caret still counts one column per character. C0 controls become their Control
    Pictures sign (ESC is ␛, CR ␍), DEL ␡, anything else U+FFFD."""
    if text.isprintable():
        return text
    return "".join(
        ch if ch.isprintable() else
        chr(0x2400 + ord(ch)) if ord(ch) < 0x20 else "\u2421" if ch == "\x7f" else "\ufffd"
        for ch in text)


def visible_lines(text: str) -> str:
    """A message that may quote names from outside (file names, `--out`, label names) with
    every control character shown as a sign, line breaks kept: an error line cannot recolour
    the terminal or overwrite itself (see visible)."""
    if text.isprintable():
        return text
    return "\n".join(visible(line) for line in text.split("\n"))


def _clip(text: str) -> str:
    """A message or hint cut to MAX_MESSAGE characters: whatever text a message quotes, the
    terminal never gets a megabyte of it."""
    return text if len(text) <= MAX_MESSAGE else text[:MAX_MESSAGE] + ELLIPSIS


@dataclass(frozen=True)
class Diagnostic:
    """One problem: what happened (message), where (span), and how to fix it (hint)."""

    message: str
    span: Span | None = None
    hint: str | None = None

    def render(
        self,
        source: str | None = None,
        filename: str | None = None,
        lines: list[str] | None = None,
    ) -> str:
        """Compiler-style: `file:line:col: error: ...`, the source line, a caret line, a hint.

        lines is source already split at "\n" (SpecError splits once for all its problems)."""
        name = visible(filename or "<spec>")  # a file name may hold ESC too
        message = visible(_clip(self.message))
        if self.span is None:
            out = [f"{name}: error: {message}"]
        else:
            out = [f"{name}:{self.span.line}:{self.span.column}: error: {message}"]
            # Lines are counted by "\n" only, as the parser does (splitlines would also split
            # at \f, \x1c or \u2028 and show the wrong line).
            if lines is None:
                lines = source.split("\n") if source is not None else []
            if 0 < self.span.line <= len(lines):
                text = visible(lines[self.span.line - 1].rstrip("\r").expandtabs(1))
                width = (
                    self.span.end_column - self.span.column
                    if self.span.end_line == self.span.line
                    else len(text) - self.span.column + 1
                )
                shown, caret = _window(text, self.span.column - 1, max(width, 1))
                out.append(f"    {shown}")
                out.append("    " + caret)
        if self.hint:
            out.append(f"  hint: {visible(_clip(self.hint))}")
        return "\n".join(out)


def as_file_name(filename: Any) -> str | None:
    """A file name as messages show it: a Path (the API's callers pass one) as its text."""
    if filename is None or isinstance(filename, str):
        return filename
    if isinstance(filename, os.PathLike | bytes):
        return os.fsdecode(filename)
    raise TypeError(f"filename must be a str or a path, not {type(filename).__name__}")


class SpecError(Exception):
    """Everything wrong with one spec; `str()` renders each with file, line, column and caret.

    The first problem's position is exposed as `filename`, `line` and `column` for callers that
    want only one.
    """

    def __init__(
        self,
        diagnostics: list[Diagnostic] | tuple[Diagnostic, ...] | Diagnostic | str,
        source: str | None = None,
        filename: str | os.PathLike[str] | None = None,
    ) -> None:
        # a caller's own error may be one message or one Diagnostic: `SpecError("too deep")`
        if isinstance(diagnostics, str | Diagnostic):
            diagnostics = [Diagnostic(diagnostics) if isinstance(diagnostics, str)
                           else diagnostics]
        self.diagnostics = tuple(diagnostics)
        if not self.diagnostics:
            raise ValueError("SpecError needs at least one diagnostic")
        wrong = [d for d in self.diagnostics if not isinstance(d, Diagnostic)]
        if wrong:
            raise TypeError("SpecError takes a message or Diagnostics, not "
                            f"{type(wrong[0]).__name__}")
        self.source = source
        self.filename = as_file_name(filename)
        super().__init__(self.render())

    @property
    def line(self) -> int | None:
        span = self.diagnostics[0].span
        return span.line if span else None

    @property
    def column(self) -> int | None:
        span = self.diagnostics[0].span
        return span.column if span else None

    def with_source(self, source: str, filename: str | None) -> SpecError:
        """The same problems, told against a named file."""
        return SpecError(self.diagnostics, source, filename or self.filename)

    def render(self) -> str:
        lines = self.source.split("\n") if self.source is not None else []
        return "\n".join(d.render(self.source, self.filename, lines) for d in self.diagnostics)

    def __str__(self) -> str:
        return self.render()
