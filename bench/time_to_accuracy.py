"""Time to accuracy: the fast CIFAR-10 recipe against the notebook's exp7, side by side.

Why: issue 12's goal for `examples/cifar10-fast.cnn` is to reach exp7's best validation
accuracy (`specs/exp7.cnn` trained as written: SGD lr .01, batch 32, 10 epochs) in at most a
third of exp7's wall time, and to end at least 5 points above that best. Both are trained here
by the real command line, `cnnspec train SPEC --precision auto`, each in a fresh process (what
a user waits for: start-up, TensorFlow import, tracing, every epoch and the final save), one
after the other in one run, so the machine's load hits both; on a shared machine the seconds
move by up to 2x between runs, so compare the ratio, not the absolute numbers.

How the times are taken: a run prints one line per epoch (`--progress plain`) once that
epoch's validation, checkpoint and history are written; the bench timestamps each line as it
arrives, from the moment it launched the process. "Passed exp7's best at" is the time of the
first epoch line of the fast run whose validation accuracy is at least exp7's best (the
accuracies themselves are read from the run's history.json afterwards). A run's wall time is
launch to exit.

    python bench/time_to_accuracy.py                    # the fast recipe, then exp7
    python bench/time_to_accuracy.py --exp7-first       # the other order
    python bench/time_to_accuracy.py --keep runs/tta    # keep the two run folders

Data: the shared 5,000-image CIFAR-10 subset (../shared/data/cifar-10-batches-py) when it is
beside the clone, else the bundled 1,000-image sample, or --data. Precision: `auto` by
default for both runs (bf16 on a CPU with AMX or AVX-512 BF16, float32 elsewhere); the
precision each run used is read from its settings.json and printed.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from machine import cpu_line, default_data  # bench/machine.py: beside this script

ROOT = Path(__file__).resolve().parents[1]
EXP7 = ROOT / "specs" / "exp7.cnn"
FAST = ROOT / "examples" / "cifar10-fast.cnn"
TIME_FRACTION = 1 / 3  # the goal: exp7's best within a third of exp7's wall time
MARGIN_POINTS = 5.0  # ... and a final accuracy at least this many points above exp7's best
EPOCH_LINE = re.compile(r"^epoch (\d+)/(\d+)\s")


@dataclass(frozen=True)
class Run:
    """One `cnnspec train` process: its wall time, when each epoch's line came, its records."""

    label: str
    spec: Path
    run_dir: Path
    wall: float
    epoch_times: dict[int, float]  # epoch (1-based) -> seconds from launch to its line
    history: list[dict[str, Any]]
    metrics: dict[str, Any]
    precision: str
    precision_reason: str
    returncode: int
    stderr: str

    @property
    def accuracies(self) -> list[float]:
        return [float(row["val_accuracy"]) for row in self.history
                if row.get("val_accuracy") is not None]

    @property
    def best(self) -> float:
        return max(self.accuracies)

    @property
    def final(self) -> float:
        return self.accuracies[-1]


def train(label: str, spec: Path, data: Path, run_dir: Path, precision: str) -> Run:
    """Run `cnnspec train` on `spec` in a fresh process, timestamping its epoch lines."""
    command = [sys.executable, "-m", "cnnspec", "train", str(spec), "--data", str(data),
               "--out", str(run_dir), "--precision", precision, "--progress", "plain"]
    print(f"[{label}] {' '.join(command[2:])}", flush=True)
    epoch_times: dict[int, float] = {}
    with tempfile.TemporaryFile(mode="w+") as err:
        start = time.perf_counter()
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=err, text=True,
                                   cwd=ROOT)
        assert process.stdout is not None
        for line in process.stdout:
            now = time.perf_counter() - start
            match = EPOCH_LINE.match(line)
            if match:
                epoch_times[int(match.group(1))] = now
                print(f"[{label}] {now:6.1f}s  {line.rstrip()}", flush=True)
        returncode = process.wait()
        wall = time.perf_counter() - start
        err.seek(0)
        stderr = err.read()
    settings = _read_json(run_dir / "settings.json") or {}
    history = _read_json(run_dir / "history.json") or []
    metrics = _read_json(run_dir / "metrics.json") or {}
    return Run(label, spec, run_dir, wall, epoch_times, history, metrics,
               str(settings.get("precision", "?")), str(settings.get("precision_reason", "")),
               returncode, stderr)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def first_pass(run: Run, threshold: float) -> tuple[int, float] | None:
    """(epoch, seconds from launch) of the first epoch of `run` whose validation accuracy is at
    least `threshold`; None if none is."""
    for row in run.history:
        value = row.get("val_accuracy")
        epoch = int(row["epoch"])
        if value is not None and value >= threshold and epoch in run.epoch_times:
            return epoch, run.epoch_times[epoch]
    return None


