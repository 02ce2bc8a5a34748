"""Shape flow in pure Python: per-layer shapes, parameters, MACs, memory and receptive field.

This is what lets `check` and `summary` answer in milliseconds without TensorFlow, and it is
the single place that decides what a spec means numerically: the Keras backend builds its
layers from the rows of this report, so names and order cannot drift apart.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from cnnspec.language import ir
from cnnspec.language.errors import Diagnostic, Span, SpecError
from cnnspec.language.layers import (
    UNIT_WINDOW,
    LayerKind,
    ShapeProblem,
    count_text,
    fmt_shape,
    format_layer,
    kind_of,
)
from cnnspec.language.settings import (
    SETTING_FIELDS,
    augment_problem,
    resolve_settings,
    setting_problems,
)

DEFAULT_MAX_PARAMS = 10**9
MAX_LAYERS = 10_000  # far above any real CNN; keeps a checker run well under a second
BYTES_PER_VALUE = 4  # float32 activations


@dataclass(frozen=True)
class Row:
    """One Keras layer of the compiled model, as the checker predicts it."""

    layer: ir.Layer
    text: str
    keras_class: str
    keras_name: str
    input_shape: ir.Shape
    output_shape: ir.Shape
    trainable: int
    non_trainable: int
    macs: int
    activation_bytes: int
    receptive_field: tuple[int, int]
    implicit: bool = False
    # where the `let` block this layer comes from is used (None: written in the network)
    used_at: Span | None = None
    # the Keras names of the tensors this layer reads, in a graph (merges); () in a straight
    # stack, where every layer reads the one before
    inputs: tuple[str, ...] = ()
    # how many merges this layer is inside (for the indented summary)
    depth: int = 0

    @property
    def params(self) -> int:
        return self.trainable + self.non_trainable

    @property
    def line(self) -> int | None:
        """The network line this layer is part of: for a layer from a block, the line where
        the block is used (each use of a block is a different place in the network)."""
        if self.used_at is not None:
            return self.used_at.line
        return self.layer.span.line if self.layer.span else None

    @property
    def column(self) -> int | None:
        span = self.used_at or self.layer.span
        return span.column if span else None

    @property
    def defined_at(self) -> int | None:
        """The line of the `let` that wrote this layer, for a layer from a block; else None."""
        if self.used_at is None or self.layer.span is None:
            return None
        return self.layer.span.line

    @property
    def where(self) -> str:
        """The line as tables show it: `9`, or `9 (block at 7)` for a layer from a block."""
        if self.line is None:
            return ""
        if self.defined_at is not None:
            return f"{self.line} (block at {self.defined_at})"
        return str(self.line)


@dataclass(frozen=True)
class Report:
    """The checked network: input shape, one row per Keras layer, and totals."""

    name: str
    input_shape: ir.Shape
    classes: int
    rows: tuple[Row, ...]

    @property
    def trainable(self) -> int:
        return sum(r.trainable for r in self.rows)

    @property
    def non_trainable(self) -> int:
        return sum(r.non_trainable for r in self.rows)

    @property
    def params(self) -> int:
        return self.trainable + self.non_trainable

    @property
    def macs(self) -> int:
        return sum(r.macs for r in self.rows)

    @property
    def activation_bytes(self) -> int:
        """Bytes of all layer outputs for one image (what a forward pass keeps for backprop)."""
        return sum(r.activation_bytes for r in self.rows)

    @property
    def output_shape(self) -> ir.Shape:
        return self.rows[-1].output_shape if self.rows else self.input_shape

    @property
    def is_graph(self) -> bool:
        """Whether the model has merges: a functional keras.Model instead of a Sequential."""
        return any(r.inputs for r in self.rows)

    @property
    def own_head(self) -> bool:
        """True when the spec writes its own head (ends in softmax; see writes_own_head)."""
        return bool(self.rows) and not any(r.implicit for r in self.rows)

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "input_shape": list(self.input_shape),
            "classes": self.classes,
            "head": "own" if self.own_head else "implicit",
            "layers": [
                {
                    "line": r.line,
                    "column": r.column,
                    "defined_at": r.defined_at,
                    "text": r.text,
                    "keras_class": r.keras_class,
                    "keras_name": r.keras_name,
                    "input_shape": list(r.input_shape),
                    "output_shape": list(r.output_shape),
                    "trainable_params": r.trainable,
                    "non_trainable_params": r.non_trainable,
                    "params": r.params,
                    "macs": r.macs,
                    "activation_bytes": r.activation_bytes,
                    "receptive_field": list(r.receptive_field),
                    "implicit": r.implicit,
                    "inputs": list(r.inputs),
                    "depth": r.depth,
                }
                for r in self.rows
            ],
            "totals": {
                "params": self.params,
                "trainable_params": self.trainable,
                "non_trainable_params": self.non_trainable,
                "macs": self.macs,
                "activation_bytes": self.activation_bytes,
            },
        }


_new_object, _set_dict = object.__new__, object.__setattr__


def _row(**fields: Any) -> Row:
    """Row(**fields), every field given, without the frozen dataclass __init__'s per-field
    object.__setattr__ calls: a third of the time, and a report has a row per layer. The
    keyword dict is fresh, so it becomes the row's __dict__ as it is."""
    row = _new_object(Row)
    _set_dict(row, "__dict__", fields)
    return row


