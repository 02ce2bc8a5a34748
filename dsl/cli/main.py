"""The `cnnspec` command: argument parsing, terminal output and exit codes, nothing else.

Exit codes: 0 success, 1 a spec (or run) is bad, 2 the command line is wrong. Bad input is
reported compiler-style (`file:line:col`, source line, caret, hint), never as a traceback.
`check`, `summary`, `fmt` and `parse` do not import TensorFlow.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, NoReturn

from rich.console import Console
from rich.table import Table
from rich.text import Text

from cnnspec import __version__
from cnnspec.failures import Failure, UsageError  # defined below the CLI; re-exported
from cnnspec.language import ir
from cnnspec.language.checker import DEFAULT_MAX_PARAMS, Report, check
from cnnspec.language.errors import SpecError, visible, visible_lines
from cnnspec.language.format import format_spec, in_source_line_endings
from cnnspec.language.layers import fmt_shape
from cnnspec.language.parse import load, parse
from cnnspec.language.sweep import DEFAULT_MAX_VARIANTS, sweep_points

EXIT_OK, EXIT_BAD_SPEC, EXIT_USAGE = 0, 1, 2


class _Console(Console):
    """rich's Console, whose closed output is Python's BrokenPipeError again: rich's own
    handler exits 1 on the spot (`cnnspec compare … | head -1` failed where `summary … | head`
    did not, and a run stopped that way never said why); `main` and the training loop each
    handle BrokenPipeError as the reader going away.

    carry_on: the command goes on without this output instead (it falls silent). For the
    commands that work through several files (`check`, `fmt`): `check a b bad | head -1`
    stopped after a, never reported bad, and exited 0, so a pipeline passed a broken spec;
    `fmt` left the files after the closed line unformatted. Their work is the files and the
    exit code, which a closed report must not change."""

    def __init__(self, *args: Any, carry_on: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.carry_on = carry_on

    def on_broken_pipe(self) -> None:
        self.quiet = True
        with contextlib.suppress(OSError, ValueError):  # as rich does: Python's own flush
            devnull = os.open(os.devnull, os.O_WRONLY)  # at exit would fail again
            os.dup2(devnull, self.file.fileno())
            os.close(devnull)
        if not self.carry_on:
            raise BrokenPipeError(errno.EPIPE, "the output was closed")


def _console(stderr: bool = False, carry_on: bool = False) -> _Console:
    """The console every command prints through.

    Markup and emoji codes are off: what is printed holds user text (file names, `--out`,
    study and variant names such as `exp7[lr=.05]`, label names from the data), and rich would
    read `[red]` in it as a style, `[/]` as an error and `:smile:` as an emoji. Styled output
    is built as `Text` (or with `style=`), never with markup in strings.
    """
    console = _Console(stderr=stderr, highlight=False, markup=False, emoji=False,
                       carry_on=carry_on)
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console.width = max(console.width, 120)  # pipes and CI logs: don't wrap tables at 80
    return console


# the narrowest a text column gets beside the whole numbers (`conv16` folds to 2 lines of 3)
_TEXT_COLUMN_LEAST = 3


def whole_cells(table: Table, width: int, *numbers: int) -> Table:
    """A table whose cells are not cut short where the terminal (`width`) allows: the columns
    at indexes `numbers` (numbers and shapes) keep their widest cell on one line, and every
    other column wraps between words, folding a word onto the next line only where the column
    is narrower than it, instead of ending it in `…`. At 80 columns `summary` showed
    `conv16_l9c…`, the part of a Keras name that points back at the spec's line and column,
    and `diff` showed `32×32×…` for a shape. Where the whole numbers would leave the text
    columns under _TEXT_COLUMN_LEAST characters, the table is left as rich lays it out: at 40
    columns, text columns squeezed to nothing said less than cells cut with `…`. (Giving every
    word its whole width made tables wider than 80 columns, and rich then cut off the last
    columns.)"""
    from rich.cells import cell_len

    widest = [max(cell_len(text) for text in [str(column.header)] + [
        cell.plain if isinstance(cell, Text) else str(cell) for cell in column.cells])
        for column in table.columns]
    least = {i: widest[i] for i in numbers}
    texts = sum(min(w, _TEXT_COLUMN_LEAST) for i, w in enumerate(widest) if i not in least)
    frame = 3 * len(table.columns) + 1  # a border and a space each side of every cell
    if sum(least.values()) + texts + frame > width:
        return table
    for i, column in enumerate(table.columns):
        if i in least:
            column.no_wrap = True
            column.min_width = least[i]
        else:
            column.overflow = "fold"
    return table


def print_spec_error(err: SpecError, console: Console | None = None) -> None:
    """Render a SpecError compiler-style on stderr; `error:` in red when on a terminal."""
    console = console or _console(stderr=True)
    for line in err.render().splitlines():
        text = Text(line)
        if ": error: " in line:
            start = line.index(": error: ") + 2
            text.stylize("bold red", start, start + 6)
        elif line.startswith("  hint:"):
            text.stylize("cyan", 0, 7)
        elif line.strip() and set(line.strip()) == {"^"}:
            text.stylize("bold red")
        console.print(text, soft_wrap=True)  # never re-wrapped: the caret lines up below


def write_atomic(path: Path, text: str) -> None:
    """Replace a file's contents all at once (see cnnspec.training.records.atomic_write_text)."""
    from cnnspec.training.records import atomic_write_text

    atomic_write_text(path, text)


