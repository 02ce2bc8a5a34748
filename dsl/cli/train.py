"""`cnnspec train` and `cnnspec evaluate`: the command-line edge of the trainer.

TensorFlow is imported only once a command actually trains or evaluates, so `--help` and bad
specs answer at once.
"""

from __future__ import annotations

import argparse
import errno
import os
import shlex
import time
from contextlib import suppress
from pathlib import Path
from typing import Any

from rich.text import Text

from cnnspec.cli.main import (
    EXIT_OK,
    Failure,
    UsageError,
    _add_max_params,
    _console,
    _index,
    _positive_int,
    _register,
)
from cnnspec.language import ir
from cnnspec.language.checker import DEFAULT_MAX_PARAMS, check
from cnnspec.language.errors import visible
from cnnspec.language.layers import FLOAT32_TINY
from cnnspec.language.parse import load
from cnnspec.language.setting_values import SCHEDULES
from cnnspec.language.settings import (
    PROGRESS_MODES,
    SETTINGS,
    STRATEGIES,
    Setting,
    SettingsTable,
    TrainSettings,
    augment_problem,
    settings_of,
    validate,
)
from cnnspec.training.records import safe_name

EXIT_INTERRUPTED = 130


def add_train_flags(p: argparse.ArgumentParser, table: SettingsTable = SETTINGS) -> None:
    """Flags that override a spec's training settings; shared by train, run and sweep.

    They come from the table of settings: a spec setting with a flag overrides the spec (its
    default is None, "keep the spec's"); a run-only one (--limit, --precision) has its own.
    """
    g = p.add_argument_group("training settings (override the spec's `train` line)")
    for entry in table.flag_entries:
        if entry.scope == "both":
            _add_setting_flag(g, entry)
    d = p.add_argument_group("data and output")
    d.add_argument("--data", metavar="DIR",
                   help="CIFAR-10 python batches (default: $CNNSPEC_DATA, the Keras cache, "
                        "then the bundled sample)")
    for entry in table.flag_entries:
        if entry.scope == "run":
            _add_setting_flag(d, entry)
    d.add_argument("--runs-dir", default="runs", metavar="DIR", type=out_folder,
                   help="where run folders go (default runs/)")
    d.add_argument("--progress", choices=("auto", *PROGRESS_MODES), default="auto")
    add_verbose_flag(d)
    _add_max_params(p)


class _ShowTfLogs(argparse.Action):
    """`--verbose`: keep TensorFlow's log lines; acts while parsing, before TensorFlow loads."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        from cnnspec.backend.keras_model import show_tf_logs

        show_tf_logs()
        setattr(namespace, self.dest, True)


def add_verbose_flag(p: Any) -> None:
    """--verbose for every command that starts TensorFlow (hidden lines are noise otherwise)."""
    p.add_argument("--verbose", action=_ShowTfLogs, nargs=0, default=False,
                   help="show TensorFlow's own log lines (oneDNN, CUDA probing, ...)")


def out_folder(text: str) -> str:
    """--out's type: an empty `--out ""` (an unset variable) is refused, not read as "no
    --out", which would put the run somewhere the user did not ask for."""
    if not text:
        raise argparse.ArgumentTypeError("needs a folder, not an empty name")
    return text


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text}") from None


def _not_vanishing(text: str, value: float) -> float:
    """value, unless it is 0 or a denormal in float32: refused, as a spec refuses it."""
    if 0 < abs(value) < FLOAT32_TINY:
        raise argparse.ArgumentTypeError(
            f"is too small: {text} is 0 or a denormal in float32 and bfloat16")
    return value


def _float(text: str) -> float:
    """A number flag (--weight-decay, --ema, …): its range is the settings table's, checked
    with the spec's; a value that is 0 in float32 is refused here."""
    return _not_vanishing(text, _number(text))


def _positive_float(text: str) -> float:
    value = _number(text)
    if not value > 0 or value == float("inf"):  # 1e400 reads as inf: say finite
        raise argparse.ArgumentTypeError(f"must be a positive finite number: {text}")
    return _not_vanishing(text, value)