@lru_cache(maxsize=64)
def classifier(classes: int) -> tuple[ir.Layer, ...]:
    """The implicit head a spec ends with unless it writes its own: `dense<classes> softmax`.

    Kept per class count: the nodes are frozen, and made once their facts (canonical text,
    shape answers: layer_facts) are worked out once instead of at every check.
    """
    return (ir.Dense(classes), ir.Activation("softmax"))


def writes_own_head(layers: tuple[ir.Layer, ...] | list[ir.Layer]) -> bool:
    """The rule that turns the implicit classifier off: the network's last layer is `softmax`.

    Why this rule: a network that ends in softmax already produces class probabilities, so
    adding `dense<classes> softmax` after it would apply softmax twice (which is why such a
    spec used to be refused). The seed specs never end in softmax, so they keep the implicit
    head; All-CNN-C's `conv10(k=1) relu gap softmax` is written exactly as published.
    """
    return bool(layers) and isinstance(layers[-1], ir.Activation) and layers[-1].fn == "softmax"


OWN_HEAD = "softmax ends the network, so it writes its own head"
NO_LAYERS = "the spec has no layers"


_NOT_NAME = re.compile(r"[^A-Za-z0-9]+")
_FACTS = "_checker_facts"  # where layer_facts keeps its answer in a layer node's __dict__


def _keras_word(text: str) -> str:
    """The part of a layer's canonical text that names its Keras layer: `conv64` of
    `conv64(k=5) l2(.01)`, `flatten` for `|`."""
    word = text.partition(" ")[0].partition("(")[0]  # no modifiers/args
    if word == "|":
        word = "flatten"
    if not (word.isascii() and word.isalnum()):
        word = _NOT_NAME.sub("_", word).strip("_")
    return word


def layer_facts(layer: ir.Layer) -> tuple[str, str, LayerKind, Any, dict[ir.Shape, Any]]:
    """What a row takes from its node alone, worked out once per node (a node is frozen, and
    a repeat, a block used twice or the variants of a sweep share their nodes): the canonical
    text (format_layer), its Keras word, the table entry, its window (kernel, stride), and
    the node's shape answers per input shape (see _Walk.shape_rule), filled as they are met.

    The answers live with the facts, not the node, so the copies of a node that differ only
    in their span (the parser places one cached node per written word, parse._placed) share
    them: a word met again at a shape already seen costs one dict lookup.
    """
    try:
        return layer.__dict__[_FACTS]  # type: ignore[no-any-return]
    except KeyError:
        text = format_layer(layer)
        kind = kind_of(layer)
        facts = layer.__dict__[_FACTS] = (
            text, _keras_word(text), kind, kind.window(layer), {})
        return facts


def keras_name(layer: ir.Layer, implicit: bool, text: str | None = None) -> str:
    """A Keras layer name that points back at the text: `conv64_l3c1`, `classifier_dense10`.

    text is the layer's canonical text when the caller has it already."""
    return _keras_name(_keras_word(text or format_layer(layer)), implicit, layer.span)


