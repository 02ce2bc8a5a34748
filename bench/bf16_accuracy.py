"""Accuracy in bf16 vs float32: exp7 trained by `cnnspec train` over several seeds, both ways.

Why: issue 14 asks that bf16 training (what `--precision auto` picks on a CPU with AMX or
AVX-512 BF16) stays within 1 point of float32 over 10 epochs of exp7. One seed cannot show
that: exp7's last-epoch accuracy on the 5,000-image subset swings by up to 13 points from one
epoch to the next. So each seed is trained in both precisions, and the bench prints, per seed
and on average, three readings of the same runs:

* final - the test accuracy after the last epoch (what `metrics.json` reports);
* last3 - the mean validation accuracy of the last three epochs (less swing);
* best  - the best epoch's validation accuracy;

and the paired difference bf16 - float32 with its standard error over seeds. (The validation
set is the test set, as in the notebook.) Every run is the real command line in a fresh
process, with the bf16 speed-ups the trainer applies (fused batch norm, one-pass L2, 16-bit
dropout masks).

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
    return {"precision": settings.get("precision", precision), "seed": seed, "wall": wall,
            "final": metrics["test_accuracy"], "last3": statistics.fmean(val[-3:]),
            "best": max(val)}


def seed_list(text: str) -> list[int]:
    """--seeds: comma-separated integers (argparse reports anything else as a usage error)."""
    try:
        return [int(s) for s in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not a comma-separated list of integers: {text!r}") from None


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
            verdict = "within" if abs(mean) <= TARGET_POINTS else "outside"
            print(f"{b} - {a}, {k:5}: {mean:+.1f} points ± {error:.1f} (standard error over "
                  f"{len(seeds)} seeds; per seed {', '.join(f'{d:+.1f}' for d in diffs)}) - "
                  f"{verdict} the ±{TARGET_POINTS:g}-point target on the mean")
    if args.json:
        args.json.write_text(json.dumps(runs, indent=1))


if __name__ == "__main__":
    main()
