"""Text to IR: run the Lark grammar, then resolve every word against the layer table.

Lark's own exceptions never leave this module: syntax errors become a SpecError with a position,
what was expected in words a user knows, and a suggestion. Word-level problems (unknown words,
bad numbers, misplaced l2) are collected for the whole file and raised together.

Text that parses is read by the fast driver (lalr_fast) from tables kept on disk, without
importing Lark: Lark is imported only to read those tables once, to report a syntax error, or
when asked for (`fast=False`). Either way the builder sees lalr_fast's Tree and Token.
"""

from __future__ import annotations

import difflib
import functools
import gc
import itertools
import math
import os
import re
import stat
import sys
from collections.abc import Callable, Container, Iterable
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cnnspec.language import ir
from cnnspec.language.checker import OWN_HEAD, check, layer_facts
from cnnspec.language.errors import Diagnostic, Span, SpecError, as_file_name
from cnnspec.language.lalr_fast import Token, Tree
from cnnspec.language.layers import (
    KINDS,
    MAX_INT_DIGITS,
    OPTION_DEFAULTS,
    PARAM_KINDS,
    SIZE_DEFAULT,
    LayerKind,
    Param,
    ValueProblem,
    check_range,
    format_layer,
    format_number,
    shown,
    takes_bare,
    whole,
)
from cnnspec.language.setting_values import SCHEDULES, Arg, Written, WrittenProblem
from cnnspec.language.settings import SETTINGS, SettingsTable

if TYPE_CHECKING:
    from lark import Lark
    from lark.exceptions import UnexpectedInput

    from cnnspec.language.lalr_fast import FastLALR, Tables

KEYWORDS = ("input", "classes", "train", "let")
MERGES = ("add", "concat")  # `add(...)`, `concat(...)`: keywords where an item can start

# What Lark calls the terminals, in words a user knows.
_TERMINAL_WORDS = {
    "WORD": "a layer word",
    "NUMBER": "a number",
    "SHAPE": "a size such as 32x32x3",
    "REPEAT": "a repeat count such as x2",
    "OPTIONAL": "`?`",
    "BAR": "`|`",
    "LPAR": "`(`",
    "_ARGS_OPEN": "`(`",
    "RPAR": "`)`",
    "LBRACE": "`{`",
    "RBRACE": "`}`",
    "COMMA": "`,`",
    "PLUS": "`+`",
    "EQUAL": "`=`",
    "COMMENT": "a comment",
    "_NL": "the end of the line",
    "$END": "the end of the file",
    "INPUT": "`input`",
    "CLASSES": "`classes`",
    "TRAIN": "`train`",
    "LET": "`let`",
    "ADD": "`add(`",
    "CONCAT": "`concat(`",
    "VALUE": "a value (a number, a word such as valid, or a size such as 3x3)",
}


def _grammar_text() -> str:
    """The grammar file: inside the installed package (cnnspec/grammar), or the source tree's
    grammar/ folder; importlib.resources only for installs that are neither (a zip)."""
    here = Path(__file__).resolve().parent
    for path in (here.parent / "grammar" / "cnnspec.lark", here.parents[1] / "grammar" /
                 "cnnspec.lark"):
        if path.is_file():
            return path.read_text("utf-8")
    from importlib import resources

    return resources.files("cnnspec.grammar").joinpath("cnnspec.lark").read_text("utf-8")


@lru_cache(maxsize=1)
def _lark() -> Lark:
    from lark import Lark

    # Spans come from the tokens (see _tree_span): Lark's propagate_positions doubles parse time.
    # cache=True keeps the LALR tables in a temp file keyed by the grammar's hash: ~30 ms less per
    # process start, which is most of what `cnnspec check` costs. A bad cache file is rebuilt.
    return Lark(_grammar_text(), parser="lalr", lexer="contextual", cache=True)


def _syntax_error_type() -> type[UnexpectedInput]:
    """Lark's syntax error (importing Lark: only called once something was raised)."""
    from lark.exceptions import UnexpectedInput

    return UnexpectedInput


# Why the fast path was given up, if it was (see _fast): the reason is kept for tests and
# debugging; parsing goes on with Lark alone.
_FAST_FAILED: list[BaseException] = []

# Text that exercises every construct of the grammar: the fast path must build the very tree
# Lark builds for it (positions included) before it is used at all.
_SELF_TEST = (
    "# c\ninput 8x8x3\nclasses 3\ntrain lr={.1,.01} opt=sgd\nlet u = conv8(k=3,valid) relu\n"
    "let v(f, s=1) = conv{f}(s={s}) u\n"
    "u v(8, s=2) (bn relu)x2? add(conv8 bn, conv8(k=1)) concat(relu) x2 drop{.25,.5} "
    "pool2(s=1) | dense4 l2(.01)  # end\n\n"
)


@lru_cache(maxsize=1)
def _fast() -> FastLALR | None:
    """The same grammar's tables in a tighter loop (see lalr_fast); None: use Lark alone.

    The tables come from the cache folder when they are there for this grammar (no Lark import
    at all), else from Lark (see _tables_from_lark). lalr_fast reads Lark internals, which
    change between Lark versions (lark 1.1.2 keeps its scanner regexes as tuples). Any failure
    to import or build it, or a tree that differs from Lark's on _SELF_TEST, means Lark alone
    parses: slower, never wrong.
    """
    try:
        from cnnspec.language.lalr_fast import FastLALR, cached_tables

        return FastLALR(cached_tables(_grammar_text(), _tables_from_lark), bare=_BARE_RULES)
    except Exception as exc:  # Unsupported, AttributeError, KeyError, TypeError, ImportError...
        _FAST_FAILED.append(exc)
        return None


def _tables_from_lark() -> Tables:
    """The driver's tables read from Lark, kept only if they parse _SELF_TEST to Lark's tree."""
    from cnnspec.language.lalr_fast import FastLALR, tables_from_lark

    tables = tables_from_lark(_lark())
    if not _same_tree(FastLALR(tables).parse(_SELF_TEST), _lark_tree(_SELF_TEST)):
        raise RuntimeError("the fast parser's tree differs from Lark's")
    return tables


def _same_tree(a: Any, b: Any) -> bool:
    """Equal trees, and equal token types and positions (tree equality ignores those)."""
    if isinstance(a, Token) or isinstance(b, Token):
        return (isinstance(a, Token) and isinstance(b, Token) and a == b and a.type == b.type
                and (a.line, a.column, a.end_line, a.end_column)
                == (b.line, b.column, b.end_line, b.end_column))
    if not (isinstance(a, Tree) and isinstance(b, Tree)):
        return False
    return (a.data == b.data and len(a.children) == len(b.children)
            and all(_same_tree(x, y) for x, y in zip(a.children, b.children, strict=True)))


# The rules of a layer word and of an item, and the word's terminal: in the fast path's lean
# tree an item that is a word alone is its WORD token (see lalr_fast.FastLALR), which
# _Builder.sequence reads as such.
_BARE_RULES = ("layer", "item", "WORD")


def _syntax_tree(text: str, fast: bool = True) -> Tree:
    """The parse tree of text that already ends in a newline; raises Lark's UnexpectedInput.

    With fast=True the tree comes from FastLALR when it takes the text (its lean tree: an
    item that is a word alone is the word's token); anything it does not take (every syntax
    error) goes to Lark itself, so the errors are Lark's. If the fast path ever fails (a Lark
    internal it misreads), it is given up for the rest of the process.
    """
    parser = _fast() if fast and not _FAST_FAILED else None
    tree = None
    if parser is not None:
        try:
            tree = parser.parse(text, lean=True)
        except Exception as exc:  # not a syntax error: those return None
            _FAST_FAILED.append(exc)
    return tree if tree is not None else _lark_tree(text)


def _lark_tree(text: str) -> Tree:
    """Lark's own parse of text, in lalr_fast's Tree and Token (so the builder reads one kind
    of tree); raises Lark's UnexpectedInput."""
    from lark import Token as LarkToken

    root = _lark().parse(text)
    # built without recursion: a valid spec can nest deeper than Python's recursion limit
    # (the nesting limit is applied later, to the tree)
    out = Tree(str(root.data), [])
    stack = [(root, out)]
    while stack:
        lark_node, node = stack.pop()
        for child in lark_node.children:
            if isinstance(child, LarkToken):
                node.children.append(Token(
                    child.type, str(child), child.start_pos, child.line, child.column,
                    child.end_line, child.end_column, child.end_pos))
            else:
                copy = Tree(str(child.data), [])
                node.children.append(copy)
                stack.append((child, copy))
    return out


def parse(
    text: str, filename: str | None = None, name: str | None = None, *, fast: bool = True,
    settings: SettingsTable = SETTINGS,
) -> ir.Spec:
    """Parse .cnn text into a Spec. Raises SpecError (never a Lark or Python error) on bad input.

    fast=False parses with Lark alone (the reference the fast path is tested against).
    settings is the table of training settings the `train` line may write.
    Text longer than MAX_SPEC_CHARS is refused before parsing, so no input makes it slow.
    Arguments of the wrong type are a TypeError saying which (text as bytes, a name not a str).
    """
    if not isinstance(text, str):
        raise TypeError(f"parse() takes the spec's text as a str, not {type(text).__name__}" + (
            " (decode it, or read the file with cnnspec.load)"
            if isinstance(text, bytes | bytearray) else ""))
    filename = as_file_name(filename)
    if name is not None and not isinstance(name, str):
        raise TypeError(f"parse()'s name must be a str, not {type(name).__name__}")
    if len(text) > MAX_SPEC_CHARS:
        raise SpecError([Diagnostic(
            f"the spec is {len(text):,} characters, over the limit of {MAX_SPEC_CHARS:,}",
            None, "a network spec is a few lines; is this the right file?",
        )], None, filename)
    if text.startswith("\ufeff"):  # a byte-order mark (an editor's text, a read without
        text = " " + text[1:]  # utf-8-sig): a space keeps the columns of line 1 as given
    # The parse allocates a few objects per character and frees none of them until the end:
    # the cyclic GC would rescan the growing heap again and again (a 1 MB spec took 4x longer
    # with it), and nothing built here forms a cycle.
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        return _parse(text, filename, name, fast, settings)
    finally:
        if gc_was_enabled:
            gc.enable()


def _parse(text: str, filename: str | None, name: str | None, fast: bool,
           settings: SettingsTable = SETTINGS) -> ir.Spec:
    tree, syntax, skipped_blocks = _recovering_parse(
        text if text.endswith("\n") else text + "\n", fast)
    if tree is None:
        raise SpecError(syntax, text, filename)
    too_deep = _nesting_diagnostic(text)
    if too_deep is not None:  # later stages recurse once per level
        raise SpecError([too_deep], text, filename)
    builder = _Builder(text, _let_names(tree), settings)
    try:
        lines = tuple(builder.line(t) for t in tree.children)
    except _TooManyProblems:
        raise SpecError(_in_order([*syntax, *builder.problems]), text, filename) from None
    too_deep = _depth_diagnostic(lines) if _may_nest_deeply(text) else None
    if too_deep is not None:  # later stages recurse once per level, blocks included
        raise SpecError(_in_order([*syntax, *builder.problems, too_deep]), text, filename)
    # a block whose `let` line had a syntax error is not reported again at each use
    word_problems = [d for d in builder.problems
                     if not any(f"`{name}`" in d.message for name in skipped_blocks)]
    if word_problems and not syntax and builder.shape_safe:
        word_problems += _checker_problems(
            ir.Spec(lines, source=text, filename=filename), word_problems)
    if syntax or word_problems:
        raise SpecError(_in_order([*syntax, *word_problems]), text, filename)
    stem = name or (Path(filename).stem if filename else "spec")
    return ir.Spec(lines, name=stem, source=text, filename=filename)


def _in_order(problems: list[Diagnostic]) -> list[Diagnostic]:
    """Problems in the order of the text (a stable sort: equal places keep their order)."""
    return sorted(problems, key=lambda d: (d.span.line, d.span.column) if d.span else (0, 0))


def _checker_problems(spec: ir.Spec, word_problems: list[Diagnostic]) -> list[Diagnostic]:
    """What the checker finds in a spec that has word problems, all of them shape-neutral (a
    misplaced l2, a bad dropout rate), so one run lists those and the shape errors together.

    The parameter budget is left to `check` itself, which knows the caller's budget. A layer
    dropped for its problem can make a softmax look last (so the spec seems to write its own
    head); that rule is kept only when no problem comes after the softmax.
    """
    if spec.has_sweep():
        return []
    try:
        check(spec, max_params=sys.maxsize)
    except SpecError as err:
        last_problem = max(((d.span.line, d.span.column) for d in word_problems if d.span),
                           default=(0, 0))
        return [d for d in err.diagnostics
                if not (d.message.startswith(OWN_HEAD) and d.span is not None
                        and (d.span.line, d.span.column) < last_problem)]
    return []