def _spec_value(entry: Setting) -> Any:
    """An argparse type reading a flag's text as the spec's `train` line would: `--lr
    onecycle(.4,warm=.2)`, `--augment flip+crop4`, with the spec's messages."""
    from cnnspec.language.errors import SpecError
    from cnnspec.language.parse import parse

    def read(text: str) -> Any:
        if "\n" in text or "#" in text:
            raise argparse.ArgumentTypeError(f"not a value: {text!r}")
        try:
            spec = parse(f"train {entry.name}={text}\n|")
        except SpecError as exc:
            d = exc.diagnostics[0]
            hint = f" ({d.hint})" if d.hint else ""
            raise argparse.ArgumentTypeError(f"{d.message}{hint}") from None
        if len(spec.settings) != 1 or spec.settings[0].choices:
            raise argparse.ArgumentTypeError(
                f"one value, not {text!r} (sweep in the spec, or run `cnnspec sweep`)")
        return spec.settings[0].value

    read.__name__ = entry.name  # argparse names the type in some messages
    return read


def _positive_float_or_value(entry: Setting) -> Any:
    """A positive number (the --lr of before, same messages), or a value such as a schedule."""
    spec_value = _spec_value(entry)

    def read(text: str) -> Any:
        if "(" in text or text in SCHEDULES:  # a schedule; anything else reads as before
            return spec_value(text)
        return _positive_float(text)

    return read


def _cli_reader(entry: Setting) -> Any:
    """The argparse type of a setting's flag, by the table's `cli_type` (else its kind)."""
    simple = {"positive_int": _positive_int, "positive_float": _positive_float, "int": int,
              "float": _float}
    name = entry.cli_type or entry.kind
    if name in simple:
        return simple[name]
    if name == "positive_float_or_value":
        return _positive_float_or_value(entry)
    return _spec_value(entry)


def _add_setting_flag(group: Any, entry: Setting) -> None:
    """One setting's flag: its choices, reader, metavar and help from the table."""
    kw: dict[str, Any] = {"dest": entry.name, "help": entry.help}
    if entry.values:
        kw["choices"] = entry.values
    else:
        kw["type"] = _cli_reader(entry)
        kw["metavar"] = entry.metavar or ("N" if entry.kind == "int" else "X")
    kw["default"] = entry.default if entry.scope == "run" else None
    group.add_argument(entry.flag, **kw)


def resolved_settings(spec: ir.Spec, args: argparse.Namespace,
                      table: SettingsTable = SETTINGS) -> TrainSettings:
    """The spec's settings with command-line overrides applied (a flag not given is None:
    the spec's value stays)."""
    return settings_of(spec, table).override(**{
        e.name: e.coerce(getattr(args, e.name, None))
        for e in table.flag_entries if e.in_spec})


def checked_settings(spec: ir.Spec, args: argparse.Namespace) -> TrainSettings:
    """`resolved_settings`, refused (UsageError) if the overrides make them untrainable.

    `check` already refuses a spec whose own settings cannot train (e.g. `optimizer=adam
    momentum=.9`); flags can make the same combination (`--optimizer adam` on a spec with
    momentum), and it must stop here, before data, TensorFlow or a run folder.
    """
    settings = resolved_settings(spec, args)
    problem = validate(settings) or augment_problem(settings, spec.input_shape)
    if problem is not None:
        # the file, as every other error names it; a sweep's variant by its name too
        where = spec.filename or spec.name
        if spec.filename and Path(spec.filename).stem != spec.name:
            where = f"{spec.filename} ({spec.name})"
        raise UsageError(f"{where}: {problem} (after the command-line overrides)")
    return settings


def data_failure(spec: ir.Spec, data: Any) -> None:
    """check_data's DataMismatch as a Failure: checked before TensorFlow and the run folder."""
    from cnnspec.training.train import DataMismatch, check_data

    try:
        check_data(spec, data)
    except DataMismatch as exc:
        raise Failure(str(exc)) from None


def load_data(args: argparse.Namespace, test_only: bool = False) -> Any:
    """CIFAR-10 from --data / $CNNSPEC_DATA / Keras cache / bundled sample; DataError -> Failure.

    test_only: the test batch alone (evaluate re-scores a model: a folder of test images will
    do)."""
    from cnnspec.training.data import DataError, load_cifar10

    try:
        return load_cifar10(explicit=args.data, limit=args.limit, test_only=test_only)
    except DataError as exc:
        raise Failure(str(exc)) from None


# bytes in one file or folder name (ext4, XFS, APFS, NTFS alike); a longer name is ENAMETOOLONG
NAME_MAX = 255
# what new_run_dir adds to a name: `-YYYYmmdd-HHMMSS` and, in a busy second, `-N`
RUN_DIR_SUFFIX = len("-20260101-000000-9999")


