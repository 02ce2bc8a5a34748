"""`cnnspec diff`, `expand`, `run`, `sweep` and `compare`: commands that work across many specs."""

from __future__ import annotations

import argparse
import json
from typing import Any

from rich.table import Table
from rich.text import Text

from cnnspec.checker import check
from cnnspec.cli import EXIT_OK, _add_max_params, _console, _register
from cnnspec.diff import diff_reports
from cnnspec.format import format_spec
from cnnspec.layers import fmt_shape
from cnnspec.parse import load
from cnnspec.settings import settings_of
from cnnspec.sweep import DEFAULT_MAX_VARIANTS, check_all_variants, expand

_OP_STYLE = {"same": "dim", "added": "green", "removed": "red", "changed": "yellow"}
_OP_MARK = {"same": " ", "added": "+", "removed": "-", "changed": "~"}


def cmd_diff(args: argparse.Namespace) -> int:
    spec_a, spec_b = load(args.a), load(args.b)
    report_a = check(spec_a, max_params=args.max_params)
    report_b = check(spec_b, max_params=args.max_params)
    d = diff_reports(report_a, report_b, settings_of(spec_a), settings_of(spec_b))
    if args.json:
        print(json.dumps(d.to_dict(), indent=2))
        return EXIT_OK
    table = Table(title=f"{args.a}  →  {args.b}", title_justify="left")
    for col, justify in (("", "left"), ("line", "right"), (spec_a.name, "left"),
                         ("output", "right"), ("params", "right"), ("line", "right"),
                         (spec_b.name, "left"), ("output", "right"), ("params", "right")):
        table.add_column(col, justify=justify)
    for c in d.changes:
        if c.op == "same" and not args.all:
            continue
        cells = [_OP_MARK[c.op]]
        for row in (c.a, c.b):
            cells += ["", "", "", ""] if row is None else [
                "" if row.line is None else str(row.line), row.text,
                fmt_shape(row.output_shape), f"{row.params:,}",
            ]
        table.add_row(*cells, style=_OP_STYLE[c.op])
    console = _console()
    if d.edits or args.all:
        console.print(table)
    counts = {op: sum(1 for c in d.changes if c.op == op) for op in ("added", "removed", "changed")}
    delta = report_b.params - report_a.params
    console.print(
        f"{counts['added']} added, {counts['removed']} removed, {counts['changed']} changed "
        f"layers; params {report_a.params:,} → {report_b.params:,} ({delta:+,}); "
        f"MACs {report_a.macs:,} → {report_b.macs:,}"
    )
    for key, va, vb in d.settings:
        console.print(f"setting {key}: {va} → {vb}")
    return EXIT_OK


def cmd_expand(args: argparse.Namespace) -> int:
    spec = load(args.file)
    variants = expand(spec, max_variants=args.max_variants, sample=args.sample, seed=args.seed)
    reports = check_all_variants(spec, max_params=args.max_params, max_variants=args.max_variants)
    by_name = {r.name: r for r in reports}
    if args.json:
        print(json.dumps([
            {"name": v.name, "choices": dict(v.choices), "params": by_name[v.name].params,
             "macs": by_name[v.name].macs, "text": format_spec(v.spec)}
            for v in variants
        ], indent=2))
        return EXIT_OK
    console = _console()
    if args.write:
        from pathlib import Path

        from cnnspec.cli import write_atomic

        out = Path(args.write)
        out.mkdir(parents=True, exist_ok=True)
        for v in variants:
            write_atomic(out / f"{v.name}.cnn", format_spec(v.spec))
        console.print(f"wrote {len(variants)} variant specs to {out}/")
        return EXIT_OK
    table = Table(title=f"{args.file}: {len(variants)} variants", title_justify="left")
    table.add_column("variant")
    table.add_column("params", justify="right")
    table.add_column("MACs", justify="right")
    for v in variants:
        r = by_name[v.name]
        table.add_row(Text(v.name), f"{r.params:,}", f"{r.macs:,}")
    console.print(table)
    return EXIT_OK


def register(sub: Any) -> None:
    p = _register(sub, "diff", cmd_diff, "layers, shapes and params that differ between two specs")
    p.add_argument("a", metavar="A.cnn")
    p.add_argument("b", metavar="B.cnn")
    p.add_argument("--all", action="store_true", help="show unchanged layers too")
    p.add_argument("--json", action="store_true")
    _add_max_params(p)

    p = _register(sub, "expand", cmd_expand, "list the concrete variants of a sweep spec")
    p.add_argument("file", metavar="FILE")
    p.add_argument("--json", action="store_true", help="names, choices and text of each variant")
    p.add_argument("--write", metavar="DIR", help="write each variant as DIR/<name>.cnn")
    _add_sweep_size(p)
    _add_max_params(p)


def _add_sweep_size(p: argparse.ArgumentParser) -> None:
    p.add_argument("--max-variants", type=int, default=DEFAULT_MAX_VARIANTS, metavar="N",
                   help=f"refuse sweeps with more variants (default {DEFAULT_MAX_VARIANTS})")
    p.add_argument("--sample", type=int, metavar="K", help="take K variants at random")
    p.add_argument("--seed", type=int, default=0, help="seed for --sample (default 0)")
