"""Sweeps written in the language: expand a spec's alternatives into concrete, named variants.

`drop{.25,.5}`, `conv{32,64}`, `bn?` and `lr={.01,.05}` are sweep points; the variants are
their cartesian product, in source order, each a plain spec whose name says what was picked:
`exp7[drop=.5,lr=.05]`. Every variant is checked before anything trains.
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass, replace

from cnnspec import ir
from cnnspec.checker import DEFAULT_MAX_PARAMS, Report, check
from cnnspec.errors import Diagnostic, SpecError
from cnnspec.format import format_item, format_value

DEFAULT_MAX_VARIANTS = 256


@dataclass(frozen=True)
class Point:
    """One sweep point: a readable key and the label of each of its choices."""

    key: str
    labels: tuple[str, ...]
    line: int | None


@dataclass(frozen=True)
class Variant:
    """One concrete spec of a sweep, with the choices that made it."""

    name: str
    choices: tuple[tuple[str, str], ...]
    spec: ir.Spec


def _walk_points(spec: ir.Spec) -> list[Point]:
    points: list[Point] = []

    def item(it: ir.Item) -> None:
        if isinstance(it, ir.Alternatives):
            points.append(Point(it.key, it.labels, it.span.line if it.span else None))
        elif isinstance(it, ir.Optional):
            text = format_item(it.body)
            points.append(Point(text, ("+", "-"), it.span.line if it.span else None))
            item(it.body)
        elif isinstance(it, ir.Group):
            for i in it.items:
                item(i)
        elif isinstance(it, ir.Repeat):
            item(it.body)

    for st in spec.statements():
        if isinstance(st, ir.LetDecl | ir.LayerLine):
            for i in st.items:
                item(i)
        elif isinstance(st, ir.TrainDecl):
            for s in st.settings:
                if s.choices:
                    points.append(Point(s.key, tuple(format_value(v) for v in s.choices),
                                        s.span.line if s.span else None))
    return points


def sweep_points(spec: ir.Spec) -> list[Point]:
    """The spec's sweep points in source order; keys made unique with `@line` where needed."""
    points = _walk_points(spec)
    counts: dict[str, int] = {}
    for p in points:
        counts[p.key] = counts.get(p.key, 0) + 1
    return [replace(p, key=f"{p.key}@{p.line}") if counts[p.key] > 1 else p for p in points]


def variant_count(spec: ir.Spec) -> int:
    n = 1
    for p in _walk_points(spec):
        n *= len(p.labels)
    return n


def _choose(spec: ir.Spec, picks: tuple[int, ...]) -> ir.Spec:
    """The spec with every sweep point replaced by the picked choice (same walk order)."""
    it_picks = iter(picks)

    def items(seq: tuple[ir.Item, ...]) -> tuple[ir.Item, ...]:
        out: list[ir.Item] = []
        for it in seq:
            chosen = item(it)
            if chosen is not None:
                out.append(chosen)
        return tuple(out)

    def item(it: ir.Item) -> ir.Item | None:
        if isinstance(it, ir.Alternatives):
            return it.options[next(it_picks)]
        if isinstance(it, ir.Optional):
            keep = next(it_picks) == 0
            body = item(it.body)
            return body if keep else None
        if isinstance(it, ir.Group):
            return replace(it, items=items(it.items))
        if isinstance(it, ir.Repeat):
            body = item(it.body)
            return None if body is None else replace(it, body=body)
        return it

    def statement(st: ir.Statement | None) -> ir.Statement | None:
        if isinstance(st, ir.LetDecl | ir.LayerLine):
            return replace(st, items=items(st.items))
        if isinstance(st, ir.TrainDecl):
            settings = []
            for s in st.settings:
                if s.choices:
                    s = replace(s, value=s.choices[next(it_picks)], choices=())
                settings.append(s)
            return replace(st, settings=tuple(settings))
        return st

    lines = tuple(replace(ln, statement=statement(ln.statement)) for ln in spec.lines)
    return replace(spec, lines=lines)


def expand(
    spec: ir.Spec,
    max_variants: int = DEFAULT_MAX_VARIANTS,
    sample: int | None = None,
    seed: int = 0,
) -> list[Variant]:
    """All variants of a sweep spec (or `sample` of them, chosen with `seed`); a plain spec is
    its own single variant. Raises SpecError when the sweep is larger than max_variants."""
    points = sweep_points(spec)
    if not points:
        return [Variant(spec.name, (), spec)]
    total = variant_count(spec)
    combos = list(itertools.product(*(range(len(p.labels)) for p in points)))
    if sample is not None and sample < total:
        combos = sorted(random.Random(seed).sample(combos, sample))
    if len(combos) > max_variants:
        raise SpecError([Diagnostic(
            f"this sweep has {total:,} variants, over the limit of {max_variants:,}",
            None,
            "sample some with --sample K, or raise the limit with --max-variants",
        )], spec.source, spec.filename)
    out = []
    for picks in combos:
        choices = tuple(
            (p.key, p.labels[i]) for p, i in zip(points, picks, strict=True)
        )
        label = ",".join(f"{v}{k}" if v in "+-" else f"{k}={v}" for k, v in choices)
        name = f"{spec.name}[{label}]"
        out.append(Variant(name, choices, replace(_choose(spec, picks), name=name)))
    return out


def check_all_variants(
    spec: ir.Spec,
    max_params: int = DEFAULT_MAX_PARAMS,
    max_variants: int = DEFAULT_MAX_VARIANTS,
) -> list[Report]:
    """Check every variant; raise one SpecError naming each failing variant's problems."""
    variants = expand(spec, max_variants=max_variants)
    reports, problems = [], []
    for v in variants:
        try:
            reports.append(check(v.spec, max_params=max_params))
        except SpecError as err:
            prefix = f"in variant {v.name}: " if len(variants) > 1 else ""
            problems.extend(replace(d, message=prefix + d.message) for d in err.diagnostics)
    if problems:
        raise SpecError(problems, spec.source, spec.filename)
    return reports