def _keras_name(word: str, implicit: bool, span: Span | None) -> str:
    """keras_name from the layer's Keras word (see layer_facts) and its place."""
    if implicit or span is None:
        return f"classifier_{word}"
    return f"{word}_l{span.line}c{span.column}"


def check(spec: ir.Spec, max_params: int = DEFAULT_MAX_PARAMS) -> Report:
    """Walk the network's shapes; return the report or raise SpecError listing every problem."""
    steps = _steps(spec)
    problems: list[Diagnostic] = _settings_diagnostics(spec)
    written = [step for step, _ in steps if type(step) not in _MARKERS]
    own_head = isinstance(steps[-1][0], ir.Layer) and writes_own_head(written) if steps else False
    walk = _Walk(spec.input_shape, spec.classes, graph=len(written) != len(steps),
                 end=_network_end(steps))
    walk.run(steps, () if own_head else classifier(spec.classes), written)
    problems += walk.problems
    if own_head and walk.shape_known and walk.shape != (spec.classes,):
        problems.append(_own_head_problem(written[-1], walk.shape, spec.classes))
    report = Report(spec.name, spec.input_shape, spec.classes, tuple(walk.rows))
    if not problems and report.params > max_params:
        problems.append(_budget_problem(
            report, max_params, _classes_span(spec) or _network_end(steps)))
    if problems:
        raise _error(spec, problems)
    return report


def _network_end(steps: tuple[tuple[Any, Span | None], ...]) -> Span | None:
    """Where the written network ends in the text the user wrote: the block use its last
    layer came from (not that layer inside the block's `let` line), the merge it ends in (not
    the last layer of the merge's last branch), or its last layer."""
    if not steps:
        return None
    step, used_at = steps[-1]
    if used_at is not None:
        return used_at
    return step.merge.span if isinstance(step, ir.Join) else step.span


def _steps(spec: ir.Spec) -> tuple[tuple[Any, Span | None], ...]:
    """The spec's flow, or SpecError when it is not walked at all: it is a sweep, or it
    unrolls to too many layers (refused before unrolling: `(relu x1000)x1000` is a million
    layers).

    The flow is walked with the layer limit (Spec.flow_within), which counts as it goes: only
    a spec past the limit, or one the bounded walk cannot take, is counted on its own
    (_layer_limit, which places the refusal) before the flow is walked again, as it was
    before both were one pass.
    """
    if spec.has_sweep():
        raise _error(spec, [Diagnostic(
            "this spec holds sweep alternatives; check its variants instead",
            None,
            "`cnnspec expand FILE` lists them; `cnnspec check FILE` checks them all",
        )])
    try:
        steps = spec.flow_within(MAX_LAYERS)
    except ValueError:  # an item no flow takes (IR built by hand): the order below says which
        steps = None
    if steps is not None:
        return steps
    refused = _layer_limit(spec)
    if refused is not None:
        raise _error(spec, [refused])
    return spec.flow()


def _budget_problem(report: Report, max_params: int, head_at: Span | None) -> Diagnostic:
    """Over the parameter budget: placed at the layer with the most parameters. When that is
    the implicit classifier (`classes 100000000`), which the user did not write, at
    `head_at`: the `classes` line that sized it, else where the written network ends."""
    worst = max(report.rows, key=lambda r: r.params)
    if worst.implicit:
        where = head_at
        hint = ("use fewer classes, pool or stride more before the classifier, or raise "
                "--max-params")
        what = f"the classifier {worst.text}"
    else:
        where = worst.layer.span
        hint = "pool or stride more before it, use fewer units, or raise --max-params"
        what = worst.text
    return Diagnostic(
        f"the model has {report.params:,} parameters, over the budget of {max_params:,}; "
        f"{what} alone has {worst.params:,} (input {fmt_shape(worst.input_shape)})",
        where,
        hint,
    )


def _classes_span(spec: ir.Spec) -> Span | None:
    """Where `classes N` is written (None when the spec leaves it out: the default)."""
    for statement in spec.statements():
        if isinstance(statement, ir.ClassesDecl):
            return statement.span
    return None


