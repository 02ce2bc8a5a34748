"""Sweeps written in the language: expand a spec's alternatives into concrete, named variants.

`drop{.25,.5}`, `conv{32,64}`, `bn?` and `lr={.01,.05}` are sweep points; the variants are
their cartesian product, in source order, each a plain spec whose name says what was picked:
`exp7[drop=.5,lr=.05]`. Every variant is checked before anything trains.
"""

from __future__ import annotations

import itertools
import random
import sys
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace

from cnnspec.language import ir
from cnnspec.language.checker import DEFAULT_MAX_PARAMS, NO_LAYERS, Report, check
from cnnspec.language.errors import Diagnostic, Span, SpecError
from cnnspec.language.format import format_item, format_value
from cnnspec.language.layers import count_text

DEFAULT_MAX_VARIANTS = 256


@dataclass(frozen=True)
class Point:
    """One sweep point: a readable key and the label of each of its choices."""

    key: str
    labels: tuple[str, ...]
    line: int | None
    column: int | None = None


@dataclass(frozen=True)
class Variant:
    """One concrete spec of a sweep, with the choices that made it."""

    name: str
    choices: tuple[tuple[str, str], ...]
    spec: ir.Spec


def _where(span: Span | None) -> tuple[int | None, int | None]:
    return (span.line, span.column) if span is not None else (None, None)


def _walk_points(spec: ir.Spec) -> list[Point]:
    points: list[Point] = []

    def item(it: ir.Item) -> None:
        if isinstance(it, ir.Alternatives):
            points.append(Point(it.key, it.labels, *_where(it.span)))
        elif isinstance(it, ir.Optional):
            text = format_item(it.body)
            points.append(Point(text, ("+", "-"), *_where(it.span)))
            item(it.body)
        elif isinstance(it, ir.Group):
            for i in it.items:
                item(i)
        elif isinstance(it, ir.Repeat):
            item(it.body)
        elif isinstance(it, ir.Merge):
            for branch in it.branches:
                for i in branch:
                    item(i)

    for st in spec.statements():
        if isinstance(st, ir.LetDecl | ir.LayerLine):
            for i in st.items:
                item(i)
        elif isinstance(st, ir.TrainDecl):
            for s in st.settings:
                if s.choices:
                    points.append(Point(s.key, tuple(format_value(v) for v in s.choices),
                                        *_where(s.span)))
    return points


def sweep_points(spec: ir.Spec) -> list[Point]:
    """The spec's sweep points in source order, with unique, readable keys.

    A key written once is the key itself (`drop`, `lr`, `bn?`'s `bn`). A key written more than
    once gets `@line` when that tells its points apart, else `@line:col` (`conv@1:5`,
    `conv@1:12` for two `conv{8,16}` on line 1), and an ordinal `#n` as the last resort
    (points built without a position).
    """
    points = _walk_points(spec)
    counts = Counter(p.key for p in points)
    if all(n == 1 for n in counts.values()):
        return points
    by_line = Counter((p.key, p.line) for p in points if p.line is not None)
    named: list[Point] = []
    for p in points:
        if counts[p.key] == 1:
            named.append(p)
        elif p.line is not None and by_line[(p.key, p.line)] == 1:
            named.append(replace(p, key=f"{p.key}@{p.line}"))
        elif p.line is not None and p.column is not None:
            named.append(replace(p, key=f"{p.key}@{p.line}:{p.column}"))
        else:
            named.append(p)
    # whatever still collides (no position, or two points at one position) gets an ordinal
    final = Counter(p.key for p in named)
    seen: Counter[str] = Counter()
    out = []
    for p in named:
        if final[p.key] > 1:
            seen[p.key] += 1
            p = replace(p, key=f"{p.key}#{seen[p.key]}")
        out.append(p)
    return out


def _product(radices: Iterable[int]) -> int:
    """The product of the choice counts, fast even for a huge number of points: a spec of 200k
    `relu?` is 2**200000, one pow instead of 200k ever-longer multiplications."""
    total = 1
    for radix, times in Counter(radices).items():
        total *= radix**times
    return total