MAX_NESTING = 32
# Blocks with parameters are built at each use, recursively: these bound the work (a chain of
# blocks each using the one before twice would otherwise double the layers at every step).
MAX_BLOCK_NESTING = 32  # uses of blocks with parameters inside each other
MAX_EXPANDED_LAYERS = 10_000  # layers built for blocks with parameters, in all; uses alike
MAX_LAYER_OPTIONS = 10_000  # combinations of one layer's alternatives (all built at parse)
MAX_PROBLEMS = 50  # word problems reported before giving up, like a compiler's error limit
MAX_SYNTAX_ERRORS = 20
# Every syntax error costs a parse of the whole text again (see _recovering_parse); past this
# many characters parsed in all, the errors found so far are reported.
MAX_RECOVERY_CHARS = 4 * 2**20
# A spec is a few hundred bytes; 1 MiB is far above any real one and keeps every command fast.
MAX_SPEC_BYTES = 2**20
MAX_SPEC_CHARS = MAX_SPEC_BYTES  # for text already decoded (a character is at least a byte)
_LET_NAME = re.compile(r"\s*let\s+([A-Za-z_][A-Za-z0-9_]*)")


def _recovering_parse(text: str, fast: bool) -> tuple[Tree | None, list[Diagnostic], set[str]]:
    """Parse, and on a syntax error blank out that line and parse again, so one run of `check`
    reports the syntax errors of every line (each statement is one line, so a blanked line
    cannot hide an error on another). Returns the tree of the remaining lines (None when
    recovery gave up), the syntax diagnostics, and the names of blocks whose `let` line was
    blanked."""
    lines = text.split("\n")
    problems: list[Diagnostic] = []
    skipped: set[str] = set()
    parsed = 0
    while True:
        current = "\n".join(lines)
        parsed += len(current)
        try:
            return _syntax_tree(current, fast), problems, skipped
        except _syntax_error_type() as exc:  # evaluated only when something is raised
            diagnostic = _syntax_diagnostic(exc, current)
            problems.append(diagnostic)
            number = diagnostic.span.line if diagnostic.span else 0
            if (len(problems) >= MAX_SYNTAX_ERRORS or not 0 < number <= len(lines)
                    or not lines[number - 1].strip() or parsed > MAX_RECOVERY_CHARS):
                return None, problems, skipped
            let = _LET_NAME.match(lines[number - 1])
            if let:
                skipped.add(let.group(1))
            lines[number - 1] = ""


def _example_value(body: str, param: str) -> str | None:
    """A value that fits where `{param}` stands in a block's body, for a hint's example use:
    `drop{r}` .25, `pool{p}` 2, `conv{f}` 64; `s={s}` 1, `k={k}` 3; `l2({w})` .01, a conv's
    positional `({p})` same. None where no value would do: `leaky_relu{a}` takes no number."""
    ref = re.escape("{" + param + "}")
    number = re.search(r"([A-Za-z_]+)" + ref, body)
    if number:
        word = number.group(1)
        kind = KINDS.get(word)
        if kind is not None and kind.number is None:
            return None
        return {"drop": ".25", "pool": "2", "avgpool": "2", "scale": "1"}.get(word, "64")
    named = re.search(r"([A-Za-z_]+)" + _NUMBER_OR_PARAM + r"\([^()]*?\b([A-Za-z_]+)=" + ref,
                      body)
    if named:
        word, key = named.groups()
        if key == "m":
            key = "momentum" if word == "bn" else "multiplier"
        return _NAMED_EXAMPLES.get(key, "1")
    positional = re.search(
        r"([A-Za-z_]+[0-9]?)" + _NUMBER_OR_PARAM + r"\((?:[^()]*,)?\s*" + ref, body)
    if positional:
        return ".01" if positional.group(1) in ("l1", "l2") else "same"
    return "64"


# what may stand between a layer word and its `(` in a block's body: its number, or a
# parameter for it (`conv{f}(s={s})`)
_NUMBER_OR_PARAM = r"(?:[0-9.]*|\{[A-Za-z_][A-Za-z0-9_]*\})"

# a value each named layer argument takes, for _example_value (`bias={b}`: false)
_NAMED_EXAMPLES = {
    "k": "3", "kernel": "3", "s": "1", "stride": "1", "d": "1", "dilation": "1",
    "padding": "same", "p": "same", "bias": "false", "eps": ".001", "epsilon": ".001",
    "multiplier": "1", "momentum": ".99",
}


MAX_DEPTH = 128  # IR levels (groups, repeats, optionals, block uses) from a line to a layer


def _may_nest_deeply(text: str) -> bool:
    """Whether the IR of this text could be more than MAX_DEPTH levels deep (else the walk of
    _depth_diagnostic is skipped: a spec of a few lines cannot nest that far).

    Each level needs text of its own: a group or merge its `(`, a repeat its `x`, an optional
    its `?`, and a block use a `let` line above (blocks only use blocks defined before them,
    so a chain of uses has at most one level per `let`). So the depth is at most one more than
    the count of those; counting every `x` and `let` in the text (sizes, comments) only makes
    the bound looser.
    """
    return (1 + text.count("(") + text.count("x") + text.count("?") + text.count("let")
            > MAX_DEPTH)


def _depth_diagnostic(lines: tuple[ir.Line, ...]) -> Diagnostic | None:
    """A problem if a block use chain (`let b = a a`, `let c = b b`, ...) with the brackets on
    the way nests more than MAX_DEPTH levels: every later stage walks it recursively.

    Computed once per statement in file order from the depths of the blocks above, so a
    chain of thousands of blocks costs no recursion here.
    """
    depth: dict[str, int] = {}

    def item_depth(it: ir.Item) -> int:
        if isinstance(it, ir.Group):
            return 1 + max((item_depth(i) for i in it.items), default=0)
        if isinstance(it, ir.Repeat | ir.Optional):
            return 1 + item_depth(it.body)
        if isinstance(it, ir.Merge):
            return 1 + max((item_depth(i) for b in it.branches for i in b), default=0)
        if isinstance(it, ir.BlockRef) and it.items is not None:  # a use with arguments
            return 1 + max((item_depth(i) for i in it.items), default=0)
        if isinstance(it, ir.BlockRef):
            return 1 + depth.get(it.name, 0)
        return 1

    for line in lines:
        st = line.statement
        if not isinstance(st, ir.LetDecl | ir.LayerLine):
            continue
        deepest = max((item_depth(i) for i in st.items), default=0)
        if isinstance(st, ir.LetDecl):
            depth[st.name] = deepest
        if deepest > MAX_DEPTH:
            return Diagnostic(
                f"blocks and brackets nest {deepest} levels deep here, over the limit of "
                f"{MAX_DEPTH}", st.span, "use fewer levels of blocks inside blocks")
    return None


def _nesting_diagnostic(text: str) -> Diagnostic | None:
    """A problem if brackets nest deeper than MAX_NESTING (the text has already parsed)."""
    if text.count("(") + text.count("{") <= MAX_NESTING:
        return None
    for number, line_text in enumerate(text.split("\n"), 1):
        depth = 0
        for column, ch in enumerate(line_text.split("#", 1)[0], 1):
            if ch in "({":
                depth += 1
                if depth > MAX_NESTING:
                    return Diagnostic(
                        f"brackets nest more than {MAX_NESTING} deep",
                        Span.point(number, column),
                        "flatten the groups, or name a part with `let`",
                    )
            elif ch in ")}":
                depth -= 1
    return None


def _let_names(tree: Tree) -> set[str]:
    """Every block name the file defines, wherever it is defined."""
    return {
        str(child.children[0])
        for line in tree.children
        for child in line.children
        if isinstance(child, Tree) and child.data == "let_decl"
    }


def read_spec_text(path: str | Path, limit: int = MAX_SPEC_BYTES) -> str:
    """The text of a spec file, or a SpecError naming the file: a directory, a missing or
    unreadable file, more than `limit` bytes, or bytes that are not UTF-8 (a leading UTF-8
    byte-order mark is dropped).

    At most limit + 1 bytes are ever read, so `/dev/zero`, a pipe that never ends or a huge
    file cost no more than a real spec; nothing is echoed back from a file that is refused.
    """
    p = Path(path)

    def refuse(reason: str, hint: str | None = None) -> SpecError:
        return SpecError([Diagnostic(f"cannot read spec: {reason}", None, hint)], None, str(path))

    if not os.fspath(path):  # Path("") is the working folder: "a directory" would mislead
        raise refuse("the file name is empty", "give the path of a .cnn file")
    if "\0" in os.fspath(path):  # no file name holds one: os.open raises ValueError
        raise refuse("the file name holds a NUL character", "give the path of a .cnn file")

    try:
        # O_NONBLOCK: opening a named pipe that nobody writes to would otherwise wait forever
        fd = os.open(p, os.O_RDONLY | os.O_NONBLOCK)
        with open(fd, "rb") as handle:
            mode = os.fstat(fd).st_mode
            if stat.S_ISDIR(mode):
                raise refuse("it is a directory", "give the path of a .cnn file")
            os.set_blocking(fd, True)  # reads wait for a writer that is there (`<(…)`, stdin)
            data = handle.read(limit + 1)
    except IsADirectoryError:
        raise refuse("it is a directory", "give the path of a .cnn file") from None
    except FileNotFoundError as exc:
        raise refuse(exc.strerror or str(exc), (
            "`-` is a file name here, not standard input: give /dev/stdin to read a spec "
            "from it") if os.fspath(path) == "-" else None) from None
    except OSError as exc:
        raise refuse(exc.strerror or str(exc)) from None
    if not data and stat.S_ISFIFO(mode):
        raise refuse("it is a pipe and nothing was written to it")
    if len(data) > limit:
        raise refuse(
            f"it is larger than {limit:,} bytes",
            "a network spec is a few lines; is this the right file?",
        )
    try:
        # a byte-order mark (Windows editors write one) is not text: it was refused at 1:1
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise refuse(
            f"it is not UTF-8 text (byte 0x{data[exc.start]:02x} on line {line})",
            "save the file as UTF-8",
        ) from None


def load(path: str | Path) -> ir.Spec:
    """Read (see read_spec_text: bounded, UTF-8) and parse a .cnn file; errors name the file."""
    text = read_spec_text(path)
    return parse(text, filename=str(path), name=Path(path).stem)


# -- syntax errors -----------------------------------------------------------------------------


def _describe_expected(names: set[str]) -> str:
    if {"NUMBER", "WORD", "SHAPE"} <= names:  # a value: an argument, a setting, an alternative
        names = (names - {"NUMBER", "WORD", "SHAPE", "LBRACE"}) | {"VALUE"}
    words = sorted({_TERMINAL_WORDS.get(n, f"`{n}`") for n in names})
    if len(words) > 6:
        return "a layer, `|`, `(`, or the end of the line"
    if len(words) == 1:
        return words[0]
    return ", ".join(words[:-1]) + " or " + words[-1]


def _open_paren_column(line_text: str) -> int | None:
    """1-based column of the last `(` left open on a line (comments ignored), if any."""
    stack: list[int] = []
    for i, ch in enumerate(line_text.split("#", 1)[0]):
        if ch == "(":
            stack.append(i + 1)
        elif ch == ")" and stack:
            stack.pop()
    return stack[-1] if stack else None


def _syntax_diagnostic(exc: UnexpectedInput, text: str) -> Diagnostic:
    """Lark's syntax error in words a user knows, at its place, with a hint where one helps."""
    from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedToken

    # Lark counts lines by "\n" only; str.splitlines would also split at \f, \x1c, \u2028...
    lines = text.split("\n")
    line = getattr(exc, "line", None) or len(lines)
    col = getattr(exc, "column", None) or 1
    if line < 1 or line > max(len(lines), 1):
        line, col = max(len(lines), 1), 1
    line_text = lines[line - 1] if line <= len(lines) else ""
    if isinstance(exc, UnexpectedCharacters):
        return _unexpected_character(exc, text, line, col)
    if isinstance(exc, UnexpectedToken):
        return _unexpected_token(exc, line, col, line_text)
    if isinstance(exc, UnexpectedEOF):
        return Diagnostic(
            f"unexpected end of file; expected {_describe_expected(set(exc.expected))}",
            Span.point(line, col),
        )
    return Diagnostic(str(exc).splitlines()[0], Span.point(line, col))


def _unexpected_character(exc: Any, text: str, line: int, col: int) -> Diagnostic:
    """A character no token starts with here (Lark's UnexpectedCharacters)."""
    char = text[exc.pos_in_stream] if exc.pos_in_stream < len(text) else "?"
    hint = None
    if char == "-" and text.startswith("->", exc.pos_in_stream):  # `conv8 -> relu`
        hint = "layers follow each other separated by spaces, with no arrow: conv8 relu"
    elif char == "-":
        hint = (_exponent_in_word(text, exc.pos_in_stream)
                or "numbers are written without a sign; rates and penalties are >= 0")
    elif char == ";":
        hint = "a line is one statement and ends without `;`; layers are separated by spaces"
    elif char in "[]":
        hint = "use ( ) for groups and { } for sweep alternatives"
    return Diagnostic(
        f"unexpected character {char!r}; expected {_describe_expected(set(exc.allowed))}",
        Span.point(line, col),
        hint,
    )