class _Walk:
    """The shape walk over Spec.flow(): one Row per Keras layer, and every problem met.

    Mutable while it walks (the current shape, receptive field, the merges open around it);
    `check` reads its rows and problems once, into a frozen Report.
    """

    def __init__(self, input_shape: ir.Shape, classes: int, graph: bool,
                 end: Span | None = None) -> None:
        self.input_shape, self.classes, self.graph = input_shape, classes, graph
        self.end = end  # where the written network ends, for a problem with the implicit head
        self.rows: list[Row] = []
        self.problems: list[Diagnostic] = []
        self.shape: ir.Shape = input_shape
        self.shape_known = True
        self.rf, self.jump = (1, 1), (1, 1)
        self.source = "input"  # the Keras name of the tensor the next layer reads (graphs only)
        # one frame per open merge: its input (shape, source, rf, jump), each branch's output
        # (None for a branch with a shape problem), whether the input's shape was known, and
        # the `|`s met before the merge and at each branch's end
        self.frames: list[tuple[tuple[Any, ...], list[tuple[Any, ...] | None], bool,
                                list[int]]] = []
        self.used_names: dict[str, int] = {}
        # `|`s on the way from the input to here: each branch of a merge is its own way, so
        # `add(conv8 | dense4, conv8 | dense4)` crosses one per way
        self.bars = 0

    def run(self, steps: tuple[tuple[Any, Span | None], ...], head: tuple[ir.Layer, ...],
            written: list[ir.Layer]) -> None:
        """The written network's steps, then the implicit head (if any)."""
        for step, used_at in steps:
            if type(step) in _MARKERS:  # one set lookup per layer: stacks pay no more
                self.marker(step, used_at)
            else:
                self.layer(step, False, used_at, written)
        for layer in head:
            self.layer(layer, True, None, written)

    def marker(self, marker: ir.Fork | ir.NextBranch | ir.Join, used_at: Span | None) -> None:
        """A merge starts, moves on to its next branch, or combines its branches."""
        here = (self.shape, self.source, self.rf, self.jump)
        if isinstance(marker, ir.Fork):
            self.frames.append((here, [], self.shape_known, [self.bars]))
            return
        start, ends, known, bars = self.frames[-1]
        ends.append(here if self.shape_known else None)
        bars.append(self.bars)
        if isinstance(marker, ir.NextBranch):
            # every branch reads the merge's input: a problem in one does not hide the next's
            self.shape, self.source, self.rf, self.jump = start
            self.shape_known = known
            self.bars = bars[0]
            return
        self.frames.pop()
        self.bars = max(bars)
        complete = [end for end in ends if end is not None]
        self.shape_known = known and len(complete) == len(ends)
        if self.shape_known:
            self.join(marker.merge, start, complete, used_at)

    def join(self, merge: ir.Merge, start: tuple[Any, ...], ends: list[tuple[Any, ...]],
             used_at: Span | None) -> None:
        """The merge layer's row: its terms are the input and the branch (residual), or the
        branches."""
        terms = [start, *ends] if len(ends) == 1 else ends
        try:
            shape = _merge_shape(merge, start[0], [t[0] for t in terms], len(ends) == 1)
        except ShapeProblem as p:
            self.problems.append(Diagnostic(
                f"{merge.op}: {p.message}{_in_use(used_at)}", merge.span, p.hint))
            self.shape_known = False
            return
        self.shape = shape
        self.rf = (max(t[2][0] for t in terms), max(t[2][1] for t in terms))
        self.jump = (max(t[3][0] for t in terms), max(t[3][1] for t in terms))
        name = _unique(self.used_names, _merge_name(merge))
        self.rows.append(_row(
            layer=merge, text=merge.op, keras_class=_MERGE_CLASS[merge.op],
            keras_name=name, input_shape=terms[0][0], output_shape=shape, trainable=0,
            non_trainable=0, macs=0, activation_bytes=math.prod(shape) * BYTES_PER_VALUE,
            receptive_field=self.rf, implicit=False, used_at=used_at,
            inputs=tuple(t[1] for t in terms), depth=len(self.frames),
        ))
        self.source = name

    def layer(self, layer: ir.Layer, implicit: bool, used_at: Span | None,
              written: list[ir.Layer]) -> None:
        """One layer's row from the current shape, or the problem its shape rule found."""
        text, word, kind, window, answers = layer_facts(layer)
        if implicit and isinstance(layer, ir.Dense):
            text = word = f"dense{self.classes}"
        if layer.__class__ is ir.Flatten and layer.bar:  # type: ignore[attr-defined]
            self.bars += 1
            if self.bars == 2:
                self.problems.append(Diagnostic(
                    f"a second `|`: a spec has one trunk/head boundary{_in_use(used_at)}",
                    layer.span,
                    "remove this `|`; use `flatten` if you really mean to flatten again",
                ))
        if not self.shape_known:
            # after a shape error the shapes are unknown, but the rule above does not need
            # them: a second `|` is reported too (every error is listed)
            return
        shape = self.shape
        answer = answers.get(shape)
        if answer is None:
            try:
                answer = _shape_rule(kind, layer, shape, answers)
            except ShapeProblem as p:
                self.problems.append(
                    self.shape_problem(p, text, implicit, used_at, written, layer))
                self.shape_known = False
                return
        out, trainable, frozen, macs, activation_bytes = answer
        if window is not UNIT_WINDOW:  # a 1×1 stride-1 window leaves the field as it is
            self.advance_receptive_field(window)
        name = _unique(self.used_names, _keras_name(word, implicit, layer.span))
        self.rows.append(_row(
            layer=layer, text=text, keras_class=kind.keras_class, keras_name=name,
            input_shape=shape, output_shape=out, trainable=trainable, non_trainable=frozen,
            macs=macs, activation_bytes=activation_bytes, receptive_field=self.rf,
            implicit=implicit, used_at=used_at,
            inputs=(self.source,) if self.graph else (), depth=len(self.frames),
        ))
        self.shape = out
        self.source = name

    def advance_receptive_field(
        self, window: tuple[tuple[int, int], tuple[int, int]] | None
    ) -> None:
        """Grow the receptive field by a layer's window; a layer without one sees everything."""
        if window is None:
            self.rf = (self.input_shape[0], self.input_shape[1])
            return
        (kh, kw), (sh, sw) = window
        rf, jump = self.rf, self.jump
        self.rf = (min(rf[0] + (kh - 1) * jump[0], self.input_shape[0]),
                   min(rf[1] + (kw - 1) * jump[1], self.input_shape[1]))
        self.jump = (jump[0] * sh, jump[1] * sw)

    def shape_problem(self, p: ShapeProblem, text: str, implicit: bool, used_at: Span | None,
                      written: list[ir.Layer], layer: ir.Layer) -> Diagnostic:
        """A shape rule's refusal, placed at the layer; for the implicit head, at the last
        written layer (the user did not write the classifier)."""
        if implicit and not written:  # an empty file, or one with settings only
            return Diagnostic(
                NO_LAYERS, None,
                "write the network on a line of its own, e.g. `conv32 relu pool2 | dense64`")
        if implicit:
            return Diagnostic(
                f"the classifier dense{self.classes} needs a flat input, but the network "
                f"ends at {fmt_shape(self.shape)}",
                self.end,
                "end the trunk with `|` (flatten) or `gap`, then the dense head",
            )
        return Diagnostic(f"{text}: {p.message}{_in_use(used_at)}", layer.span, p.hint)