def variant_count(spec: ir.Spec) -> int:
    """How many variants `expand` yields at most, without building any: the product of every
    sweep point's choice count (fewer when a point sits in a part a variant can leave out:
    its choices make one variant there). Counted on the same walk `_choose` consumes choices
    in, so a point inside a `let` block (one choice for every use) or a repeat (one choice
    for every copy) counts once, as expansion treats it."""
    return _product(len(p.labels) for p in _walk_points(spec))


def _decode(index: int, radices: list[int]) -> tuple[int, ...]:
    """Grid index -> one choice per point, mixed radix with the last point varying fastest
    (itertools.product's order, so sorted indices are grid order)."""
    picks = []
    for radix in reversed(radices):
        index, digit = divmod(index, radix)
        picks.append(digit)
    return tuple(reversed(picks))


def sample_picks(radices: list[int], k: int, seed: int = 0) -> list[tuple[int, ...]]:
    """k distinct grid positions drawn at random with seed, in grid order, never enumerating
    the product.

    Indices come from `random.Random(seed).sample(range(total), k)` (range is lazy), which is
    the same draw as sampling the enumerated grid, so a seed picks the same variants as before.
    A grid too large for range's len (over 2**63) draws each point's choice instead and skips
    repeats: also uniform over the grid, without replacement.
    """
    total = _product(radices)
    if k >= total:
        return list(itertools.product(*(range(r) for r in radices)))
    rng = random.Random(seed)
    if total <= sys.maxsize:
        return [_decode(i, radices) for i in sorted(rng.sample(range(total), k))]
    chosen: set[tuple[int, ...]] = set()
    while len(chosen) < k:
        chosen.add(tuple(rng.randrange(r) for r in radices))
    return sorted(chosen)


def _choose(spec: ir.Spec, picks: tuple[int, ...]) -> ir.Spec:
    """The spec with every sweep point replaced by the picked choice (same walk order)."""
    return _choose_tracked(spec, picks)[0]


def _choose_tracked(spec: ir.Spec, picks: tuple[int, ...]) -> tuple[ir.Spec, frozenset[int]]:
    """`_choose`, and the points (indices) whose choice the network does not hold: written
    inside an optional part left out (`drop{.1,.2}?`, `(conv8 bn?)?`), or in a block no
    part of the network uses any more (`let u = conv8 drop{.1,.2}` used only as `u?`)."""
    position = 0  # the index of the next point, in `_walk_points`' order
    absent: set[int] = set()
    block_points: dict[str, range] = {}  # a block's name -> the points of its (last) let line

    def items(seq: tuple[ir.Item, ...]) -> tuple[ir.Item, ...]:
        out: list[ir.Item] = []
        for it in seq:
            chosen = item(it)
            if chosen is not None:
                out.append(chosen)
        return tuple(out)

    def item(it: ir.Item) -> ir.Item | None:
        nonlocal position
        if isinstance(it, ir.Alternatives):
            position += 1
            return it.options[picks[position - 1]]
        if isinstance(it, ir.Optional):
            position += 1
            keep = picks[position - 1] == 0
            start = position
            body = item(it.body)
            if not keep:
                absent.update(range(start, position))
            return body if keep else None
        if isinstance(it, ir.Group):  # one left empty is nothing: the language has no `()`,
            kept = items(it.items)  # and the variant's text (which cannot write one) parses
            return replace(it, items=kept) if kept else None  # back to this very IR
        if isinstance(it, ir.Repeat):
            body = item(it.body)
            return None if body is None else replace(it, body=body)
        if isinstance(it, ir.Merge):
            return replace(it, branches=tuple(items(b) for b in it.branches))
        return it

    def statement(st: ir.Statement | None) -> ir.Statement | None:
        nonlocal position
        if isinstance(st, ir.LetDecl):
            start = position
            chosen = replace(st, items=items(st.items))
            block_points[st.name] = range(start, position)
            return chosen
        if isinstance(st, ir.LayerLine):
            return replace(st, items=items(st.items))
        if isinstance(st, ir.TrainDecl):
            settings = []
            for s in st.settings:
                if s.choices:
                    position += 1
                    s = replace(s, value=s.choices[picks[position - 1]], choices=())
                settings.append(s)
            return replace(st, settings=tuple(settings))
        return st

    lines = tuple(replace(ln, statement=statement(ln.statement)) for ln in spec.lines)
    chosen = replace(spec, lines=lines)
    if block_points:
        used = _blocks_used(chosen)
        for name, points in block_points.items():
            if name not in used:
                absent.update(points)
    return chosen, frozenset(absent)