# `drop1e-3`: a layer word ending in a number with an exponent, up to the exponent's `-`
_WORD_EXPONENT = re.compile(r"([A-Za-z_]+)([0-9]+(?:\.[0-9]*)?|\.[0-9]+)[eE]$")
_EXPONENT_DIGITS = re.compile(r"-([0-9]+)")


def _exponent_in_word(text: str, pos: int) -> str | None:
    """The hint for `drop1e-3` (the `-` at pos): a word's number takes no exponent (`lr=1e-3`
    in settings and `l2(1e-3)` in arguments do), so it names the word as it is written."""
    word = _WORD_EXPONENT.search(text, text.rfind("\n", 0, pos) + 1, pos)
    digits = _EXPONENT_DIGITS.match(text, pos)
    if word is None or digits is None:
        return None
    written = f"{word.group(2)}e-{digits.group(1)}"
    kind = KINDS.get(word.group(1))
    value = float(written)
    whole_kind = kind is not None and kind.number is not None and kind.number.kind == "int"
    if (value == 0 or kind is None or kind.number is None  # 1e-400; `l21e-2`: l2, 1e-2?
            or (whole_kind and not value.is_integer())):  # `dense1e-3`: no whole number
        return "a layer word's number takes no exponent; write it out in full"
    return (f"a layer word's number takes no exponent: write "
            f"{word.group(1)}{_canonical_number(kind, written)}")


def _unexpected_token(exc: Any, line: int, col: int, line_text: str) -> Diagnostic:
    """A token the grammar does not take here (Lark's UnexpectedToken): the mistakes people
    make with brackets and keywords get their own message, the rest says what was expected."""
    tok = exc.token
    expected = set(exc.expected)
    history = getattr(exc, "token_history", None) or []
    prev = history[-1] if history else None
    misplaced = _misplaced_token(tok, prev, expected, line, col, line_text)
    if misplaced is not None:
        return misplaced
    width = len(str(tok)) if tok.type != "_NL" else 1
    what = "end of the line" if tok.type == "_NL" else f"`{tok}`"
    described = _describe_expected(expected)
    hint = _token_hint(tok, prev, expected)
    if prev is not None and prev.type == "LET":
        described = "a block name"
    elif prev is not None and prev.type == "TRAIN":
        described = "a setting such as lr=.01"
    else:
        # after a whole value, Lark's merged LALR states offer every bracket's closing: the
        # brackets open before the token say which one fits
        inside = open_bracket(line_text[:col - 1])
        settings = TRAIN_LINE.match(line_text) is not None
        if inside == "{" and expected & {"RPAR", "RBRACE"}:
            described = "`,` or `}`"
        elif inside == "args" and expected & {"RPAR", "RBRACE"}:
            described = "`,` or `)`"
        elif inside is None and settings and {"WORD", "_NL"} <= expected:
            described = "another setting such as epochs=10, a comment or the end of the line"
        if (tok.type == "COMMA" and inside is None and not settings and "_NL" in expected
                and not _HEADER_LINE.match(line_text)):
            # `conv8, relu`: Lark's state after a reduced layer lists only the line's end, but
            # the next layer fits there as well (`|` only once: a second is an error)
            bar = "" if "|" in line_text[:col - 1] else " `|`,"
            described = f"a layer,{bar} `(`, a comment or the end of the line"
        header = _HEADER_LINE.match(line_text)
        if tok.type == "COMMA" and hint is None and inside is None and header:
            hint = ("input takes one size, HxWxC: input 32x32x3" if header.group(1) == "input"
                    else "classes takes one count: classes 10")
        elif tok.type == "COMMA" and hint is None and inside is None:
            hint = ("settings are separated by spaces: train lr=.01 epochs=10" if settings
                    else "layers are separated by spaces; `,` separates a merge's branches, "
                    "alternatives or arguments")
        elif tok.type == "EQUAL" and hint is None and inside == "(":
            hint = "a `(` after a space opens a group; arguments touch their word: conv8(k=3)"
    return Diagnostic(
        f"unexpected {what}; expected {described}",
        Span.point(line, col, width),
        hint,
    )


TRAIN_LINE = re.compile(r"\s*train(?![A-Za-z0-9_])")  # `train lr=...`, not `trainable ...`
_HEADER_LINE = re.compile(r"\s*(input|classes)(?![A-Za-z0-9_])")


def open_bracket(before: str) -> str | None:
    """The innermost bracket left open in `before` (a line up to a token; comments are
    already past it): "{" alternatives, or what a `(` opens (_paren_kind); None if none is
    open."""
    stack: list[str] = []
    for i, ch in enumerate(before):
        if ch == "{":
            stack.append("{")
        elif ch == "(":
            stack.append(_paren_kind(before, i))
        elif ch in ")}" and stack:
            stack.pop()
    return stack[-1] if stack else None


_WORD_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.")


def _paren_kind(line: str, index: int) -> str:
    """What the `(` at line[index] opens: "merge" (`add(`, `concat(`), "args" (an argument
    list, touching its word or `}`: `conv8(`, `onecycle(`, `conv{f}(`) or "(" a group (after
    a space or at the start). Looks back over the word before it only, so a scan of a line
    stays linear."""
    if _merge_word_before(line, index + 1):
        return "merge"
    start = index
    while start > 0 and line[start - 1] in _WORD_CHARS:
        start -= 1
    touching = (index > 0 and line[index - 1] == "}") or any(
        c.isalpha() or c == "_" for c in line[start:index])
    return "args" if touching else "("


def _misplaced_token(
    tok: Any, prev: Any, expected: set[str], line: int, col: int, line_text: str
) -> Diagnostic | None:
    """A keyword inside a line, a `(` left open, empty brackets, an unmatched `)` or `}`, a
    `(` apart from the word it belongs to."""
    if tok.type == "LPAR" and "_ARGS_OPEN" in expected and prev is not None:
        if TRAIN_LINE.match(line_text) is not None and str(prev) not in SCHEDULES:
            # `optimizer=sgd (x)`: only a schedule takes arguments in a setting's value
            return Diagnostic(f"unexpected `(` after `{prev}`", Span.point(line, col),
                              "only a schedule takes arguments here, as in lr=onecycle(.4)")
        # `add (conv8)`, `let r (f) = ...`, `lr=onecycle (.4)`: a `(` after a space opens a
        # group, not these
        return Diagnostic(
            f"`(` must touch `{prev}`, with no space between", Span.point(line, col),
            f"write {prev}(...)")
    if (prev is not None and prev.type == "WORD" and str(prev) in KEYWORDS
            and prev.line == line):
        # `conv32 | input 32x32x3`: the keyword was read as a word; point at it.
        return Diagnostic(
            f"`{prev}` starts its own line", _tok_span(prev), f"put `{prev} ...` on a new line"
        )
    opened = _open_paren_column(line_text) if tok.type == "_NL" else None
    if tok.type == "_NL" and ("RPAR" in expected or opened is not None):  # `add(conv8,` too
        merge = _merge_word_before(line_text, opened) if opened else None
        return Diagnostic(
            "`(` is not closed on this line; expected `)`",
            Span.point(line, opened or col),
            f"a merge must open and close on one line: {merge}(a, b) on one line, or "
            "name a branch with `let` to shorten it" if merge else
            "an argument list must close on its line: " + (
                "lr=onecycle(.4)" if TRAIN_LINE.match(line_text) is not None else "conv8(k=3)")
            if opened and _paren_kind(line_text, opened - 1) == "args" else
            "a group must open and close on one line",
        )
    if tok.type in ("RPAR", "RBRACE") and prev is not None and prev.type in (
        "LPAR", "_ARGS_OPEN", "LBRACE"
    ):
        what = {"LPAR": "group", "_ARGS_OPEN": "argument list", "LBRACE": "set of alternatives"}
        example = {"LPAR": "(conv64 relu)x2", "_ARGS_OPEN": "conv64(k=5)",
                   "LBRACE": "drop{.25,.5}"}
        shown = f"{prev}{tok}"
        merge = _merge_word_before(line_text, prev.column)  # Lark keeps only 1 token back
        if prev.type == "_ARGS_OPEN" and prev.line == line and merge:
            what["_ARGS_OPEN"], shown = "merge", f"{merge}{prev}{tok}"
            example["_ARGS_OPEN"] = f"{merge}(conv16 bn relu)"
        return Diagnostic(
            f"empty {what[prev.type]} `{shown}`",
            Span(prev.line, prev.column, tok.end_line, tok.end_column),
            f"write something inside, as in {example[prev.type]}, or remove it",
        )
    if tok.type == "RPAR" and _open_paren_column(line_text[: col - 1]) is None:
        return Diagnostic("unmatched `)`", Span.point(line, col), "remove it or add a `(`")
    if tok.type == "RBRACE" and "{" not in line_text[: col - 1]:
        return Diagnostic("unmatched `}`", Span.point(line, col), "remove it")
    return None


def _merge_word_before(line_text: str, column: int) -> str | None:
    """`add` or `concat` when the `(` at 1-based `column` is a merge's, else None."""
    end = start = column - 1
    while start > 0 and (line_text[start - 1].isalnum() or line_text[start - 1] == "_"):
        start -= 1  # back over the word before it only (a regex would rescan the line)
    word = line_text[start:end]
    return word if word in MERGES else None


def _token_hint(tok: Any, prev: Any, expected: set[str]) -> str | None:
    """What to write instead, for the unexpected tokens that have a usual cause."""
    if tok.type == "NUMBER" and "_NL" in expected and prev is not None and prev.type == "WORD":
        return "a number belongs directly after its layer word, as in conv32 or drop.25"
    if tok.type == "REPEAT":
        return "repeat a layer or a group: (conv64 relu)x2"
    if tok.type in ("INPUT", "CLASSES", "TRAIN", "LET"):
        return f"`{tok}` starts its own line"
    if tok.type == "LBRACE":
        if prev is not None and prev.type in ("LBRACE", "COMMA"):  # `drop{{.25}}`, `{.25,{.5}}`
            return "alternatives do not nest: write drop{.25,.5}"
        # `{op}(conv8)`, `{b}`: braces with nothing before them
        return ("`{...}` follows a layer word: `conv{32,64}` sweeps, `conv{f}` uses a block's "
                "parameter; a parameter stands for a number or an argument's value, not a word")
    return None


# -- tree -> IR --------------------------------------------------------------------------------


def _tok_span(tok: Token) -> Span:
    return Span(tok.line, tok.column, tok.end_line, tok.end_column)


def _edge_token(tree: Tree, last: bool) -> Token | None:
    """The first (or last) token under tree, depth first; None if there is none."""
    node, edge = tree, -1 if last else 0
    while node.children:  # the usual case: straight down the edge to a token
        node = node.children[edge]
        if isinstance(node, Token):
            return node
    # an empty subtree on the edge (an empty line): look at every child in turn
    children = reversed(tree.children) if last else tree.children
    for child in children:
        found = child if isinstance(child, Token) else _edge_token(child, last)
        if found is not None:
            return found
    return None


def _tree_span(tree: Tree) -> Span | None:
    """From the first token's start to the last token's end."""
    first, last = _edge_token(tree, False), _edge_token(tree, True)
    if first is None or last is None:
        return None
    return Span(first.line, first.column, last.end_line, last.end_column)


# another framework's call after an unknown word, `(64, 3, padding="same")`, and its
# positional numbers (those not after a `name=`)
_CALL = re.compile(r"\(([^()]*)\)")
_CALL_NUMBER = re.compile(r"(?:^|,)\s*([0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*(?=,|$)")
_GLUED_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")  # a word straight after another's decimals
_TOUCHING_REPEAT = re.compile(r"x[0-9]+\b")  # ... unless it is a repeat (grammar's REPEAT)
_WORD_NUMBER = re.compile(r"([A-Za-z_]+?)([0-9]+(?:\.[0-9]*)?|\.[0-9]+)")


def split_word(text: str) -> tuple[str, str | None] | None:
    """`conv64` -> ("conv", "64"), `drop.25` -> ("drop", ".25"), `l2` -> ("l2", None)."""
    if text in KINDS:
        return text, None
    m = _WORD_NUMBER.fullmatch(text)
    if m and m.group(1) in KINDS:
        return m.group(1), m.group(2)
    return None


def suggest(text: str, candidates: list[str], numbered: Container[str] | None = None
            ) -> str | None:
    """A close known spelling for a misspelt word, keeping its number: cnov64 -> conv64.

    A word that ends in a digit (`l2`) takes its number in parentheses: `l2.01` -> l2(.01),
    `L2` -> l2, `l3` -> l2 (its `3` is not a number to keep: `l23` would be wrong again).
    numbered: the candidates a number may follow (layer words that take one); the others are
    suggested without it: `sofmax8` -> softmax, which takes no number."""
    lower = text.lower()
    if lower in candidates:
        return lower
    for word in candidates:
        rest = lower[len(word):]
        if word[-1:].isdigit() and lower.startswith(word) and _NUMBER.fullmatch(rest):
            return f"{word}({rest})"
    m = re.fullmatch(r"([A-Za-z_]+)(.*)", text)
    stem, tail = (m.group(1), m.group(2)) if m else (text, "")
    for probe, suffix in ((stem.lower(), tail), (lower, "")):
        close = difflib.get_close_matches(probe, candidates, n=1, cutoff=0.6)
        if close:
            keeps = not close[0][-1:].isdigit() and (numbered is None or close[0] in numbered)
            return close[0] + suffix if keeps else close[0]
    return None