# -- commands ----------------------------------------------------------------------------------


def cmd_parse(args: argparse.Namespace) -> int:
    spec = load(args.file)
    print(ir.to_json(spec, indent=2))
    return EXIT_OK


def cmd_check(args: argparse.Namespace) -> int:
    from cnnspec.language.sweep import check_all_variants, variant_count

    out, err = _console(carry_on=True), _console(stderr=True, carry_on=True)
    bad = 0
    for file in args.files:
        try:
            spec = load(file)
            reports = check_all_variants(spec, max_params=args.max_params,
                                         max_variants=args.max_variants, sample=args.sample,
                                         seed=args.sample_seed)
        except SpecError as exc:
            print_spec_error(exc, err)
            bad += 1
            continue
        if not args.quiet:
            file = visible(file)  # shown, not sent to the terminal as codes (nor a new line)
            if args.sample is not None and spec.has_sweep() and args.sample < variant_count(
                    spec):  # a sample of one variant is a sample still, not a plain spec
                out.print(f"ok  {file}  {len(reports)} sampled variant"
                          f"{'s' if len(reports) > 1 else ''} (--sample-seed "
                          f"{args.sample_seed}), all check")
            elif len(reports) == 1:
                r = reports[0]
                out.print(f"ok  {file}  {r.params:,} params, {_si(r.macs)} MACs")
            else:
                out.print(f"ok  {file}  {len(reports)} variants, all check")
    if bad and len(args.files) > 1:
        err.print(f"{bad} of {len(args.files)} specs have errors")
    return EXIT_BAD_SPEC if bad else EXIT_OK


def cmd_summary(args: argparse.Namespace) -> int:
    spec = load(args.file)
    report = check(spec, max_params=args.max_params)
    if args.json:
        import json

        print(json.dumps(report.to_dict(), indent=2))
        return EXIT_OK
    console = _console()
    console.print(summary_table(report, visible(args.file), console))
    return EXIT_OK


def summary_table(report: Report, title: str, console: Console | None = None) -> Table:
    """The per-layer table `cnnspec summary` prints; spec text coloured on a terminal `console`."""
    from cnnspec.cli.highlight import spec_text

    console = console or Console(file=open(os.devnull, "w"))  # noqa: SIM115 (never a terminal)
    table = Table(title=f"{title}  (input {fmt_shape(report.input_shape)})", title_justify="left")
    table.add_column("line", justify="right", style="dim")
    table.add_column("layer")
    table.add_column("keras layer")
    table.add_column("output", justify="right")
    table.add_column("params", justify="right")
    table.add_column("MACs", justify="right")
    table.add_column("RF", justify="right", style="dim")
    for row in report.rows:
        table.add_row(
            row.where,  # `9 (block at 7)` for a layer from a `let` block
            # indented per merge it is inside; a merge row names what it merges
            _layer_cell(row, console, spec_text),
            f"{row.keras_name} ({row.keras_class})",
            fmt_shape(row.output_shape),
            f"{row.params:,}" if row.params else "0",
            _si(row.macs) if row.macs else "0",
            "x".join(str(v) for v in dict.fromkeys(row.receptive_field)),
        )
    table.add_section()
    table.add_row(
        "", "total", f"{len(report.rows)} layers", "",
        f"{report.params:,}", _si(report.macs), "",
    )
    head = ("its own head (the spec ends in softmax)" if report.own_head
            else f"the implicit head dense{report.classes} softmax")
    table.caption = (
        f"trainable {report.trainable:,} · non-trainable {report.non_trainable:,} · "
        f"activations {report.activation_bytes / 2**20:.2f} MiB per image (float32) · {head}"
    )
    table.caption_justify = "left"
    return whole_cells(table, console.width, 3, 4, 5, 6)


