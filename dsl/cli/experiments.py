"""`cnnspec diff`, `expand`, `run`, `sweep` and `compare`: commands that work across many specs."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import socket
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

from rich.table import Table
from rich.text import Text

from cnnspec.cli.main import (
    EXIT_OK,
    Failure,
    UsageError,
    _add_max_params,
    _add_sweep_size,
    _console,
    _positive_int,
    _register,
    _si,
    print_spec_error,
    sigterm_as_interrupt,
    whole_cells,
)
from cnnspec.cli.train import (
    EXIT_INTERRUPTED,
    RUN_DIR_SUFFIX,
    add_train_flags,
    checked_settings,
    new_run_dir,
    out_folder,
    refuse_dangling,
    refuse_long_names,
    resolved_settings,
)
from cnnspec.language import ir
from cnnspec.language.checker import Report, check
from cnnspec.language.diff import diff_reports
from cnnspec.language.errors import SpecError, some, visible
from cnnspec.language.format import format_spec
from cnnspec.language.layers import fmt_shape
from cnnspec.language.parse import load
from cnnspec.language.settings import SETTINGS, settings_of
from cnnspec.language.sweep import (
    DEFAULT_MAX_VARIANTS,
    check_all_variants,
    expand,
    variant_count,
)
from cnnspec.training.records import safe_name

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
    table = Table()
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
                row.where, row.text,
                fmt_shape(row.output_shape), f"{row.params:,}",
            ]
        table.add_row(*cells, style=_OP_STYLE[c.op])
    console = _console()
    whole_cells(table, console.width, 0, 3, 4, 7, 8)  # marks, shapes, counts; lines may wrap
    if d.edits or args.all:
        # the title on its own line: a table's title wraps at the table's width, mid-path
        console.print(Text(f"{args.a}  →  {args.b}"))
        console.print(table)
    counts = {op: sum(1 for c in d.changes if c.op == op) for op in ("added", "removed", "changed")}
    delta = report_b.params - report_a.params
    console.print(
        f"{counts['added']} added, {counts['removed']} removed, {counts['changed']} changed "
        f"layers; params {report_a.params:,} → {report_b.params:,} ({delta:+,}); "
        f"MACs {report_a.macs:,} → {report_b.macs:,}"
    )
    for key, va, vb in d.header:  # before the settings: the network itself differs
        va, vb = (fmt_shape(v) if isinstance(v, tuple) else v for v in (va, vb))
        console.print(f"{key}: {va} → {vb}")
    for key, va, vb in d.settings:
        va, vb = ("none" if v is None else v for v in (va, vb))  # as a spec writes it
        console.print(f"setting {key}: {va} → {vb}")
    return EXIT_OK


def cmd_expand(args: argparse.Namespace) -> int:
    if args.write is not None and not args.write:
        raise UsageError("--write needs a folder")
    if args.write and args.json:
        raise UsageError("--json prints the variants and --write writes them: give one")
    spec = load(args.file)
    variants = expand(spec, max_variants=args.max_variants, sample=args.sample,
                      seed=args.sample_seed)
    reports = check_all_variants(spec, max_params=args.max_params, max_variants=args.max_variants,
                                 sample=args.sample, seed=args.sample_seed)
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

        from cnnspec.cli.main import write_atomic

        refuse_long_names([f"{v.name}.cnn" for v in variants], what="a variant file")
        existed = Path(args.write).is_dir()
        out = make_folder(Path(args.write), "--write")
        texts = {out / f"{v.name}.cnn": format_spec(v.spec) for v in variants}
        new = _new_variant_files(out, texts)
        written: list[Path] = []
        for path, text in new.items():
            try:
                write_atomic(path, text)
            except OSError as exc:
                for done in written:  # all of them or none: a half set reads as a whole one
                    done.unlink(missing_ok=True)
                if not existed:  # nor the folder made for them
                    with contextlib.suppress(OSError):
                        out.rmdir()
                raise Failure(f"--write {out}: cannot write {path.name} "
                              f"({exc.strerror or exc}); nothing written") from None
            written.append(path)
        same = len(texts) - len(new)
        console.print(f"wrote {len(new)} variant specs to {visible(str(out))}/"
                      + (f" ({same} already there, unchanged)" if same else ""))
        return EXIT_OK
    table = Table()
    table.add_column("variant", overflow="fold")  # names are never cut short
    table.add_column("params", justify="right")
    table.add_column("MACs", justify="right")
    for v in variants:
        r = by_name[v.name]
        table.add_row(Text(v.name), f"{r.params:,}", f"{r.macs:,}")
    # a sample only where one was drawn: the grid's count is an upper bound (`drop{.1,.2}?`
    # has 2 x 2 grid points and 3 variants), so fewer variants than it is no sign of one
    total = variant_count(spec)
    sampled = args.sample is not None and args.sample < total
    console.print(Text(f"{visible(args.file)}: {len(variants)} variant"
                       f"{'s' if len(variants) != 1 else ''}" + (
                           f" sampled of {total:,} (--sample-seed {args.sample_seed})"
                           if sampled else "")))
    console.print(table)
    return EXIT_OK


def _new_variant_files(out: Path, texts: dict[Path, str]) -> dict[Path, str]:
    """The variant files `expand --write` has to write: a file already there with the same
    text is left alone; one with other text (a user's edits, another sweep's variant) stops
    the command before anything is written, rather than being overwritten."""
    new = {}
    for path, text in texts.items():
        if not path.exists() and not path.is_symlink():
            new[path] = text
            continue
        try:
            same = path.is_file() and path.read_text("utf-8") == text
        except (OSError, UnicodeDecodeError):
            same = False
        if not same:
            raise Failure(f"--write {out}: {path.name} is already there with other content; "
                          "nothing written (write into an empty folder, or move it away)")
    return new


# Columns of the comparison table after the name(s), and the order they are hidden in when the
# table is wider than the terminal (first hidden first). Names are never cut: the name and run
# columns fold onto more lines only when the terminal is narrower than the name itself.
_COMPARE_COLUMNS = ("params", "MACs", "epochs", "best val", "final val", "train", "gap",
                    "overfit", "s/epoch", "img/s", "status")
_HIDE_ORDER = ("MACs", "img/s", "s/epoch", "epochs", "params", "train", "gap", "best val",
               "status", "overfit")
# the column that shows a sort key's field (`--sort images_per_second` orders by img/s): it is
# never hidden for width, or the rows would come out in an order no column explains
_SORT_COLUMN = {"params": "params", "macs": "MACs", "epochs": "epochs",
                "best_val_accuracy": "best val", "best_epoch": "best val",
                "final_val_accuracy": "final val", "final_train_accuracy": "train", "gap": "gap",
                "overfitting": "overfit", "seconds_per_epoch": "s/epoch",
                "images_per_second": "img/s", "status": "status", "pruned_at": "status"}


def _compare_cells(r: Any) -> dict[str, Text | str]:
    def pct(x: float | None) -> str:
        return "" if x is None else f"{x * 100:.1f}%"

    return {
        "params": "" if r.params is None else f"{r.params:,}",
        "MACs": "" if r.macs is None else _si(r.macs),
        "epochs": str(r.epochs),
        "best val": pct(r.best_val_accuracy)
        + ("" if r.best_epoch is None else f" @{r.best_epoch}"),
        "final val": pct(r.final_val_accuracy),
        "train": pct(r.final_train_accuracy),
        "gap": "" if r.gap is None else f"{r.gap * 100:+.1f}",
        "overfit": Text("yes", style="bold red") if r.overfitting else Text("no", style="green"),
        "s/epoch": "" if r.seconds_per_epoch is None else f"{r.seconds_per_epoch:.1f}",
        "img/s": "" if r.images_per_second is None else f"{r.images_per_second:,.0f}",
        "status": Text(f"pruned at {r.pruned_at}", style="yellow") if r.status == "pruned"
        else Text(r.status, style="" if r.status == "completed" else "red"),
    }


def _compare_table(rows: list[Any], width: int | None = None,
                   sort: str | None = None) -> tuple[Table, list[str]]:
    """The comparison table, and the columns left out so that it fits in `width` characters
    (never the column of `sort`, the field the rows are ordered by, nor a recipe column it
    names: `--sort lr`).

    Spec names are shown whole. When two rows have the same spec name, a `run` column names
    their run folders (with parents as far as needed to tell them apart).
    """
    from rich.console import Console
    from rich.measure import Measurement

    from cnnspec.experiments import compare

    runs: list[str] | None = None
    if compare.names_repeat(rows):  # the run, for the rows whose spec name is not enough
        count = {name: [r.spec for r in rows].count(name) for name in {r.spec for r in rows}}
        runs = [label if count[r.spec] > 1 else ""
                for r, label in zip(rows, compare.run_labels(rows), strict=True)]
    # the settings that differ between the runs, after the names: what tells the runs apart
    recipe = compare.recipe_columns(rows)
    cells = [{**{n: Text(r.settings.get(n, "")) for n in recipe}, **_compare_cells(r)}
             for r in rows]
    hidden: list[str] = []

    def build() -> Table:
        table = Table()
        table.add_column("spec", overflow="fold")
        if runs is not None:
            table.add_column("run", overflow="fold")
        shown = [c for c in (*recipe, *_COMPARE_COLUMNS) if c not in hidden]
        for col in shown:
            table.add_column(col, justify="left" if col in ("overfit", "status", *recipe)
                             else "right", no_wrap=True)
        for i, r in enumerate(rows):
            names = [Text(r.spec)] + ([Text(runs[i])] if runs is not None else [])
            table.add_row(*names, *(cells[i][c] for c in shown))
        return table

    table = build()
    if width is None:
        return table, hidden
    measure = Console(width=10_000, markup=False, emoji=False)
    # a narrow terminal drops the recipe (last column first) after the speed and size columns
    split = _HIDE_ORDER.index("params") + 1
    field = compare.SORT_ALIASES.get(sort, sort) if sort else None
    kept = {_SORT_COLUMN.get(field or "", field)}
    for col in (*_HIDE_ORDER[:split], *reversed(recipe), *_HIDE_ORDER[split:]):
        if col in kept:
            continue
        if Measurement.get(measure, measure.options, table).maximum <= width:
            break
        hidden.append(col)
        table = build()
    return table, hidden


def print_comparison(
    rows: list[Any], dirs: list[Path], sort: str | None, fmt: str | None, title: str,
) -> tuple[list[Any], list[Path]]:
    """Sort the rows, then print the table (with the overfitting notes) or an export.

    Returns the rows and their run folders in the printed order. Shared by `compare RUN_DIR…`
    and `compare --study` (cnnspec.experiments.study)."""
    from cnnspec.experiments import compare

    where = {id(r): d for r, d in zip(rows, dirs, strict=True)}
    try:
        rows = compare.sort_rows(rows, sort)
    except KeyError:
        raise UsageError(
            f"cannot sort by {sort!r}; use one of: "
            + ", ".join([*compare.SORT_ALIASES, *compare.SORT_KEYS])) from None
    dirs = [where[id(r)] for r in rows]
    if fmt == "csv":
        print(compare.to_csv(rows), end="")
    elif fmt == "json":
        print(compare.to_json(rows))
    elif fmt == "markdown":
        print(compare.to_markdown(rows), end="")
    else:
        console = _console()
        table, hidden = _compare_table(rows, console.width, sort)
        console.print(Text(title))  # not the table's title, which wraps at the table's width
        console.print(table)
        if hidden:
            console.print(f"not shown at {console.width} columns: {', '.join(hidden)} "
                          "(a wider terminal, or --csv/--json, shows every column)", style="dim")
        note = compare.data_note(rows)
        if note is not None:
            console.print(Text(f"note: {note}", style="bold yellow"))
        for r, name in zip(rows, compare.display_names(rows), strict=True):
            if r.overfitting:
                console.print(Text(f"overfitting: {name}: {r.overfitting_reason}"))
        for r, name in zip(rows, compare.display_names(rows), strict=True):
            if r.status == "pruned":
                console.print(Text(f"pruned: {name} at epoch {r.pruned_at}"
                                   + (f": {r.pruned_reason}" if r.pruned_reason else "")))
        if any(r.status == "pruned" for r in rows):
            console.print("pruned runs stopped before their last epoch: they are listed after "
                          "the runs that finished, never ranked among them", style="dim")
        console.print(
            f"overfitting rule: final train−val accuracy gap > {compare.GAP_THRESHOLD * 100:.0f} "
            f"points, or val loss rising {compare.RISING_EPOCHS} epochs in a row while train "
            "loss falls", style="dim")
    return rows, dirs


def write_plots(rows: list[Any], dirs: list[Path], plot_dir: Path) -> None:
    """The two comparison PNGs, named on stderr."""
    from cnnspec.experiments import compare

    try:
        with warnings.catch_warnings():  # overflow on such values: the error below says it
            warnings.simplefilter("ignore", RuntimeWarning)
            curves = compare.plot_curves(dirs, rows, plot_dir / "compare_curves.png")
            points = compare.plot_accuracy_vs_params(
                rows, plot_dir / "compare_accuracy_vs_params.png")
    except OSError as exc:
        where = exc.filename2 or exc.filename  # os.replace(tmp, target): name the target
        raise Failure(f"cannot write the plots in {plot_dir}: {exc.strerror or exc}"
                      + (f": {where}" if where else "")) from None
    except (ValueError, OverflowError, FloatingPointError) as exc:  # matplotlib on values no
        # float32 training makes (a history edited to 1e308): the table above stands
        raise Failure(f"cannot draw the plots from these records ({type(exc).__name__}: "
                      f"{exc}); the table above is complete, --no-plots leaves them out"
                      ) from None
    _console(stderr=True).print(f"plots: {curves}  {points}")


def compare_runs(
    run_dirs: list[Path], sort: str | None, fmt: str | None, plot_dir: Path | None,
) -> int:
    """Print the comparison of run folders (table or an export) and write the two plots."""
    from cnnspec.experiments import compare

    rows, good, damaged = [], [], []
    for d in run_dirs:
        try:
            rows.append(compare.load_row(d))
            good.append(d)
        except (ValueError, OSError) as exc:  # a damaged record: the others are still shown
            damaged.append(str(exc).splitlines()[0] if str(exc) else f"{d}: cannot read")
    if rows:
        rows, dirs = print_comparison(rows, good, sort, fmt, f"{len(rows)} runs")
        if plot_dir is not None:
            write_plots(rows, dirs, plot_dir)
    if damaged:
        raise Failure(f"{len(damaged)} of {len(run_dirs)} run folder(s) not compared:\n"
                      + "\n".join(f"  {why}" for why in damaged))
    return EXIT_OK


def _plot_dir(args: argparse.Namespace, run_dirs: list[Path]) -> Path | None:
    if args.no_plots:
        return None
    if args.plots:
        path = Path(args.plots)
    else:
        parents = {d.parent for d in run_dirs}
        path = parents.pop() if len(parents) == 1 else Path(".")
    return make_folder(path, "--plots")


def plots_folder(args: argparse.Namespace) -> Path | None:
    """The folder --plots names, or None when it is not given or --no-plots is. `run` and
    `sweep` call it before anything trains, so a file in its way is refused then; the folder
    itself is made when the plots are written (a command refused later leaves none)."""
    if args.no_plots or not getattr(args, "plots", None):
        return None
    path = Path(args.plots)
    for place in (path, *path.parents):  # the nearest part that exists must be a folder
        if place.exists() or place.is_symlink():
            if not place.is_dir():
                raise Failure(f"--plots {path}: cannot create the folder ({place} is not a "
                              "folder)")
            break
    return path


def make_folder(path: Path, flag: str) -> Path:
    """`mkdir -p` for a folder the user named; a file in the way is a Failure, not a traceback."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise Failure(f"{flag} {path}: cannot create the folder ({exc.strerror or exc})") from None
    return path