def refuse_long_names(names: list[str], extra: int = 0, what: str = "a run folder") -> None:
    """UsageError if a folder or file named after a spec or variant (plus `extra` bytes of
    suffix) would be longer than a file name may be: checked before anything is written or
    trained, where the file system's `File name too long` came mid-command, named no spec and
    (`expand --write`) left an empty folder behind."""
    for name in names:
        size = len(os.fsencode(name)) + extra
        if size > NAME_MAX:
            shown = visible(name if len(name) <= 60 else name[:60] + "…")
            raise UsageError(
                f"{what} named after {shown} would be {size} bytes, over the {NAME_MAX} a file "
                "name may have; give the spec a shorter file name" + (
                    " (or sweep fewer choices in one spec: a variant's name lists its choices)"
                    if "[" in name else ""))


def new_run_dir(runs_dir: str | Path, name: str) -> Path:
    """Create and return a new, empty `runs/<name>-<YYYYmmdd-HHMMSS>[-N]` folder.

    The folder is claimed by `mkdir` without exist_ok, which succeeds for exactly one process:
    two trainings started in the same second (or a sweep's workers) never get the same folder,
    where a check-then-create would let both pick it and one run overwrite the other.
    """
    base = Path(runs_dir)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    safe = safe_name(name)
    try:
        base.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise Failure(f"cannot create the runs folder {base}: {exc.strerror or exc}") from None
    for n in range(1, 10_000):
        candidate = base / (f"{safe}-{stamp}" if n == 1 else f"{safe}-{stamp}-{n}")
        try:
            candidate.mkdir()
        except FileExistsError:
            continue
        except OSError as exc:
            raise Failure(f"cannot create a run folder in {base}: {exc.strerror or exc}") from None
        return candidate
    raise Failure(f"{base}: 10,000 run folders named {safe}-{stamp}-N exist already")


def refuse_existing(out: Path) -> None:
    """Failure if --out already holds a run: checked before data, TensorFlow or any write."""
    from cnnspec.training.train import refuse_existing_run

    try:
        refuse_existing_run(out)
    except FileExistsError as exc:
        raise Failure(str(exc)) from None
    if out.exists() and not out.is_dir():
        raise Failure(f"--out {out}: exists and is not a folder; pick another folder")
    refuse_dangling(out)


