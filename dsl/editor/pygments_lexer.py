"""A Pygments lexer for `.cnn` files, registered as `cnnspec` (entry point `pygments.lexers`).

Tokens follow grammar/cnnspec.lark: comments, headers (`input`, `classes`, `train` with its
`key=value` settings, whose values may be calls such as `onecycle(.4,warm=.2)` and `+` lists
such as `flip+crop4`), `let` blocks, layer words (the words of cnnspec.language.layers, their number
split off), numbers and shapes, argument lists touching a word, sweeps `{…}`, merges,
groups, `|`, repeats `x2` and `?`. Anything else is plain text, never an Error token.
"""

from __future__ import annotations

import re

from pygments.lexer import RegexLexer, bygroups, include
from pygments.token import (
    Comment,
    Keyword,
    Name,
    Number,
    Operator,
    Punctuation,
    Text,
    Whitespace,
)

from cnnspec.language.layers import KINDS

_WORDS = "|".join(re.escape(w) for w in sorted(KINDS, key=len, reverse=True))
_NUM = r"(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][-+]?[0-9]+)?"
_END = r"(?![A-Za-z0-9_.])"


class CnnspecLexer(RegexLexer):
    name = "cnnspec"
    aliases = ["cnnspec", "cnn"]
    filenames = ["*.cnn"]
    mimetypes = ["text/x-cnnspec"]
    flags = re.MULTILINE

    tokens = {
        "common": [
            (r"#[^\n]*", Comment.Single),
            (r"[^\S\n]+", Whitespace),  # any blank but a line break (matched before): \v too
            (r"\{", Punctuation, "sweep"),
        ],
        "root": [
            (r"\r?\n", Whitespace),
            # a header may be indented, as the grammar allows (before `common` takes the blanks)
            (r"^([ \t\f]*)(input|classes)\b", bygroups(Whitespace, Keyword.Declaration),
             "header"),
            (r"^([ \t\f]*)(train)\b", bygroups(Whitespace, Keyword.Declaration), "train"),
            include("common"),
            (r"(let)(\s+)([A-Za-z_][A-Za-z0-9_]*)",
             bygroups(Keyword.Declaration, Whitespace, Name.Function)),
            (r"(add|concat)(\()", bygroups(Keyword, Punctuation)),
            (r"(?<=[A-Za-z0-9_.}])\(", Punctuation, "args"),
            (r"[()]", Punctuation),
            (r",", Punctuation),
            (r"\|", Operator),
            (r"x[0-9]+\b", Operator.Word),  # a repeat
            (r"\?", Operator),
            (r"=", Operator),
            (rf"({_WORDS})({_NUM})?{_END}", bygroups(Name.Builtin, Number)),
            (r"[A-Za-z_][A-Za-z0-9_]*(?:\.[0-9]+)?", Name.Function),  # a block (or a typo)
            (r"[0-9]+(?:x[0-9]+)+", Number),
            (_NUM, Number),
            (r".", Text),
        ],
        "header": [
            (r"\r?\n", Whitespace, "#pop"),
            include("common"),
            (r"[0-9]+(?:x[0-9]+)+", Number),
            (_NUM, Number),
            (r"[^\s#]+", Text),
        ],
        "train": [
            (r"\r?\n", Whitespace, "#pop"),
            include("common"),
            (r"([A-Za-z_][A-Za-z0-9_]*)(=)", bygroups(Name.Attribute, Operator)),
            include("setting_value"),
            (r"[0-9]+(?:x[0-9]+)+", Number),
            (_NUM, Number),
            (r"[A-Za-z_][A-Za-z0-9_]*", Name.Constant),
            (r"[^\s#]", Text),
        ],
        # a setting's call, `onecycle(.4,warm=.2)` / `crop4(mode=zero)`, and `+` in flip+crop4
        "setting_value": [
            (r"([A-Za-z_][A-Za-z0-9_]*)(\()", bygroups(Name.Function, Punctuation), "args"),
            (r"\+", Operator),
            (r",", Punctuation),
        ],
        "args": [
            (r"\)", Punctuation, "#pop"),
            (r"\r?\n", Whitespace, "#pop"),
            include("common"),
            (r"([A-Za-z_][A-Za-z0-9_]*)(=)", bygroups(Name.Attribute, Operator)),
            (r",", Punctuation),
            (r"[0-9]+(?:x[0-9]+)+", Number),
            (_NUM, Number),
            (r"[A-Za-z_][A-Za-z0-9_]*(?:\.[0-9]+)?", Name.Constant),
            (r"[^\s#]", Text),
        ],
        "sweep": [
            (r"\}", Punctuation, "#pop"),
            (r"\r?\n", Whitespace, "#pop"),
            (r"#[^\n]*", Comment.Single),  # `conv{8 # todo`: a comment ends the line's `{`
            (r"[^\S\n]+", Whitespace),
            include("setting_value"),
            (r"[0-9]+(?:x[0-9]+)+", Number),
            (_NUM, Number),
            (r"[A-Za-z_][A-Za-z0-9_]*(?:\.[0-9]+)?", Name.Variable),
            (r"[^\s#]", Text),
        ],
    }