# the layer words that take a number after them (`conv64`), for suggest
_NUMBERED = frozenset(word for word, kind in KINDS.items() if kind.number is not None)
# `relux2`, `unitx3`: a word and a repeat count with no space between (unknown_word says so
# for words that take no number and blocks; `pool2x2` is kernel notation, not a repeat)
_GLUED_REPEAT = re.compile(r"(.+?)x([0-9]+)")


_NUMBER = re.compile(r"[0-9]+(\.[0-9]*)?|\.[0-9]+")


# Layer names from Keras, PyTorch and papers -> our word. Longest first, so `maxpool2d` is not
# read as `maxpool` + "2d". `linear` alone is our identity activation, so only `linear<N>`
# (with a number, as in PyTorch's nn.Linear) maps to dense.
FRAMEWORK_WORDS: tuple[tuple[str, str], ...] = tuple(sorted({
    "conv2d": "conv", "convolution2d": "conv", "convolution": "conv",
    "maxpool": "pool", "maxpool2d": "pool", "maxpooling2d": "pool", "max_pool": "pool",
    "max_pool2d": "pool", "maxpooling": "pool",
    "avgpool2d": "avgpool", "averagepooling2d": "avgpool", "avg_pool": "avgpool",
    "avg_pool2d": "avgpool", "averagepool": "avgpool",
    "globalaveragepooling2d": "gap", "globalavgpool": "gap", "adaptiveavgpool2d": "gap",
    "dropout": "drop",
    "batchnorm": "bn", "batchnorm2d": "bn", "batchnormalization": "bn", "batch_norm": "bn",
    "batch_normalization": "bn",
    "fc": "dense", "linear": "dense", "fullyconnected": "dense",
    "global_avg_pool": "gap", "global_average_pooling2d": "gap", "gavgpool": "gap",
    "globalaveragepooling": "gap", "global_avgpool": "gap",
    "globalmaxpooling2d": "gmp", "global_max_pool": "gmp", "globalmaxpool": "gmp",
    "depthwiseconv2d": "dwconv", "depthwise_conv2d": "dwconv", "depthwiseconv": "dwconv",
    "separableconv2d": "sepconv", "separable_conv2d": "sepconv", "sepconv2d": "sepconv",
}.items(), key=lambda kv: -len(kv[0])))

# Layers of other frameworks cnnspec does not have: named as such, never "did you mean" a word
# that merely looks alike (`upsample2` is not `scale2`, which multiplies values).
NOT_IN_CNNSPEC: tuple[tuple[str, str], ...] = tuple(sorted({
    "upsample": "UpSampling2D", "upsampling2d": "UpSampling2D", "upsampling": "UpSampling2D",
    "conv2dtranspose": "Conv2DTranspose", "deconv": "Conv2DTranspose",
    "hard_swish": "hard swish", "hardswish": "hard swish",
    "dropout2d": "spatial dropout", "spatialdropout2d": "spatial dropout",
    "layernorm": "LayerNormalization", "layer_norm": "LayerNormalization",
    "groupnorm": "GroupNormalization", "group_norm": "GroupNormalization",
    "instancenorm": "instance normalization", "lstm": "LSTM", "gru": "GRU",
    "attention": "attention", "embedding": "Embedding",
}.items(), key=lambda kv: -len(kv[0])))


def framework_word(text: str, call: str | None = None) -> str | None:
    """A hint for a layer word written the way another framework names it, or None.

    `maxpool2` -> pool2, `dropout.5` -> drop.5, `batchnorm` -> bn, `conv2d` -> conv32 (conv
    needs its filters: the hint shows an example), `linear512`/`fc512` -> dense512, `Dense`
    -> dense512. The number written after the word is kept, and so is the size given in a
    call (`call`: the text inside the brackets after the word): `dropout(.5)` -> drop.5,
    `Dense(64)` -> dense64, `Dropout(rate=0.5)` -> drop.5, Keras's `Conv2D(64, 3)` ->
    conv64, PyTorch's `Linear(512, 10)` -> dense10 (PyTorch gives the input size first). A
    layer cnnspec does not have (`upsample2`) is said to be one.
    """
    lower = text.lower()
    number = _call_size(text, call) if call is not None else None
    # a word of ours written in capitals (Keras's `Dense`) reads as its own foreign name; not
    # a penalty, whose number stays in its call: `L2(.01)` is `l2(.01)`, the word alone fixed
    own = ((lower, lower),) if (lower != text and lower in KINDS
                                and not KINDS[lower].modifier) else ()
    for foreign, ours in (*FRAMEWORK_WORDS, *own):
        if not lower.startswith(foreign):
            continue
        tail = text[len(foreign):]
        if tail and not _NUMBER.fullmatch(tail):
            continue  # `fcx` or `dropouts`: not this word
        if foreign == "linear" and ours == "dense" and not tail and number is None:
            continue  # the activation
        kind = KINDS[ours]
        given = tail or (_canonical_number(kind, number) if number is not None else "")
        if kind.number is None:
            written = ours
        elif given:
            written = ours + given
            refused = _number_refused(kind, given)
            if refused is not None:  # `Dropout(1)` is `drop1`, which is refused in turn
                return (f"`{text[:len(foreign)]}` is written `{ours}` here, but {refused}; "
                        f"for example {_example(kind)}")
        else:
            written = _example(kind)
        if number is not None and not tail and kind.number is not None:  # `maxpool(2)`
            return (f"did you mean `{written}`? `{text}({shown(call or '', 30)})` is written "
                    f"`{written}` here")
        return f"did you mean `{written}`? `{text[:len(foreign)]}` is written `{ours}` here"
    for foreign, what in NOT_IN_CNNSPEC:
        if lower.startswith(foreign) and (lower == foreign
                                          or _NUMBER.fullmatch(lower[len(foreign):])):
            return f"cnnspec has no {what} layer; see the layer words in README.md"
    return None


# PyTorch's layers that take the input's size first: nn.Conv2d(in, out, k), nn.Linear(in, out)
_TORCH_ORDER = frozenset(("Conv2d", "Linear", "linear"))
# the names other frameworks give the size a layer word writes after itself
_SIZE_NAMES = ("rate", "p", "units", "filters", "out_features", "out_channels", "pool_size")
_NAMED_SIZE = re.compile(
    r"(?:^|,)\s*(" + "|".join(_SIZE_NAMES) + r")\s*=\s*([0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*(?=,|$)")


def _call_size(word: str, call: str) -> str | None:
    """The layer's size in another framework's call, as written: a named one (`rate=.5`,
    `units=64`), else the first positional number (Keras's order), or the second for
    PyTorch's Conv2d and Linear, whose first is the input's size."""
    named = _NAMED_SIZE.search(call)
    if named:
        return named.group(2)
    numbers = _CALL_NUMBER.findall(call)
    if len(numbers) > 1 and word in _TORCH_ORDER:
        return numbers[1]  # type: ignore[no-any-return]
    return numbers[0] if numbers else None


def _number_name(kind: LayerKind) -> str:
    """How a message names a layer word's number: `conv filters`, `drop rate`; `scale` (the
    word and its number share the name), not `scale scale`."""
    assert kind.number is not None
    field = kind.number.field
    return kind.word if kind.word == field else f"{kind.word} {field}"


def _number_refused(kind: LayerKind, given: str, after_word: bool = True) -> str | None:
    """Why this layer word refuses the number another framework's name was written with
    (`Dropout(1)`: a drop rate must be below 1), or None: a hint never offers a word that is
    refused in turn. after_word: the number is written after the word (`drop.5`), in digits
    alone; else in a penalty's brackets (`l2(1e-3)`), where an exponent is fine."""
    what = _number_name(kind)
    if after_word and not _NUMBER.fullmatch(given):  # `drp1e`: a word's number is digits
        return f"{what} is written in plain digits after the word, not {shown(given)}"
    try:
        coerce(kind.number, given, what)
    except ValueProblem as p:
        return p.message
    except ValueError:  # not a number Python reads (`1e`): never reached from the callers'
        return f"{what} must be a number, not {shown(given)}"  # patterns, but never a crash
    return None


def _canonical_number(kind: LayerKind, written: str) -> str:
    """A number from another framework's call as this layer word writes it: `0.5` -> `.5`."""
    try:
        value = float(written)
    except ValueError:
        return written
    if value.is_integer() and (written.isdigit() or (
            kind.number is not None and kind.number.kind == "int")):
        return str(int(value))  # `Dropout(1)` -> drop1, `Linear(512.0)` -> dense512
    return format_number(value)


class _TooManyProblems(Exception):
    """The builder has reported MAX_PROBLEMS problems: reading on would only add noise (and a
    megabyte of junk would take minutes to diagnose word by word)."""


_Problem = ValueProblem  # a value its parameter refuses (raised by layers.read_value)

_NUMBER_LIKE = re.compile(r"[0-9.eE+-]+")


def coerce(param: Param, tok: Token | str, what: str) -> Any:
    """Check one written value against its Param; return the typed value or raise _Problem.

    A plain str (the number of a word such as conv64) counts as a NUMBER if it looks like one.
    Every kind of value is read in one place, cnnspec.language.layers.PARAM_KINDS.
    """
    raw = str(tok)
    if isinstance(tok, Token):
        token = tok.type
    else:
        token = "NUMBER" if _NUMBER_LIKE.fullmatch(raw) else "WORD"
    return PARAM_KINDS[param.kind].read(param, raw, token, what)  # what read_value does


_whole, _shown, _check_range = whole, shown, check_range


# Layers whose output shape is their input shape: leaving one out changes no other shape.
_SHAPE_NEUTRAL_NODES = (ir.Dropout, ir.BatchNorm, ir.Activation, ir.Rescale)


def _shape_neutral(method: Callable[..., Any]) -> Callable[..., Any]:
    """Problems found by this builder method only drop what no shape depends on."""
    @functools.wraps(method)
    def wrapper(self: _Builder, *args: Any, **kwargs: Any) -> Any:
        safe = self.shape_safe
        try:
            return method(self, *args, **kwargs)
        finally:
            self.shape_safe = safe

    return wrapper


@lru_cache(maxsize=1024)
def _bare_layer(text: str) -> ir.Layer | None:
    """The node of a layer word written alone (`conv64`, `relu`, `drop.25`), without a span,
    when it builds as written; None for anything else (a modifier, a word that is not a
    layer, a bad number), which the builder reads and reports itself.

    Why cached: the result depends on the text alone, and a spec (or a batch of specs) repeats
    a handful of words, so each is split, checked and given its defaults once. Each place the
    word is written gets a copy with its own span (_placed), which carries what the checker
    works out from the node alone (its canonical text, see checker.layer_facts): also once.
    """
    split = split_word(text)
    if split is None or KINDS[split[0]].modifier:
        return None
    kind = KINDS[split[0]]
    probe = _Builder()  # its problems are thrown away: the real builder reports them in place
    values = probe.layer_values(kind, Token("WORD", text, 0, 1, 1, 1, 1, 1), split[1], ())
    if values is None or probe.problems:
        return None
    node = kind.node(**values)
    layer_facts(node)
    return node


_new_object = object.__new__


def _placed(node: ir.Layer, span: Span) -> ir.Layer:
    """A copy of a frozen node (all it holds: its fields and what is kept with them) at span:
    what `dataclasses.replace(node, span=span)` gives, without the call to __init__."""
    copy = _new_object(node.__class__)
    fields = copy.__dict__
    fields.update(node.__dict__)
    fields["span"] = span
    return copy  # type: ignore[no-any-return]


