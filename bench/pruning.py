"""A 16-variant sweep around exp7, trained in full and with `--prune halving`, side by side.

Issue 13's targets: the pruned sweep trains at most 40 % of the full sweep's epochs, and its best
variant is the full sweep's best, or within 1 point of it (final validation accuracy).

Both sweeps run through the CLI (`cnnspec sweep`, as a user runs them), one after the other in
one run, on the same data, so the machine's load hits both; the figures are read back from the
run folders (epochs trained = history rows, winners = best final val_accuracy of the completed
runs). Seeded runs train identically on one machine, so a variant that completed in both sweeps
has the same curve in both: the pruned sweep's winner is also looked up in the full sweep.

The full size (16 variants x 6 epochs of exp7 on 5,000 images) takes about 20 minutes on an AMX
CPU at bf16; `--variants N` (a --sample of the grid), `--epochs N` and `--limit N` run it
smaller. Pruning's defaults are the CLI's (`--prune-metric val_accuracy --min-epochs 1
--reduction-factor 3`); pass others with `--prune-flags "..."`. To choose them, keep one full
sweep (`--keep DIR`) and replay its curves through the pruners with bench/pruning_replay.py
(seconds instead of 20 minutes a setting), then measure the chosen one here.

    .venv/bin/python bench/pruning.py [--variants 16] [--epochs 6] [--limit N] [--data DIR]
    .venv/bin/python bench/pruning.py --prune-flags "--prune-metric accuracy --reduction-factor 4"
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from machine import cpu_line, default_data  # bench/machine.py: beside this script

SPEC = """# exp7, swept: 16 variants (bench/pruning.py)
input 32x32x3
classes 10
train optimizer=sgd lr={.01,.05} batch=32 epochs=6 shuffle=true seed=1

conv{32,64} relu bn? pool2 drop{.25,.5}
(conv128 relu bn)x2 pool2 drop.25
| dense512 l2(.01) relu drop.5
"""
GRID = 16
EPOCH_SHARE = 0.40  # the pruned sweep's epochs, at most this share of the full sweep's
WITHIN = 0.01  # its best, at most 1 point below the full sweep's best


@dataclass(frozen=True)
class Run:
    variant: str
    status: str
    epochs: int
    final: float | None  # final val_accuracy


@dataclass(frozen=True)
class Sweep:
    label: str
    seconds: float
    runs: tuple[Run, ...]

    @property
    def epochs(self) -> int:
        return sum(r.epochs for r in self.runs)

    def winner(self) -> Run | None:
        done = [r for r in self.runs if r.status == "completed" and r.final is not None]
        return max(done, key=lambda r: r.final) if done else None

    def by_variant(self) -> dict[str, Run]:
        return {r.variant: r for r in self.runs}


def _read(folder: Path) -> Run:
    history = json.loads((folder / "history.json").read_text())
    status = json.loads((folder / "status.json").read_text())
    settings = json.loads((folder / "settings.json").read_text())
    final = history[-1].get("val_accuracy") if history else None
    return Run(settings["spec"]["name"], status["status"], len(history), final)


def sweep(label: str, spec: Path, out: Path, args: argparse.Namespace,
          extra: list[str]) -> Sweep:
    command = [sys.executable, "-m", "cnnspec", "sweep", str(spec), "--out", str(out),
               "--data", str(args.data), "--epochs", str(args.epochs), "--progress", "none",
               "--no-plots", *extra]
    if args.limit:
        command += ["--limit", str(args.limit)]
    if args.variants < GRID:
        command += ["--sample", str(args.variants), "--sample-seed", str(args.sample_seed)]
    print(f"{label}: {shlex.join(command[1:])}", flush=True)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "COLUMNS": "200"}
    started = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        sys.stderr.write(done.stdout[-4000:] + done.stderr[-4000:])
        raise SystemExit(f"{label}: cnnspec sweep exited {done.returncode}")
    folders = sorted(p.parent for p in out.glob("*/status.json"))
    return Sweep(label, seconds, tuple(_read(f) for f in folders))


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x * 100:.1f}%"


def report(full: Sweep, pruned: Sweep) -> bool:
    """Print the side-by-side figures and the verdict; True when both targets are met."""
    print()
    print(f"{'variant':40} {'full: epochs, final val':>26} {'pruned: epochs, final val':>30}")
    theirs = pruned.by_variant()
    for r in full.runs:
        p = theirs.get(r.variant)
        right = "-" if p is None else f"{p.epochs:>2}  {_pct(p.final):>6}  {p.status:9}"
        print(f"{r.variant:40} {r.epochs:>12}  {_pct(r.final):>6}  {r.status:9} {right:>30}")
    share = pruned.epochs / full.epochs
    print()
    print(f"epochs trained: full {full.epochs}, pruned {pruned.epochs} "
          f"({share * 100:.1f} % of the full sweep's)")
    print(f"wall time: full {full.seconds:.0f} s, pruned {pruned.seconds:.0f} s "
          f"({pruned.seconds / full.seconds:.2f}x)")
    a, b = full.winner(), pruned.winner()
    if a is None or b is None:
        print("no completed variant in one of the sweeps: no winners to compare")
        return False
    print(f"full sweep's winner:   {a.variant}  {_pct(a.final)}")
    print(f"pruned sweep's winner: {b.variant}  {_pct(b.final)}"
          + (f"  (in the full sweep: {_pct(full.by_variant()[b.variant].final)})"
             if b.variant in full.by_variant() else ""))
    gap = (a.final or 0.0) - (b.final or 0.0)
    epochs_ok = share <= EPOCH_SHARE
    best_ok = b.variant == a.variant or gap <= WITHIN + 1e-9
    print(f"target: pruned epochs <= {EPOCH_SHARE * 100:.0f} % of the full sweep's -> "
          + ("met" if epochs_ok else "NOT met") + f" ({share * 100:.1f} %)")
    print("target: pruned winner = full winner or within 1 point -> "
          + ("met" if best_ok else "NOT met")
          + (" (same variant)" if b.variant == a.variant else f" ({gap * 100:+.1f} points)"))
    return epochs_ok and best_ok


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--variants", type=int, default=GRID,
                   help=f"how many of the {GRID} variants (a --sample of the grid)")
    p.add_argument("--sample-seed", type=int, default=0)
    p.add_argument("--epochs", type=int, default=6, help="each variant's epochs (default 6)")
    p.add_argument("--limit", type=int, help="train on the first N images only")
    p.add_argument("--data", type=Path, default=default_data())
    p.add_argument("--prune-flags", default="",
                   help="more flags for the pruned sweep, e.g. '--reduction-factor 2'")
    p.add_argument("--keep", type=Path, help="keep the run folders here (default: a temp dir)")
    args = p.parse_args(argv)
    print(cpu_line())
    print(f"data: {args.data}" + (f", first {args.limit} images" if args.limit else ""))
    print(f"sweep: {args.variants} of {GRID} variants around exp7, {args.epochs} epochs each")
    with tempfile.TemporaryDirectory() as tmp:
        root = args.keep or Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        spec = root / "exp7-sweep.cnn"
        spec.write_text(SPEC)
        full = sweep("full", spec, root / "full", args, [])
        pruned = sweep("pruned", spec, root / "pruned", args,
                       ["--prune", "halving", *shlex.split(args.prune_flags)])
        ok = report(full, pruned)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