def _layer_cell(row: Any, console: Console, spec_text: Callable[..., Text]) -> Text:
    """A summary row's spec text: indented per merge it is inside; a merge names its inputs."""
    cell = Text("  " * row.depth)
    cell.append_text(spec_text(row.text, console, style="italic" if row.implicit else ""))
    if row.inputs and len(row.inputs) > 1:
        cell.append(f" ← {', '.join(row.inputs)}")
    return cell


def _si(n: float) -> str:
    for unit, size in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= size:
            return f"{n / size:.2f}{unit}"
    return str(int(n))


def cmd_fmt(args: argparse.Namespace) -> int:
    out, err = _console(carry_on=True), _console(stderr=True, carry_on=True)
    status = EXIT_OK
    for file in args.files:
        try:
            spec = load(file)
        except SpecError as exc:
            print_spec_error(exc, err)
            status = EXIT_BAD_SPEC
            continue
        shown = visible(file)  # a name's control characters shown, not sent to the terminal
        text = spec.source or ""
        canonical = in_source_line_endings(format_spec(spec), text)
        if args.show:
            _show_canonical(out, shown, canonical, several=len(args.files) > 1)
            continue
        if canonical == text:
            continue
        renamed = _renamed_sweep_keys(spec, canonical)
        if args.check:
            out.print(f"would reformat {shown}")
            _say_renamed(err, shown, renamed, "reformatting would rename")
            status = EXIT_BAD_SPEC
            continue
        # a link is followed: the file it names is reformatted and the link stays a link
        target = Path(file).resolve()
        if not target.is_file():
            err.print(f"cnnspec: error: {shown}: fmt rewrites files only (this is a pipe or a "
                      "device); `fmt --show` prints the canonical text", soft_wrap=True)
            status = EXIT_BAD_SPEC
            continue
        kept = _kept_as_it_is(target)
        if kept is not None:
            err.print(f"cnnspec: error: cannot rewrite {shown}: {kept}; it is unchanged "
                      "(`fmt --show` prints the canonical text)", soft_wrap=True)
            status = EXIT_BAD_SPEC
            continue
        try:  # a byte-order mark an editor wrote stays, as the line endings do (was dropped)
            write_atomic(target, "\ufeff" * _starts_with_bom(target) + canonical)
        except OSError as exc:  # a folder that takes no new file beside it, a full disk
            err.print(f"cnnspec: error: cannot rewrite {shown}: {exc.strerror or exc}; it is "
                      "unchanged (`fmt --show` prints the canonical text)", soft_wrap=True)
            status = EXIT_BAD_SPEC
            continue
        out.print(f"reformatted {shown}")
        _say_renamed(err, shown, renamed, "reformatting renamed")
    return status


def _starts_with_bom(path: Path) -> bool:
    """Whether a file begins with UTF-8's byte-order mark (which load reads past)."""
    with path.open("rb") as f:
        return f.read(3) == b"\xef\xbb\xbf"