class _Builder:
    """Walks the Lark tree once, building IR and collecting every problem on the way."""

    def __init__(self, text: str = "", let_names: set[str] | None = None,
                 settings: SettingsTable = SETTINGS) -> None:
        self.problems: list[Diagnostic] = []
        self.settings = settings  # the table of training settings
        self.blocks: dict[str, int] = {}
        self.vanishing: set[str] = set()  # blocks whose body a sweep variant can leave empty
        self.let_names = let_names or set()
        self.seen: set[str] = set()
        # True while every problem found so far only dropped something no shape depends on
        # (a misplaced l2, a bad dropout rate, a bad setting): then the checker's findings on
        # what was built are real, and parse reports them too (see _checker_problems).
        self.shape_safe = True
        self.lines = text.split("\n")
        self.reported: set[tuple[str, Span | None]] = set()
        # blocks with parameters: name -> (body tree, parameters, default value tokens)
        self.templates: dict[str, tuple[Tree, tuple[ir.BlockParam, ...], dict[str, Any]]] = {}
        self.broken: set[str] = set()  # blocks with parameters whose `let` line has a problem
        self.defining: str | None = None  # the block whose `let` line is being read
        self.scope: set[str] | None = None  # its parameter names, while reading its body
        self.referenced: set[str] = set()  # the names its body has used as {name} so far
        self.env: dict[str, Token] | None = None  # the values, while building a use
        self.uses: list[tuple[str, Span | None]] = []  # the uses being built, outermost first
        self.expanded = 0  # layers built for blocks with parameters (MAX_EXPANDED_LAYERS)
        self.uses_built = 0  # ... and their uses, bounded alike
        self.glued: set[tuple[int, int]] = set()  # words glued to decimals, reported with them

    def full_span(self, tree: Tree) -> Span | None:
        """A tree's span including the brackets around its edges, which the tree drops.

        `conv64(valid)` ends at its `)`, `drop{.25,.5}` at its `}`, `(conv64 relu)` starts at
        its `(`; spans from the tokens alone would stop short.
        """
        span = _tree_span(tree)
        if span is None or span.end_line > len(self.lines):
            return span
        closers: list[str] = []
        node: Tree | Token = tree
        while isinstance(node, Tree) and node.children:
            if node.data in ("args", "choices", "group", "merge"):
                closers.append("}" if node.data == "choices" else ")")
            node = node.children[-1]
        openers: list[str] = []
        node = tree
        while isinstance(node, Tree) and node.children:
            if node.data in ("group", "choices"):  # `{1,3}` itself starts at its `{`
                openers.append("{" if node.data == "choices" else "(")
            node = node.children[0]
        text, end = self.lines[span.end_line - 1], span.end_column - 1
        for closer in reversed(closers):
            while end < len(text) and text[end] in " \t\f":
                end += 1
            if end >= len(text) or text[end] != closer:
                return span
            end += 1
        text, start = self.lines[span.line - 1], span.column - 2
        for opener in reversed(openers):
            while start >= 0 and text[start] in " \t\f":
                start -= 1
            if start < 0 or text[start] != opener:
                return span
            start -= 1
        return Span(span.line, start + 2, span.end_line, end + 1)

    def written_head(self, span: Span | None, word: str) -> str:
        """A layer as written up to its arguments: `conv{f}` of `conv{f}(k={1,3})`."""
        if span is None or span.line > len(self.lines):
            return word
        rest = self.lines[span.line - 1][span.column - 1:]
        head = re.match(r"[^\s({]*(\{[^}]*\})?", rest)
        return head.group(0) if head and head.group(0) else word

    def problem(self, message: str, span: Span | None, hint: str | None = None) -> None:
        self.shape_safe = False  # unless the caller is _shape_neutral (which restores it)
        if (message, span) in self.reported:  # a block's layer, met again at each use
            return
        self.reported.add((message, span))
        if self.defining is not None and self.scope is not None:
            self.broken.add(self.defining)
        if len(self.problems) >= MAX_PROBLEMS:
            self.problems.append(Diagnostic(
                f"more than {MAX_PROBLEMS} problems; stopped reading here", span,
                "fix these first, or check that this is a cnnspec file"))
            raise _TooManyProblems
        self.problems.append(Diagnostic(message, span, hint))

    # lines and statements

    def line(self, tree: Tree) -> ir.Line:
        statement, comment = None, None
        for child in tree.children:
            if isinstance(child, Token) and child.type == "COMMENT":
                comment = str(child).rstrip()
            elif isinstance(child, Tree):
                statement = self.statement(child)
        return ir.Line(statement, comment)

    def statement(self, tree: Tree) -> ir.Statement | None:
        span = _tree_span(tree)
        kind = tree.data
        if kind == "input_decl":
            return self.input_decl(tree.children[0], span)
        if kind == "classes_decl":
            return self.classes_decl(tree.children[0], span)
        if kind == "train_decl":
            return ir.TrainDecl(tuple(self.setting(s) for s in tree.children), span=span)
        if kind == "let_decl":
            return self.let_decl(tree, span)
        return ir.LayerLine(self.sequence(tree), span=span)

    def once(self, what: str, where: Span | Token | None) -> None:
        if what in self.seen:
            span = _tok_span(where) if isinstance(where, Token) else where
            self.problem(f"`{what}` is given twice", span, "keep one")
        self.seen.add(what)

    def input_decl(self, tok: Token, span: Span | None) -> ir.InputDecl:
        self.once("input", span)
        parts = str(tok).split("x")
        dims = tuple(int(x) for x in parts) if max(map(len, parts)) <= MAX_INT_DIGITS else ()
        if not dims:  # `100000000000000000000x1x1`: sizes >= 1, but no image is that large
            self.problem(
                f"input sizes have at most {MAX_INT_DIGITS} digits, not {_shown(str(tok))}",
                _tok_span(tok), "e.g. 32x32x3")
            dims = (32, 32, 3)
        elif len(dims) != 3 or min(dims) < 1:
            self.problem(
                f"input must be HxWxC with sizes >= 1, not {_shown(str(tok))}", _tok_span(tok),
                "e.g. 32x32x3",
            )
            dims = (32, 32, 3)
        return ir.InputDecl(dims, span=span)

    def classes_decl(self, tok: Token, span: Span | None) -> ir.ClassesDecl:
        self.once("classes", span)
        try:
            count = coerce(Param("classes", "int", low=2), tok, "classes")
        except _Problem as p:
            self.problem(p.message, _tok_span(tok), p.hint)
            count = 10
        return ir.ClassesDecl(count, span=span)

    @_shape_neutral
    def setting(self, tree: Tree) -> ir.Setting:
        key_tok, value = tree.children
        span = _tree_span(tree)
        entry = self.settings.by_key.get(str(key_tok))
        if entry is None:
            close = suggest(str(key_tok), list(self.settings.by_key))
            self.problem(
                f"unknown training setting `{key_tok}`",
                _tok_span(key_tok),
                f"did you mean `{close}`?" if close else "known: " + ", ".join(
                    e.name for e in self.settings.spec_entries),
            )
            return ir.Setting(str(key_tok), 0, span=span)
        param = entry.param
        self.once(f"train {param.field}", key_tok)
        if isinstance(value, Token):  # one number or word, the usual case: the loops below
            w = Written(str(value), value.type, span=_tok_span(value))  # (setting_written)
            try:
                return ir.Setting(param.field, entry.read_token(w), (), span=span)
            except WrittenProblem as p:
                self.problem(p.message, p.span or w.span, p.hint)
                return ir.Setting(param.field, None, (), span=span)
        # `key={a,b}` is a sweep, and so is a call with alternatives inside, `onecycle({.2,.4})`
        swept = isinstance(value, Tree) and value.data == "setting_choices"
        written: list[Written] = []
        count = 0
        for node in (value.children if swept else [value]):
            alternatives, inner, combinations = self.setting_written(node)
            written += alternatives
            count += combinations
            swept = swept or inner
        if count > MAX_LAYER_OPTIONS:
            self.problem(f"`{key_tok}` has {count:,} alternatives, over the limit of "
                         f"{MAX_LAYER_OPTIONS:,}", span, "sweep fewer values at a time")
            return ir.Setting(param.field, None, span=span)
        typed = []
        for w in written:
            try:
                typed.append(entry.read(w))
            except WrittenProblem as p:
                self.problem(p.message, p.span or w.span, p.hint)
                typed.append(None)
        choices = tuple(typed) if swept else ()
        if None not in choices and len(set(choices)) < len(choices):
            self.problem(f"`{key_tok}` lists the same value twice", span, "write each value once")
        return ir.Setting(param.field, typed[0], choices, span=span)

    def setting_written(self, node: Token | Tree) -> tuple[list[Written], bool, int]:
        """A setting's value as setting_values reads it, with its positions: one Written per
        alternative (a call's arguments may be sweeps), whether there were any, and how many
        there are (the list stops past MAX_LAYER_OPTIONS; the count is exact, for the
        message that refuses them)."""
        if isinstance(node, Token):
            return [Written(str(node), node.type, span=_tok_span(node))], False, 1
        span = self.full_span(node)
        if node.data == "terms":
            parts = [self.setting_written(t) for t in node.children]
            combos = list(itertools.islice(
                itertools.product(*(alts for alts, _, _ in parts)), MAX_LAYER_OPTIONS + 1))
            return ([Written("+", "PLUS", terms=tuple(c), span=span) for c in combos],
                    any(inner for _, inner, _ in parts), math.prod(n for _, _, n in parts))
        name_tok, args_tree = node.children  # call: WORD args
        options: list[list[Arg]] = []
        for arg in args_tree.children:
            arg_name = str(arg.children[0]) if arg.data == "named_arg" else None
            arg_span = _tok_span(arg.children[0]) if arg_name else None
            options.append([Arg(arg_name, Written(str(t), t.type, span=_tok_span(t)), arg_span)
                            for t in self.values(arg.children[-1])])
        combos = list(itertools.islice(itertools.product(*options), MAX_LAYER_OPTIONS + 1))
        swept = any(isinstance(arg.children[-1], Tree) for arg in args_tree.children)
        return ([Written(str(name_tok), "CALL", args=tuple(c), span=span) for c in combos], swept,
                math.prod(len(o) for o in options))

    def values(self, value: Token | Tree) -> list[Token]:
        return list(value.children) if isinstance(value, Tree) else [value]

    def let_decl(self, tree: Tree, span: Span | None) -> ir.LetDecl:
        name_tok, *rest = tree.children  # `let NAME args? = sequence`
        seq, params_tree = rest[-1], (rest[0] if len(rest) == 2 else None)
        name = str(name_tok)
        if (name in KINDS or name in KEYWORDS or name in MERGES or split_word(name) or "." in name
                or re.fullmatch(r"x[0-9]+", name)):
            self.problem(
                f"`{name}` cannot name a block: it reads as a keyword, a layer word or a repeat "
                "count",
                _tok_span(name_tok),
                "pick another name, e.g. unit or stage1",
            )
        elif name in self.blocks:
            self.problem(f"block `{name}` is defined twice", _tok_span(name_tok))
        params: tuple[ir.BlockParam, ...] = ()
        self.defining = name
        try:
            if params_tree is None:
                items = self.sequence(seq)
            else:
                problems_before = len(self.problems)
                params, defaults = self.block_params(name, params_tree)
                self.scope, self.referenced = {p.name for p in params}, set()
                try:
                    items = self.sequence(seq)
                finally:
                    self.scope = None
                self.templates[name] = (seq, params, defaults)
                for param in params:  # `r(8)` and `r(16)` would be the same network
                    # (not said beside another problem of the line: `{stride}` for `s`)
                    if (param.name not in self.referenced
                            and len(self.problems) == problems_before):
                        self.problem(
                            f"block `{name}` never uses its parameter `{param.name}`",
                            param.span,
                            f"write {{{param.name}}} where its value goes: a layer's number "
                            f"(conv{{{param.name}}}) or an argument's (s={{{param.name}}}); "
                            "or remove it")
        finally:
            self.defining = None
        self.blocks[name] = 1
        if items and all(_can_vanish(i, self.vanishing) for i in items):
            self.vanishing.add(name)  # `let b = bn?`: a use of it may leave nothing
        return ir.LetDecl(name, items, span=span, params=params)

    def block_params(
        self, name: str, tree: Tree
    ) -> tuple[tuple[ir.BlockParam, ...], dict[str, Token | None]]:
        """The parameters of `let NAME(f, s=1) = ...`: names, with a default after `=`."""
        params: list[ir.BlockParam] = []
        defaults: dict[str, Token | None] = {}
        self.scope = set()  # problems found here mark the block as broken
        try:
            for arg in tree.children:
                if arg.data == "named_arg":
                    key_tok, value = arg.children
                    name_tok, default = key_tok, value
                    if isinstance(value, Tree):  # `g={f}`, `f={8}` or `f={8,16}`
                        written = [str(c) for c in value.children]
                        if len(written) > 1:
                            message, hint = "must be one value", (
                                "sweep it where the block is used: "
                                f"{name}(..., {key_tok}={{{','.join(written)}}})")
                        elif getattr(value.children[0], "type", None) == "WORD":
                            message, hint = f"cannot refer to a parameter (`{{{written[0]}}}`)", (
                                f"give `{key_tok}` a value, e.g. {key_tok}=1, or pass it at "
                                "each use")
                        else:
                            message, hint = "takes no braces", f"write {key_tok}={written[0]}"
                        self.problem(f"the default of `{key_tok}` {message}",
                                     self.full_span(arg), hint)
                        default = None  # still a parameter: its uses are not wrong too
                else:
                    name_tok, default = arg.children[0], None
                    if (not isinstance(name_tok, Token) or name_tok.type != "WORD"
                            or "." in name_tok):
                        self.problem(
                            f"a block parameter is a name, not {_shown(str(name_tok))}",
                            _tok_span(name_tok) if isinstance(name_tok, Token) else None,
                            f"e.g. let {name}(f, s=1) = conv{{f}}(s={{s}})")
                        continue
                pname = str(name_tok)
                if pname in defaults:
                    self.problem(f"block `{name}` lists the parameter `{pname}` twice",
                                 _tok_span(name_tok), "give each parameter one name")
                    continue
                defaults[pname] = default
                params.append(ir.BlockParam(
                    pname, None if default is None else _value_text(default),
                    span=_tok_span(name_tok)))
        finally:
            self.scope = None
        return tuple(params), defaults

    def template(
        self, tree: Tree, text: str, refs: list[Token], span: Span | None
    ) -> ir.TemplateLayer | None:
        """A layer of a block's body that refers to the block's parameters: checked for names
        here, built at each use (see block_use)."""
        assert self.scope is not None and self.defining is not None
        self.referenced.update(str(r) for r in refs)
        unknown = [r for r in refs if str(r) not in self.scope]
        for ref in unknown:
            close = suggest(str(ref), sorted(self.scope)) if self.scope else None
            known = ", ".join(sorted(self.scope)) or "none"
            self.problem(
                f"block `{self.defining}` has no parameter `{ref}`", _tok_span(ref),
                f"did you mean `{{{close}}}`?" if close and close != str(ref)
                else f"its parameters are {known}; add `{ref}` to its `let` line")
        swept = [(key, c) for key, c in _keyed_value_nodes(tree)
                 if isinstance(c, Tree) and len(c.children) > 1]
        if swept:
            key, choices = swept[0]
            self.problem(
                "sweep alternatives inside a block with parameters are not supported",
                self.full_span(choices),
                _sweep_a_parameter(
                    self.defining, str(tree.children[0]) if key is None else
                    self.written_head(span, str(tree.children[0])), key,
                    [str(c) for c in choices.children], taken=self.scope))
        if unknown or swept:
            return None
        if text not in self.templates and text not in self.blocks and split_word(text) is None:
            self.unknown_word(tree.children[0])
            return None
        choices = args = None
        for child in tree.children[1:]:
            if child.data == "choices":
                choices = child
            else:
                args = child
        return ir.TemplateLayer(_alternatives_text(text, choices, args), span=span)

    def block_use(
        self, word_tok: Token, args: Tree | None, choices: Tree | None, span: Span | None
    ) -> ir.Item | None:
        """A use of a block with parameters, `unit(64, s=2)`: its body built with these
        values. An argument written as alternatives, `unit({64,128})`, makes the use a sweep
        point whose options are the block built with each value."""
        name = str(word_tok)
        _, params, defaults = self.templates[name]
        if name in self.broken:  # its `let` line is reported; its uses would only add noise
            self.shape_safe = False  # the network lacks this use's layers: shapes are unknown
            return None
        signature = name + "(" + ",".join(
            p.name if p.default is None else f"{p.name}={p.default}" for p in params) + ")"
        if choices is not None:
            self.problem(f"block `{name}` takes arguments, not alternatives", span,
                         f"sweep an argument instead: {signature}")
            return None
        written: list[tuple[Token | None, list[Token], Span | None]] = []
        for arg in args.children if args is not None else ():
            key = arg.children[0] if arg.data == "named_arg" else None
            written.append((key, self.values(arg.children[-1]), self.full_span(arg)))
        names = [p.name for p in params]
        positional = [w for w in written if w[0] is None]
        first_named = next((i for i, w in enumerate(written) if w[0] is not None), len(written))
        late = [w for w in written[first_named:] if w[0] is None]
        if late:  # `b(f=3, 2)`: which parameter 2 is for is anyone's guess, as in Python
            self.problem(
                f"block `{name}`: a value without a name after a named one", late[0][2],
                f"give the values without names first, or name this one too; its "
                f"parameters: {signature}")
            return None
        ok = True
        if len(positional) > len(params):
            required = sum(p.default is None for p in params)
            takes = (_count(len(params), "argument") if required == len(params)
                     else f"{required} to {_count(len(params), 'argument')}")
            self.problem(
                f"block `{name}` takes {takes}, got {len(positional)}",
                positional[len(params)][2], f"its parameters: {signature}")
            return None
        bound: dict[str, list[Token]] = {}
        order: list[tuple[str | None, str]] = []  # (name written before `=`, parameter)
        accepted: list[Span | None] = []  # the arguments taken, for a hint's example use
        for param, (_, vals, where) in zip(params, positional, strict=False):
            bound[param.name] = vals
            order.append((None, param.name))
            accepted.append(where)
        for key, vals, where in written:
            if key is None:
                continue
            if str(key) not in names:
                close = suggest(str(key), names)
                self.problem(
                    f"block `{name}` has no parameter `{key}`", _tok_span(key),
                    f"did you mean `{close}`?" if close and close != str(key)
                    else f"its parameters: {signature}")
                ok = False
            elif str(key) in bound:
                self.problem(f"{name}: `{key}` is given twice", where, "give it once")
                ok = False
            else:
                bound[str(key)] = vals
                order.append((str(key), str(key)))
                accepted.append(where)
        missing = [p.name for p in params if p.name not in bound and p.default is None]
        if missing:
            body = self.span_text(self.full_span(self.templates[name][0]))
            # the arguments as written, but not those refused above (an unknown name, one
            # given twice): the example is a use that works
            given = [self.span_text(where) for where in accepted]
            examples = [_example_value(body, m) for m in missing]
            filled = [(f"{m}=" if given or i else "") + str(example)
                      for i, (m, example) in enumerate(zip(missing, examples, strict=True))]
            example = ("" if None in examples  # no value fits: the body's own problem
                       else f"; e.g. {name}({', '.join(given + filled)})")
            self.problem(
                f"block `{name}` needs a value for " + ", ".join(f"`{m}`" for m in missing),
                span, f"its parameters: {signature}{example}")
            ok = False
        if not ok:
            return None
        for param in params:
            bound.setdefault(param.name, [defaults[param.name]])
        axes = [[(pname, v) for v in vals] for pname, vals in bound.items()]
        combinations = math.prod(len(axis) for axis in axes)
        if combinations > MAX_LAYER_OPTIONS:
            self.problem(
                f"`{name}` has {combinations:,} alternatives in one use, over the limit of "
                f"{MAX_LAYER_OPTIONS:,}", span, "sweep fewer values at a time")
            return None
        swept = [pname for pname, vals in bound.items() if len(vals) > 1]
        options: list[ir.BlockRef] = []
        labels: list[str] = []
        for combo in itertools.product(*axes):
            env = dict(combo)
            items = self.instantiate(name, env, span)
            if items is None:
                return None
            options.append(ir.BlockRef(name, span=span, items=items, args=tuple(
                (f"{key}=" if key else "") + _value_text(env[pname]) for key, pname in order)))
            labels.append(",".join(  # as written: `64` for a positional value, `s=2` named
                (f"{key}=" if key else "") + _value_text(env[pname])
                for key, pname in order if pname in swept))
        if len(options) == 1:
            return options[0]
        if len(set(labels)) < len(labels):
            self.problem(f"`{name}` lists the same alternative twice", span,
                         "write each value once")
            return None
        return ir.Alternatives(text=_alternatives_text(name, None, args), key=name,
                               labels=tuple(labels), options=tuple(options), span=span)

    def instantiate(
        self, name: str, env: dict[str, Token], span: Span | None
    ) -> tuple[ir.Item, ...] | None:
        """The body of block `name` built with the values in env (None if refused)."""
        # uses are counted apart from layers: a use of uses of plain blocks builds no layer
        # here, but building it is work all the same
        self.uses_built += 1
        if "expansion" in self.seen:  # refused once: every other use is left out at once
            return None
        nest = len(self.uses)  # uses of blocks with parameters around this one
        if (nest >= MAX_BLOCK_NESTING or self.expanded > MAX_EXPANDED_LAYERS
                or self.uses_built > MAX_EXPANDED_LAYERS):
            self.seen.add("expansion")
            # placed at the outermost use, the one the user wrote where the network (or a
            # plain block) is built: the inner uses are `let` lines that are fine on their own
            outer, outer_span = self.uses[0] if self.uses else (name, span)
            if nest >= MAX_BLOCK_NESTING:
                self.problem(
                    f"blocks with parameters nest more than {MAX_BLOCK_NESTING} deep in this "
                    f"use of `{outer}` (down to `{name}`)", outer_span,
                    "use fewer levels of blocks inside blocks")
            else:
                what = "layers" if self.expanded > MAX_EXPANDED_LAYERS else "uses of blocks"
                self.problem(
                    f"blocks with parameters build more than {MAX_EXPANDED_LAYERS:,} {what} "
                    f"in this use of `{outer}`, over the limit", outer_span,
                    "a real CNN has far fewer layers; repeat a use with xN instead")
            return None
        seq = self.templates[name][0]
        saved = self.env, self.scope, self.defining
        self.env, self.scope, self.defining = env, None, None
        self.uses.append((name, span))
        try:
            return self.sequence(seq)
        finally:
            self.env, self.scope, self.defining = saved
            self.uses.pop()

    # items

    def sequence(self, tree: Tree) -> tuple[ir.Item, ...]:
        out: list[ir.Item] = []
        for item in tree.children:
            # the commonest item by far, a layer word alone (`relu`, `conv64`), read here
            # without the calls item -> layer -> bare_word make for it (same checks, in order).
            # In the fast path's lean tree it is the word's token itself (see _BARE_RULES).
            if item.__class__ is Token:
                word_tok: Token | None = item
            else:
                word_tok = _word_alone(item)
            if word_tok is not None:
                text = str(word_tok)
                if "." in text:  # `drop.5relu`: the word stops at its decimals, `relu` follows
                    self.glued_after_decimals(word_tok)
                if (text != self.defining and text not in self.templates
                        and text not in self.blocks):
                    known = self.known_layer(word_tok, text)
                    if known is not None:
                        out.append(known)
                        continue
                if item.__class__ is Token:  # the long way reads the tree Lark builds
                    item = Tree("item", [Tree("layer", [word_tok])])
            built = self.item(item, out)
            if built is not None:
                out.append(built)
        return tuple(out)

    def item(self, tree: Tree, previous: list[ir.Item]) -> ir.Item | None:
        first, *suffix = tree.children  # suffix: REPEAT? OPTIONAL?
        # only repeats and optionals keep the item's own span
        span = self.full_span(tree) if suffix else None
        if isinstance(first, Token) and first.type == "BAR":
            return ir.Flatten(bar=True, span=_tok_span(first))
        data = first.data
        if data == "layer":  # by far the commonest item: one comparison
            before = len(self.problems)
            body: ir.Item | None = self.layer(first, previous)
            if body is None:
                word = split_word(str(first.children[0]))
                if (suffix and len(self.problems) == before and previous
                        and word is not None and KINDS[word[0]].modifier):  # e.g. l2(.01)
                    self.problem(
                        f"`{suffix[0]}` cannot follow the weight penalty `{first.children[0]}`",
                        _tok_span(suffix[0]),
                        f"group the layer with its penalty: ({_describe(previous[-1])[1:-1]})"
                        f"{suffix[0]}",
                    )
                return None
        elif data == "group":
            inner = self.sequence(first.children[0])
            body = ir.Group(inner, span=self.full_span(first))
        else:  # merge: `add(...)`, `concat(...)`
            op, *branches = first.children
            built = tuple(self.sequence(b) for b in branches)
            body = ir.Merge(str(op), built, span=self.full_span(first))
            for branch in built:
                if branch and all(_can_vanish(i, self.vanishing) for i in branch):
                    blocks = [i.name for i in branch
                              if isinstance(i, ir.BlockRef) and i.name in self.vanishing]
                    self.problem(
                        f"this branch of `{op}` is empty in some variants",
                        _items_span(branch),
                        "a branch needs a layer in every variant; keep one layer out of `?`"
                        + (f" (block `{blocks[0]}` is empty in some variants: its `let` line "
                           "makes all of it optional)" if blocks else ""))
        for tok in suffix:
            if tok.type == "REPEAT":
                digits = str(tok)[1:]
                times = int(digits) if len(digits) <= MAX_INT_DIGITS else 1
                if len(digits) > MAX_INT_DIGITS:
                    self.problem(f"repeat count {_shown(str(tok))} is too large", _tok_span(tok),
                                 "repeat counts are small: x2, x3")
                elif times < 1:
                    self.problem("repeat count must be at least 1", _tok_span(tok))
                body = ir.Repeat(body, times, span=span)
            elif tok.type == "OPTIONAL":
                body = ir.Optional(body, span=span)
        if self.scope is not None and isinstance(body, ir.Alternatives | ir.Optional):
            self.problem(
                "sweep alternatives inside a block with parameters are not supported",
                body.span, _sweep_a_parameter(self.defining or "", *_swept_part(body),
                                              taken=self.scope)
                if isinstance(body, ir.Alternatives)
                else f"put the `?` on a use of the block instead: {self.defining}(...)?")
            return None
        return body

    def layer(self, tree: Tree, previous: list[ir.Item]) -> ir.Item | None:
        """A `WORD choices? args?` item: a block use, or a layer word (its alternatives, or a
        weight penalty on the layer before it)."""
        word_tok, *rest = tree.children
        text = str(word_tok)
        if text == self.defining:
            self.problem(
                f"block `{text}` uses itself", _tok_span(word_tok),
                f"a block cannot contain itself; to repeat it, write `{text} x2` where it is "
                "used")
            return None
        if not rest:  # a bare word, by far the commonest layer
            bare = self.bare_word(word_tok, text)
            if bare is not None:
                return bare
        span = self.full_span(tree) if rest else _tok_span(word_tok)
        if rest and rest[0].data == "choices" and not self.touches(word_tok, "{"):
            line = self.lines[word_tok.line - 1]
            column = line.index("{", word_tok.end_column - 1) + 1
            options = rest[0].children
            if options and all(getattr(o, "type", None) == "WORD" and (
                    split_word(str(o)) is not None or str(o) in self.blocks) for o in options):
                # `conv8 {relu,elu}`: words to choose between, which no `{` may sweep
                self.problem(
                    "alternatives sweep a layer's number or argument, not the layer word: "
                    f"`{{{','.join(map(str, options))}}}` cannot be swept",
                    Span.point(word_tok.line, column),
                    "write a spec per layer word, or make a layer optional with `?` "
                    "(relu?) to compare it with none")
                return None
            words = options and all(getattr(o, "type", None) == "WORD" for o in options)
            self.problem(
                f"`{{` must touch `{text}`, with no space between", Span.point(word_tok.line,
                                                                             column),
                # `conv8 {valid,same}`: values of an argument, swept inside its brackets
                f"an argument's alternatives go inside its brackets: "
                f"{text}({{{','.join(map(str, options))}}})" if words else
                "alternatives touch the word whose number or argument they sweep, as in "
                "drop{.25,.5} or conv{32,64}; a layer word itself cannot be swept")
            return None
        if rest and (self.scope is not None or self.env is not None):
            refs = _param_refs(tree)
            if refs and self.env is None:  # in a block's `let` line: kept for each use
                return self.template(tree, text, refs, span)
            if refs and self.env is not None:  # building a use: put its values in
                tree = _substitute(tree, self.env)
                rest = tree.children[1:]
        choices = args = None
        for child in rest:  # `WORD choices? args?`
            if child.data == "choices":
                choices = child
            elif child.data == "args":
                args = child
        if text in self.templates:
            return self.block_use(word_tok, args, choices, span)
        if text in self.blocks and choices is None and args is None:
            return ir.BlockRef(text, span=span)
        split = split_word(text)
        if split is None:
            self.unknown_word(word_tok)
            return None
        word, number = split
        kind = KINDS[word]
        if kind.modifier:
            self.modifier(kind, word_tok, number, args, choices, previous)
            return None
        return self.layer_word(kind, word_tok, number, choices, args, span)

    def span_text(self, span: Span | None) -> str:
        """The source text of a span on one line ("" for another)."""
        if span is None or span.end_line != span.line or span.line > len(self.lines):
            return ""
        return self.lines[span.line - 1][span.column - 1:span.end_column - 1]

    def glued_after_decimals(self, tok: Token) -> None:
        """A problem if a word with decimals (`drop.5`, `scale.125`) has a word glued to it:
        the lexer ends a word at its decimals, so `drop.5relu` would silently be two layers.
        A repeat may touch it (`drop.25x2`, the language's own spelling)."""
        rest = self.lines[tok.line - 1][tok.end_column - 1:]
        glued = _GLUED_WORD.match(rest)
        if glued is None or _TOUCHING_REPEAT.match(rest):
            return
        word = glued.group()
        repeat = re.match(r"([xX])([0-9]+)", word)
        if re.fullmatch(r"[eE][0-9]+", word):  # `drop.5e2`
            hint = "a layer word's number takes no exponent; write it out in full"
        elif repeat and len(repeat.group()) < len(word):  # `drop.25x2relu`
            hint = (f"put a space after the repeat, `{tok}x{repeat.group(2)} "
                    f"{word[len(repeat.group()):]}`, if you mean it and another layer")
        elif repeat:  # `drop.25X2`
            hint = f"a repeat is written with a small x: `{tok}x{repeat.group(2)}`"
        else:
            hint = f"put a space between them, `{tok} {word}`, if you mean two layers"
        self.problem(
            f"`{tok}{word}` runs two words together: a layer word ends at its number",
            Span(tok.line, tok.column, tok.line, tok.end_column + len(word)), hint)
        self.glued.add((tok.line, tok.end_column))  # where the glued word starts

    def touches(self, tok: Token, char: str) -> bool:
        """Whether `char` follows the token at once (no space between)."""
        return self.lines[tok.line - 1][tok.end_column - 1:].startswith(char)

    def bare_word(self, word_tok: Token, text: str) -> ir.Item | None:
        """A word written alone that is a block use or builds as written (`conv64`, `relu`);
        None for anything else, which `layer` then reads (and reports) the long way."""
        if text in self.templates:
            return self.block_use(word_tok, None, None, _tok_span(word_tok))
        if text in self.blocks:
            return ir.BlockRef(text, span=_tok_span(word_tok))
        return self.known_layer(word_tok, text)

    def known_layer(self, word_tok: Token, text: str) -> ir.Layer | None:
        """The layer a word written alone builds as written (_bare_layer's node, placed at the
        word); None for anything else."""
        known = _bare_layer(text)
        if known is None:
            return None
        if self.env is not None:  # counted as in build: a use's layers are bounded
            self.expanded += 1
        return _placed(known, _tok_span(word_tok))

    def layer_word(
        self,
        kind: LayerKind,
        word_tok: Token,
        number: str | None,
        choices: Tree | None,
        args: Tree | None,
        span: Span | None,
    ) -> ir.Item | None:
        """A layer word with its number and arguments: one layer, or the sweep point of its
        alternatives (`drop{.25,.5}`, `conv64(k={3,5})`)."""
        written_number: list[Token | str | None] = [number or None]
        if choices is not None:
            if number is not None:
                self.problem(
                    f"`{word_tok}` has both a number and alternatives", _tok_span(word_tok),
                    f"write {kind.word}{{...}} with the numbers inside the braces",
                )
                return None
            written_number = list(choices.children)
        arg_list = self.arguments(args)
        if choices is None and all(len(vals) == 1 for _, vals in arg_list):  # no sweep here
            return self.build(
                kind, word_tok, written_number[0], [(key, vals[0]) for key, vals in arg_list], span
            )
        return self.alternatives(kind, word_tok, written_number, arg_list, choices, args, span)

    def alternatives(
        self,
        kind: LayerKind,
        word_tok: Token,
        written_number: list[Token | str | None],
        arg_list: list[tuple[str | None, list[Token]]],
        choices: Tree | None,
        args: Tree | None,
        span: Span | None,
    ) -> ir.Item | None:
        """Every combination of the number's and the arguments' alternatives, one option each."""
        word = kind.word
        arg_axes = [[(key, v) for v in vals] for key, vals in arg_list]
        combinations = math.prod(len(axis) for axis in arg_axes) * len(written_number)
        if combinations > MAX_LAYER_OPTIONS:  # each is built here, before any sweep limit
            self.problem(
                f"`{word}` has {combinations:,} alternatives in one layer, over the limit of "
                f"{MAX_LAYER_OPTIONS:,}", span, "sweep fewer values at a time")
            return None
        options: list[ir.Layer] = []
        labels: list[str] = []
        for num in written_number:
            for combo in itertools.product(*arg_axes) if arg_axes else [()]:
                node = self.build(kind, word_tok, num, list(combo), span)
                if node is None:
                    return None
                options.append(node)
                labels.append(",".join(
                    ([format_number(_num_value(num))] if num is not None and choices else [])
                    # a swept argument as written: `k=3` named, `valid` by position (runs
                    # are named after their variants, so a name never changes with cnnspec's
                    # version; fmt says when its spelling renames one)
                    + [str(v) if k is None else f"{k}={v}"
                       for (k, v), (_, vals) in zip(combo, arg_list, strict=True)
                       if len(vals) > 1]
                ))
        if len(options) == 1:
            return options[0]
        if len(set(labels)) < len(labels) or len(set(options)) < len(options):
            # two equal variants would share a name (or train the same network twice)
            self.problem(f"`{word}` lists the same alternative twice", span,
                         "write each value once")
            return None
        # the number as written when only the arguments are swept: `conv64(k={3,5})`
        head = word if choices is not None or written_number[0] is None else (
            word + format_number(_num_value(written_number[0])))  # type: ignore[arg-type]
        return ir.Alternatives(
            text=_alternatives_text(head, choices, args),
            key=word,
            labels=tuple(labels),
            options=tuple(options),
            span=span,
        )

    def arguments(self, args: Tree | None) -> list[tuple[str | None, list[Token]]]:
        if args is None:
            return []
        out: list[tuple[str | None, list[Token]]] = []
        for arg in args.children:
            if arg.data == "named_arg":
                key, value = arg.children
                out.append((key, self.values(value)))  # the name's token: its place, for
                # a problem with the name itself (option_for)
            else:
                out.append((None, self.values(arg.children[0])))
        return out

    def build(
        self,
        kind: LayerKind,
        word_tok: Token,
        number: Token | str | None,
        args: Iterable[tuple[str | None, Token]],
        span: Span | None,
    ) -> ir.Layer | None:
        """One layer node; number is a choice's token, or the str split off the word."""
        safe = self.shape_safe
        if self.env is not None:
            self.expanded += 1
        node = self._build(kind, word_tok, number, args, span)
        if kind.node in _SHAPE_NEUTRAL_NODES:  # dropping a dropout or activation keeps shapes
            self.shape_safe = safe
        return node

    def _build(
        self,
        kind: LayerKind,
        word_tok: Token,
        number: Token | str | None,
        args: Iterable[tuple[str | None, Token]],
        span: Span | None,
    ) -> ir.Layer | None:
        values = self.layer_values(kind, word_tok, number, args)
        return None if values is None else kind.node(**values, span=span)

    def layer_values(
        self,
        kind: LayerKind,
        word_tok: Token,
        number: Token | str | None,
        args: Iterable[tuple[str | None, Token]],
    ) -> dict[str, Any] | None:
        """The node's field values from the written number and arguments, defaults filled in;
        None after reporting what is wrong with them."""
        values: dict[str, Any] = dict(kind.fixed)
        ok = True
        if kind.number is None and number is not None:
            self.problem(
                f"`{kind.word}` takes no number", _tok_span(word_tok),
                framework_word(str(word_tok)) or f"write `{kind.word}`")
            return None
        if kind.number is not None:
            if number is None:
                self.problem(
                    f"`{kind.word}` needs its {kind.number.field}", _tok_span(word_tok),
                    f"write it after the word, e.g. {_example(kind)}",
                )
                return None
            try:
                values[kind.number.field] = coerce(kind.number, number, _number_name(kind))
            except _Problem as p:
                where = _tok_span(number if isinstance(number, Token) else word_tok)
                self.problem(p.message, where, p.hint or f"for example {_example(kind)}")
                ok = False
        given: set[str] = set()
        for key, tok in args:
            where = _tok_span(tok if getattr(tok, "line", None) is not None else word_tok)
            param = self.option_for(kind, key, tok, where)
            if param is None:
                ok = False
                continue
            if param.field in given:
                self.problem(f"{kind.word}: `{param.names[0]}` is given twice", where)
                ok = False
                continue
            given.add(param.field)
            try:
                values[param.field] = coerce(param, tok, f"{kind.word} {param.names[0]}")
            except _Problem as p:
                self.problem(p.message, where, p.hint)
                ok = False
        if not ok:
            return None
        for opt, default in OPTION_DEFAULTS[kind.word]:  # worked out once per word
            if opt.field not in values:
                values[opt.field] = values.get("size") if default is SIZE_DEFAULT else default
        return values

    def option_for(
        self, kind: LayerKind, key: str | None, tok: Token, where: Span
    ) -> Param | None:
        if key is None:
            for opt in kind.options:
                if takes_bare(opt, str(tok)):
                    return opt
            bare = [f for o in kind.options if takes_bare(o, o.flags[0] if o.flags else "")
                    for f in o.flags]
            self.problem(
                f"`{kind.word}` does not take `{tok}` here",
                where,
                ("it takes " + ", ".join(bare) + " or name=value") if bare or kind.options
                else f"`{kind.word}` takes no arguments",
            )
            return None
        for opt in kind.options:
            if key in opt.names:
                return opt
        known = [n for o in kind.options for n in o.names]
        close = suggest(key, known) if known else None
        self.problem(
            f"`{kind.word}` has no argument `{key}`",
            _tok_span(key) if isinstance(key, Token) and key.line is not None else where,
            f"did you mean `{close}`?" if close else (
                "it takes " + ", ".join(o.names[0] for o in kind.options) if known
                else f"`{kind.word}` takes no arguments"),
        )
        return None

    @_shape_neutral
    def modifier(
        self,
        kind: LayerKind,
        word_tok: Token,
        number: str | None,
        args: Tree | None,
        choices: Tree | None,
        previous: list[ir.Item],
    ) -> None:
        at = _tok_span(word_tok)
        written = self.arguments(args)
        if number is not None or choices is not None or len(written) != 1 or written[0][0]:
            self.problem(
                f"`{word_tok}`: write the penalty in parentheses", at, f"e.g. {kind.word}(.01)"
            )
            return
        toks = written[0][1]
        if len(toks) != 1:
            self.problem(f"sweeps over {kind.word} are not supported", at,
                         f"sweep it through a block: `let d(w) = dense512 {kind.word}({{w}})`, "
                         f"then `d({{.01,.1}})`")
            return
        try:
            value = coerce(kind.number, toks[0], kind.word)
        except _Problem as p:
            self.problem(p.message, _tok_span(toks[0]), p.hint or (
                f"a penalty of 0 is none: leave `{kind.word}(...)` out"
                if _is_zero(str(toks[0])) else None))
            return
        target = previous[-1] if previous else None
        if isinstance(target, ir.TemplateLayer):  # `conv{f} l2(.01)`: checked at each use
            previous[-1] = ir.TemplateLayer(
                f"{target.text} {kind.word}({format_number(value)})", span=target.span)
            return
        targets = target.options if isinstance(target, ir.Alternatives) else (target,)
        if target is None or not all(isinstance(t, ir.Layer) and t.weighted for t in targets):
            what = "nothing on its line" if target is None else _describe(target)
            hint = "put it right after a conv or dense layer, e.g. dense512 l2(.01)"
            if target is None:  # a layer on the line before does not count: say so
                hint = ("a penalty goes on its layer's line, right after it, e.g. "
                        f"dense512 {kind.word}(.01)")
            if (isinstance(target, ir.Optional) and isinstance(target.body, ir.Layer)
                    and target.body.weighted):  # `conv8? l2(.01)`: it is right after one
                hint = (f"put both in the optional part: ({format_layer(target.body)} "
                        f"{kind.word}({format_number(value)}))?")
            self.problem(
                f"{kind.word} needs a layer with weights before it, but follows {what}",
                at, hint)
            return
        if any(getattr(t, kind.word) is not None for t in targets):
            self.problem(f"{kind.word} is given twice for the same layer", at)
            return
        new = tuple(_with(t, kind.word, value) for t in targets)
        if isinstance(target, ir.Alternatives):
            previous[-1] = ir.Alternatives(
                f"{target.text} {kind.word}({format_number(value)})",
                target.key, target.labels, new, span=target.span,
            )
        else:
            previous[-1] = new[0]

    def unknown_word(self, tok: Token) -> None:
        text = str(tok)
        at = _tok_span(tok)
        if (tok.line, tok.column) in self.glued:  # told already, with the word before it
            return
        if text in KEYWORDS:
            self.problem(f"`{text}` starts its own line", at, f"put `{text} ...` on a new line")
            return
        if text in self.blocks:
            self.problem(
                f"block `{text}` takes no arguments or alternatives", at,
                "change its `let` line instead, or write the layers out",
            )
            return
        if text in self.let_names:
            if f"early use of {text}" not in self.seen:  # once per block, at its first use
                self.seen.add(f"early use of {text}")
                self.problem(
                    f"block `{text}` is used before it is defined", at,
                    f"move the line `let {text} = ...` above its first use",
                )
            return
        if text == "x" and self.lines[tok.line - 1][tok.end_column - 1:].startswith("{"):
            self.problem(
                "a repeat count is a number: it cannot be a block's parameter or swept", at,
                "write the count itself, as in unit(64) x3; to compare counts, write a spec "
                "per count")
            return
        if re.fullmatch(r"x[0-9]+", text):
            self.problem(
                f"`{text}` repeats nothing here", at,
                "write the count right after a layer or a group: conv64 x2, (conv64 relu)x2",
            )
            return
        repeat = _GLUED_REPEAT.fullmatch(text)
        if repeat and (repeat.group(1) in self.blocks or (  # `relux2`; not `pool2x2`, `conv3x3`
                repeat.group(1) in KINDS and KINDS[repeat.group(1)].number is None)):
            word, count = repeat.groups()
            self.problem(
                f"unknown layer word `{text}`", at,
                f"did you mean `{word} x{count}`? a repeat count is written after a space")
            return
        call = _CALL.match(self.lines[tok.line - 1][tok.end_column - 1:])
        foreign = framework_word(text, call.group(1) if call else None)
        if foreign is not None:
            self.problem(f"unknown layer word `{text}`", at, foreign)
            return
        stem = re.match(r"[A-Za-z_]*", text).group(0)
        if stem in KINDS and KINDS[stem].number is not None:
            self.problem(
                f"cannot read the number in `{text}`", at,
                f"write a plain number after `{stem}`, e.g. {_example(KINDS[stem])}",
            )
            return
        close = suggest(text, sorted(set(KINDS) | set(self.blocks)), numbered=_NUMBERED)
        hint = f"did you mean `{close}`?" if close and close != text else (
            "see the language reference in README.md")
        # the number a suggestion kept: `conv0`, or a penalty's in brackets, `l2(0)` for `L20`
        kept = (re.fullmatch(r"([a-z_]+[0-9]*)\((.*)\)", close or "")
                or re.fullmatch(r"([a-z_]+)([0-9.].*)", close or ""))
        if kept and kept.group(1) in _NUMBERED and close not in self.blocks:
            # `cnov0` -> `conv0`, `max_pool1e3` -> `pool1e3`: the number kept is refused too
            kind = KINDS[kept.group(1)]
            refused = _number_refused(kind, kept.group(2), after_word="(" not in close)
            if refused is not None:
                hint = (f"did you mean `{kind.word}`? but {refused}; for example "
                        f"{_example(kind)}")
        if (close in KINDS and KINDS[close].number is not None and close not in self.blocks
                and re.fullmatch(re.escape(close) + r"[0-9.]+", _example(KINDS[close]))):
            # `cnov` -> `conv` alone would be the next error: show it with its number, the
            # one in a call after it where there is one (`cnov(64)` -> `conv64`, not `conv32`)
            kind = KINDS[close]
            size = _call_size(close, call.group(1)) if call else None
            given = _canonical_number(kind, size) if size is not None else None
            if given is not None and _number_refused(kind, given) is None:
                hint = (f"did you mean `{close}{given}`? `{text}({shown(call.group(1), 30)})` "
                        f"is written `{close}{given}` here")
            else:
                hint = (f"did you mean `{_example(kind)}`? `{close}` takes its "
                        f"{kind.number.field} after the word")
        elif (close in KINDS and KINDS[close].modifier and close not in self.blocks
              and not self.lines[tok.line - 1][tok.end_column - 1:].startswith("(")):
            # `l3` -> `l2` alone would be the next error: a penalty's factor is in brackets
            hint = f"did you mean `{_example(KINDS[close])}`? a penalty takes its factor in " \
                   "brackets"
        self.problem(f"unknown layer word `{_shown(text)}`", at, hint)


