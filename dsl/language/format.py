"""The canonical spelling of a spec, so `cnnspec fmt` can rewrite files and diffs stay small.

Layout is normalised (one space between items, canonical numbers such as `.25`, default
arguments dropped) while lines, comments and blank lines are kept: `parse(format_spec(s)) == s`.
"""

from __future__ import annotations

from cnnspec.language import ir
from cnnspec.language.layers import format_layer, format_number
from cnnspec.language.setting_values import Augment, Schedule, write_augment, write_schedule


def format_value(value: ir.Value) -> str:
    if isinstance(value, Schedule):
        return write_schedule(value)
    if isinstance(value, Augment):
        return write_augment(value)
    if isinstance(value, tuple):
        return "x".join(str(v) for v in value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return format_number(value)
    return str(value)


_NONE: frozenset[str] = frozenset()


def format_item(item: ir.Item, empty: frozenset[str] = _NONE) -> str:
    """An item's text; "" for one that holds no layer (see `_empty_blocks`)."""
    if isinstance(item, ir.Layer):
        return format_layer(item)
    if isinstance(item, ir.Group):
        inner = format_items(item.items, empty)
        return f"({inner})" if inner else ""
    if isinstance(item, ir.Repeat):
        body = format_item(item.body, empty)
        glue = "" if isinstance(item.body, ir.Group) else " "  # conv64x2 would read as one word
        return f"{body}{glue}x{item.times}" if body else ""
    if isinstance(item, ir.BlockRef):
        if item.name in empty:
            return ""
        return item.name + ("(" + ",".join(item.args) + ")" if item.args else "")
    if isinstance(item, ir.TemplateLayer):
        return item.text
    if isinstance(item, ir.Merge):
        return f"{item.op}(" + ", ".join(format_items(b, empty) for b in item.branches) + ")"
    if isinstance(item, ir.Alternatives):
        return item.text
    if isinstance(item, ir.Optional):
        body = format_item(item.body, empty)
        return f"{body}?" if body else ""
    raise TypeError(f"not an item: {item!r}")


def format_items(items: tuple[ir.Item, ...], empty: frozenset[str] = _NONE) -> str:
    return " ".join(text for text in (format_item(i, empty) for i in items) if text)


def _empty_blocks(spec: ir.Spec) -> frozenset[str]:
    """The blocks that hold no layer: a sweep's variant that leaves out everything in a block
    (`let b = bn?`, its `-bn` variant) or in a group (`(bn?)x2`).

    Why: the language has no empty block or group (`let b =` and `()` do not parse), so such
    a variant is written without them: the `let` line keeps only its comment, and the uses of
    the block go, with the groups and repeats that held nothing else. It is the same network.
    """
    lets = [line.statement for line in spec.lines if isinstance(line.statement, ir.LetDecl)]
    empty: set[str] = set()
    grew = True
    while grew:  # a block made only of empty blocks is empty too
        grew = False
        for let in lets:
            if let.name not in empty and not format_items(let.items, frozenset(empty)):
                empty.add(let.name)
                grew = True
    return frozenset(empty)


def format_setting(setting: ir.Setting) -> str:
    if setting.choices:
        return f"{setting.key}={{" + ",".join(format_value(v) for v in setting.choices) + "}"
    return f"{setting.key}={format_value(setting.value)}"


def format_statement(statement: ir.Statement, empty: frozenset[str] = _NONE) -> str:
    if isinstance(statement, ir.InputDecl):
        return "input " + format_value(statement.shape)
    if isinstance(statement, ir.ClassesDecl):
        return f"classes {statement.count}"
    if isinstance(statement, ir.TrainDecl):
        return "train " + " ".join(format_setting(s) for s in statement.settings)
    if isinstance(statement, ir.LetDecl):
        if statement.name in empty:
            return ""
        params = ",".join(p.name if p.default is None else f"{p.name}={p.default}"
                          for p in statement.params)
        head = f"{statement.name}({params})" if params else statement.name
        return f"let {head} = {format_items(statement.items, empty)}"
    return format_items(statement.items, empty)


def format_line(line: ir.Line, empty: frozenset[str] = _NONE) -> str:
    parts = []
    if line.statement is not None:
        parts.append(format_statement(line.statement, empty))
    if line.comment is not None:
        parts.append(line.comment)
    return "  ".join(part for part in parts if part)


def format_spec(spec: ir.Spec) -> str:
    """The canonical text of a spec, ending in one newline."""
    empty = _empty_blocks(spec)
    return "".join(format_line(line, empty) + "\n" for line in spec.lines)


def in_source_line_endings(canonical: str, source: str) -> str:
    """canonical text with the source's line endings: CRLF when every line of the source ends
    so (a file written on Windows stays one), else LF. Why here and not in format_spec: the
    IR keeps no line endings, and `fmt --check` must not call a CRLF file unformatted."""
    crlf = source.count("\r\n")
    if crlf and crlf == source.count("\n"):
        return canonical.replace("\n", "\r\n")
    return canonical