def cmd_compare(args: argparse.Namespace) -> int:
    from cnnspec.experiments.compare import find_runs

    if getattr(args, "storage", None) or getattr(args, "study", None):
        return compare_study(args)
    if not args.runs:
        raise UsageError("compare needs RUN_DIR… (or --study NAME [--storage URL])")
    try:
        run_dirs = find_runs(args.runs)
    except FileNotFoundError as exc:
        raise Failure(str(exc)) from None
    return compare_runs(run_dirs, args.sort, args.format, _plot_dir(args, run_dirs))


# statuses of a kept run that a continued sweep does not train again
_FINISHED = ("completed", "pruned")


def runs_to_continue(out_dir: Path | None, specs: list[ir.Spec],
                     args: argparse.Namespace) -> dict[str, str]:
    """The specs whose folder under --out already holds their very run (left by an earlier,
    interrupted `sweep` or `run` with the same --out): name -> the run's status.

    Why: re-running the command that was stopped continues it, as Keras Tuner does with its
    project folder: finished runs are kept, an interrupted one resumes from its checkpoint,
    the rest train. It is the same run only with the same spec text, settings and precision;
    a folder holding another run is a Failure here, before the data is read or anything
    trains, naming each folder and what differs (a changed flag is one message, not one
    failure per variant). The data are compared when the data are read (`same_data`)."""
    if out_dir is None or not out_dir.is_dir():
        return {}
    from cnnspec.training.records import SETTINGS_FILE, RunFolderError, read_status
    from cnnspec.training.train import read_run_settings, run_differences

    precision = None if args.precision == "auto" else args.precision
    precisions: set[str] = set()  # what the runs found were trained in
    found: dict[str, str] = {}
    other: dict[str, list[str]] = {}  # what differs -> the folders
    for spec in specs:
        folder = out_dir / safe_name(spec.name)
        if not (folder / SETTINGS_FILE).is_file():
            continue
        try:
            recorded = read_run_settings(folder)
            differs = run_differences(recorded, spec, checked_settings(spec, args), precision)
            status = (read_status(folder) or {}).get("status", "running")
        except RunFolderError as exc:
            raise Failure(f"cannot continue in --out {out_dir}: {exc}") from None
        if differs:
            other.setdefault("; ".join(differs), []).append(folder.name)
        else:
            found[spec.name] = status
            precisions.add(str(recorded["precision"]))
    if other:
        raise Failure(
            f"--out {out_dir} holds other runs than this command would train, so it cannot "
            "continue them:\n  " + "\n  ".join(f"{some(folders)}: {why}"
                                               for why, folders in other.items())
            + "\nrun the command with the spec and flags it was started with to continue, or "
            "pick another --out")
    if precision is None and len(precisions) == 1:
        _keep_precision(args, precisions.pop(), out_dir)
    return found