def _word_alone(item: Tree) -> Token | None:
    """The WORD of an item that is a layer word alone, Tree(item, [Tree(layer, [WORD])]);
    None for any other item."""
    if len(item.children) != 1:
        return None
    first = item.children[0]
    if first.__class__ is Tree and first.data == "layer" and len(first.children) == 1:
        return first.children[0]  # type: ignore[no-any-return]
    return None


def _can_vanish(item: ir.Item, vanishing: set[str]) -> bool:
    """Whether a sweep variant can leave nothing of this item (`bn?`, `(relu?)x2`, a use of
    `let b = bn?`); vanishing names the blocks without parameters whose body can."""
    if isinstance(item, ir.Optional):
        return True
    if isinstance(item, ir.Group):
        return all(_can_vanish(i, vanishing) for i in item.items)
    if isinstance(item, ir.Repeat):
        return _can_vanish(item.body, vanishing)
    if isinstance(item, ir.BlockRef):
        if item.items is not None:  # a block with parameters, built for this use
            return bool(item.items) and all(_can_vanish(i, vanishing) for i in item.items)
        return item.name in vanishing
    return False


def _items_span(items: tuple[ir.Item, ...]) -> Span | None:
    first, last = getattr(items[0], "span", None), getattr(items[-1], "span", None)
    if first is None or last is None:
        return first or last
    return Span(first.line, first.column, last.end_line, last.end_column)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _is_zero(text: str) -> bool:
    """Whether written text is the number 0 (`0`, `0.0`, `0e5`)."""
    try:
        return float(text) == 0
    except ValueError:
        return False