def _blocks_used(spec: ir.Spec) -> set[str]:
    """The blocks the network uses, directly or through other blocks."""
    lets = {st.name: st.items for st in spec.statements() if isinstance(st, ir.LetDecl)}

    def refs(seq: Iterable[ir.Item]) -> set[str]:
        out: set[str] = set()
        for it in seq:
            if isinstance(it, ir.BlockRef):
                out.add(it.name)
                out |= refs(it.items or ())
            elif isinstance(it, ir.Group):
                out |= refs(it.items)
            elif isinstance(it, ir.Repeat | ir.Optional):
                out |= refs((it.body,))
            elif isinstance(it, ir.Merge):
                for branch in it.branches:
                    out |= refs(branch)
        return out

    used: set[str] = set()
    todo = refs(item for st in spec.statements() if isinstance(st, ir.LayerLine)
                for item in st.items)
    while todo:
        name = todo.pop()
        if name not in used:
            used.add(name)
            todo |= refs(lets.get(name, ()))
    return used


def _canonical(spec: ir.Spec, picks: tuple[int, ...]) -> tuple[tuple[int, ...], ir.Spec,
                                                                  frozenset[int]]:
    """The picks with every choice the network does not hold set to the first (so the
    variants that differ only there are one), the spec they make, and those points."""
    chosen, absent = _choose_tracked(spec, picks)
    if any(picks[i] for i in absent):
        picks = tuple(0 if i in absent else pick for i, pick in enumerate(picks))
        chosen, absent = _choose_tracked(spec, picks)
    return picks, chosen, absent


def canonical_labels(spec: ir.Spec, points: list[Point] | tuple[Point, ...],
                     labels: tuple[str, ...]) -> tuple[str, ...]:
    """One label per point, as the variant that network is (see `_canonical`): how a TPE
    study's suggestion finds its variant among `expand`'s."""
    picks = tuple(p.labels.index(label) for p, label in zip(points, labels, strict=True))
    canonical, _, _ = _canonical(spec, picks)
    return tuple(p.labels[i] for p, i in zip(points, canonical, strict=True))


def expand(
    spec: ir.Spec,
    max_variants: int = DEFAULT_MAX_VARIANTS,
    sample: int | None = None,
    seed: int = 0,
) -> list[Variant]:
    """All variants of a sweep spec (or `sample` of them, chosen with `seed`, in grid order); a
    plain spec is its own single variant.

    Raises SpecError when more than max_variants would be built: the count is a product of
    choice counts, so an over-large sweep is refused before anything is built, and a sample
    of any sweep, however large, is drawn without enumerating it.
    """
    points = sweep_points(spec)
    if not points:
        return [Variant(spec.name, (), spec)]
    radices = [len(p.labels) for p in points]
    total = _product(radices)
    if sample is not None and sample < 1:
        raise SpecError([Diagnostic(f"--sample must be at least 1, not {sample}")],
                        spec.source, spec.filename)
    if sample is not None and sample < total:
        if sample > max_variants:
            raise SpecError([Diagnostic(
                f"a sample of {sample:,} variants is over the limit of {max_variants:,} "
                f"(the sweep has {count_text(total)})",
                None,
                "sample fewer, or raise the limit with --max-variants",
            )], spec.source, spec.filename)
        combos: Iterable[tuple[int, ...]] = sample_picks(radices, sample, seed)
    else:
        if total > max_variants:
            raise SpecError([Diagnostic(
                f"this sweep has {count_text(total)} variants, over the limit of "
                f"{max_variants:,}",
                None,
                "sample some with --sample K, or raise the limit with --max-variants",
            )], spec.source, spec.filename)
        combos = itertools.product(*(range(r) for r in radices))
    out = []
    seen: set[tuple[int, ...]] = set()
    if sample is not None and sample < total:
        combos = _distinct_sample(spec, radices, list(combos), sample, seed)
    for raw in combos:
        picks, variant = _variant(spec, points, raw)
        if picks in seen:
            continue
        seen.add(picks)
        out.append(variant)
    return out


