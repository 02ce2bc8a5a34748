"""Editor analysis of a `.cnn` document: diagnostics, hover, completion, blocks, symbols, format.

Pure Python over the parser and checker (no pygls, no TensorFlow), so every answer the
language server (cnnspec.editor.lsp) gives is tested here on plain text. Positions are 0-based
(line, character), as the Language Server Protocol counts them; the parser's spans are
1-based with an exclusive end column.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from cnnspec.language import ir
from cnnspec.language.checker import Report, Row, check
from cnnspec.language.errors import Span, SpecError
from cnnspec.language.layers import KINDS, fmt_shape
from cnnspec.language.parse import TRAIN_LINE, open_bracket, parse
from cnnspec.language.setting_values import (
    AUGMENTS,
    SCHEDULE_DOCS,
    SCHEDULE_EXAMPLES,
    SCHEDULES,
)
from cnnspec.language.settings import SETTINGS, Setting
from cnnspec.language.sweep import check_all_variants, first_variant, variant_count

ERROR, WARNING = 1, 2  # LSP DiagnosticSeverity values

Range = tuple[int, int, int, int]  # start line, start character, end line, end character


@dataclass(frozen=True)
class Problem:
    range: Range
    message: str
    severity: int = ERROR


@dataclass(frozen=True)
class Completion:
    label: str
    detail: str
    documentation: str
    kind: str  # "layer", "argument", "setting", "value", "block", "keyword"


@dataclass(frozen=True)
class Symbol:
    name: str
    kind: str  # "block" or "header"
    range: Range
    selection: Range


def span_range(span: Span | None, text: str = "") -> Range:
    """A parser span as a 0-based range; no span: the first character of the document."""
    if span is None:
        return (0, 0, 0, 1)
    return (span.line - 1, span.column - 1, span.end_line - 1, span.end_column - 1)


def _contains(span: Span | None, line: int, character: int) -> bool:
    """Whether 0-based (line, character) lies inside a parser span."""
    if span is None:
        return False
    pos = (line + 1, character + 1)
    return (span.line, span.column) <= pos < (span.end_line, span.end_column)


# -- diagnostics -------------------------------------------------------------------------------


def diagnostics(text: str, max_variants: int | None = None,
                name: str | None = None) -> list[Problem]:
    """Every problem `cnnspec check` reports for this text, each at its token's range; the hint
    follows the message. For a sweep, problems of any variant name it (`in variant …:`), after
    `name` (the file's stem, as `cnnspec check` names them) when given."""
    try:
        spec = parse(text, name=name)
        kwargs = {} if max_variants is None else {"max_variants": max_variants}
        check_all_variants(spec, **kwargs)
    except SpecError as err:
        out = []
        for d in err.diagnostics:
            message = d.message + (f"\nhint: {d.hint}" if d.hint else "")
            out.append(Problem(span_range(d.span), message))
        return out
    return []


# -- model reports -----------------------------------------------------------------------------


def _report(text: str, name: str | None = None) -> tuple[ir.Spec | None, Report | None]:
    """The parsed spec (named `name`, the file's stem, when given) and the report of its first
    variant (grid order: each choice's first alternative), or None where they fail."""
    try:
        spec = parse(text, name=name)
    except SpecError:
        return None, None
    try:
        return spec, check(first_variant(spec).spec)
    except SpecError:
        return spec, None


def _variant_note(spec: ir.Spec | None) -> str:
    """For a sweep, which variant a hover's figures are of (they differ between variants)."""
    count = 1 if spec is None else variant_count(spec)
    if count == 1:
        return ""
    return f"\n\n(variant `{first_variant(spec).name}`, the first of {count:,})"


def _si(n: float) -> str:
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= size:
            return f"{n / size:.2f}{unit}"
    return str(int(n))


def _rf(row: Row) -> str:
    return "x".join(str(v) for v in dict.fromkeys(row.receptive_field))


def row_hover(row: Row) -> str:
    return (
        f"**{row.text}** → `{row.keras_name}` ({row.keras_class})\n\n"
        f"{fmt_shape(row.input_shape)} → {fmt_shape(row.output_shape)}\n\n"
        f"params {row.params:,} (trainable {row.trainable:,}, "
        f"non-trainable {row.non_trainable:,}) · MACs {_si(row.macs)} · RF {_rf(row)}"
    )


def totals(rows: list[Row] | tuple[Row, ...]) -> str:
    trainable = sum(r.trainable for r in rows)
    non_trainable = sum(r.non_trainable for r in rows)
    macs = sum(r.macs for r in rows)
    return (f"{len(rows)} layers · params {trainable + non_trainable:,} (trainable "
            f"{trainable:,}, non-trainable {non_trainable:,}) · MACs {_si(macs)}")


def _model_hover(report: Report) -> str:
    head = "its own head" if report.own_head else f"implicit head dense{report.classes} softmax"
    return (f"**{report.name}**: {fmt_shape(report.input_shape)} → "
            f"{fmt_shape(report.output_shape)}\n\n{totals(report.rows)}\n\n{head}")


def _setting_entry(key: str) -> Setting | None:
    """The table's entry for a key a spec may write (an alias too)."""
    return SETTINGS.by_key.get(key)


def setting_doc(key: str) -> str | None:
    """Meaning, default and values of a training setting (from the table), or None for an
    unknown key."""
    e = _setting_entry(key)
    if e is None:
        return None
    default = e.default
    if default is None or isinstance(default, bool):
        shown = "none" if default is None else str(default).lower()
    else:
        shown = str(default) if isinstance(default, int | float | str) else e.written(default)
    flag = f" · command line: `{e.flag}`" if e.flag else ""
    return (f"**{e.name}**: {e.help}\n\ndefault: `{shown}` · values: {e.allowed()}{flag}")


def setting_value_completions(e: Setting) -> list[Completion]:
    """What may follow `key=`: its words, or the forms of a schedule or an augmentation."""
    if e.kind == "schedule":
        return [Completion(example, e.name, SCHEDULE_DOCS.get(kind, ""), "value")
                for kind, example in zip(SCHEDULES, SCHEDULE_EXAMPLES, strict=True)]
    if e.kind == "augment":
        return [Completion(w, e.name, e.help, "value")
                for w in ("none", "flip", "crop4", "cutout8", "flip+crop4+cutout8")]
    return [Completion(v, e.name, e.help, "value") for v in e.values]


def layer_doc(word: str) -> str | None:
    kind = KINDS.get(word)
    if kind is None:
        return None
    keras = f" (Keras `{kind.keras_class}`)" if kind.keras_class else ""
    return f"**{kind.spelling}**{keras}: {kind.doc}"


_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _word_at(text: str, line: int, character: int) -> tuple[str, int, int] | None:
    lines = text.split("\n")
    if not 0 <= line < len(lines):
        return None
    src = lines[line]
    for m in re.finditer(r"[A-Za-z_][A-Za-z0-9_.]*", src):
        if m.start() <= character <= m.end():
            return m.group(), m.start(), m.end()
    return None


def hover(text: str, line: int, character: int, name: str | None = None) -> str | None:
    """Markdown for what is under the 0-based position, or None. On a sweep, figures are
    those of its first variant, named at the end (after `name`, the file's stem)."""
    spec, report = _report(text, name)
    shown = _hover(text, line, character, spec, report)
    if shown is None:
        return None
    markdown, of_the_model = shown
    return markdown + _variant_note(spec) if of_the_model else markdown


def _hover(text: str, line: int, character: int, spec: ir.Spec | None,
           report: Report | None) -> tuple[str, bool] | None:
    """The hover's markdown, and whether it shows the model's figures (shapes, params)."""
    word = _word_at(text, line, character)
    src = text.split("\n")[line] if 0 <= line < len(text.split("\n")) else ""
    code = _code(src)
    if re.match(r"\s*(input|classes)\b", src):
        return (_model_hover(report), True) if report else None
    if TRAIN_LINE.match(code):
        return _train_hover(code, character, word, report)
    in_value = word is not None and open_bracket(code[:word[1]]) in ("args", "{")
    if word and in_value:  # `conv8(same)`: an argument or its value, never a block
        doc = _argument_doc(code, word[1], word[0])
        if doc is not None:
            return doc, False
    if spec is not None and not in_value:
        names = block_names(text)
        if word and word[0] in names and report is not None:
            rows = _block_rows(report, first_variant(spec).spec, word[0], line, character,
                               names[word[0]][0])
            expansion = " ".join(r.text for r in rows)
            return (f"**{word[0]}** = {expansion}\n\n{totals(rows)}", True) if rows else None
        if report is not None:
            for r in report.rows:
                if r.used_at is None and _contains(r.layer.span, line, character):
                    return row_hover(r), True
            for r in report.rows:
                if r.used_at is not None and _contains(r.layer.span, line, character):
                    return row_hover(r) + f"\n\n(first use, at line {r.used_at.line})", True
    if word:
        base = re.match(r"[A-Za-z_]+", word[0])
        doc = layer_doc(word[0]) or (layer_doc(base.group()) if base else None)
        return None if doc is None else (doc, False)
    return None


def _train_hover(code: str, character: int, word: tuple[str, int, int] | None,
                 report: Report | None) -> tuple[str, bool] | None:
    """On a `train` line: the setting whose `key=value` the position is in (a value may hold
    spaces inside its brackets, `lr=onecycle(.4, warm=.2)`), an argument of a call its own
    doc; elsewhere on the line the model."""
    keys = _setting_keys(code)
    for i, m in enumerate(keys):
        end = keys[i + 1].start() if i + 1 < len(keys) else len(code.rstrip())
        if m.start() <= character < end:
            if word is not None and word[1] >= m.end():
                doc = _argument_doc(code, word[1], word[0])
                if doc is not None:
                    return doc, False
            doc = setting_doc(m.group(1))
            return None if doc is None else (doc, False)
    return (_model_hover(report), True) if report else None


def _setting_keys(code: str) -> list[re.Match[str]]:
    """The `key=` of each setting on a train line: those outside any bracket (a call's `warm=`
    is its argument)."""
    return [m for m in re.finditer(r"([A-Za-z_][A-Za-z0-9_]*)=", code)
            if open_bracket(code[:m.start()]) is None and not TRAIN_LINE.fullmatch(
                code[:m.end() - 1])]


# the call a position is inside: its word (a layer's, a schedule's, an augmentation's)
_CALL_BEFORE = re.compile(r"([A-Za-z_][A-Za-z0-9_.]*)(?:\{[^{}]*\})?\(([^()]*)$")


def _call_params(code: str, start: int) -> tuple[str, tuple[Any, ...]] | None:
    """(the call's word, its parameters) for a position inside `word(...)`: a layer's
    options, a schedule's or an augmentation's arguments; None for anything else."""
    call = _CALL_BEFORE.search(code[:start])
    if call is None:
        return None
    word = call.group(1)
    kind = KINDS.get(word) or KINDS.get(_split_kind(word))
    if kind is not None:
        return kind.word, kind.options
    bare = re.match(r"[A-Za-z_]+", word)
    name = bare.group() if bare else word
    if name in SCHEDULES:
        return name, tuple(p for p, _ in SCHEDULES[name])
    if name in AUGMENTS:
        return name, AUGMENTS[name]
    return None


def _argument_doc(code: str, start: int, word: str) -> str | None:
    """The doc of an argument's name or bare value (`k` or `same` in `conv8(k=3,same)`,
    `warm` in `onecycle(.4,warm=.2)`), or None."""
    found = _call_params(code, start)
    if found is None:
        return None
    call, params = found
    for p in params:
        if word in p.names or word == p.field or word in p.flags:
            return f"**{word}** ({call}'s `{p.names[0] if p.names else p.field}`): {p.doc}"
    return None


def _block_rows(report: Report, spec: ir.Spec, name: str, line: int, character: int,
                let_line: int) -> list[Row]:
    """The rows of one use of block `name`: the use under the position, else the first use
    written in the network, else (a block used only inside others) its own layers."""
    nodes = _use_nodes(spec)  # one walk: a hover stays linear in the network's size
    uses = [r.used_at for r in report.rows if r.used_at is not None
            and r.used_at.line == line + 1 and r.used_at.column - 1 <= character]
    if uses:
        return _one_use(report, spec, nodes, max(uses, key=lambda span: span.column))
    for r in report.rows:
        node = nodes.get(r.used_at) if r.used_at is not None else None
        if node is not None and node.name == name:
            return _one_use(report, spec, nodes, r.used_at)
    rows: list[Row] = []
    for r in report.rows:  # its layers at their first place (the `let` line's own)
        if r.used_at is not None and r.defined_at == let_line + 1:
            if rows and r.used_at != rows[0].used_at:
                break
            rows.append(r)
    # `let v = u x2` repeats u inside v: both copies share v's use, so cut to one expansion
    return rows[:spec.layer_count(ir.BlockRef(name))] if name in spec.blocks else rows


def _one_use(report: Report, spec: ir.Spec, nodes: dict[Span, ir.BlockRef],
             used_at: Span | None) -> list[Row]:
    """The rows one use makes: `u x2` repeats its use, whose rows all share its place, so
    they are cut to the layers (and merges) one expansion holds."""
    rows = [r for r in report.rows if r.used_at == used_at]
    node = nodes.get(used_at) if used_at is not None else None
    return rows[:spec.layer_count(node)] if node is not None else rows


def _use_nodes(spec: ir.Spec) -> dict[Span, ir.BlockRef]:
    """Each block use written in the network's lines (where rows' `used_at` point), by place."""
    found: dict[Span, ir.BlockRef] = {}
    todo: list[Any] = list(spec.body)
    while todo:
        item = todo.pop()
        if isinstance(item, ir.BlockRef):
            if item.span is not None:
                found.setdefault(item.span, item)
        elif isinstance(item, ir.Group):
            todo.extend(item.items)
        elif isinstance(item, ir.Repeat | ir.Optional):
            todo.append(item.body)
        elif isinstance(item, ir.Merge):
            todo.extend(i for branch in item.branches for i in branch)
    return found


def inlay_hints(text: str) -> list[tuple[int, int, str]]:
    """(line, character, label): each network line's output shape at the end of its code, as
    spec comments write it by hand (`→ 16×16×64`). None for a sweep (its variants differ) or
    a text that does not check."""
    spec, report = _report(text)
    if spec is None or report is None or variant_count(spec) > 1:
        return []
    last: dict[int, Row] = {}
    for r in report.rows:
        if not r.implicit and r.line is not None:
            last[r.line - 1] = r
    lines = text.split("\n")
    out = []
    for ln, r in sorted(last.items()):
        if 0 <= ln < len(lines):
            out.append((ln, len(_code(lines[ln]).rstrip()), f"→ {fmt_shape(r.output_shape)}"))
    return out


# -- completion --------------------------------------------------------------------------------


_LET = re.compile(r"^\s*let\s+([A-Za-z_][A-Za-z0-9_]*)", re.M)


def block_names(text: str) -> dict[str, tuple[int, int, int]]:
    """name -> (0-based line, start, end character) of each `let`, read from the text alone so
    that a half-typed document still has its blocks."""
    out: dict[str, tuple[int, int, int]] = {}
    for i, src in enumerate(text.split("\n")):
        m = _LET.match(src)
        if m and m.group(1) not in out:
            out[m.group(1)] = (i, m.start(1), m.end(1))
    return out


def _split_kind(word: str) -> str:
    m = re.match(r"[A-Za-z_]+?(?=[0-9.]|$)", word)
    return m.group() if m else word


# what follows `input ` and `classes ` (height x width x channels; the number of classes)
_HEADER_VALUES = {
    "input": (("32x32x3", "CIFAR-10 and CIFAR-100 images"), ("28x28x1", "MNIST-sized images"),
              ("64x64x3", "64-pixel colour images")),
    "classes": (("10", "CIFAR-10"), ("100", "CIFAR-100")),
}


def completions(text: str, line: int, character: int) -> list[Completion]:
    lines = text.split("\n")
    before = lines[line][:character] if 0 <= line < len(lines) else ""
    if "#" in before:
        return []
    if TRAIN_LINE.match(before):
        return _train_completions(before)
    header = re.match(r"\s*(input|classes)\s", before)
    if header:  # a header line takes a shape or a count, never a layer word
        return [Completion(value, header.group(1), doc, "value")
                for value, doc in _HEADER_VALUES[header.group(1)]]
    if open_bracket(before) == "args":  # `conv8(`, `conv{f}(`, `unit(`: what the call takes
        call = _CALL_BEFORE.search(before)
        params = block_parameters(text).get(call.group(1)) if call else None
        if params is not None:
            return [Completion(f"{p}=", "parameter", f"parameter of block {call.group(1)}",
                               "argument") for p in params]
        found = _call_params(before, len(before))
        return _argument_completions(found[1]) if found else []
    out = [Completion(k.spelling, k.keras_class, layer_doc(w) or "", "layer")
           for w, k in KINDS.items() if w == k.word]
    out += [Completion(n, "block", f"let {n} (line {ln + 1})", "block")
            for n, (ln, _, _) in block_names(text).items()]
    if re.fullmatch(r"\s*[A-Za-z]*", before):  # the first word of a line: may be a keyword
        out += [Completion(w, "keyword", "", "keyword") for w in ("input", "classes",
                                                                   "train", "let")]
    return out


def _argument_completions(params: tuple[Any, ...]) -> list[Completion]:
    out = []
    for p in params:
        out.append(Completion(f"{p.names[0]}=" if p.names else p.field, p.field, p.doc,
                              "argument"))
        out += [Completion(f, p.field, p.doc, "value") for f in p.flags]
    return out


def _train_completions(before: str) -> list[Completion]:
    """On a `train` line: setting keys; after `key=` (or inside its `{…}`) its values; inside a
    call (`onecycle(`, `crop4(`) the call's arguments."""
    inside = open_bracket(before)
    if inside == "args":
        found = _call_params(before, len(before))
        return _argument_completions(found[1]) if found else []
    keys = _setting_keys(before)
    typing_value = re.search(r"=[^\s=]*$", before)  # `lr=`, `augment=flip+`
    if keys and (inside == "{" or typing_value):
        e = _setting_entry(keys[-1].group(1))
        return setting_value_completions(e) if e else []
    return [Completion(e.name, e.help, setting_doc(e.name) or "", "setting")
            for e in SETTINGS.spec_entries]


_LET_PARAMS = re.compile(r"^\s*let\s+([A-Za-z_][A-Za-z0-9_]*)\s*\(([^()]*)\)")


def block_parameters(text: str) -> dict[str, list[str]]:
    """name -> its parameters' names, for each block with parameters (`let unit(f, s=1)`),
    read from the text alone as block_names is."""
    out: dict[str, list[str]] = {}
    for src in text.split("\n"):
        m = _LET_PARAMS.match(_code(src))
        if m and m.group(1) not in out:
            out[m.group(1)] = [p.partition("=")[0].strip() for p in m.group(2).split(",")
                               if p.partition("=")[0].strip()]
    return out


# -- blocks ------------------------------------------------------------------------------------


def _code(src: str) -> str:
    """A line without its comment (same length: the comment blanked)."""
    i = src.find("#")
    return src if i < 0 else src[:i] + " " * (len(src) - i)


def _argument_name(code: str, start: int, end: int) -> bool:
    """Whether code[start:end] names an argument (`s` of `conv8(s=2)`), not a block."""
    return code[end:end + 1] == "=" and code[:start].rstrip()[-1:] in ("(", ",")


def _block_at(text: str, line: int, character: int) -> str | None:
    """The block whose name is under the position: not in a comment, not an argument's name."""
    lines = text.split("\n")
    if not 0 <= line < len(lines):
        return None
    code = _code(lines[line])
    word = _word_at(code, 0, character)
    if word is None:
        return None
    name = _IDENT.match(word[0])
    if name is None or _argument_name(code, word[1], word[1] + name.end()) or open_bracket(
            code[:word[1]]) in ("args", "{"):  # `conv8(same)`: a value, as references says
        return None
    return name.group() if name.group() in block_names(text) else None


def definition(text: str, line: int, character: int) -> Range | None:
    name = _block_at(text, line, character)
    if name is None:
        return None
    ln, start, end = block_names(text)[name]
    return (ln, start, ln, end)


def references(text: str, line: int, character: int,
               include_declaration: bool = True) -> list[Range]:
    name = _block_at(text, line, character)
    if name is None:
        return []
    decl = block_names(text)[name]
    pattern = re.compile(rf"(?<![A-Za-z0-9_.{{]){re.escape(name)}(?![A-Za-z0-9_}}])")
    out = []
    for i, src in enumerate(text.split("\n")):
        code = _code(src)
        if TRAIN_LINE.match(code):  # `augment=flip`: a setting's value, never a block
            continue
        for m in pattern.finditer(code):
            if (i, m.start(), m.end()) == decl:
                if include_declaration:
                    out.append((i, m.start(), i, m.end()))
            elif not _argument_name(code, m.start(), m.end()) and open_bracket(
                    code[:m.start()]) not in ("args", "{"):  # `conv8(same)`: a value
                out.append((i, m.start(), i, m.end()))
    return out


# -- symbols and formatting --------------------------------------------------------------------


def symbols(text: str) -> list[Symbol]:
    out = []
    for i, src in enumerate(text.split("\n")):
        code = _code(src).rstrip()
        m = _LET.match(code)
        if m:
            out.append(Symbol(m.group(1), "block", (i, 0, i, len(code)),
                              (i, m.start(1), i, m.end(1))))
            continue
        h = re.match(r"\s*(input|classes|train)\b", code)
        if h:
            out.append(Symbol(code.strip(), "header", (i, 0, i, len(code)),
                              (i, h.start(1), i, h.end(1))))
    return out


def formatted(text: str) -> str | None:
    """The canonical text (`cnnspec fmt`), or None when the text does not parse."""
    from cnnspec.language.format import format_spec

    try:
        return format_spec(parse(text))
    except SpecError:
        return None