def _in_use(used_at: Span | None) -> str:
    """For a problem in a block's `let` line: which use of the block met it (a block used
    three times may fit the first two places and not the third)."""
    return "" if used_at is None else f" (in the block used at {used_at.line}:{used_at.column})"


_MERGE_CLASS = {"add": "Add", "concat": "Concatenate"}
_MARKERS = frozenset((ir.Fork, ir.NextBranch, ir.Join))


# a node's answers kept per input shape, at most: a spec meets a layer at a few shapes, and a
# long-lived process (the language server) must not grow a node's table without bound
MAX_SHAPE_ANSWERS = 64


def _shape_rule(kind: LayerKind, layer: ir.Layer, shape: ir.Shape,
                answers: dict[ir.Shape, Any]) -> tuple[Any, ...]:
    """The node's output shape, (trainable, non-trainable) counts, MACs and activation bytes
    at this input shape, kept in `answers` (its facts' table): they depend on the node's
    fields and the shape alone, and the same word meets the same shape again and again (a
    repeat, a block's uses, a sweep's variants). Raises the rule's ShapeProblem, never kept."""
    out = kind.shape(layer, shape)
    trainable, frozen = kind.params(layer, shape)
    answer = (out, trainable, frozen, kind.macs(layer, shape, out),
              math.prod(out) * BYTES_PER_VALUE)
    if len(answers) < MAX_SHAPE_ANSWERS:
        answers[shape] = answer
    return answer