def _value_text(tok: Token) -> str:
    """A written value in its canonical spelling: `0.50` -> `.5`, words and sizes as written."""
    return format_number(_num_value(tok)) if tok.type == "NUMBER" else str(tok)


def _keyed_value_nodes(layer: Tree) -> list[tuple[str | None, Token | Tree]]:
    """The number's alternatives and every argument value of a layer tree, each with what it
    is: None for the layer's number, an argument's name, or "" for one written by position."""
    out: list[tuple[str | None, Token | Tree]] = []
    for child in layer.children[1:]:
        if child.data == "choices":
            out.append((None, child))
        else:  # args: named_arg(WORD, value) or positional_arg(value)
            out.extend((str(arg.children[0]) if arg.data == "named_arg" else "",
                        arg.children[-1]) for arg in child.children)
    return out


def _value_nodes(layer: Tree) -> list[Token | Tree]:
    """The number's alternatives and every argument value of a layer tree."""
    return [node for _, node in _keyed_value_nodes(layer)]


def _swept_part(alternatives: ir.Alternatives) -> tuple[str, str | None, list[str]]:
    """A layer's alternatives as (the layer as written before its sweep, what is swept, the
    values): `conv8(k={1,3})` -> ('conv8', 'k', ['1', '3']); `drop{.25,.5}` -> ('drop', None,
    ['.25', '.5']); `conv8({valid,same})` -> ('conv8', '', ['valid', 'same'])."""
    text, labels = alternatives.text, list(alternatives.labels)
    head = re.split(r"[({]", text, maxsplit=1)[0]
    if text[len(head):].startswith("{"):  # the number is swept (maybe arguments too)
        return head, None, labels
    keys = {label.partition("=")[0] for label in labels}
    if len(keys) == 1 and all("=" in label for label in labels):
        return head, keys.pop(), [label.partition("=")[2] for label in labels]
    return head, "", labels


