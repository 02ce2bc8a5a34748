"""A faster driver for the grammar's own LALR tables, for text that parses.

Why this exists: `cnnspec check` and sweeps parse many small specs, and Lark's general-purpose
LALR loop (a lexer generator, a `feed_token` call and several wrapper callbacks per token, full
`Token` objects even for punctuation the tree drops) spent most of the parse time on
bookkeeping. This module runs the very same automaton faster. It does not know the language:

* the tokenizer is Lark's contextual lexer, taken apart: for every parser state, the compiled
  scanner regex Lark built from `grammar/cnnspec.lark` (terminal priorities, `%ignore`, keyword
  strings such as `input` that the WORD pattern also matches, which Lark re-types after the
  match), so the same text lexes to the same terminals in the same parser state;
* the parser walks Lark's computed parse table (`Lark.parser.parser.parser.parse_table`);
* reductions build the same tree shapes Lark's tree builder does, from the rules' own
  metadata: `_`-prefixed and anonymous punctuation terminals dropped, `_rule` children
  inlined, `?rule` collapsed when it has one child, `-> alias` names.

The tree is made of this module's `Tree` and `Token`, which have the fields of Lark's (a
tree's `data` is the plain str rule name). Why not Lark's own classes: importing anything from
`lark` imports all of Lark (its grammar loader, Earley parser, ...), about 20 ms of every
`cnnspec summary`. So the tables read from Lark (`tables_from_lark`) are plain data
(`Tables`), kept on disk by `cached_tables` keyed by the grammar's text; a process that finds
them there parses good text without importing Lark at all.

On the seed specs this parses about 2.5-3x faster than `Lark.parse` (see
bench/parse_throughput.py); the rest of `cnnspec.language.parse` is the tree -> IR builder.

It only ever handles the good case. On any text it cannot take (an unexpected character or
token, or the end of file too early) `parse` returns None and the caller runs Lark itself, so
every error message is Lark's, as before. A grammar or Lark option this driver does not model
makes `tables_from_lark` raise `Unsupported`, and the caller keeps using Lark alone.
`tests/test_fast_parser.py` checks that both paths give equal trees, positions included.
"""

from __future__ import annotations

import marshal
import os
import re
import zlib
from collections.abc import Callable
from dataclasses import astuple, dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "FastLALR", "Tables", "Token", "Tree", "Unsupported", "cached_tables", "tables_from_lark",
]

_END = "$END"
_new_str = str.__new__

# Builds the value of a rule's left-hand side from the values of its right-hand side.
NodeBuilder = Callable[[list[Any]], Any]
# One rule as the driver needs it: (tree name, right-hand side length, kept children as
# (index, splice), ?rule that collapses, _rule that is inlined, left-hand side)
Rule = tuple[str, int, tuple[tuple[int, bool], ...], bool, bool, str]


class Unsupported(Exception):
    """The Lark instance uses a feature this driver does not reproduce."""


class Token(str):
    """A terminal of the parse tree: its text, with Lark Token's type and position fields."""

    __slots__ = ("type", "start_pos", "value", "line", "column", "end_line", "end_column",
                 "end_pos")
    type: str
    start_pos: int | None
    value: str
    line: int | None
    column: int | None
    end_line: int | None
    end_column: int | None
    end_pos: int | None

    def __new__(cls, type: str, value: str, start_pos: int | None = None,  # noqa: A002
                line: int | None = None, column: int | None = None,
                end_line: int | None = None, end_column: int | None = None,
                end_pos: int | None = None) -> Token:
        tok = _new_str(cls, value)
        tok.type, tok.value, tok.start_pos = type, value, start_pos
        tok.line, tok.column, tok.end_line, tok.end_column, tok.end_pos = (
            line, column, end_line, end_column, end_pos)
        return tok

    def __reduce__(self) -> tuple[Any, ...]:
        return (Token, (self.type, self.value, self.start_pos, self.line, self.column,
                        self.end_line, self.end_column, self.end_pos))

    def __repr__(self) -> str:
        return f"Token({self.type!r}, {self.value!r})"


class Tree:
    """A rule's node in the parse tree: its name (`data`) and its children."""

    __slots__ = ("data", "children")

    def __init__(self, data: str, children: list[Any]) -> None:
        self.data = data
        self.children = children

    def __repr__(self) -> str:
        return f"Tree({self.data!r}, {self.children!r})"


