"""Accuracy in bf16 vs float32: exp7 trained by `cnnspec train` over several seeds, both ways.

Why: issue 14 asks that bf16 training (what `--precision auto` picks on a CPU with AMX or
AVX-512 BF16) stays within 1 point of float32 over 10 epochs of exp7. One seed cannot show
that: exp7's last-epoch accuracy on the 5,000-image subset swings by up to 13 points from one
epoch to the next. So each seed is trained in both precisions, and the bench prints, per seed
and on average, three readings of the same runs:

* final - the test accuracy after the last epoch (what `metrics.json` reports);
* last3 - the mean validation accuracy of the last three epochs (less swing);
* best  - the best epoch's validation accuracy;

and the paired difference bf16 - float32 with its standard error over seeds, its 95 % interval
(Student's t), and two verdicts: is the mean within ±1 point, and (non-inferiority, the
question for a speed-up) is a loss of 1 point or more ruled out at 95 %. (The validation
set is the test set, as in the notebook.) Every run is the real command line in a fresh
process, with the bf16 speed-ups the trainer applies (fused batch norm, one-pass L2 folded
into plain SGD's step, dropout masks from 8 random bits per value).

    python bench/bf16_accuracy.py                        # exp7, seeds 1-3, 10 epochs
    python bench/bf16_accuracy.py --seeds 1,2,3,4 --jobs 2

Data: the shared 5,000-image CIFAR-10 subset (../shared/data/cifar-10-batches-py) when it is
beside the clone, else the bundled 1,000-image sample, or --data.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from machine import cpu_line, default_data  # bench/machine.py: beside this script

ROOT = Path(__file__).resolve().parents[1]
TARGET_POINTS = 1.0
READINGS = ("final", "last3", "best")


def train(spec: Path, precision: str, seed: int, epochs: int, data: Path, out: Path) -> dict:
    """One `cnnspec train` run; its readings (accuracies as fractions) and wall seconds."""
    command = [sys.executable, "-m", "cnnspec", "train", str(spec), "--precision", precision,
               "--seed", str(seed), "--epochs", str(epochs), "--data", str(data),
               "--out", str(out), "--progress", "none"]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stdout}{done.stderr}")
    history = json.loads((out / "history.json").read_text())
    metrics = json.loads((out / "metrics.json").read_text())
    settings = json.loads((out / "settings.json").read_text())
    val = [row["val_accuracy"] for row in history]
    run = {"precision": settings.get("precision", precision), "seed": seed, "wall": wall,
           "final": metrics["test_accuracy"], "last3": statistics.fmean(val[-3:]),
           "best": max(val)}
    print(f"  seed {seed} {run['precision']:8} " + " ".join(
        f"{k} {100 * run[k]:.1f}%" for k in READINGS) + f" ({wall:.0f} s)", flush=True)
    return run


def seed_list(text: str) -> list[int]:
    """--seeds: comma-separated integers (argparse reports anything else as a usage error)."""
    try:
        return [int(s) for s in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not a comma-separated list of integers: {text!r}") from None


# Student's t, two-sided 95 %, by degrees of freedom
T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306,
       9: 2.262, 10: 2.228, 11: 2.201, 12: 2.179, 13: 2.160, 14: 2.145, 15: 2.131, 16: 2.120,
       17: 2.110, 18: 2.101, 19: 2.093, 20: 2.086, 25: 2.060, 30: 2.042}


def t95(df: int) -> float:
    """The t quantile for a 95 % interval with df degrees of freedom: the nearest tabulated df
    at or below it (past 30, 30's), which can only widen the interval: never optimistic."""
    known = [d for d in sorted(T95) if d <= df]
    return T95[known[-1]] if known else float("inf")


def verdict(mean: float, error: float, n: int, target: float) -> str:
    """What the seeds show about `bf16 - float32` (points) against a target of ±target.

    Two readings: the mean itself within ±target; and, as a non-inferiority test (the question
    for a speed-up: does bf16 lose accuracy?), whether the 95 % interval's lower end is above
    -target.
    """
    half = t95(n - 1) * error if n > 1 else float("inf")
    low, high = mean - half, mean + half
    mean_says = "within" if abs(mean) <= target else "outside"
    if low > -target:
        floor = f"bf16 is not worse by {target:g} point or more (95 % lower bound {low:+.1f})"
    else:
        floor = f"a loss of {target:g} point or more is not ruled out (95 % lower bound {low:+.1f})"
    return (f"95 % interval [{low:+.1f}, {high:+.1f}]; mean {mean_says} ±{target:g}; {floor}")


def mean_and_error(values: list[float]) -> tuple[float, float]:
    """Mean and its standard error (0 for a single value)."""
    mean = statistics.fmean(values)
    error = statistics.stdev(values) / len(values) ** 0.5 if len(values) > 1 else 0.0
    return mean, error


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--spec", type=Path, default=ROOT / "specs" / "exp7.cnn")
    parser.add_argument("--seeds", type=seed_list, default=[1, 2, 3])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--precisions", default="float32,bf16")
    parser.add_argument("--jobs", type=int, default=1, help="runs at a time")
    parser.add_argument("--data", type=Path, default=None)
    parser.add_argument("--json", type=Path, help="write every run's readings here")
    args = parser.parse_args()
    data = args.data or default_data()
    seeds = args.seeds
    precisions = args.precisions.split(",")
    unknown = [p for p in precisions if p not in ("float32", "bf16")]
    if unknown:  # `auto` trains as one of them, and its runs are recorded under that name
        parser.error(f"--precisions takes float32 and bf16, not {', '.join(unknown)}")
    print(cpu_line())
    print(f"{args.spec.name}, {args.epochs} epochs, seeds {seeds}, data {data}")

    with tempfile.TemporaryDirectory() as tmp:
        jobs = [(p, s, Path(tmp) / f"{p}-{s}") for s in seeds for p in precisions]
        with ThreadPoolExecutor(max_workers=args.jobs) as pool:
            runs = list(pool.map(
                lambda job: train(args.spec, job[0], job[1], args.epochs, data, job[2]), jobs))

    by = {(r["seed"], r["precision"]): r for r in runs}
    print(f"{'seed':>4} {'precision':9} " + " ".join(f"{k:>7}" for k in READINGS) + "   wall")
    for r in runs:
        print(f"{r['seed']:>4} {r['precision']:9} "
              + " ".join(f"{100 * r[k]:6.1f}%" for k in READINGS) + f" {r['wall']:6.0f} s")
    for p in precisions:
        means = [mean_and_error([100 * by[(s, p)][k] for s in seeds])[0] for k in READINGS]
        print(f"mean {p:9} " + " ".join(f"{m:6.1f}%" for m in means))
    if len(precisions) == 2:
        a, b = precisions
        for k in READINGS:
            diffs = [100 * (by[(s, b)][k] - by[(s, a)][k]) for s in seeds]
            mean, error = mean_and_error(diffs)
            print(f"{b} - {a}, {k:5}: {mean:+.1f} points ± {error:.1f} (standard error over "
                  f"{len(seeds)} seeds; per seed {', '.join(f'{d:+.1f}' for d in diffs)})")
            print(f"    {verdict(mean, error, len(seeds), TARGET_POINTS)}")
    if args.json:
        args.json.write_text(json.dumps(runs, indent=1))


if __name__ == "__main__":
    main()