def _kept_as_it_is(target: Path) -> str | None:
    """Why fmt must not replace this file, or None. fmt writes a new file and renames it over
    the old one (so a failed write changes nothing), which goes past what a write in place
    would meet: a file the user may not write (mode 444, or another user's 644 in a folder
    open to all) was replaced by one of theirs, and a file with other names (hard links) was
    split from them, the others keeping the old text. (Root may write any file, as with a
    write in place; a file of another user's that the user may write still becomes theirs.)"""
    try:
        links = target.stat().st_nlink
    except OSError as exc:
        return exc.strerror or str(exc)
    if not os.access(target, os.W_OK):
        return "you may not write it (Permission denied)"
    if links > 1:
        return (f"it has {links} names (hard links), and rewriting it would leave the "
                f"other{'s' if links > 2 else ''} with the old text")
    return None


def _renamed_sweep_keys(spec: ir.Spec, canonical: str) -> list[tuple[str, str]]:
    """(old, new) for each sweep key, or choice of one, the canonical text names differently.
    A key written twice on one line is told apart by its column (`conv@2:18`), and fmt moves
    columns; a layer argument's choice is named as written (`bn(m={.9,0.5})` has `m=0.5`),
    and fmt writes `.5`: the meaning stays, but the variants' names, and the runs named after
    them, would not match."""
    if not spec.has_sweep():
        return []
    try:
        after = sweep_points(parse(canonical, spec.filename))
    except SpecError:  # not reached: the canonical text of a spec parses
        return []
    before = sweep_points(spec)
    if len(before) != len(after):  # not reached either: fmt keeps every sweep point
        return []
    renamed = [(old.key, new.key) for old, new in zip(before, after, strict=True)
               if old.key != new.key]
    for old, new in zip(before, after, strict=True):
        renamed += [(f"{old.key}={a}", f"{new.key}={b}")
                    for a, b in zip(old.labels, new.labels, strict=False) if a != b]
    return renamed


def _say_renamed(err: Console, file: str, renamed: list[tuple[str, str]], done: str) -> None:
    if renamed:
        keys = ", ".join(f"{old} -> {new}" for old, new in renamed)
        err.print(f"cnnspec: note: {file}: {done} its sweep points {keys}, and so the "
                  "variants named after them; runs already named after the old names keep them",
                  soft_wrap=True, markup=False, highlight=False)


def _show_canonical(out: _Console, file: str, canonical: str, several: bool) -> None:
    """`fmt --show`: the canonical text on stdout, coloured on a terminal; the file is untouched.

    With several files each starts with a `# FILE` comment, so the output is still a spec
    (file is the name as shown: a line break in it is a sign, not the end of the comment).
    """
    if not out.is_terminal:  # byte for byte: Rich would expand a comment's tabs
        if out.quiet:  # its reader went away
            return
        try:
            out.file.write((f"# {file}\n" if several else "") + canonical)
            out.file.flush()
        except BrokenPipeError:
            out.on_broken_pipe()
        return
    from cnnspec.cli.highlight import spec_text

    if several:
        out.print(spec_text(f"# {file}", out), soft_wrap=True)
    out.print(spec_text(canonical, out), end="", soft_wrap=True)


def cmd_lsp(args: argparse.Namespace) -> int:
    from cnnspec.editor.lsp import main as lsp_main  # pygls only for this command

    return lsp_main()


# -- wiring ------------------------------------------------------------------------------------


def _add_max_params(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--max-params", type=_positive_int, default=DEFAULT_MAX_PARAMS, metavar="N",
        help=f"parameter budget (default {DEFAULT_MAX_PARAMS:.0e})",
    )


def _positive_int(text: str) -> int:
    try:
        number = float(text) if "e" in text.lower() else int(text)
        if not float(number).is_integer():  # 1.5e0 is not a budget of 1
            raise ValueError(text)
        value = int(number)
    except (ValueError, OverflowError):  # 1e999 is a float infinity
        raise argparse.ArgumentTypeError(f"not a whole number: {text}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1: {text}")
    return value


def _register(sub: Any, name: str, func: Callable[[argparse.Namespace], int], help: str,
              ) -> argparse.ArgumentParser:
    p = sub.add_parser(name, help=help, description=help)
    p.set_defaults(func=func)
    return p