# What a second `sweep`/`run` given a --out that one is writing is told (see out_lock)
OUT_BUSY = ("--out {folder} is being written by {holder}, another `cnnspec sweep` or `run`; "
            "one command at a time may write it. Wait for it to finish (or stop it), then run "
            "this command again to continue there; or pick another --out")


# what a sweep's or `run`'s --out holds besides its run folders (and hidden files: the lock,
# a killed writer's temporaries, a user's .gitkeep, none of which the command writes over);
# the study storage's default file, for an --out that is the runs folder
_OUT_FILES = frozenset({"sweep.json", "compare_curves.png", "compare_accuracy_vs_params.png",
                        *(f"sweeps.sqlite3{end}" for end in ("", ".lock", "-journal", "-wal",
                                                             "-shm"))})


def refuse_foreign_out(out_dir: Path, files_too: bool = True) -> None:
    """Failure if --out is a run folder or holds files a sweep or `run` does not write.

    Why: the command puts one run folder per spec under --out and its comparison plots beside
    them. Inside a `cnnspec train` run folder that would mix runs into a run (and share its
    lock); in a folder of the user's own files the plots would replace theirs. Checked before
    the lock, the data or anything is written; a new or empty folder, or one an earlier
    `sweep`/`run` wrote, is fine (runs_to_continue then decides what is continued).
    `files_too=False` (a study's workers, whose storage may be a database file in --out): only
    a run folder is refused."""
    from cnnspec.training.records import holds_run

    refuse_dangling(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        return  # out_lock names the file in the way
    if holds_run(out_dir):
        raise Failure(
            f"--out {out_dir} is the folder of one run (`cnnspec train`); a sweep or `run` "
            "writes a folder per spec under --out, so pick another folder")
    if not files_too:
        return
    try:
        foreign = sorted(p.name for p in out_dir.iterdir()
                         if p.name not in _OUT_FILES and not p.name.startswith(".")
                         and not p.is_dir())
    except FileNotFoundError:
        return
    except OSError as exc:
        raise Failure(f"--out {out_dir}: cannot list the folder: {exc.strerror or exc}") from None
    if foreign:
        raise Failure(
            f"--out {out_dir} holds files that are not a sweep's or `run`'s ({some(foreign)}); "
            "pick a new or empty folder, or move them away")


@contextlib.contextmanager
def out_lock(out_dir: Path | None) -> Iterator[None]:
    """Hold --out for the whole command: a second sweep (or run) given the same --out while
    one is writing it is refused at once, as a Failure naming the holder.

    Why: each run folder has its own lock, so without this two sweeps on one --out would both
    start, fail the variant the other holds ("locked"), then race for the rest, each training
    some and neither comparing them all. The lock is the run folders' own (records.run_lock):
    released by the kernel when the holder dies, even by SIGKILL."""
    if out_dir is None:
        yield
        return
    from cnnspec.training.records import RunFolderError, run_lock

    with contextlib.ExitStack() as held:
        try:
            held.enter_context(run_lock(out_dir, OUT_BUSY, role="an --out folder"))
        except RunFolderError as exc:
            raise Failure(str(exc)) from None
        yield




def same_pruning_or_fail(out_dir: Path, config: Any) -> Callable[[], None]:
    """Failure if the sweep in `out_dir` pruned otherwise than `config`; else the function
    that records config there (called when the first variant is about to train).

    Why: a continued sweep tells its study the kept runs as they were judged, and a variant
    the first command pruned stays pruned; judging the rest by other rules would give a sweep
    no single command makes. The run folders record the settings, not the pruning flags, so
    the sweep's folder keeps them in sweep.json, written before the first variant trains."""
    from cnnspec.experiments.pruning import config_record, flags_text, same_pruning
    from cnnspec.training.records import SWEEP_RECORD, RunFolderError, read_json, write_json

    path = out_dir / SWEEP_RECORD
    mine = config_record(config)
    if path.is_file():
        try:
            recorded = read_json(path)
            theirs = recorded["pruning"] if isinstance(recorded, dict) else None
            if not isinstance(theirs, dict):
                raise RunFolderError(f"{path}: corrupted record: no 'pruning' object")
        except RunFolderError as exc:
            raise Failure(f"cannot continue in --out {out_dir}: {exc}") from None
        if not same_pruning(theirs, mine):
            raise Failure(
                f"--out {out_dir} holds a sweep pruned with `{flags_text(theirs)}`, and this "
                f"command prunes with `{flags_text(mine)}`; continue it with its flags, or pick "
                "another --out")

    def record() -> None:
        out_dir.mkdir(parents=True, exist_ok=True)
        write_json(path, {"pruning": mine})

    return record


def _keep_precision(args: argparse.Namespace, recorded: str, out_dir: Path) -> None:
    """Under `auto`, a continued batch trains its new runs in the precision its runs were
    trained in: one comparison in one precision, even where auto would pick the other here
    (a sweep started on an AMX machine and continued on an AVX2 one; one started with
    `--precision bf16` and continued without it)."""
    from cnnspec.backend.cpu import resolve_precision

    here, _ = resolve_precision("auto")
    note = "" if here == recorded else f"; auto would pick {here} on this CPU"
    _console(stderr=True).print(Text(
        f"precision: {recorded} (the precision of the runs in {out_dir}, which this command "
        f"continues{note})"), soft_wrap=True)
    args.precision = recorded
    args._precision_said = True


def same_data(out_dir: Path, names: list[str], data: Any) -> None:
    """Failure unless every continued run was trained on these data (the same images, in the
    same order): a kept run is compared with the new ones, so they must have seen the same."""
    from cnnspec.training.train import data_fingerprint, read_run_settings

    fingerprint = data_fingerprint(data)
    other: dict[str, list[str]] = {}  # what they were trained on -> their folders
    for name in names:
        recorded = read_run_settings(out_dir / safe_name(name))["data"]
        if recorded["fingerprint"] != fingerprint:
            seen = f"{recorded['train_images']:,} training images of {recorded['source']}"
            other.setdefault(seen, []).append(safe_name(name))
    if other:
        raise Failure(
            f"the data differ from those the runs in --out {out_dir} were trained on ("
            + "; ".join(f"{seen}: {some(folders)}" for seen, folders in other.items())
            + f"; here {len(data.x_train):,} training images of {data.source}); pass the "
            "--data and --limit they were started with, or pick another --out")


def _checkpointed_epochs(run_dir: Path) -> list[dict[str, Any]]:
    """The history rows of a stopped run's last checkpoint: the epochs its resume keeps (the
    rest are trained again), to tell a pruned sweep's study before it goes on."""
    from cnnspec.training.checkpoint import check_state_record
    from cnnspec.training.records import read_checkpoint_state

    state = read_checkpoint_state(run_dir)
    if state is None:
        return []
    check_state_record(state, run_dir)  # a damaged record: one clear RunFolderError
    return list(state["history"])


class Batch(NamedTuple):
    """What `_train_many` did: the run folders to compare, (name, why) per failure, and for
    a batch stopped by Ctrl-C the stopped run's folder (None if it holds no run yet) and the
    spec files not started."""

    done: list[Path]
    failed: list[tuple[str, str]]
    stopped: tuple[Path | None, list[str]] | None = None


def _train_many(checked: list[tuple[ir.Spec, Report]], args: argparse.Namespace,
                out_dir: Path | None, local: LocalPruning | None = None,
                continuing: dict[str, str] | None = None,
                on_start: Callable[[], None] | None = None) -> Batch:
    """Train checked specs (each with its report) one after another; a spec that fails is
    recorded and the next one trains. Each spec was checked once, by the caller, before the
    first one trained: the report goes with it to `train_one`, which does not check again.

    Any exception from training one spec (a Failure with its message, or an unexpected error,
    reported as `Type: message`) fails that spec only. Ctrl-C (an interrupted run, or one
    stopped while it starts) stops the batch. Returns the run folders to compare (failed runs
    whose folder holds settings too), (name, first line of the reason) per failure, and what
    was stopped. With `local` (a pruned sweep without
    --study) each spec is a trial of its local study, whose pruner may stop it after an epoch.
    `continuing` (runs_to_continue): specs whose run in out_dir is kept when finished (and
    replayed into the local study, epoch by epoch, as it was judged) or resumed. `on_start`
    is called once the data are read and checked, before the first run (a sweep records how
    it prunes then: a sweep refused before it leaves no folder).
    """
    from cnnspec.cli.train import load_data, train_one
    from cnnspec.training.records import RunFolderError
    from cnnspec.training.train import load_result

    continuing = continuing or {}
    data = load_data(args)
    if continuing and out_dir is not None:
        same_data(out_dir, list(continuing), data)
    err = _console(stderr=True)
    err.print(Text(f"data: {data.describe()}"), soft_wrap=True)
    if continuing:
        kept = sum(status in _FINISHED for status in continuing.values())
        err.print(Text(f"continuing in {out_dir}: {kept} finished run(s) kept, "
                       f"{len(continuing) - kept} to resume, "
                       f"{len(checked) - len(continuing)} to train"), soft_wrap=True)
    if on_start is not None:
        on_start()
    done: list[Path] = []
    failed: list[tuple[str, str]] = []
    # ETA: seconds per (MAC x image x epoch), learnt from the runs finished so far
    work = [report.macs * len(data.x_train) * resolved_settings(spec, args).epochs
            for spec, report in checked]
    rate: float | None = None
    trained_work, training_time = 0, 0.0
    started = time.perf_counter()
    for i, (spec, report) in enumerate(checked):
        began = time.perf_counter()
        eta = ""
        if rate is not None:
            eta = f", ETA {_duration(rate * sum(work[i:]))}"
        # the spec's name is the variant's name for a sweep: `[3/8] exp7[drop=.5,lr=.05]`
        progress_header(err, f"[{i + 1}/{len(checked)}] {spec.name}  (elapsed "
                             f"{_duration(time.perf_counter() - started)}{eta})")
        run_dir = (out_dir / safe_name(spec.name)) if out_dir else new_run_dir(args.runs_dir,
                                                                           spec.name)
        status = continuing.get(spec.name)
        hooks: dict[str, Any] = {}
        try:
            if status in _FINISHED:
                kept = load_result(run_dir)
                err.print(Text(f"{spec.name}: {status} in {run_dir} before; kept"),
                          soft_wrap=True)
                if local is not None:
                    local.replay(spec, kept)
                done.append(run_dir)
                continue
            if local is not None:
                hooks["epoch_hooks"] = local.begin(spec, _checkpointed_epochs(run_dir)
                                                   if status else ())
                hooks["stopped"] = local.decided(spec)
            result = train_one(spec, args, data, run_dir, report=report, **hooks,
                               resume=status is not None)
        except KeyboardInterrupt:  # while a run starts (TensorFlow, the model): stop here too
            failed.append((spec.name, "interrupted"))
            held = _keep_if_started(run_dir, out_dir, done)
            return Batch(done, failed, (run_dir if held else None, _files(checked[i + 1:])))
        except BrokenPipeError:  # the output was closed: no variant can say anything more
            _keep_if_started(run_dir, out_dir, done)
            raise
        except Exception as exc:  # noqa: BLE001 - one spec's failure must not end the batch
            if local is not None and spec.name in local.reporters:
                local.end(spec, None)
            why = str(exc) if isinstance(exc, Failure | SpecError | UsageError
                                         | RunFolderError) \
                else f"{type(exc).__name__}: {exc}"
            failed.append((spec.name, (why.splitlines() or [type(exc).__name__])[0]))
            err.print(Text(f"{spec.name} failed: {why}", style="red"))
            _keep_if_started(run_dir, out_dir, done)
            continue
        done.append(result.run_dir)
        if local is not None:
            local.end(spec, result)
            if result.status == "pruned":
                err.print(Text(f"{spec.name}: pruned after epoch {result.epochs_completed}: "
                               f"{result.reason}", style="yellow"))
        if result.status == "interrupted":
            failed.append((spec.name, "interrupted"))
            return Batch(done, failed, (result.run_dir, _files(checked[i + 1:])))
        trained_work += work[i]
        training_time += time.perf_counter() - began
        rate = training_time / max(trained_work, 1)
    return Batch(done, failed)


def _keep_if_started(run_dir: Path, out_dir: Path | None, done: list[Path]) -> bool:
    """A run that stopped early: its folder goes to the comparison if the run started (it
    holds settings), else a default folder we claimed is given back. True if it started."""
    from cnnspec.cli.train import discard_if_empty
    from cnnspec.training.records import SETTINGS_FILE

    if (run_dir / SETTINGS_FILE).exists():
        done.append(run_dir)
        return True
    if out_dir is None:  # refused before training: give the claimed folder back
        discard_if_empty(run_dir)
    return False


def _files(checked: list[tuple[ir.Spec, Report]]) -> list[str]:
    return [spec.filename or spec.name for spec, _ in checked]


def progress_header(console: Any, text: str) -> None:
    """A rule with the text in it; a plain line when the rule would cut the text short."""
    if len(text) + 6 <= console.width:
        console.rule(Text(text))
    else:
        console.print(Text(text), soft_wrap=True)


def _duration(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m" if h else (f"{m}m{s:02d}s" if m else f"{s}s")


def _finish(done: list[Path], failed: list[tuple[str, str]], args: argparse.Namespace,
            out_dir: Path | None,
            stopped: tuple[Path | None, list[str]] | None = None) -> int:
    if done:
        plot_dir = None if args.no_plots else (
            plots_folder(args) or out_dir or Path(args.runs_dir))
        if plot_dir is not None:
            plot_dir = make_folder(plot_dir, "--plots")
        try:
            compare_runs(done, args.sort, None, plot_dir)
        except Failure as exc:  # a run folder that cannot be read: listed with the failures,
            # each once (a kept variant whose records are damaged has failed on them already)
            said = {why for _, why in failed}
            failed += [("compare", why.strip()) for why in str(exc).splitlines()[1:]
                       if why.strip() not in said]
    interrupted = [name for name, why in failed if why == "interrupted"]
    if stopped is not None:  # Ctrl-C or SIGTERM: stopped, not failed; exit 130 as `train`
        failed = [(name, why) for name, why in failed if why != "interrupted"]
    err = _console(stderr=True)
    if failed:
        err.print(Text(f"{len(failed)} failed:", style="bold red"))
        for name, why in failed:
            err.print(f"  {name}: {why}")
    if stopped is not None:
        where = f" (its folder: {stopped[0]})" if stopped[0] is not None else ""
        err.print(Text(f"stopped: {', '.join(interrupted)} interrupted{where}",
                       style="yellow"), soft_wrap=True)
        err.print(Text(_continue_hint(args, out_dir, *stopped)), soft_wrap=True)
        return EXIT_INTERRUPTED
    if failed:
        raise Failure("")
    return EXIT_OK


def continue_command(args: argparse.Namespace, out_dir: Path) -> str:
    """The command that continues a stopped `sweep` or `run`: the same one, with --out (right
    after the command word: after a `--` it would read as a spec file)."""
    import shlex

    argv = list(getattr(args, "argv", None) or [args.command])
    if args.out is None:
        argv[1:1] = ["--out", str(out_dir)]
    return shlex.join(["cnnspec", *argv])


def _continue_hint(args: argparse.Namespace, out_dir: Path | None, run_dir: Path | None,
                   not_started: list[str]) -> str:
    """How to go on after Ctrl-C: the same command (a sweep, or a `run` with --out, continues
    in its folder); a `run` without --out has no one folder, so its stopped run is resumed
    alone and the specs it did not start are named."""
    import shlex

    if out_dir is not None:
        return f"continue with: {continue_command(args, out_dir)}"
    parts = []
    if run_dir is not None:
        resume = shlex.join(["cnnspec", "train", "--resume", str(run_dir)])
        parts.append(f"continue the stopped run with: {resume}")
    if not_started:
        parts.append(f"not started: {' '.join(map(shlex.quote, not_started))} (`run` with "
                     "--out DIR continues a whole batch when run again)")
    return "; ".join(parts) or "nothing was trained"


def _did_not_check(exc: SpecError) -> str:
    """`did not check: line 2: <first problem> (+N more)` for the end-of-run summary."""
    first = exc.diagnostics[0]
    where = f"line {first.span.line}: " if first.span else ""
    more = len(exc.diagnostics) - 1
    return f"did not check: {where}{first.message}" + (f" (+{more} more)" if more else "")


def cmd_run(args: argparse.Namespace) -> int:
    """Check every spec (once: the report goes on to training), then train those that checked."""
    checked: list[tuple[ir.Spec, Report]] = []
    bad: list[tuple[str, str]] = []
    for file in args.specs:
        try:
            spec = load(file)
            if spec.has_sweep():
                raise UsageError(f"{file} is a sweep; use `cnnspec sweep {file}`")
            checked.append((spec, check(spec, max_params=args.max_params)))
        except SpecError as exc:
            print_spec_error(exc)
            bad.append((file, _did_not_check(exc)))
    # the folder names: `a b.cnn` and `a_b.cnn` both train into --out/a_b
    names = [safe_name(spec.name) for spec, _ in checked]
    if len(set(names)) != len(names) and args.out:
        shared = sorted({n for n in names if names.count(n) > 1})[0]
        files = [spec.filename or "?" for spec, _ in checked if safe_name(spec.name) == shared]
        raise UsageError(
            f"{' and '.join(files)} share the run folder name {shared}; their run folders "
            "under --out would clash (rename one file)")
    refuse_long_names(names, 0 if args.out else RUN_DIR_SUFFIX)
    for spec, _ in checked:  # a flag that makes a spec untrainable stops here, before the
        checked_settings(spec, args)  # data is read or anything trains (as `sweep` does)
    plots_folder(args)
    out_dir = Path(args.out) if args.out else None
    if out_dir is not None and checked:
        refuse_foreign_out(out_dir)
    with out_lock(out_dir if checked else None):
        continuing = runs_to_continue(out_dir, [spec for spec, _ in checked], args)
        batch = _train_many(checked, args, out_dir, continuing=continuing) if checked \
            else Batch([], [])
    failed = bad + batch.failed  # the files that did not check, named, then the failed runs
    return _finish(batch.done, failed, args, out_dir, batch.stopped)


class LocalPruning:
    """A sweep without --study that prunes or ranks its variants (--prune, --then-train): each
    variant is a trial of an in-memory Optuna study (`pruning.local_study`), begun before it
    trains and finished after (completed with its final metric, pruned with the why, failed)."""

    def __init__(self, config: Any, epochs: dict[str, int]) -> None:
        from cnnspec.experiments import pruning

        self.pruning, self.config, self.epochs = pruning, config, epochs
        self.study = pruning.local_study(config)
        self.reporters: dict[str, Any] = {}

    def begin(self, spec: ir.Spec, history: Any = ()) -> list[Any]:
        """The variant's trial and its epoch hook. `history`: the epochs a resumed run trained
        before, reported first (they were judged then, and not stopped)."""
        reporter = self.pruning.begin(self.study, spec.name, self.config,
                                      self.epochs.get(spec.name))
        self.reporters[spec.name] = reporter
        for epoch, row in enumerate(history, 1):
            reporter.decision = None  # its record says it went on after this epoch
            reporter(epoch, row)
        # a stop at the last kept epoch stands: the run was stopped while saving its final
        # records, and is finished with it (`decided`), not trained on
        return [reporter]

    def decided(self, spec: ir.Spec) -> Any:
        """The Stop the replay of a resumed variant's kept epochs decided, or None."""
        return self.reporters[spec.name].decision

    def replay(self, spec: ir.Spec, result: Any) -> str:
        """A finished run of an earlier, interrupted sweep, told to the study as it happened:
        each epoch reported and judged again (so the pruner's rungs hold what they held), then
        completed, or pruned with the reason its folder records."""
        reporter = self.begin(spec, result.history[:-1] if result.history else ())[0]
        reporter.decision = None  # it went on after those epochs
        if result.history:
            reporter(len(result.history), result.history[-1])
        if result.status == "pruned":
            reporter.decision = reporter.decision or self.pruning.PruneDecision(
                "pruned", result.reason or "pruned", len(result.history),
                {"epoch": len(result.history)})
        else:
            reporter.decision = None
        return self.end(spec, result)

    def end(self, spec: ir.Spec, result: Any | None) -> str:
        """pruned | completed | failed; `result` None: the variant's training raised."""
        reporter = self.reporters.pop(spec.name)
        value = None
        if result is not None and result.status == "completed" and result.history:
            value = result.history[-1].get(self.config.ranked_by)
        return self.pruning.finish(self.study, reporter, value)

    def finished(self) -> list[Any]:
        return self.pruning.finished_trials(self.study, self.config)


def pruner_config(args: argparse.Namespace, variants: list[Any]) -> Any:
    """--prune and its parameters as a PrunerConfig (UsageError naming the flag), with the
    sweep's epochs when every variant trains the same number (hyperband needs it)."""
    from cnnspec.experiments.pruning import PrunerConfig

    settings = {v.name: resolved_settings(v.spec, args) for v in variants}
    if args.prune != "none" or getattr(args, "then_train", None):
        unvalidated = [name for name, v in settings.items() if v.validation == "none"]
        if unvalidated:
            raise UsageError(
                f"{unvalidated[0]} has validation=none, but pruning and --then-train need "
                "the validation metric of every epoch; remove validation=none")
    epochs = {v.epochs for v in settings.values()}
    return PrunerConfig(kind=args.prune, metric=args.prune_metric,
                        min_resource=args.min_epochs, eta=args.reduction_factor,
                        max_epochs=epochs.pop() if len(epochs) == 1 else None,
                        warmup=args.warmup, startup=args.startup_trials)


def check_then_train(args: argparse.Namespace, n_variants: int) -> None:
    """--then-train K and --then-epochs N go together, and K fits the sweep (before training)."""
    k, n = getattr(args, "then_train", None), getattr(args, "then_epochs", None)
    if k is None and n is None:
        return
    if k is None:
        raise UsageError("--then-epochs N goes with --then-train K (how many of the sweep's "
                         "best variants to train again for N epochs)")
    if n is None:
        raise UsageError(f"--then-train {k} needs --then-epochs N: the winners' epochs "
                         "(--epochs sets the sweep's)")
    if k > n_variants:
        raise UsageError(f"--then-train {k}: the sweep has only {n_variants} variant(s) to "
                         f"train; use --then-train 1..{n_variants}")


def _prune_less(config: Any) -> str:
    """Advice to prune less that names only values other than the sweep's own (it offered
    `--reduction-factor 2` to a sweep run with it); in the same --out a changed pruning flag
    is refused, so the advice is for a new sweep."""
    if config.kind == "none":  # nothing was pruned: the variants that failed are the reason
        return ""
    ways = []
    if config.kind in ("halving", "hyperband"):
        if config.eta > 2:
            ways.append(f"--reduction-factor {config.eta - 1}")
        if config.max_epochs is not None and config.min_resource + 1 < config.max_epochs:
            ways.append(f"--min-epochs {config.min_resource + 1}")
    elif config.kind == "median" and config.max_epochs is not None \
            and config.warmup + 1 < config.max_epochs:
        ways.append(f"--warmup {config.warmup + 1}")
    ways.append("--prune none")
    return f"Prune less in a new sweep ({', '.join(ways)}) "


def winners(finished: list[Any], k: int, config: Any) -> list[Any]:
    """The best k completed variants (pruning.best_k), or a Failure saying why there are
    fewer: pruned and failed variants are never winners (they did not reach the last epoch)."""
    from cnnspec.experiments.pruning import best_k

    best = best_k(finished, k, config.maximize)
    if len(best) < k:
        count = {s: sum(1 for f in finished if f.state == s)
                 for s in ("completed", "pruned", "failed")}
        raise Failure(
            f"--then-train {k}: only {len(best)} variant(s) completed the sweep with a final "
            f"{config.ranked_by} ({count['pruned']} pruned, {count['failed']} failed); nothing "
            "was trained long. " + (_prune_less(config) + "or ask" if config.kind != "none"
                                    else "Ask") + " for fewer winners")
    return best


def then_args(args: argparse.Namespace) -> argparse.Namespace:
    """The flags for the long phase: the sweep's, with --then-epochs as the epochs."""
    return argparse.Namespace(**{**vars(args), "epochs": args.then_epochs})


def _say_winners(err: Any, best: list[Any], config: Any, epochs: int, where: Path) -> None:
    err.print(Text(
        f"then-train: the best {len(best)} of the sweep by final {config.ranked_by} ("
        + ", ".join(f"{f.variant} {f.value:.4f}" for f in best)
        + f") train again for {epochs} epochs, as fresh runs (new weights, not resumed), in "
        f"{where}"), soft_wrap=True)


def cmd_sweep(args: argparse.Namespace) -> int:
    spec = load(args.file)
    if any(getattr(args, k, None) is not None
           for k in ("storage", "study", "search", "trials", "heartbeat", "grace")):
        return run_study_worker(spec, args)
    variants = expand(spec, max_variants=args.max_variants, sample=args.sample,
                      seed=args.sample_seed)
    config = pruner_config(args, variants)
    check_then_train(args, len(variants))
    # every variant is checked before the first one trains, once: the reports go on to training
    reports = check_all_variants(spec, max_params=args.max_params,
                                 max_variants=args.max_variants, sample=args.sample,
                                 seed=args.sample_seed)
    by_name = {r.name: r for r in reports}
    for variant in variants:  # a flag that makes a variant untrainable stops the sweep here,
        checked_settings(variant.spec, args)  # before the data is read or anything trains
    refuse_long_names([safe_name(v.name) for v in variants])
    if not args.out:
        refuse_long_names([safe_name(spec.name) + "-sweep"], RUN_DIR_SUFFIX)
    plots_folder(args)
    _console(stderr=True).print(f"{spec.name}: {len(variants)} variants, all check")
    if args.out:
        out_dir = Path(args.out)
        refuse_foreign_out(out_dir)
    else:  # claimed by mkdir: two sweeps started in one second get a folder each
        out_dir = new_run_dir(args.runs_dir, f"{spec.name}-sweep")
    local = None
    if config.kind != "none" or args.then_train:
        local = LocalPruning(config, {v.name: resolved_settings(v.spec, args).epochs
                                      for v in variants})
    try:
        with out_lock(out_dir):
            done, failed, stopped = _sweep_batch(args, variants, by_name, config, out_dir,
                                                 local)
    except BaseException:  # data that cannot be read, Ctrl-C before the first variant, ...
        if not args.out:
            _give_back(out_dir)
        raise
    return _finish(done, failed, args, out_dir, stopped)


def _give_back(folder: Path) -> None:
    """Remove the default sweep folder this command claimed when it holds nothing but its
    lock: a sweep refused at its data left an empty `runs/<spec>-sweep-<time>/` that
    `compare` then called "not a run folder"."""
    from cnnspec.training.records import LOCK_FILE

    with contextlib.suppress(OSError):
        entries = list(folder.iterdir())
        if all(p.name == LOCK_FILE for p in entries):
            for p in entries:
                p.unlink()
            folder.rmdir()


def _sweep_batch(args: argparse.Namespace, variants: list[Any], by_name: dict[str, Report],
                 config: Any, out_dir: Path, local: LocalPruning | None) -> Batch:
    """A checked sweep's training, in out_dir (held by the caller): its variants, continued
    where the folder holds them, then --then-train's winners in out_dir/then-train."""
    continuing = runs_to_continue(out_dir if args.out else None, [v.spec for v in variants],
                                  args)
    record = same_pruning_or_fail(out_dir, config)
    done, failed, stopped = _train_many([(v.spec, by_name[v.name]) for v in variants], args,
                                        out_dir, local, continuing, on_start=record)
    if local is not None:
        pruned = [f for f in local.finished() if f.state == "pruned"]
        if config.kind != "none":
            total = sum(local.epochs.values())
            trained = sum(f.epochs for f in local.finished())
            _console(stderr=True).print(
                f"pruning ({config.kind}): {len(pruned)} of {len(variants)} variants pruned; "
                f"{trained} of {total} epochs trained")
    if local is not None and args.then_train and stopped is None:
        try:
            best = winners(local.finished(), args.then_train, config)
            long_args, then_dir = then_args(args), out_dir / "then-train"
            by_variant = {v.name: v for v in variants}
            long = [(by_variant[f.variant].spec, by_name[f.variant]) for f in best]
            again = runs_to_continue(then_dir, [s for s, _ in long], long_args)
        except Failure as exc:
            failed.append(("then-train", str(exc)))
        else:
            _say_winners(_console(stderr=True), best, config, args.then_epochs, then_dir)
            more = _train_many(long, long_args, then_dir, continuing=again)
            done, failed, stopped = done + more.done, failed + more.failed, more.stopped
    return Batch(done, failed, stopped)


def _sort_key(text: str) -> str:
    """--sort's field, refused with the command line (exit 2) when there is no such column:
    `sweep`/`run` checked it only once everything had trained, then showed no comparison."""
    from cnnspec.experiments import compare

    if compare.SORT_ALIASES.get(text, text) not in compare.SORT_KEYS:
        raise argparse.ArgumentTypeError(
            f"cannot sort by {text!r}; use one of: "
            + ", ".join([*compare.SORT_ALIASES, *compare.SORT_KEYS]))
    return text


def _add_compare_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--sort", metavar="FIELD", type=_sort_key,
                   help="a column to sort by, e.g. val_accuracy (final), best_val_accuracy, "
                        "params, gap, images_per_second; accuracies sort best first")
    p.add_argument("--plots", metavar="DIR", help="where the PNGs go (default: the runs' folder)")
    p.add_argument("--no-plots", action="store_true", help="write no PNGs")


# -- sweeps and comparisons stored in an Optuna study (the engine: cnnspec.experiments.study) --


class _CliTrainer:
    """The study worker's trainer: a variant trained with `train_one`, the data loaded once."""

    def __init__(self, args: argparse.Namespace, say: Callable[[str], None]) -> None:
        self.args, self.say = args, say
        self.data: Any = None

    def _load(self) -> Any:
        from cnnspec.cli.train import load_data

        if self.data is None:
            self.data = load_data(self.args)
            self.say(f"data: {self.data.describe()}")
        return self.data

    def settings(self, variant: Any) -> dict[str, Any]:
        # every setting, as the run records it (the table decides which there are); `lr`
        # stays a number for the study's table (a schedule's top rate, its text beside it)
        s = resolved_settings(variant.spec, self.args)
        record = SETTINGS.record(s)
        if not isinstance(s.lr, float):
            record.update(lr=s.lr.top, lr_schedule=SETTINGS.by_name["lr"].written(s.lr))
        return {**record, "data": self._load().describe()}

    def __call__(self, variant: Any, run_dir: Path, epoch_hooks: Any = ()) -> Any:
        from cnnspec.cli.train import train_one
        from cnnspec.experiments.results import Outcome
        from cnnspec.training import records

        self._load()
        try:
            result = train_one(variant.spec, self.args, self.data, run_dir,
                               epoch_hooks=epoch_hooks)
        except Failure as exc:
            return Outcome("failed", records.read_history(run_dir), None, str(exc))
        except Exception as exc:  # noqa: BLE001 - one variant's crash must not end the sweep
            return Outcome("failed", records.read_history(run_dir), None,
                           f"{type(exc).__name__}: {exc}")
        return Outcome(result.status, list(result.history), result.metrics, result.reason,
                       result.run_dir)


def _flag_seconds(args: argparse.Namespace) -> tuple[int, int]:
    from cnnspec.experiments.study import DEFAULT_HEARTBEAT, GRACE_BEATS

    heartbeat = getattr(args, "heartbeat", None) or DEFAULT_HEARTBEAT
    grace = getattr(args, "grace", None) or GRACE_BEATS * heartbeat
    if grace <= heartbeat:
        raise UsageError(f"--grace ({grace}s) must be longer than --heartbeat ({heartbeat}s)")
    return heartbeat, grace


def sweep_options(args: argparse.Namespace, prune: Any = None) -> Any:
    """The sweep's flags as the engine's SweepOptions: the one place the study's recorded
    flags (`definition.TRAIN_FLAGS`) are read from the command line. `prune`: the
    PrunerConfig, recorded so that every worker prunes alike."""
    from cnnspec.experiments.definition import TRAIN_FLAGS, SweepOptions
    from cnnspec.experiments.pruning import config_record

    return SweepOptions(
        search=getattr(args, "search", None) or "grid",
        trials=getattr(args, "trials", None),
        sample=getattr(args, "sample", None),
        sample_seed=getattr(args, "sample_seed", 0) or 0,
        max_variants=getattr(args, "max_variants", None) or DEFAULT_MAX_VARIANTS,
        max_params=getattr(args, "max_params", None),
        train={k: getattr(args, k, None) for k in TRAIN_FLAGS},
        prune=None if prune is None else config_record(prune),
    )


STUDY_FOLDER_MARK = ".cnnspec-study"  # in a study's runs folder: the study's name


def claim_study_folder(runs_base: Path, name: str, mark: bool, flag: str = "--runs-dir"
                       ) -> None:
    """Refuse (UsageError) a folder for a study's trials that another study marked as its own;
    with mark=True, also make the folder and mark it with this study's name.

    Why: the folder is named after the study (`safe_name`), so `s 1` and `s_1` share one, and
    their trials' folders (`<variant>-t<N>`, numbered from 0 in each study) too: the second
    study's trials all failed on the first's runs, and its table showed the first's results.
    The worker checks before it opens the storage (nothing is stored or made for a refused
    study) and marks once the study is created or joined. The mark is created with O_EXCL, so
    workers racing to start one study agree on it; a folder from before the mark existed is
    marked by the first study that uses it."""
    path = runs_base / STUDY_FOLDER_MARK
    if mark:
        make_folder(runs_base, flag)
        # written whole under a name of this process's, then linked into place: a worker
        # racing this one sees the mark with its name or no mark, never an empty one
        partial = runs_base / f"{STUDY_FOLDER_MARK}.{os.getpid()}.tmp"
        try:
            partial.write_text(name, "utf-8")
            os.link(partial, path)
            return
        except FileExistsError:
            pass
        except OSError as exc:
            raise Failure(f"cannot mark {runs_base} as study {name}'s folder: "
                          f"{exc.strerror or exc}") from None
        finally:
            with contextlib.suppress(OSError):
                partial.unlink()
    try:
        owner = path.read_text("utf-8")
    except FileNotFoundError:
        return
    except (OSError, UnicodeDecodeError) as exc:
        raise Failure(f"{path}: cannot read which study the folder belongs to "
                      f"({getattr(exc, 'strerror', None) or exc}); remove the file if the "
                      "folder is this study's") from None
    if owner != name:
        raise UsageError(
            f"{runs_base} holds the runs of study {owner!r}; study {name!r} would train in the "
            f"same run folders (both names make the folder name {runs_base.name}): give this "
            "study another name, --out DIR or --runs-dir DIR")


def run_study_worker(spec: ir.Spec, args: argparse.Namespace) -> int:
    """`cnnspec sweep SPEC --study NAME [--storage URL]`: one worker of a stored sweep."""
    from cnnspec.experiments import study as st

    err = _console(stderr=True)

    def say(text: str) -> None:
        err.print(text, highlight=False, markup=False)

    if not getattr(args, "study", None) and not getattr(args, "storage", None):
        raise UsageError("--search, --trials, --heartbeat and --grace need --study NAME "
                         "(and optionally --storage URL)")
    heartbeat, grace = _flag_seconds(args)
    config = pruner_config(args, expand(spec, max_variants=args.max_variants,
                                        sample=args.sample, seed=args.sample_seed))
    sweep = st.sweep_def(spec, sweep_options(args, config))
    check_then_train(args, sweep.trials)
    url = st.storage_url(getattr(args, "storage", None), args.runs_dir)
    name = args.study or spec.name
    refuse_long_names([safe_name(name)], what="a study's folder")
    refuse_long_names([safe_name(v.name) for v in sweep.variants], len("-t999999"))
    if getattr(args, "out", None):  # before the study is created or joined
        refuse_foreign_out(Path(args.out), files_too=False)
    runs_base = Path(args.out) if getattr(args, "out", None) \
        else Path(args.runs_dir) / safe_name(name)
    flag = "--out" if getattr(args, "out", None) else "--runs-dir"
    claim_study_folder(runs_base, name, False, flag)  # before anything is stored or made
    storage = st.open_storage(url, heartbeat, grace)
    study, _ = st.create_or_join(storage, name, sweep, heartbeat, grace, say)
    claim_study_folder(runs_base, name, True, flag)
    say(f"study {name} in {st.redact_url(url)}: worker {socket.gethostname()}:{os.getpid()}, "
        f"{len(sweep.variants)} variants, search {sweep.search}, heartbeat "
        f"{storage.heartbeat_interval}s, grace {storage.grace_period}s"
        + ("" if config.kind == "none" else f", pruning {config.kind}"))
    trainer = _CliTrainer(args, say)
    worker = st.Worker(study, storage, sweep, trainer, runs_base, say, trainer.settings,
                       pruner=config)
    if not _work(worker, say):
        return 130
    no_plots = getattr(args, "no_plots", False)
    plot_dir = None if no_plots else Path(args.plots) if getattr(args, "plots", None) \
        else runs_base
    code = _print_study_comparison(storage, url, name, getattr(args, "sort", None), None,
                                   plot_dir)
    if not getattr(args, "then_train", None):
        return code
    # the long phase: a study of its own (`NAME.then-train`), so that its winners are trained
    # once whatever the number of workers, and `compare --study NAME.then-train` shows it
    from cnnspec.experiments import pruning

    best = winners(pruning.finished_trials(st.load_study(storage, name), config),
                   args.then_train, config)
    long_args, then_name = then_args(args), f"{name}.then-train"
    then_base = runs_base / "then-train"
    _say_winners(err, best, config, args.then_epochs, then_base)
    chosen = {f.variant for f in best}
    full = st.sweep_def(spec, sweep_options(long_args))
    long_sweep = dataclasses.replace(
        full, variants=tuple(v for v in full.variants if v.name in chosen), trials=len(best),
        search="grid", config={**full.config, "search": "grid", "trials": None,
                               "then_train_of": name, "then_train": args.then_train})
    long_study, _ = st.create_or_join(storage, then_name, long_sweep, heartbeat, grace, say)
    long_trainer = _CliTrainer(long_args, say)
    long_trainer.data = trainer.data
    long_worker = st.Worker(long_study, storage, long_sweep, long_trainer, then_base, say,
                            long_trainer.settings)
    if not _work(long_worker, say):
        return 130
    long_code = _print_study_comparison(storage, url, then_name, getattr(args, "sort", None),
                                        None, None if no_plots else then_base)
    return code or long_code


def _work(worker: Any, say: Callable[[str], None]) -> bool:
    """Run a study worker to the end; False when Ctrl-C/SIGTERM stopped it (trial re-queued)."""
    from cnnspec.experiments import study as st

    try:
        with sigterm_as_interrupt():
            worker.run()
    except st.Interrupted as exc:
        say(str(exc))
        return False
    say(f"worker done: trained {len(worker.trained)} variant(s) here"
        + (f" ({', '.join(worker.trained)})" if worker.trained else "")
        + (f"; {len(worker.pruned)} pruned ({', '.join(worker.pruned)})"
           if worker.pruned else ""))
    return True


def _print_study_comparison(storage: Any, url: str, name: str | None, sort: str | None,
                            fmt: str | None, plot_dir: Path | None,
                            auto_plots: bool = False) -> int:
    """Print the study's comparison (or an export) and write the plots (to plot_dir, or with
    auto_plots to the folder holding the run folders this machine can reach); 1 on failures."""
    from cnnspec.experiments import study as st
    from cnnspec.training import records

    study = st.load_study(storage, name)
    view = st.study_view(study)
    rows, dirs = print_comparison(list(view.rows), list(view.run_dirs), sort, fmt,
                                  f"study {study.study_name}: {len(view.rows)} runs")
    if fmt is None:
        console = _console()
        total = view.variants if view.search == "grid" else study.user_attrs.get(st.A_QUEUED, 0)
        extra = []
        if view.requeued:
            extra.append(f"{view.requeued} stopped or lost trial(s) re-queued")
        if view.pruned:
            extra.append(f"{view.pruned} pruned")
        if view.duplicates:
            extra.append(f"{view.duplicates} duplicate TPE sample(s) not trained")
        console.print(
            f"{view.completed} of {total} {'variants' if view.search == 'grid' else 'samples'} "
            f"completed, {view.running} running, {view.queued} queued, {len(view.failed)} failed"
            + ("; " + "; ".join(extra) if extra else "") + f"  ({st.redact_url(url)})", style="dim")
    if plot_dir is None and auto_plots:
        parents = {d.parent for d in dirs if (d / records.SETTINGS_FILE).is_file()}
        plot_dir = parents.pop() if len(parents) == 1 else None
    if plot_dir is not None:
        plot_dir.mkdir(parents=True, exist_ok=True)
        write_plots(rows, dirs, plot_dir)  # learning curves only of folders this machine reaches
    if view.failed:
        err = _console(stderr=True)
        err.print(f"{len(view.failed)} failed:", style="bold red")
        for variant, why in view.failed:
            err.print(f"  {variant}: {why}", markup=False)
        return 1
    return 0


def compare_study(args: argparse.Namespace) -> int:
    """`cnnspec compare --study NAME [--storage URL]`: the comparison from the study alone."""
    from cnnspec.experiments import study as st

    if getattr(args, "runs", None):
        raise UsageError("give RUN_DIR… or --study/--storage, not both")
    url = st.storage_url(getattr(args, "storage", None),
                         getattr(args, "runs_dir", None) or "runs")
    if not getattr(args, "storage", None) and not Path(url[len("sqlite:///"):]).is_file():
        raise Failure(f"no sweep storage at {url[len('sqlite:///'):]}; give --storage URL "
                      "(or --runs-dir DIR of the sweep)")
    storage = st.open_storage(url, heartbeat=None)
    no_plots = getattr(args, "no_plots", False)
    plot_dir = Path(args.plots) if getattr(args, "plots", None) and not no_plots else None
    _print_study_comparison(storage, url, getattr(args, "study", None),
                            getattr(args, "sort", None), getattr(args, "format", None),
                            plot_dir, auto_plots=not no_plots)
    return 0


def register(sub: Any) -> None:
    """The commands that work across many specs, each registered with its own flags."""
    for add in (_register_run, _register_sweep, _register_compare, _register_diff,
                _register_expand):
        add(sub)


def _add_study_flags(g: Any, study_default: str) -> None:
    g.add_argument("--storage", metavar="URL",
                   help="an SQLAlchemy URL (sqlite:///FILE, postgresql+psycopg2://USER@HOST"
                        "/DB) or journal:///PATH; default: sqlite in --runs-dir "
                        "(sweeps.sqlite3)")
    g.add_argument("--study", metavar="NAME",
                   help=f"the study's name (default: {study_default})")


def _register_run(sub: Any) -> None:
    p = _register(sub, "run", cmd_run, "train several specs one after another, then compare")
    p.add_argument("specs", nargs="+", metavar="SPEC")
    p.add_argument("--out", metavar="DIR", type=out_folder,
                   help="put run folders in DIR/<spec>; the same "
                   "command again continues there (finished runs kept)")
    add_train_flags(p)
    _add_compare_flags(p)


def _register_sweep(sub: Any) -> None:
    p = _register(sub, "sweep", cmd_sweep, "train every variant of a sweep spec, then compare")
    p.add_argument("file", metavar="SPEC")
    p.add_argument("--out", metavar="DIR", type=out_folder,
                   help="put run folders in DIR/<variant>; the same "
                   "command again continues the sweep there (finished runs kept)")
    _add_sweep_size(p)
    add_train_flags(p)
    _add_compare_flags(p)
    g = p.add_argument_group(
        "many workers (an Optuna study; run the same command on every worker)")
    _add_study_flags(g, "the spec's name")
    g.add_argument("--search", choices=("grid", "tpe"),
                   help="grid: every variant (default); tpe: --trials N variants chosen by TPE")
    g.add_argument("--trials", type=_positive_int, metavar="N",
                   help="with --search tpe: how many variants to train")
    g.add_argument("--heartbeat", type=_positive_int, metavar="SECONDS",
                   help="a running trial beats this often (default 30); set by the worker "
                        "that creates the study")
    g.add_argument("--grace", type=_positive_int, metavar="SECONDS",
                   help="a trial without a beat this long is re-queued (default 4 beats)")
    _add_prune_flags(p)


def _add_prune_flags(p: argparse.ArgumentParser) -> None:
    from cnnspec.experiments.pruning import KINDS, METRICS, PrunerConfig

    d = PrunerConfig()  # the defaults live there once; the help texts quote them
    g = p.add_argument_group(
        "pruning (stop variants that are behind after an epoch) and the long phase")
    g.add_argument("--prune", choices=KINDS, default=d.kind,
                   help="halving: asynchronous successive halving; hyperband; median: below "
                        f"the completed trials' median; none. Default: {d.kind}")
    g.add_argument("--prune-metric", choices=tuple(METRICS), default=d.metric,
                   help="the metric judged after every epoch: a validation one (default "
                        f"{d.metric}), or the training accuracy or loss (steadier in the first "
                        "epochs of batch-norm nets, but it favours the least regularised "
                        "variants); winners are ranked by the validation metric either way")
    g.add_argument("--min-epochs", type=int, default=d.min_resource, metavar="N",
                   help="halving/hyperband: epochs before a variant can first be stopped "
                        f"(default {d.min_resource})")
    g.add_argument("--reduction-factor", type=int, default=d.eta, metavar="ETA",
                   help="halving/hyperband: about 1/ETA of the variants reaching a rung go on "
                        f"(default {d.eta})")
    g.add_argument("--warmup", type=int, default=d.warmup, metavar="EPOCH",
                   help=f"median: the first epoch a variant may be stopped at (default {d.warmup})")
    g.add_argument("--startup-trials", type=int, default=d.startup, metavar="N",
                   help="median: nothing is stopped before N variants completed "
                        f"(default {d.startup})")
    g.add_argument("--then-train", type=_positive_int, metavar="K",
                   help="after the sweep, train its best K completed variants again (fresh "
                        "runs) for --then-epochs N, in <out>/then-train")
    g.add_argument("--then-epochs", type=_positive_int, metavar="N",
                   help="the epochs of the --then-train runs (--epochs is the sweep's)")


def _register_compare(sub: Any) -> None:
    p = _register(sub, "compare", cmd_compare, "compare finished runs side by side")
    p.add_argument("runs", nargs="*", metavar="RUN_DIR", help="run folders or their parent")
    fmt = p.add_mutually_exclusive_group()
    for name in ("markdown", "csv", "json"):
        fmt.add_argument(f"--{name}", dest="format", action="store_const", const=name,
                         help=f"print {name} instead of the table")
    _add_compare_flags(p)
    g = p.add_argument_group("a sweep stored in a study (instead of RUN_DIR…)")
    _add_study_flags(g, "the storage's only study")
    g.add_argument("--runs-dir", default="runs", metavar="DIR", type=out_folder,
                   help="with --study and no --storage: the study is in DIR/sweeps.sqlite3")


def _register_diff(sub: Any) -> None:
    p = _register(sub, "diff", cmd_diff, "layers, shapes and params that differ between two specs")
    p.add_argument("a", metavar="A.cnn")
    p.add_argument("b", metavar="B.cnn")
    p.add_argument("--all", action="store_true", help="show unchanged layers too")
    p.add_argument("--json", action="store_true")
    _add_max_params(p)


def _register_expand(sub: Any) -> None:
    p = _register(sub, "expand", cmd_expand, "list the concrete variants of a sweep spec")
    p.add_argument("file", metavar="FILE")
    p.add_argument("--json", action="store_true", help="names, choices and text of each variant")
    p.add_argument("--write", metavar="DIR", help="write each variant as DIR/<name>.cnn")
    _add_sweep_size(p)
    _add_max_params(p)