def _unique(used: dict[str, int], name: str) -> str:
    """name, or name_2, name_3, ... when a repeat or a second block use made it already."""
    used[name] = used.get(name, 0) + 1
    return name if used[name] == 1 else f"{name}_{used[name]}"


def _merge_name(merge: ir.Merge) -> str:
    span = merge.span
    return f"{merge.op}_l{span.line}c{span.column}" if span else merge.op


def _merge_shape(
    merge: ir.Merge, given: ir.Shape, shapes: list[ir.Shape], residual: bool
) -> ir.Shape:
    """The output of `add`/`concat` over its terms' shapes, or ShapeProblem naming both
    disagreeing shapes and a fix. residual: the first term is the merge's input itself."""
    def name(i: int) -> str:
        if residual:
            return "its input" if i == 0 else "the branch"
        return f"branch {i + 1}"

    first = shapes[0]
    for i, other in enumerate(shapes[1:], 1):
        if merge.op == "add" and other != first:
            source, target = (first, other) if residual else (other, first)
            hint = (_projection_hint(merge, source, target, i)
                    if len(first) == len(other) == 3 else "make every branch end in one shape")
            raise ShapeProblem(
                f"{name(i)} gives {fmt_shape(other)} but {name(0)} is {fmt_shape(first)}; "
                "add needs equal shapes", hint)
        if merge.op == "concat" and (len(other) != len(first) or other[:-1] != first[:-1]):
            raise ShapeProblem(
                f"{name(i)} gives {fmt_shape(other)} but {name(0)} is {fmt_shape(first)}; "
                "concat needs the same size in all but the last (channel) axis",
                "stride or pool every branch alike")
    if merge.op == "add":
        return first
    return (*first[:-1], sum(s[-1] for s in shapes))


