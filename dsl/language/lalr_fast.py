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
* reductions build the same `Tree`/`Token` shapes Lark's tree builder does, from the rules'
  own metadata: `_`-prefixed and anonymous punctuation terminals dropped, `_rule` children
  inlined, `?rule` collapsed when it has one child, `-> alias` names. (One difference: a
  tree's `data` is the plain str `"layer"` where Lark has the equal `Token('RULE', 'layer')`,
  whose `__eq__` is Python code the builder would pay for at every comparison.)

On the seed specs this parses about 2.5-3x faster than `Lark.parse` (see
bench/parse_throughput.py); the rest of `cnnspec.language.parse` is the tree -> IR builder.

It only ever handles the good case. On any text it cannot take (an unexpected character or
token, or the end of file too early) `parse` returns None and the caller runs Lark itself, so
every error message is Lark's, as before. A grammar or Lark option this driver does not model
makes the constructor raise `Unsupported`, and the caller keeps using Lark alone.
`tests/test_fast_parser.py` checks that both paths give equal trees, positions included.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from lark import Lark, Token, Tree
from lark.lexer import PatternStr, UnlessCallback
from lark.parsers.lalr_analysis import Shift

__all__ = ["FastLALR", "Unsupported"]

_END = "$END"
_new_str = str.__new__

# Builds the value of a rule's left-hand side from the values of its right-hand side.
NodeBuilder = Callable[[list[Any]], Any]
# A reduction on the value stack: pops a rule's right-hand side, pushes its left-hand side.
StackOp = Callable[[list[Any]], None]


class Unsupported(Exception):
    """The Lark instance uses a feature this driver does not reproduce."""


def _builder(
    name: str, size: int, keep: list[tuple[int, bool]], expand1: bool, inlined: bool
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


def _reduction(
    name: str, size: int, keep: list[tuple[int, bool]], expand1: bool, inlined: bool
) -> StackOp | None:
    """The stack operation of one reduction; None when the top value already is the result
    (`?rule: x`, which passes its one child up). The commonest shapes get their own code."""
    if size == 1 and keep == [(0, False)]:
        if expand1 and not inlined:
            return None
        if inlined:
            def wrap_in_list(stack: list[Any]) -> None:
                stack[-1] = [stack[-1]]

            return wrap_in_list

        def wrap_in_tree(stack: list[Any]) -> None:
            stack[-1] = Tree(name, [stack[-1]])

        return wrap_in_tree
    if inlined and size >= 2 and keep == [(0, True), (size - 1, False)]:
        drop = size - 1

        def append(stack: list[Any]) -> None:  # `__x : __x item`, `__x : __x "," item`
            value = stack[-1]
            del stack[-drop:]
            stack[-1].append(value)

        return append
    build = _builder(name, size, keep, expand1, inlined)
    if not size:
        return lambda stack: stack.append(build([]))

    def reduce(stack: list[Any]) -> None:
        values = stack[-size:]
        del stack[-size:]
        stack.append(build(values))

    return reduce


class FastLALR:
    """Parses text with a Lark LALR parser's own tables and lexer regexes, or returns None."""

    def __init__(self, lark: Lark) -> None:
        options = lark.options
        if (options.parser != "lalr" or options.lexer != "contextual" or options.postlex
                or options.transformer or options.propagate_positions or options.lexer_callbacks
                or options.use_bytes or options.tree_class not in (None, Tree)
                or len(options.start) != 1):
            raise Unsupported("only a plain LALR parser with the contextual lexer")
        frontend = lark.parser
        lalr = frontend.parser.parser
        table = lalr.parse_table
        if sorted(table.states) != list(range(len(table.states))):
            raise Unsupported("parser states are not numbered 0..n-1")
        (start,) = options.start
        self._start_state: int = table.start_states[start]
        self._end_state: int = table.end_states[start]

        # Reductions, as (length of the right-hand side, left-hand side, stack operation).
        reductions: dict[Any, tuple[int, str, StackOp | None]] = {}
        kept: set[str] = set()  # terminals some tree keeps; the others are stacked as None
        for rule in lark.rules:
            if options.maybe_placeholders and rule.options.empty_indices:
                raise Unsupported("maybe_placeholders")  # `[x]` left out: Nones to insert
            keep_all = rule.options.keep_all_tokens  # Lark folds the global option in here
            keep = [
                (i, not sym.is_term and sym.name.startswith("_"))
                for i, sym in enumerate(rule.expansion)
                if keep_all or not (sym.is_term and sym.filter_out)
            ]
            kept |= {rule.expansion[i].name for i, _ in keep if rule.expansion[i].is_term}
            # Lark names trees by Token('RULE', name); a plain str compares equal, and faster
            name = str(rule.alias or rule.options.template_source or rule.origin.name)
            inlined = rule.origin.name.startswith("_")
            expand1 = bool(rule.options.expand1) and not rule.alias
            if inlined and expand1:
                raise Unsupported(f"?{rule.origin.name}: an inlined rule that may collapse")
            size = len(rule.expansion)
            operation = _reduction(name, size, keep, expand1, inlined)
            reductions[rule] = (size, str(rule.origin.name), operation)
        self._kept: frozenset[str] = frozenset(kept)

        # Per state: terminal -> shift target (an int) or reduction (a tuple); rule -> goto.
        rule_names = {str(rule.origin.name) for rule in lark.rules}
        self._actions: list[dict[str, int | tuple[int, str, StackOp | None]]] = []
        self._gotos: list[dict[str, int]] = []
        for state in range(len(table.states)):
            row = {str(symbol): action_arg for symbol, action_arg in table.states[state].items()}
            self._actions.append({
                symbol: (arg if action is Shift else reductions[arg])
                for symbol, (action, arg) in row.items() if symbol not in rule_names
            })
            self._gotos.append(
                {symbol: arg for symbol, (_, arg) in row.items() if symbol in rule_names}
            )

        # The contextual lexer, per state: the scanner's match, and the keyword re-typing Lark
        # applies after it (WORD "input" -> INPUT where INPUT is expected).
        contextual = frontend.lexer
        self._match: list[Callable[[str, int], re.Match[str] | None]] = []
        self._retype: list[dict[str, dict[str, str]]] = []
        ignore: set[str] = set()
        newline_types: set[str] = set()
        for state in range(len(table.states)):
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
            self._match.append(mres[0].match)
            self._retype.append(retype)
            ignore |= basic.ignore_types
            newline_types |= basic.newline_types
        if ignore & newline_types:
            raise Unsupported("an %ignore terminal that may hold a newline")
        self._ignore = frozenset(ignore)
        self._newline_types = frozenset(newline_types)

    def parse(self, text: str) -> Tree | None:
        """The tree Lark would build for text, or None where Lark would raise."""
        actions, gotos, match, retype = self._actions, self._gotos, self._match, self._retype
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
                    continue  # (%ignore never holds a newline here: checked in __init__)
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
                n, origin, operation = act
                if n:  # pop n states, push the goto: the bottom one is replaced
                    if n > 1:
                        del states[1 - n:]
                    state = states[-1] = gotos[states[-2]][origin]
                else:
                    state = gotos[states[-1]][origin]
                    states.append(state)
                if operation is not None:
                    operation(values)
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