@dataclass(frozen=True)
class Tables:
    """Everything the driver reads from a Lark LALR parser, as plain data (marshal-able)."""

    start_state: int
    end_state: int
    rules: tuple[Rule, ...]
    # per state: terminal -> the state to shift to (>= 0), or ~rule index to reduce by (< 0)
    actions: tuple[dict[str, int], ...]
    # per state: rule name -> the state after reducing to it
    gotos: tuple[dict[str, int], ...]
    kept: tuple[str, ...]  # terminals some tree keeps; the others are stacked as None
    # per state: Lark's scanner regex (pattern, flags), and its keyword re-typing
    # (WORD "input" -> INPUT where INPUT is expected)
    scanners: tuple[tuple[str, int], ...]
    retype: tuple[dict[str, dict[str, str]], ...]
    ignore: tuple[str, ...]
    newline_types: tuple[str, ...]


# -- reading the tables from Lark --------------------------------------------------------------


def tables_from_lark(lark: Any) -> Tables:
    """The tables of a Lark LALR parser with the contextual lexer, or Unsupported."""
    _check_options(lark.options)
    lalr = lark.parser.parser.parser
    table = lalr.parse_table
    if sorted(table.states) != list(range(len(table.states))):
        raise Unsupported("parser states are not numbered 0..n-1")
    (start,) = lark.options.start
    rules, kept = _rules(lark)
    actions, gotos = _parse_table(table, lark.rules)
    scanners, retype, ignore, newline_types = _lexer_table(lark.parser.lexer, len(table.states))
    return Tables(
        start_state=table.start_states[start], end_state=table.end_states[start],
        rules=rules, actions=actions, gotos=gotos, kept=kept, scanners=scanners, retype=retype,
        ignore=ignore, newline_types=newline_types,
    )


def _check_options(options: Any) -> None:
    """Refuse the Lark options whose effects this driver does not reproduce."""
    if (options.parser != "lalr" or options.lexer != "contextual" or options.postlex
            or options.transformer or options.propagate_positions or options.lexer_callbacks
            or options.use_bytes or options.tree_class not in (None, _lark_tree_class())
            or len(options.start) != 1):
        raise Unsupported("only a plain LALR parser with the contextual lexer")


def _lark_tree_class() -> type:
    from lark import Tree as LarkTree

    return LarkTree


def _shift_action() -> type:
    """Lark's Shift action (an import of Lark's internals: only used while reading tables)."""
    from lark.parsers.lalr_analysis import Shift

    return Shift


def _rules(lark: Any) -> tuple[tuple[Rule, ...], tuple[str, ...]]:
    """Each rule's tree building, as Lark's tree builder does it; and the kept terminals."""
    options = lark.options
    rules: list[Rule] = []
    kept: set[str] = set()
    for rule in lark.rules:
        if options.maybe_placeholders and rule.options.empty_indices:
            raise Unsupported("maybe_placeholders")  # `[x]` left out: Nones to insert
        keep_all = rule.options.keep_all_tokens  # Lark folds the global option in here
        keep = tuple(
            (i, not sym.is_term and sym.name.startswith("_"))
            for i, sym in enumerate(rule.expansion)
            if keep_all or not (sym.is_term and sym.filter_out)
        )
        kept |= {rule.expansion[i].name for i, _ in keep if rule.expansion[i].is_term}
        # Lark names trees by Token('RULE', name); here the plain str
        name = str(rule.alias or rule.options.template_source or rule.origin.name)
        inlined = rule.origin.name.startswith("_")
        expand1 = bool(rule.options.expand1) and not rule.alias
        if inlined and expand1:
            raise Unsupported(f"?{rule.origin.name}: an inlined rule that may collapse")
        rules.append((name, len(rule.expansion), keep, expand1, inlined, str(rule.origin.name)))
    return tuple(rules), tuple(sorted(kept))


def _parse_table(
    table: Any, lark_rules: list[Any]
) -> tuple[tuple[dict[str, int], ...], tuple[dict[str, int], ...]]:
    """Per state: terminal -> shift target or ~rule index; rule name -> goto."""
    shift = _shift_action()
    index = {rule: i for i, rule in enumerate(lark_rules)}
    rule_names = {str(rule.origin.name) for rule in lark_rules}
    actions: list[dict[str, int]] = []
    gotos: list[dict[str, int]] = []
    for state in range(len(table.states)):
        row = {str(symbol): action_arg for symbol, action_arg in table.states[state].items()}
        actions.append({
            symbol: (arg if action is shift else ~index[arg])
            for symbol, (action, arg) in row.items() if symbol not in rule_names
        })
        gotos.append({symbol: arg for symbol, (_, arg) in row.items() if symbol in rule_names})
    return tuple(actions), tuple(gotos)


