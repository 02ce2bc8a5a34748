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


def format_item(item: ir.Item) -> str:
    if isinstance(item, ir.Layer):
        return format_layer(item)
    if isinstance(item, ir.Group):
        return "(" + format_items(item.items) + ")"
    if isinstance(item, ir.Repeat):
        body = format_item(item.body)
        glue = "" if isinstance(item.body, ir.Group) else " "  # conv64x2 would read as one word
        return f"{body}{glue}x{item.times}"
    if isinstance(item, ir.BlockRef):
        return item.name + ("(" + ",".join(item.args) + ")" if item.args else "")
    if isinstance(item, ir.TemplateLayer):
        return item.text
    if isinstance(item, ir.Merge):
        return f"{item.op}(" + ", ".join(format_items(b) for b in item.branches) + ")"
    if isinstance(item, ir.Alternatives):
        return item.text
    if isinstance(item, ir.Optional):
        return format_item(item.body) + "?"
    raise TypeError(f"not an item: {item!r}")


def format_items(items: tuple[ir.Item, ...]) -> str:
    return " ".join(format_item(i) for i in items)


def format_setting(setting: ir.Setting) -> str:
    if setting.choices:
        return f"{setting.key}={{" + ",".join(format_value(v) for v in setting.choices) + "}"
    return f"{setting.key}={format_value(setting.value)}"


def format_statement(statement: ir.Statement) -> str:
    if isinstance(statement, ir.InputDecl):
        return "input " + format_value(statement.shape)
    if isinstance(statement, ir.ClassesDecl):
        return f"classes {statement.count}"
    if isinstance(statement, ir.TrainDecl):
        return "train " + " ".join(format_setting(s) for s in statement.settings)
    if isinstance(statement, ir.LetDecl):
        params = ",".join(p.name if p.default is None else f"{p.name}={p.default}"
                          for p in statement.params)
        head = f"{statement.name}({params})" if params else statement.name
        return f"let {head} = {format_items(statement.items)}"
    return format_items(statement.items)


def format_line(line: ir.Line) -> str:
    parts = []
    if line.statement is not None:
        parts.append(format_statement(line.statement))
    if line.comment is not None:
        parts.append(line.comment)
    return "  ".join(parts)


def format_spec(spec: ir.Spec) -> str:
    """The canonical text of a spec, ending in one newline."""
    return "".join(format_line(line) + "\n" for line in spec.lines)