def first_variant(spec: ir.Spec) -> Variant:
    """The first variant in grid order (every choice's first alternative): what an editor
    shows of a sweep, however many variants it has, without building the others."""
    points = sweep_points(spec)
    if not points:
        return Variant(spec.name, (), spec)
    return _variant(spec, points, (0,) * len(points))[1]


def _variant(spec: ir.Spec, points: list[Point],
             raw: tuple[int, ...]) -> tuple[tuple[int, ...], Variant]:
    """The variant one pick per point makes, with its canonical picks. A choice inside a part
    the variant leaves out makes no other network: one variant, named without it
    (`s[-drop{.1,.2}]`, not `s[-drop{.1,.2},drop=.1]` and `...=.2`)."""
    picks, chosen, absent = _canonical(spec, raw)
    choices = tuple((p.key, p.labels[i]) for p, i in zip(points, picks, strict=True))
    label = ",".join(_choice_text(k, v) for j, (k, v) in enumerate(choices) if j not in absent)
    name = f"{spec.name}[{label}]"
    return picks, Variant(name, choices, replace(chosen, name=name))


# a sample of a sweep with choices inside optional parts draws again where its draw held two
# picks of one network; a grid up to this size is then walked in full instead
_WALKED_GRID = 1 << 16


def _distinct_sample(spec: ir.Spec, radices: list[int], drawn: list[tuple[int, ...]], k: int,
                     seed: int) -> list[tuple[int, ...]]:
    """`drawn` (sample_picks' k grid positions) as k distinct networks, in grid order: the
    same draw as ever where every pick is its own network; where some pick the same (a choice
    inside a part left out), more positions are drawn, with a stream of their own, until there
    are k or the sweep has no more (its grid walked in full when it is small)."""
    mine: dict[tuple[int, ...], None] = {}
    for raw in drawn:
        mine.setdefault(_canonical(spec, raw)[0])
    if len(mine) < k:
        rng = random.Random(seed + 1)
        extra: Iterable[tuple[int, ...]]
        if _product(radices) <= _WALKED_GRID:
            extra = list(itertools.product(*(range(r) for r in radices)))
            rng.shuffle(extra)
        else:
            extra = (tuple(rng.randrange(r) for r in radices) for _ in range(64 * k))
        for raw in extra:
            mine.setdefault(_canonical(spec, raw)[0])
            if len(mine) == k:
                break
    return sorted(mine)


def _choice_text(key: str, label: str) -> str:
    """One choice in a variant's name: `lr=.05`, or `+bn`/`-bn` for an optional part."""
    return f"{label}{key}" if label in "+-" else f"{key}={label}"


def variant_named(spec: ir.Spec, name: str) -> ir.Spec | None:
    """The variant of a sweep that `expand` names `name` (`exp7[drop=.5,lr=.05]`), built
    without enumerating the sweep; None if no choice of its points makes that name.

    Why: a sweep's run folder records the sweep file as written (its positions, and so its
    Keras layer names, are the file's) and the variant's name; `train --resume` gets the
    variant back from the two. The name is read point by point, trying each point's labels
    (a label or key may itself hold a `,`); the stem before `[` may hold `[` too.
    """
    points = sweep_points(spec)
    if not name.endswith("]"):
        return None

    def parses(label: str, i: int, pos: int, first: bool,
               skipped: frozenset[int]) -> Iterator[tuple[tuple[int, ...], frozenset[int]]]:
        """Every reading of label[pos:] as the choices of points i.. (a `,` before each but
        the first): (picks, the points the name leaves out, read as their first choice)."""
        if i == len(points):
            if pos == len(label):
                yield (), skipped
            return
        for j, choice in enumerate(points[i].labels):
            text = ("" if first else ",") + _choice_text(points[i].key, choice)
            if label.startswith(text, pos):
                for rest, left_out in parses(label, i + 1, pos + len(text), False, skipped):
                    yield (j, *rest), left_out
        for rest, left_out in parses(label, i + 1, pos, first, skipped | {i}):
            yield (0, *rest), left_out

    def found(label: str) -> tuple[int, ...] | None:
        """The reading whose left-out points are exactly those its network does not hold."""
        for picks, left_out in parses(label, 0, 0, True, frozenset()):
            if _choose_tracked(spec, picks)[1] == left_out:
                return picks
        return None

    for start, char in enumerate(name):
        if char == "[":
            picks = found(name[start + 1:-1])
            if picks is not None:
                return replace(_choose(spec, picks), name=name)
    return None


