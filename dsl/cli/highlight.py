"""Spec text in colour on a terminal, coloured by the Pygments lexer editors use.

Why one place: `fmt --show` and `summary`'s layer column show spec text, and they should
colour it exactly as an editor does (the same tokens as `cnnspec.editor.pygments_lexer`). Off a
terminal the text stays plain, byte for byte, and Pygments is not imported at all.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from rich.console import Console
from rich.text import Text

# ANSI colours (not a theme's RGB), so the terminal's own palette and light/dark setting apply
THEME = "ansi_dark"


@lru_cache(maxsize=1)
def _syntax_maker() -> Any:
    from rich.syntax import Syntax

    from cnnspec.editor.pygments_lexer import CnnspecLexer

    lexer = CnnspecLexer()
    return lambda text: Syntax(text, lexer, theme=THEME, background_color="default")


def spec_text(text: str, console: Console, style: str = "") -> Text:
    """Spec source (one line or many) as rich Text, coloured when `console` is a terminal."""
    if not console.is_terminal or console.no_color:
        return Text(text, style=style)
    coloured = _syntax_maker()(text).highlight(text)
    if coloured.plain != text and coloured.plain == text + "\n":
        coloured.right_crop(1)  # highlight() ends the text with a newline the source lacks
    if style:
        coloured.stylize(style)
    return coloured