def _index(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more: {text}")
    return value


def _add_sweep_size(p: argparse.ArgumentParser) -> None:
    """The flags that bound a sweep's variants: the same on check, expand and sweep, so a
    sample that `check` passes is the sample that `expand` lists and `sweep` trains."""
    p.add_argument("--max-variants", type=_positive_int, default=DEFAULT_MAX_VARIANTS,
                   metavar="N",
                   help=f"refuse sweeps with more variants (default {DEFAULT_MAX_VARIANTS})")
    p.add_argument("--sample", type=_positive_int, metavar="K", help="take K variants at random")
    p.add_argument("--sample-seed", type=_index, default=0, metavar="N",
                   help="seed for --sample (default 0)")


def _check_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("files", nargs="+", metavar="FILE")
    p.add_argument("-q", "--quiet", action="store_true", help="print errors only")
    _add_max_params(p)
    _add_sweep_size(p)


def _summary_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", metavar="FILE")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    _add_max_params(p)


def _fmt_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("files", nargs="+", metavar="FILE")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--check", action="store_true", help="change nothing; exit 1 if unformatted")
    mode.add_argument("--show", action="store_true",
                      help="print the canonical text (coloured on a terminal); change nothing")


def _file_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", metavar="FILE")


# The commands defined in this module (they parse, check and print, and need nothing else):
# name -> (function, help, its arguments), in the order `--help` lists them.
_FRONT_END: dict[str, tuple[Callable[[argparse.Namespace], int], str,
                            Callable[[argparse.ArgumentParser], None]]] = {
    "check": (cmd_check, "check specs; list every error (exit 1 if any)", _check_arguments),
    "summary": (cmd_summary, "per-layer shapes, parameters and MACs", _summary_arguments),
    "fmt": (cmd_fmt, "rewrite specs in canonical form", _fmt_arguments),
    "parse": (cmd_parse, "print a spec's IR as JSON", _file_argument),
    "lsp": (cmd_lsp, "run the language server on stdin/stdout (for editors)", lambda p: None),
}
FRONT_END = tuple(_FRONT_END)


class _Parser(argparse.ArgumentParser):
    """argparse, except that help and version text that cannot be written is an error
    (OSError, which `main` reports): argparse drops it, so `cnnspec --version > /dev/full`
    exited 0 having printed nothing. A usage error's text on stderr is still dropped as
    argparse does, so the exit code stays 2 (a wrong command line). Sub-command parsers are
    made of the same class."""

    def error(self, message: str) -> NoReturn:
        """A wrong command line in one line and a hint, exit 2: argparse put its whole usage
        block first (22 lines for `sweep`), burying the one line that says what is wrong.
        (argparse reports a sub-command's unknown options from the top: `cnnspec: error:
        unrecognized arguments`, so the top's hint names both helps.)"""
        hint = (f"`{self.prog} --help` lists what it takes" if " " in self.prog else
                f"`{self.prog} --help` lists the commands, `{self.prog} COMMAND --help` "
                "what each takes")
        self.exit(2, f"{self.prog}: error: {visible_lines(message)}\n"  # (it quotes the
                     f"  hint: {hint}\n")  # user's words)

    def _print_message(self, message: str, file: Any = None) -> None:
        file = file or sys.stderr
        if not message or file is None:  # started with fd 2 closed (`2>&-`), as argparse
            return
        try:
            file.write(message)
        except OSError:
            if file is not sys.stdout:
                return
            raise


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The whole command line; or, with `only` (one of FRONT_END), just that command.

    Why `only`: `main` runs a front-end command with a parser that has nothing else. The other
    commands' modules (cnnspec.cli.train, cnnspec.cli.experiments) import the training and
    experiment layers, and argparse builds a parser per command: together more than the rest
    of `cnnspec summary`. What that command accepts, its help and its usage errors are the
    same either way (the top-level usage names COMMAND, not the list of commands).
    """
    parser = _Parser(
        prog="cnnspec",
        description="Check, compile, train and compare CNNs written in the cnnspec language.",
    )
    parser.add_argument("--version", action="version", version=f"cnnspec {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (func, help, arguments) in _FRONT_END.items():
        if only is None or name == only:
            arguments(_register(sub, name, func, help))
    for register in _extra_commands() if only is None else ():  # here: they import this module
        register(sub)
    return parser


def _extra_commands() -> list[Callable[[Any], None]]:
    """Commands defined in their own modules (train, run, compare, ...), registered lazily."""
    out: list[Callable[[Any], None]] = []
    for module in ("cnnspec.cli.train", "cnnspec.cli.experiments"):
        try:
            mod = __import__(module, fromlist=["register"])
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise
            continue
        out.append(mod.register)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    # TensorFlow's C++ start-up chatter (CUDA probes on CPU machines) is noise on a terminal.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    argv = sys.argv[1:] if argv is None else list(argv)
    if sys.stdout is None:  # started with fd 1 closed (`>&-`): Python drops every print,
        # --help and --version included
        _console(stderr=True).print("cnnspec: error: cannot write the output: standard "
                                    "output is closed", soft_wrap=True)
        return EXIT_BAD_SPEC
    # a front-end command is the first argument (the only options before it: -h, --version)
    parser = build_parser(only=argv[0] if argv and argv[0] in FRONT_END else None)
    try:
        try:
            args = parser.parse_args(argv)
        except SystemExit as done:  # --help, --version, or a usage error argparse printed
            if done.code == 0:  # their text, flushed here: at exit it fails without a word
                sys.stdout.flush()
            raise
    except BrokenPipeError:  # `cnnspec --help | head -1`: the reader went away, as below
        _quiet_stdout()
        return EXIT_OK
    except OSError as exc:  # `cnnspec --version > /dev/full` exited 0, printing nothing
        _quiet_stdout()
        with contextlib.suppress(OSError):
            _console(stderr=True).print(
                f"cnnspec: error: cannot write the output: {exc.strerror or exc}",
                soft_wrap=True)
        return EXIT_BAD_SPEC
    args.argv = argv  # a stopped sweep prints the command that continues it
    try:
        # a training command stopped by SIGTERM (a scheduler preempting the job, `kill`)
        # saves and exits as for Ctrl-C; a front-end command has nothing to save
        with contextlib.nullcontext() if args.command in FRONT_END else sigterm_as_interrupt():
            return args.func(args)
    except SpecError as exc:
        print_spec_error(exc)
        return EXIT_BAD_SPEC
    except UsageError as exc:
        # soft_wrap: one line however long (paths, URLs); the terminal wraps it, rich does not
        _console(stderr=True).print(f"cnnspec: error: {visible_lines(str(exc))}",
                                    soft_wrap=True)
        return EXIT_USAGE
    except Failure as exc:
        if str(exc):
            message = Text(f"cnnspec: error: {visible_lines(str(exc))}")
            message.stylize("bold red", 9, 15)
            _console(stderr=True).print(message, soft_wrap=True)
        return EXIT_BAD_SPEC
    except KeyboardInterrupt:
        _console(stderr=True).print("interrupted")
        return 130
    except BrokenPipeError:
        return EXIT_OK
    except OSError as exc:  # one line, whatever it was; a full disk is the likely one
        output = exc.filename is None and exc.errno in _OUTPUT_ERRNOS
        if output:
            _quiet_stdout()  # else Python's own flush at exit fails again, with a traceback
        where = f"{exc.filename}: " if exc.filename is not None else ""
        what = "cannot write the output: " if output else where
        hint = ("; files and run folders are named after the spec and its variants: give the "
                "spec a shorter file name") if exc.errno == errno.ENAMETOOLONG else ""
        with contextlib.suppress(OSError):
            _console(stderr=True).print(
                f"cnnspec: error: {visible_lines(f'{what}{exc.strerror or exc}{hint}')}",
                soft_wrap=True)
        return EXIT_BAD_SPEC


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM behaves like Ctrl-C: a run saves its checkpoint state and records and stops
    (status "interrupted", resumable), a sweep worker puts its trial back in the queue at once
    instead of after the grace period. Only in the main thread, where handlers can be set."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt("SIGTERM")  # the trainer's records name it

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


# errors of a write to stdout (a file or device with no room), as opposed to one naming a file
_OUTPUT_ERRNOS = frozenset((errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EIO))


def _quiet_stdout() -> None:
    """Point stdout at /dev/null, dropping what could not be written."""
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


if __name__ == "__main__":
    sys.exit(main())