def _sweep_a_parameter(block: str, word: str, key: str | None, values: list[str],
                       taken: set[str] | None = None) -> str:
    """The hint for alternatives inside a block with parameters: the same sweep, written as a
    parameter of the block and swept at its use. The parameter's name is one the block does
    not have yet (`taken`): reusing one would tie two places to one value."""
    def free(name: str) -> str:
        n = 1
        while (f"{name}{n}" if n > 1 else name) in (taken or set()):
            n += 1
        return f"{name}{n}" if n > 1 else name

    if key is None and any("=" in v for v in values):  # the number and an argument, together
        return ("make each swept part a parameter of the block and sweep it where the block "
                f"is used: {block}(..., {free('n')}={{...}})")
    swept = "{" + ",".join(values) + "}"
    if key is None:  # the layer's number: conv{64,128}, drop{.25,.5}
        name = free("r" if word == "drop" else "n")
        body = f"{word}{{{name}}}"
    elif key:  # a named argument: conv8(k={1,3})
        name = free(key)
        body = f"{word}(..., {key}={{{name}}})"
    else:  # an argument by position: conv8({valid,same})
        name = free("p")
        body = f"{word}({{{name}}})"
    return (f"make it a parameter ({body} in the body) and sweep it where the block is "
            f"used: {block}(..., {name}={swept})")


def _is_ref(node: Token | Tree) -> bool:
    """`{f}`: braces around one name, a block parameter (a sweep lists values)."""
    return (isinstance(node, Tree) and len(node.children) == 1
            and isinstance(node.children[0], Token) and node.children[0].type == "WORD")


def _param_refs(layer: Tree) -> list[Token]:
    """The names a layer refers to as `{name}`: in its number or its argument values."""
    return [node.children[0] for node in _value_nodes(layer) if _is_ref(node)]


def _substitute(node: Tree, env: dict[str, Token]) -> Tree:
    """The tree with every `{name}` of env replaced by `{value}`: the value's own token, so a
    problem with it points at the use that wrote it."""
    children: list[Any] = []
    for child in node.children:
        if isinstance(child, Token):
            children.append(child)
        elif _is_ref(child) and str(child.children[0]) in env:
            children.append(Tree("choices", [env[str(child.children[0])]]))
        else:
            children.append(_substitute(child, env))
    return Tree(node.data, children)


def _num_value(tok: Token) -> Any:
    raw = str(tok)
    return int(raw) if raw.isdigit() and len(raw) <= MAX_INT_DIGITS else float(raw)


def _with(layer: ir.Layer, field: str, value: Any) -> ir.Layer:
    from dataclasses import replace

    return replace(layer, **{field: value})


def _describe(item: ir.Item) -> str:
    from cnnspec.language.format import format_item

    return f"`{format_item(item)}`"


def _example(kind: LayerKind) -> str:
    return kind.spelling


def _alternatives_text(word: str, choices: Tree | None, args: Tree | None) -> str:
    def value_text(v: Token | Tree) -> str:
        if isinstance(v, Tree):
            return "{" + ",".join(value_text(c) for c in v.children) + "}"
        raw = str(v)
        return format_number(_num_value(v)) if v.type == "NUMBER" else raw

    text = word
    if choices is not None:
        text += value_text(choices)
    if args is not None:
        parts = []
        for arg in args.children:
            if arg.data == "named_arg":
                parts.append(f"{arg.children[0]}={value_text(arg.children[1])}")
            else:
                parts.append(value_text(arg.children[0]))
        text += "(" + ",".join(parts) + ")"
    return text