def _lexer_table(contextual: Any, states: int) -> tuple[Any, ...]:
    """Lark's contextual lexer, per state: the scanner regex and the keyword re-typing."""
    from lark.lexer import PatternStr, UnlessCallback

    scanners: list[tuple[str, int]] = []
    retypes: list[dict[str, dict[str, str]]] = []
    ignore: set[str] = set()
    newline_types: set[str] = set()
    for state in range(states):
        basic = contextual.lexers[state]
        scanner = basic.scanner  # built on first use; also fills basic.callback
        mres = scanner._mres
        if len(mres) != 1:
            raise Unsupported("a scanner split over several regexes")
        retype: dict[str, dict[str, str]] = {}
        for type_name, callback in basic.callback.items():
            if not isinstance(callback, UnlessCallback):
                raise Unsupported(f"lexer callback on {type_name}")
            words: dict[str, str] = {}
            for term in callback.scanner.terminals:  # Lark's fullmatch: first one wins
                if not isinstance(term.pattern, PatternStr) or term.pattern.flags:
                    raise Unsupported(f"keyword {term.name} with flags")
                words.setdefault(term.pattern.value, term.name)
            retype[type_name] = words
        scanners.append((mres[0].pattern, mres[0].flags))
        retypes.append(retype)
        ignore |= basic.ignore_types
        newline_types |= basic.newline_types
    if ignore & newline_types:
        raise Unsupported("an %ignore terminal that may hold a newline")
    return tuple(scanners), tuple(retypes), tuple(sorted(ignore)), tuple(sorted(newline_types))


# -- keeping them on disk ----------------------------------------------------------------------

# Part of the cache key: bump it when Tables or its meaning changes.
TABLES_FORMAT = 1