def _left_out_at(points: list[Point], variant: Variant) -> Span | None:
    """Where a variant's problem that has no place of its own is placed: the first optional
    part it leaves out (`(conv8 |)?` leaves the spec without layers there), else nowhere."""
    for point, (_, label) in zip(points, variant.choices, strict=True):
        if label == "-" and point.line is not None and point.column is not None:
            return Span.point(point.line, point.column)
    return None


def check_all_variants(
    spec: ir.Spec,
    max_params: int = DEFAULT_MAX_PARAMS,
    max_variants: int = DEFAULT_MAX_VARIANTS,
    sample: int | None = None,
    seed: int = 0,
) -> list[Report]:
    """Check every variant (or the `sample` that `expand` picks with `seed`: what will train);
    raise one SpecError naming each failing variant's problems."""
    variants = expand(spec, max_variants=max_variants, sample=sample, seed=seed)
    points = sweep_points(spec)
    reports, problems = [], []
    swept = spec.has_sweep()  # a variant's problem names it, also when a sample is one
    for v in variants:
        try:
            reports.append(check(v.spec, max_params=max_params))
        except SpecError as err:
            prefix = f"in variant {v.name}: " if swept else ""
            problems.extend(replace(d, message=prefix + d.message, span=d.span or (
                _left_out_at(points, v) if d.message == NO_LAYERS else None))
                for d in err.diagnostics)
    if problems:
        raise SpecError(problems, spec.source, spec.filename)
    twice = _same_network_twice(points, variants, reports)
    if twice is not None:
        raise SpecError([twice], spec.source, spec.filename)
    return reports


def _network_key(report: Report, spec: ir.Spec) -> tuple[object, ...]:
    """What makes two variants the same experiment: every Keras layer as written, its shape,
    what it reads and where it sits, and the training settings."""
    # what a layer reads, by row: the Keras names carry the column they were written at, so
    # two equal layers written at other places would never compare equal by name
    at = {r.keras_name: i for i, r in enumerate(report.rows)}
    layers = tuple((r.text, r.output_shape, tuple(at.get(n, n) for n in r.inputs), r.depth)
                   for r in report.rows)
    settings = tuple((s.key, repr(s.value)) for s in spec.settings)
    return (report.input_shape, report.classes, layers, settings)


def _same_network_twice(points: list[Point], variants: list[Variant],
                        reports: list[Report]) -> Diagnostic | None:
    """A problem if two variants build the same network with the same settings.

    Why: `relu? relu?` has four variants but three networks (one relu, either way): the sweep
    would train one network twice, and the comparison would show two rows for it under
    different names. Placed at the first choice the two variants pick differently."""
    if len(variants) < 2:
        return None
    seen: dict[tuple[object, ...], Variant] = {}
    for variant, report in zip(variants, reports, strict=True):
        key = _network_key(report, variant.spec)
        first = seen.setdefault(key, variant)
        if first is variant:
            continue
        differs = [p for p, (_, a), (_, b) in zip(points, first.choices, variant.choices,
                                                  strict=True) if a != b]
        where = next((Span.point(p.line, p.column) for p in differs
                      if p.line is not None and p.column is not None), None)
        return Diagnostic(
            f"variants {first.name} and {variant.name} are the same network with the same "
            "settings: the sweep would train it twice",
            where,
            "tie the choices together, e.g. `(relu relu?)?` instead of `relu? relu?`, or "
            "remove one of them")
    return None