def refuse_dangling(out: Path) -> None:
    """Failure for an --out that cannot be made: a symbolic link to nothing, or a path with a
    file on the way (`notes.txt/run`). Creating it would fail only after the data are read,
    as "File exists" or "Not a directory", naming neither the link nor the file."""
    if out.is_symlink() and not out.exists():
        raise Failure(f"--out {out}: a symbolic link to {os.readlink(out)}, which does not "
                      "exist; create that folder, or pick another --out")
    blocker = next((p for p in out.parents if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        raise Failure(f"--out {out}: {blocker} is a file, not a folder")


def say_precision(args: argparse.Namespace) -> None:
    """`precision: bf16 (auto: this CPU has AMX bf16 units)` on stderr, once per command.

    Printed beside the `data:` line, before TensorFlow starts, because auto makes the same
    command train with different numerics on different machines; the run folder records the
    same choice (settings.json: precision, precision_requested, precision_reason).
    """
    if getattr(args, "_precision_said", False):
        return
    from cnnspec.backend.cpu import resolve_precision

    precision, reason = resolve_precision(getattr(args, "precision", "auto"))
    _console(stderr=True).print(Text(f"precision: {precision} ({reason})"), soft_wrap=True)
    args._precision_said = True


def _progress(args: argparse.Namespace) -> Any:
    """The ProgressReporter for --progress (rich on a terminal when auto)."""
    from cnnspec.cli.progress import reporter

    return reporter(None if args.progress == "auto" else args.progress)


def train_one(spec: ir.Spec, args: argparse.Namespace, data: Any, out: Path | None = None,
              report: Any = None, epoch_hooks: Any = (), resume: bool = False,
              stopped: Any = None) -> Any:
    """Check (unless `report`, the spec's checked report, is given), then train one spec;
    returns the RunResult. TrainingFailed -> Failure. `epoch_hooks` go to the training loop
    (a pruned sweep's reporter). `resume`: `out` holds this very run (a continued sweep checked
    that), which goes on from its checkpoint in its recorded precision, or ends at once with
    `stopped` (a Stop the sweep's pruner decided again on the checkpoint's epochs)."""
    from cnnspec.training.distributed import DistributedError
    from cnnspec.training.records import RunFolderError
    from cnnspec.training.train import TrainingFailed, train

    # everything that can be refused is refused before TensorFlow starts and before a run
    # folder exists: the spec, the settings after overrides, the data's shape, --out
    if report is None:
        report = check(spec, max_params=args.max_params)
    settings = checked_settings(spec, args)
    data_failure(spec, data)
    precision = args.precision
    if out is not None and resume:
        precision = recorded_precision(out, precision)
    elif out is not None:
        refuse_existing(out)
    run_dir = out or new_run_dir(args.runs_dir, spec.name)
    if not resume:
        say_precision(args)  # after the last refusal that needs no TensorFlow
    try:
        return train(spec, settings, data, run_dir, precision=precision,
                     progress=_progress(args), max_params=args.max_params, resume=resume,
                     report=report, epoch_hooks=epoch_hooks, stopped=stopped,
                     **_strategy_kwargs(args))
    except TrainingFailed as exc:
        raise Failure(f"{exc}\nrun folder: {exc.run_dir or run_dir}") from None
    except DistributedError as exc:
        if out is None:
            discard_if_empty(run_dir)
        raise UsageError(str(exc)) from None
    except (RunFolderError, FileExistsError) as exc:  # e.g. another process holds the folder
        if out is None:
            discard_if_empty(run_dir)
        raise Failure(str(exc)) from None
    except OSError as exc:  # a full disk (or a file-size limit) while writing the records
        if out is None:
            discard_if_empty(run_dir)
        raise Failure(records_failure(run_dir, exc)) from None


def records_failure(run_dir: Path, exc: OSError) -> str:
    """What a run that could not write its records is told: the way on that works. A run
    with its settings.json resumes from its last checkpoint (a sweep's variant too, or by the
    sweep command again); one stopped before it has nothing to resume and starts again."""
    from cnnspec.training.records import SETTINGS_FILE

    where = Path(exc.filename).parent if exc.filename else run_dir  # not a temporary's name
    head = f"cannot write the run's records in {where}: {exc.strerror or exc}"
    fix = ("Make it writable" if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS)
           else "Make room")
    if (run_dir / SETTINGS_FILE).is_file():
        return (f"{head}; the run stopped. {fix}, then continue it from its last "
                f"checkpoint: cnnspec train --resume {shlex.quote(str(run_dir))}")
    return f"{head}; the run had not started. {fix}, then run the command again"


def recorded_precision(run_dir: Path, requested: str) -> str:
    """The precision a continued run trains in: the one it recorded when `auto` was asked for
    (auto may pick otherwise on this CPU; a run never changes precision halfway), else the one
    asked for (a continued sweep has checked that it is the recorded one)."""
    if requested != "auto":
        return requested
    from cnnspec.training.train import read_run_settings

    return str(read_run_settings(run_dir)["precision"])


def discard_if_empty(run_dir: Path) -> None:
    """Remove a default run folder we created if the run was refused before writing to it."""
    from cnnspec.training.records import LOCK_FILE

    with suppress(OSError):
        if {p.name for p in run_dir.iterdir()} <= {LOCK_FILE}:
            (run_dir / LOCK_FILE).unlink(missing_ok=True)
            run_dir.rmdir()


def _strategy_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    strategy = getattr(args, "strategy", "none")
    if strategy in (None, "none"):
        return {}
    return {"strategy": strategy, "cluster": getattr(args, "cluster", None),
            "task_index": getattr(args, "task_index", None)}


def _check_strategy_flags(args: argparse.Namespace) -> None:
    """--strategy/--cluster/--task-index make sense together, before any data or TensorFlow."""
    import os

    from cnnspec.training.distributed import DistributedError, tf_config

    strategy = getattr(args, "strategy", "none")
    cluster, index = getattr(args, "cluster", None), getattr(args, "task_index", None)
    if strategy != "multiworker":
        if cluster is not None or index is not None:
            raise UsageError("--cluster and --task-index go with --strategy multiworker")
        return
    if cluster is None and index is None:
        if not os.environ.get("TF_CONFIG"):
            raise UsageError("--strategy multiworker needs TF_CONFIG in the environment, or "
                             "--cluster host:port,host:port --task-index I")
        return
    if cluster is None or index is None:
        raise UsageError("--cluster and --task-index go together")
    try:
        tf_config(cluster, index)
    except DistributedError as exc:
        raise UsageError(str(exc)) from None


def report_result(result: Any) -> int:
    console = _console()
    if result.status == "interrupted":
        console.print(f"interrupted after {result.epochs_completed} of {result.epochs_planned} "
                      f"epochs; continue with: cnnspec train --resume {result.run_dir}")
        return EXIT_INTERRUPTED
    last = result.history[-1] if result.history else {}
    if not getattr(result, "chief", True):
        console.print(
            f"worker done: {result.epochs_completed} epochs"
            + (f", val loss {last['val_loss']:.4f}" if last.get("val_loss") is not None else "")
            + "; the chief (task 0) wrote the run folder")
        return EXIT_OK
    acc = result.test_accuracy
    scored = result.metrics or {}
    if scored.get("best_epoch") is not None:  # early stopping kept that epoch's weights
        early = result.status == "completed" and result.reason
        console.print(f"stopped early: {result.reason}" if early else
                      f"patience: kept the weights of epoch {scored['best_epoch']}, the best")
        last = result.history[scored["best_epoch"] - 1]
    flip = scored.get("test_accuracy_flip")
    console.print(
        f"done: {result.epochs_completed} epochs, "
        + (f"test accuracy {acc:.4f}, " if acc is not None else "")
        + (f"with test-time flip {flip:.4f}, " if flip is not None else "")
        + (f"val loss {last['val_loss']:.4f}, " if last.get("val_loss") is not None else "")
        + f"run folder {result.run_dir}"
    )
    return EXIT_OK


# run-only settings `--resume` uses: with --data (the recorded data moved), --limit picks the
# same number of training images the run recorded (its data fingerprint is checked)
_RESUME_TAKES = frozenset({"limit"})


def _refuse_flags_resume_ignores(args: argparse.Namespace) -> None:
    """UsageError for a flag `--resume` cannot honour: a resumed run keeps the settings, run
    folder and budget it was started with (they are what makes it the same run), so
    `--resume R --epochs 10` would otherwise train the recorded epochs without a word."""
    given = [entry.flag for entry in SETTINGS.flag_entries
             if entry.name not in _RESUME_TAKES and getattr(args, entry.name, None) != (
                 entry.default if entry.scope == "run" else None)]
    if args.out is not None:
        given.append("--out")
    if args.runs_dir != "runs":
        given.append("--runs-dir")
    if args.max_params != DEFAULT_MAX_PARAMS:
        given.append("--max-params")
    if given:
        raise UsageError(
            f"--resume continues {args.resume} with the settings and folder it was started "
            f"with, so {', '.join(given)} cannot apply; --data, --limit, --progress, --verbose "
            "and the data-parallel flags can (to train otherwise, start a new run from its "
            "spec.cnn)")


def cmd_train(args: argparse.Namespace) -> int:
    if args.resume:
        if args.spec:
            raise UsageError("give either a SPEC or --resume RUN_DIR, not both")
        _refuse_flags_resume_ignores(args)
        from cnnspec.training.data import DataError
        from cnnspec.training.distributed import DistributedError
        from cnnspec.training.records import RunFolderError
        from cnnspec.training.train import (
            DataMismatch,
            TrainingFailed,
            read_run_settings,
            recorded_data,
            resume_run,
        )

        _check_strategy_flags(args)
        try:
            recorded = read_run_settings(args.resume)  # a clear refusal before data or TF
        except RunFolderError as exc:
            raise Failure(f"cannot resume: {exc}") from None
        data = load_data(args) if args.data else None
        try:
            if data is None and args.limit is not None:
                # the recorded folder with this --limit: the run's fingerprint then says
                # whether these are its images (a larger --limit than the folder holds is)
                data = recorded_data(recorded, limit=args.limit)
            result = resume_run(args.resume, data, progress=_progress(args),
                                **_strategy_kwargs(args))
        except TrainingFailed as exc:
            raise Failure(str(exc)) from None
        except DistributedError as exc:
            raise UsageError(str(exc)) from None
        except DataError as exc:  # the recorded data source is gone or damaged
            raise Failure(f"cannot resume {args.resume}: {exc}; pass --data DIR --limit "
                          f"{recorded['data']['train_images']} (the folder it was trained "
                          "from, and its number of training images)") from None
        except (RunFolderError, DataMismatch) as exc:  # damaged records, held lock, mismatch
            text = str(exc)
            raise Failure(text if text.startswith("cannot resume") else
                          f"cannot resume: {text}") from None
        except BrokenPipeError:  # the output was closed (`| head`): not the records
            raise
        except OSError as exc:  # a full disk, a folder that takes no new file: as for train
            raise Failure(records_failure(Path(args.resume), exc)) from None
        return report_result(result)
    if not args.spec:
        raise UsageError("train needs a SPEC (or --resume RUN_DIR)")
    _check_strategy_flags(args)
    spec = load(args.spec)
    if spec.has_sweep():
        raise UsageError(f"{args.spec} is a sweep; train its variants with `cnnspec sweep`")
    check(spec, max_params=args.max_params)
    checked_settings(spec, args)
    out = Path(args.out) if args.out else None
    if out is None:
        refuse_long_names([safe_name(spec.name)], RUN_DIR_SUFFIX)
    if out is not None:
        refuse_existing(out)  # before the data is even read
    data = load_data(args)
    data_failure(spec, data)
    _console(stderr=True).print(Text(f"data: {data.describe()}"), soft_wrap=True)
    return report_result(train_one(spec, args, data, out))


def cmd_evaluate(args: argparse.Namespace) -> int:
    """Re-score a run's model.keras on the test split of the data the run was trained on.

    Without --data the run's recorded source (settings.json) is used, not today's default
    search: the numbers then describe that run, and the report names the training images it
    actually saw (a `--limit 256` run says 256, not the source's size).
    """
    from cnnspec.training.data import DataError
    from cnnspec.training.records import RunFolderError
    from cnnspec.training.train import (
        evaluate_run,
        missing_model,
        read_run_settings,
        recorded_data,
    )

    run_dir = Path(args.run_dir)
    try:
        recorded = read_run_settings(run_dir)
    except RunFolderError as exc:
        raise Failure(f"cannot evaluate: {exc}") from None
    missing = missing_model(run_dir)
    if missing is not None:
        raise Failure(f"cannot evaluate: {missing}")
    err = _console(stderr=True)
    if args.data is None and args.limit is None:
        try:
            data = recorded_data(recorded, test_only=True)
        except DataError as exc:
            raise Failure(f"cannot evaluate: the run's data is not readable any more: {exc}; "
                          "pass --data DIR") from None
    else:
        data = load_data(args, test_only=True)
    try:
        metrics = evaluate_run(run_dir, data)
    except RunFolderError as exc:
        raise Failure(f"cannot evaluate: {exc}") from None
    err.print(Text(f"data: {data.describe()}"), soft_wrap=True)
    info = recorded["data"]
    console = _console()
    console.print(Text(
        f"test loss {metrics['test_loss']:.4f}, test accuracy {metrics['test_accuracy']:.4f} "
        f"on {metrics['test_images']:,} test images of {data.source}; the run trained on "
        f"{info['train_images']:,} train images of {info['source']}"))
    for row in metrics.get("per_class", []):
        acc = "n/a" if row["accuracy"] is None else f"{row['accuracy']:.4f}"
        console.print(Text(f"  {row['label']:<12} {acc}  ({row['correct']}/{row['images']})"))
    return EXIT_OK


def register(sub: Any) -> None:
    p = _register(sub, "train", cmd_train, "train a spec on CIFAR-10 and record the run")
    p.add_argument("spec", nargs="?", metavar="SPEC")
    p.add_argument("--resume", metavar="RUN_DIR", type=out_folder,
                   help="continue an interrupted run")
    p.add_argument("--out", metavar="DIR", type=out_folder,
                   help="run folder (default runs/<spec>-<time>)")
    add_train_flags(p)
    g = p.add_argument_group("data-parallel training (the batch size is the global batch)")
    g.add_argument("--strategy", choices=STRATEGIES, default="none",
                   help="none: this process (default); mirrored: all local GPUs (or "
                        "$CNNSPEC_CPU_DEVICES logical CPUs); multiworker: several processes/hosts")
    g.add_argument("--cluster", metavar="HOST:PORT,…",
                   help="multiworker: every worker's address, the same list on all workers "
                        "(instead of TF_CONFIG)")
    g.add_argument("--task-index", type=_index, metavar="I",
                   help="multiworker: this worker's position in --cluster; 0 is the chief, "
                        "the only one that writes the run folder")

    p = _register(sub, "evaluate", cmd_evaluate, "re-score a run's saved model on the test split")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--data", metavar="DIR")
    p.add_argument("--limit", type=_positive_int, metavar="N", help=argparse.SUPPRESS)
    add_verbose_flag(p)