def cache_dir() -> Path:
    """Where the tables are kept: $CNNSPEC_CACHE_DIR, else the user's cache folder."""
    if os.environ.get("CNNSPEC_CACHE_DIR"):
        return Path(os.environ["CNNSPEC_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "cnnspec"


def _source_stamp() -> tuple[int, int]:
    """This driver's source file (size, mtime): tables are kept only for the code that tested
    them (the self-test runs when they are read from Lark, not when read from disk)."""
    try:
        st = os.stat(__file__)
    except OSError:
        return (0, 0)
    return (st.st_size, st.st_mtime_ns)


def cached_tables(grammar: str, read: Callable[[], Tables]) -> Tables:
    """The tables for this grammar text: from the cache folder when they are there for this
    very grammar and driver, else `read()` (from Lark, self-tested by the caller) and kept.

    A cache folder that cannot be read or written only costs the time to read the tables
    from Lark again; a damaged file is ignored and replaced.
    """
    key = (TABLES_FORMAT, grammar, _source_stamp())
    path = cache_dir() / f"lalr-{zlib.crc32(grammar.encode('utf-8')):08x}.marshal"
    try:
        stored_key, data = marshal.loads(path.read_bytes())
        if stored_key == key:
            return Tables(*data)
    except (OSError, EOFError, ValueError, TypeError):
        pass
    tables = read()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        partial.write_bytes(marshal.dumps((key, astuple(tables))))
        os.replace(partial, path)  # readers see the whole file or none
    except (OSError, ValueError):
        pass
    return tables


# -- the driver --------------------------------------------------------------------------------


def _builder(
    name: str, size: int, keep: tuple[tuple[int, bool], ...], expand1: bool, inlined: bool
) -> NodeBuilder:
    """Lark's tree building for one rule (ParseTreeBuilder + ChildFilterLALR_NoPlaceholders +
    ExpandSingleChild), specialised. `keep` lists (index, splice) for the children the tree
    keeps; a spliced child is an `_rule` whose children replace it. An inlined rule (`_rule`
    or Lark's own `__x_plus_n` helpers) yields a plain list for its parent to splice.
    """
    if not any(splice for _, splice in keep):
        indices = [i for i, _ in keep]
        if inlined:
            return lambda values: [values[i] for i in indices]
        if expand1 and len(indices) == 1:
            (only,) = indices
            return lambda values: values[only]
        if len(indices) == size:  # nothing dropped: the slice is a fresh list already
            return lambda values: Tree(name, values)
        return lambda values: Tree(name, [values[i] for i in indices])

    def build(values: list[Any]) -> Any:
        children: list[Any] = []
        for i, splice in keep:
            if splice:
                if children:
                    children += values[i]
                else:  # left recursion, `__x : __x item`: extend the child's own list
                    children = values[i]
            else:
                children.append(values[i])
        if inlined:
            return children
        if expand1 and len(children) == 1:
            return children[0]
        return Tree(name, children)

    return build


# How a reduction changes the value stack, as a small code the driver's loop switches on (a
# function call per reduction cost more than the work of the common ones):
_PASS = 0  # `?rule: x`: the top value already is the result
_WRAP_TREE = 1  # Tree(name, [top])
_WRAP_LIST = 2  # [top], for an inlined rule's parent to splice
_APPEND = 3  # `__x : __x item` (payload: the count of values to drop): append to the list
_CALL = 4  # anything else: payload(stack) pops the right-hand side and pushes the result
_BARE_OR_TREE = 5  # lean trees: a bare word passes up as its token, anything else is wrapped
_CALL_UNBARE = 6  # lean trees: a bare word first its Tree(bare rule, [token]), then _CALL
# one reduction: (right-hand side length, left-hand side, code, payload)
Reduction = tuple[int, str, int, Any]


def _reduction(
    name: str, size: int, keep: tuple[tuple[int, bool], ...], expand1: bool, inlined: bool
) -> tuple[int, Any]:
    """The (code, payload) of one reduction (see _PASS ... _CALL). The commonest shapes get a
    code the driver runs inline; the rest a stack operation built by _builder."""
    if size == 1 and keep == ((0, False),):
        if expand1 and not inlined:
            return _PASS, None
        return (_WRAP_LIST, None) if inlined else (_WRAP_TREE, name)
    if inlined and size >= 2 and keep == ((0, True), (size - 1, False)):
        return _APPEND, size - 1  # `__x : __x item`, `__x : __x "," item`
    build = _builder(name, size, keep, expand1, inlined)
    if not size:
        return _CALL, lambda stack: stack.append(build([]))

    def reduce(stack: list[Any]) -> None:
        values = stack[-size:]
        del stack[-size:]
        stack.append(build(values))

    return _CALL, reduce


# Lean trees (see FastLALR): (the rule of a word, the rule of an item, the word's terminal)
Bare = tuple[str, str, str]


def _lean(reduction: Reduction, bare: Bare | None) -> Reduction:
    """The reduction in a lean tree (see FastLALR): with bare = (word rule, item rule, word
    terminal), a word rule of one token passes the token up, an item rule of one child
    passes such a token up too (any other child is wrapped as usual), and a longer item
    rule wraps the token back into Tree(word rule, [token]) first, so its tree is the
    usual one."""
    size, origin, code, payload = reduction
    if bare is None:
        return reduction
    word_rule, item_rule, word = bare
    if origin == word_rule and size == 1 and code == _WRAP_TREE:
        return (size, origin, _PASS, None)
    if origin == item_rule and size == 1 and code == _WRAP_TREE:
        return (size, origin, _BARE_OR_TREE, (payload, word))
    if origin == item_rule and size > 1 and code == _CALL:
        return (size, origin, _CALL_UNBARE, (word_rule, word, payload))
    return reduction


def _lazy_scanners(
    scanners: tuple[tuple[str, int], ...]
) -> list[Callable[[str, int], re.Match[str] | None]]:
    """Per state, the scanner's `match`, each regex compiled the first time its state lexes.

    Why lazily: compiling all of them costs more than a whole parse, and a spec visits a
    fraction of the states. States with the same scanner share one compiled regex.
    """
    compiled: dict[tuple[str, int], Callable[[str, int], re.Match[str] | None]] = {}
    matchers: list[Callable[[str, int], re.Match[str] | None]] = []

    def first_use(state: int, scanner: tuple[str, int]) -> Callable[..., Any]:
        def match(text: str, pos: int) -> re.Match[str] | None:
            if scanner not in compiled:
                compiled[scanner] = re.compile(*scanner).match
            matchers[state] = compiled[scanner]
            return matchers[state](text, pos)

        return match

    for state, scanner in enumerate(scanners):
        matchers.append(first_use(state, (scanner[0], scanner[1])))
    return matchers


class FastLALR:
    """Parses text with a Lark LALR parser's own tables and lexer regexes, or returns None.

    `parse(text)` builds Lark's tree exactly. `parse(text, lean=True)` builds a leaner one
    when the instance is given `bare=(word rule, item rule, word terminal)`: an item that is
    a word alone (the commonest item by far, `relu`, `conv64`) is its token itself instead
    of Tree(item, [Tree(word rule, [token])]), two trees and two lists fewer per word; every
    other node is as Lark builds it. Only a reader that knows this (cnnspec.language.parse's
    builder) asks for it.
    """

    def __init__(self, tables: Tables, bare: Bare | None = None) -> None:
        self._start_state = tables.start_state
        self._end_state = tables.end_state
        reductions: list[Reduction] = [
            (size, origin, *_reduction(name, size, keep, expand1, inlined))
            for name, size, keep, expand1, inlined, origin in tables.rules
        ]
        lean = [_lean(r, bare) for r in reductions]
        # Per state: terminal -> shift target (an int) or reduction (a tuple); rule -> goto.
        self._actions = self._action_rows(tables, reductions)
        self._lean_actions = self._action_rows(tables, lean) if bare else self._actions
        self._gotos: list[dict[str, int]] = list(tables.gotos)
        self._kept = frozenset(tables.kept)
        self._match = _lazy_scanners(tables.scanners)
        self._retype: list[dict[str, dict[str, str]]] = list(tables.retype)
        self._ignore = frozenset(tables.ignore)
        self._newline_types = frozenset(tables.newline_types)

    @staticmethod
    def _action_rows(tables: Tables, reductions: list[Reduction]
                     ) -> list[dict[str, int | Reduction]]:
        return [
            {symbol: (arg if arg >= 0 else reductions[~arg]) for symbol, arg in row.items()}
            for row in tables.actions
        ]

    @classmethod
    def from_lark(cls, lark: Any) -> FastLALR:
        """The driver for a Lark instance's own tables (Unsupported if it cannot be)."""
        return cls(tables_from_lark(lark))

    def parse(self, text: str, lean: bool = False) -> Tree | None:
        """The tree Lark would build for text (a lean one, see the class, if asked), or None
        where Lark would raise."""
        actions = self._lean_actions if lean else self._actions
        gotos, match, retype = self._gotos, self._match, self._retype
        ignore, newline_types, kept = self._ignore, self._newline_types, self._kept
        end_state = self._end_state
        state = self._start_state
        states: list[int] = [state]
        values: list[Any] = []
        pos, size = 0, len(text)
        line, line_start = 1, 0
        while True:
            # the next token, lexed in the context of the current state
            if pos < size:
                m = match[state](text, pos)
                if m is None:
                    return None
                kind = m.lastgroup
                start, pos = pos, m.end()
                if kind in ignore:
                    continue  # (%ignore never holds a newline here: checked when read)
                value = m.group()
                token_line, column = line, start - line_start + 1
                if kind in newline_types:
                    newlines = value.count("\n")
                    if newlines:
                        line += newlines
                        line_start = start + value.rindex("\n") + 1
                words = retype[state].get(kind)
                if words is not None:
                    kind = words.get(value, kind)
            else:
                kind = _END
            # reduce as far as this token calls for, then shift it
            act = actions[state].get(kind)
            while act.__class__ is tuple:
                n, origin, code, payload = act
                if n:  # pop n states, push the goto: the bottom one is replaced
                    if n > 1:
                        del states[1 - n:]
                    state = states[-1] = gotos[states[-2]][origin]
                else:
                    state = gotos[states[-1]][origin]
                    states.append(state)
                if code:
                    if code == _WRAP_TREE:
                        values[-1] = Tree(payload, [values[-1]])
                    elif code == _APPEND:
                        top = values[-1]
                        del values[-payload:]
                        values[-1].append(top)
                    elif code == _CALL:
                        payload(values)
                    elif code == _WRAP_LIST:
                        values[-1] = [values[-1]]
                    else:
                        _lean_reduce(values, n, code, payload)
                if state == end_state and kind is _END:
                    return values[-1]
                act = actions[state].get(kind)
            if act is None or kind is _END:
                return None
            if kind in kept:
                tok = _new_str(Token, value)
                tok.type = kind
                tok.value = value
                tok.start_pos = start
                tok.line = token_line
                tok.column = column
                tok.end_line = line
                tok.end_column = pos - line_start + 1
                tok.end_pos = pos
                values.append(tok)
            else:
                values.append(None)
            state = act
            states.append(state)


def _lean_reduce(values: list[Any], size: int, code: int, payload: Any) -> None:
    """The lean tree's own reductions (see FastLALR and _lean)."""
    if code == _BARE_OR_TREE:
        item_rule, word = payload
        top = values[-1]
        if top.__class__ is not Token or top.type != word:
            values[-1] = Tree(item_rule, [top])
        return
    word_rule, word, reduce = payload  # _CALL_UNBARE
    first = values[-size]
    if first.__class__ is Token and first.type == word:
        values[-size] = Tree(word_rule, [first])
    reduce(values)
