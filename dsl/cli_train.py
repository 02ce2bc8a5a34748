"""`cnnspec train` and `cnnspec evaluate`: the command-line edge of the trainer.

TensorFlow is imported only once a command actually trains or evaluates, so `--help` and bad
specs answer at once.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from cnnspec import ir
from cnnspec.checker import check
from cnnspec.cli import (
    EXIT_OK,
    Failure,
    UsageError,
    _add_max_params,
    _console,
    _positive_int,
    _register,
)
from cnnspec.parse import load
from cnnspec.settings import OPTIMIZERS, TrainSettings, settings_of

EXIT_INTERRUPTED = 130


def add_train_flags(p: argparse.ArgumentParser) -> None:
    """Flags that override a spec's training settings; shared by train, run and sweep."""
    g = p.add_argument_group("training settings (override the spec's `train` line)")
    g.add_argument("--epochs", type=_positive_int, metavar="N")
    g.add_argument("--batch-size", type=_positive_int, metavar="N", dest="batch")
    g.add_argument("--lr", type=_positive_float, metavar="X", help="learning rate")
    g.add_argument("--momentum", type=float, metavar="X")
    g.add_argument("--optimizer", choices=OPTIMIZERS)
    g.add_argument("--seed", type=int, metavar="N", help="same seed, same history")
    d = p.add_argument_group("data and output")
    d.add_argument("--data", metavar="DIR",
                   help="CIFAR-10 python batches (default: $CNNSPEC_DATA, the Keras cache, "
                        "then the bundled sample)")
    d.add_argument("--limit", type=_positive_int, metavar="N",
                   help="train on the first N training images")
    d.add_argument("--runs-dir", default="runs", metavar="DIR",
                   help="where run folders go (default runs/)")
    d.add_argument("--precision", choices=("float32", "bf16"), default="float32",
                   help="bf16: mixed bfloat16, faster on CPUs with bf16 support (changes numerics)")
    d.add_argument("--progress", choices=("auto", "rich", "plain", "none"), default="auto")
    _add_max_params(p)


def _index(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more: {text}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number: {text}")
    return value


def resolved_settings(spec: ir.Spec, args: argparse.Namespace) -> TrainSettings:
    """The spec's settings with command-line overrides applied."""
    return settings_of(spec).override(
        epochs=args.epochs, batch=args.batch, lr=args.lr, momentum=args.momentum,
        optimizer=args.optimizer, seed=args.seed,
    )


def load_data(args: argparse.Namespace) -> Any:
    """CIFAR-10 from --data / $CNNSPEC_DATA / Keras cache / bundled sample; DataError -> Failure."""
    from cnnspec.data import DataError, load_cifar10

    try:
        return load_cifar10(explicit=args.data, limit=args.limit)
    except DataError as exc:
        raise Failure(str(exc)) from None


def new_run_dir(runs_dir: str | Path, name: str) -> Path:
    """`runs/<name>-<YYYYmmdd-HHMMSS>`, with a counter if that exists already."""
    base = Path(runs_dir)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    safe = "".join(c if c.isalnum() or c in "-_.[],=+" else "_" for c in name)
    candidate = base / f"{safe}-{stamp}"
    n = 2
    while candidate.exists():
        candidate = base / f"{safe}-{stamp}-{n}"
        n += 1
    return candidate


def _progress(args: argparse.Namespace) -> str | None:
    return None if args.progress == "auto" else args.progress


def train_one(spec: ir.Spec, args: argparse.Namespace, data: Any, out: Path | None = None,
              ) -> Any:
    """Check, then train one spec; returns the RunResult. TrainingFailed -> Failure."""
    from cnnspec.train import TrainingFailed, train

    check(spec, max_params=args.max_params)  # refuse before TensorFlow starts
    settings = resolved_settings(spec, args)
    run_dir = out or new_run_dir(args.runs_dir, spec.name)
    from cnnspec.distributed import DistributedError

    try:
        return train(spec, settings, data, run_dir, precision=args.precision,
                     progress=_progress(args), max_params=args.max_params,
                     **_strategy_kwargs(args))
    except TrainingFailed as exc:
        raise Failure(f"{exc}\nrun folder: {exc.run_dir or run_dir}") from None
    except DistributedError as exc:
        raise UsageError(str(exc)) from None


def _strategy_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    strategy = getattr(args, "strategy", "none")
    if strategy in (None, "none"):
        return {}
    return {"strategy": strategy, "cluster": getattr(args, "cluster", None),
            "task_index": getattr(args, "task_index", None)}


def _check_strategy_flags(args: argparse.Namespace) -> None:
    """--strategy/--cluster/--task-index make sense together, before any data or TensorFlow."""
    import os

    from cnnspec.distributed import DistributedError, tf_config

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
    console.print(
        f"done: {result.epochs_completed} epochs, "
        + (f"test accuracy {acc:.4f}, " if acc is not None else "")
        + (f"val loss {last['val_loss']:.4f}, " if last.get("val_loss") is not None else "")
        + f"run folder {result.run_dir}"
    )
    return EXIT_OK


def cmd_train(args: argparse.Namespace) -> int:
    if args.resume:
        if args.spec:
            raise UsageError("give either a SPEC or --resume RUN_DIR, not both")
        from cnnspec.distributed import DistributedError
        from cnnspec.train import TrainingFailed, resume_run

        _check_strategy_flags(args)
        data = load_data(args) if args.data else None
        try:
            result = resume_run(args.resume, data, progress=_progress(args),
                                **_strategy_kwargs(args))
        except TrainingFailed as exc:
            raise Failure(str(exc)) from None
        except DistributedError as exc:
            raise UsageError(str(exc)) from None
        return report_result(result)
    if not args.spec:
        raise UsageError("train needs a SPEC (or --resume RUN_DIR)")
    _check_strategy_flags(args)
    spec = load(args.spec)
    if spec.has_sweep():
        raise UsageError(f"{args.spec} is a sweep; train its variants with `cnnspec sweep`")
    check(spec, max_params=args.max_params)
    data = load_data(args)
    _console(stderr=True).print(f"data: {data.describe()}")
    out = Path(args.out) if args.out else None
    return report_result(train_one(spec, args, data, out))


def cmd_evaluate(args: argparse.Namespace) -> int:
    from cnnspec.train import evaluate_run

    run_dir = Path(args.run_dir)
    if not (run_dir / "model.keras").exists():
        raise Failure(f"{run_dir}: no model.keras here (is it a finished run folder?)")
    data = load_data(args)
    metrics = evaluate_run(run_dir, data)
    console = _console()
    console.print(f"test loss {metrics['test_loss']:.4f}, "
                  f"test accuracy {metrics['test_accuracy']:.4f} on {data.describe()}")
    for row in metrics.get("per_class", []):
        acc = "n/a" if row["accuracy"] is None else f"{row['accuracy']:.4f}"
        console.print(f"  {row['label']:<12} {acc}  ({row['correct']}/{row['images']})")
    return EXIT_OK


def register(sub: Any) -> None:
    p = _register(sub, "train", cmd_train, "train a spec on CIFAR-10 and record the run")
    p.add_argument("spec", nargs="?", metavar="SPEC")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run")
    p.add_argument("--out", metavar="DIR", help="run folder (default runs/<spec>-<time>)")
    add_train_flags(p)
    g = p.add_argument_group("data-parallel training (the batch size is the global batch)")
    g.add_argument("--strategy", choices=("none", "mirrored", "multiworker"), default="none",
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