def curves_table(runs: list[Run]) -> list[str]:
    """Per epoch, each run's validation accuracy and when its line came."""
    epochs = max(len(run.history) for run in runs)
    head = "epoch | " + " | ".join(f"{run.label} val acc %  at s" for run in runs)
    lines = [head, "-" * len(head)]
    for i in range(epochs):
        cells = []
        for run in runs:
            if i < len(run.history) and run.history[i].get("val_accuracy") is not None:
                row = run.history[i]
                at = run.epoch_times.get(int(row["epoch"]))
                cells.append(f"{100 * row['val_accuracy']:>11.1f}  {at:>6.1f}" if at is not None
                             else f"{100 * row['val_accuracy']:>11.1f}  {'?':>6}")
            else:
                cells.append(" " * 19)
        lines.append(f"{i + 1:>5} | " + " | ".join(cells))
    return lines


def verdict(exp7: Run, fast: Run) -> tuple[list[str], bool]:
    """The summary lines and whether both targets are met."""
    target = exp7.best
    passed = first_pass(fast, target)
    lines = [
        f"exp7  ({exp7.spec.name}): wall {exp7.wall:.1f} s, {len(exp7.history)} epochs, best "
        f"{100 * exp7.best:.1f} % (epoch {exp7.accuracies.index(exp7.best) + 1}), final "
        f"{100 * exp7.final:.1f} %, precision {exp7.precision}",
        f"fast  ({fast.spec.name}): wall {fast.wall:.1f} s, {len(fast.history)} epochs, best "
        f"{100 * fast.best:.1f} %, final {100 * fast.final:.1f} %, precision {fast.precision}",
        f"wall-time ratio fast/exp7: {fast.wall / exp7.wall:.2f}",
    ]
    if passed is None:
        lines.append(f"fast never reached exp7's best ({100 * target:.1f} %)")
        in_time = False
    else:
        epoch, at = passed
        ratio = at / exp7.wall
        in_time = ratio <= TIME_FRACTION
        lines.append(
            f"fast passed exp7's best ({100 * target:.1f} %) at epoch {epoch}, {at:.1f} s after "
            f"launch: {ratio:.2f} of exp7's wall time (target <= {TIME_FRACTION:.2f}): "
            f"{'met' if in_time else 'NOT MET'}")
    above = 100 * (fast.final - exp7.best)
    high_enough = above >= MARGIN_POINTS
    lines.append(
        f"final accuracy: fast {100 * fast.final:.1f} % vs exp7 best {100 * exp7.best:.1f} %: "
        f"{above:+.1f} points (target >= +{MARGIN_POINTS:.0f}): "
        f"{'met' if high_enough else 'NOT MET'}; vs exp7 final {100 * exp7.final:.1f} %: "
        f"{100 * (fast.final - exp7.final):+.1f} points")
    for run in (exp7, fast):
        extra = {k: v for k, v in run.metrics.items()
                 if isinstance(v, float) and ("flip" in k or "tta" in k)}
        if extra:  # test-time flip, reported beside the plain accuracy
            lines.append(f"{run.label} test-time augmentation: " + ", ".join(
                f"{k} {100 * v:.1f} %" for k, v in extra.items()))
    if exp7.precision != fast.precision:
        lines.append(f"warning: the runs used different precisions ({exp7.precision} vs "
                     f"{fast.precision})")
    return lines, in_time and high_enough


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=None,
                        help="CIFAR-10 folder (default: ../shared's subset, else the sample)")
    parser.add_argument("--exp7", type=Path, default=EXP7, help="the reference spec")
    parser.add_argument("--fast", type=Path, default=FAST, help="the fast recipe")
    parser.add_argument("--precision", default="auto", choices=("auto", "float32", "bf16"),
                        help="for both runs (default auto)")
    parser.add_argument("--exp7-first", action="store_true",
                        help="train exp7 first (default: the fast recipe first, so a recipe "
                        "this version cannot train fails in seconds, not after exp7)")
    parser.add_argument("--keep", type=Path, default=None,
                        help="write the run folders here (default: a temporary folder)")
    args = parser.parse_args(argv)
    data = (args.data or default_data()).resolve()
    print(cpu_line())
    print(f"data: {data}; precision requested: {args.precision} (both runs)", flush=True)
    with tempfile.TemporaryDirectory(prefix="tta-") as scratch:
        folder = args.keep or Path(scratch)
        folder.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        plan = [("fast", args.fast), ("exp7", args.exp7)]
        if args.exp7_first:
            plan.reverse()
        runs = {}
        for label, spec in plan:
            run = train(label, spec.resolve(), data, folder / f"{label}-{stamp}", args.precision)
            if run.returncode != 0 or not run.accuracies:
                print(f"{label}: `cnnspec train` exited {run.returncode} without a validated "
                      f"epoch:\n{run.stderr.strip()}", file=sys.stderr)
                return 1
            runs[label] = run
    exp7, fast = runs["exp7"], runs["fast"]
    print()
    print(cpu_line())
    for run in (exp7, fast):
        print(f"precision of {run.label}: {run.precision} ({run.precision_reason})")
    print()
    print("\n".join(curves_table([exp7, fast])))
    print()
    lines, met = verdict(exp7, fast)
    print("\n".join(lines))
    print(f"targets: {'met' if met else 'NOT MET'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