def _projection_hint(merge: ir.Merge, source: ir.Shape, target: ir.Shape, i: int) -> str:
    """How to bring `source` (the input, or branch i) to `target`: a 1×1 projection conv,
    where one can. A 1×1 conv with stride s makes n into ceil(n / s) (either padding), so it
    only shrinks, by whole factors: 32 -> 16 yes, 32 -> 30 or 8 -> 16 no."""
    h, w, c = target
    sh, sw = max(1, -(-source[0] // h)), max(1, -(-source[1] // w))
    if (-(-source[0] // sh), -(-source[1] // sw)) != (h, w):
        sizes = f"{source[0]}×{source[1]} into {h}×{w}"
        if len(merge.branches) == 1:
            return (f"no 1×1 projection turns {sizes} (a stride shrinks by whole factors); "
                    "keep the branch at its input's size, e.g. with `same` padding")
        return (f"no 1×1 projection turns branch {i + 1}'s {sizes} (a stride shrinks by whole "
                "factors); pad, stride and pool every branch alike")
    stride = "" if sh == sw == 1 else f",s={sh}" if sh == sw else f",s={sh}x{sw}"
    if len(merge.branches) == 1:
        return f"add a projection shortcut as a second branch, e.g. add(..., conv{c}(k=1{stride}))"
    return f"end branch {i + 1} with a projection to {fmt_shape(target)}, e.g. conv{c}(k=1{stride})"


def _own_head_problem(softmax: ir.Layer, shape: ir.Shape, classes: int) -> Diagnostic:
    """A written head whose output is not `classes` probabilities, at its softmax."""
    implicit = f"dense{classes} softmax"
    if len(shape) != 1:
        return Diagnostic(
            f"{OWN_HEAD}, but it gives {fmt_shape(shape)}, not a vector of {classes} "
            f"(`classes {classes}`)", softmax.span,
            "put `gap` or `|` before the softmax (with a layer of "
            f"{classes} maps or units), or remove the softmax to get the implicit `{implicit}`")
    return Diagnostic(
        f"{OWN_HEAD}, but it gives {shape[0]} values and `classes {classes}` needs {classes}",
        softmax.span,
        f"end with `dense{classes} softmax`, or remove this softmax to get the implicit "
        f"`{implicit}`")


def _layer_limit(spec: ir.Spec) -> Diagnostic | None:
    """A problem placed at the item where the unrolled network passes MAX_LAYERS, if it does.

    Counted per item in one pass (ir.Spec.layer_counts), so this costs the same on a spec of
    100,000 lines as walking it once.
    """
    body = spec.body
    counts = spec.layer_counts(body)
    total = sum(counts)
    if total <= MAX_LAYERS:
        return None
    running = 0
    for item, count in zip(body, counts, strict=True):
        running += count
        if running > MAX_LAYERS:
            alone = f"; this part alone is {count_text(count)}" if count > 1 else (
                "; the limit is passed here")
            return Diagnostic(
                f"the network unrolls to {count_text(total)} layers, over the limit of "
                f"{MAX_LAYERS:,}{alone}",
                getattr(item, "span", None),
                "lower the repeat counts (xN)" if count > 1 and _repeats(item, spec.blocks)
                else "a real CNN has far fewer layers; split the experiment",
            )
    return None  # not reached: the counts add up to total


def _repeats(item: ir.Item, blocks: dict[str, tuple[ir.Item, ...]]) -> bool:
    """Whether an item repeats anything (`x2`), inside its groups, merges and blocks: only then
    is "lower the repeat counts" the fix for too many layers. Each block is looked into once
    (a chain of blocks that each use the one before twice has exponentially many uses)."""
    seen: set[str] = set()
    todo = [item]
    while todo:
        it = todo.pop()
        if isinstance(it, ir.Repeat):
            if it.times > 1:
                return True
            todo.append(it.body)
        elif isinstance(it, ir.Group):
            todo.extend(it.items)
        elif isinstance(it, ir.Merge):
            todo.extend(i for branch in it.branches for i in branch)
        elif isinstance(it, ir.BlockRef):
            if it.items is not None:
                todo.extend(it.items)
            elif it.name not in seen:
                seen.add(it.name)
                todo.extend(blocks.get(it.name, ()))
    return False


def _settings_diagnostics(spec: ir.Spec) -> list[Diagnostic]:
    """Training settings that would fail in `train` (momentum with adam, ...), each placed at
    the setting it is about: whatever `check` accepts must train."""
    written = spec.settings
    if not written:
        return []
    spans: dict[str, Any] = {}
    values: dict[str, Any] = {}
    for setting in written:
        # the last one written is the one that counts; a setting the parser already refused
        # (unknown key, unreadable value: parse reports it) is left out
        if setting.key in SETTING_FIELDS and setting.value is not None:
            spans[setting.key] = setting.span
            values[setting.key] = setting.value
    pairs = tuple(values.items())
    try:
        findings = _setting_findings(pairs, spec.input_shape)
    except TypeError:  # a value that cannot be a key (not one the parser makes)
        findings = _setting_findings.__wrapped__(pairs, spec.input_shape)
    return [Diagnostic(message, spans.get(key), hint) for key, message, hint in findings]


@lru_cache(maxsize=256)
def _setting_findings(pairs: tuple[tuple[str, Any], ...], input_shape: ir.Shape
                      ) -> tuple[tuple[str, str, str | None], ...]:
    """What _settings_diagnostics reports for these settings and input shape, as (the key
    to point at, message, hint). Kept per distinct settings: they depend on nothing else,
    and the specs of a sweep, a batch or an edited file write the same `train` line again
    and again (resolving and judging the settings table is about a fifth of a check)."""
    settings = resolve_settings(dict(pairs))
    out = [(p.key, p.message, p.hint) for p in setting_problems(settings)]
    fits = augment_problem(settings, input_shape)
    if fits is not None:
        out.append(("augment", fits, "use a smaller crop or cutout (or crop(N,mode=zero))"))
    return tuple(out)


def _error(spec: ir.Spec, problems: list[Diagnostic]) -> SpecError:
    return SpecError(problems, spec.source, spec.filename)
