"""Data-parallel scaling: one epoch of exp7 with 1 worker vs 2 `--strategy multiworker` workers.

Why: `cnnspec train --strategy multiworker` splits every global batch over the workers; this
measures what that buys on this machine. Both runs train the same global batches (batch 32, the
same shuffle order), so only the speed differs. Each run is the real CLI in fresh processes; the
two workers talk over 127.0.0.1. Throughput is the chief's training images per second of the
epoch (validation excluded), as recorded in history.json.

On a 2-core CPU machine expect no speed-up: the two workers share the same two cores that one
process already uses, and add an all-reduce of every gradient per step. The figure is printed
as measured. Scaling needs a core (or GPU) budget per worker, i.e. separate machines.

If bench/sweep_overhead.py is present, it is then run with the measured 1-worker trial time
(`--trial-seconds`), printing the sweep store's per-trial overhead next to it.

    python bench/scale.py                    # the shared CIFAR-10 data, all of it (~5 min)
    python bench/scale.py --limit 2000       # a quicker look
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from machine import cpu_line, default_data  # bench/machine.py: beside this script

ROOT = Path(__file__).resolve().parents[1]
SPEC = ROOT / "specs" / "exp7.cnn"



def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def command(out: Path, opts: argparse.Namespace, *extra: str) -> list[str]:
    cmd = [sys.executable, "-m", "cnnspec", "train", str(SPEC), "--epochs", "1", "--seed", "1",
           "--out", str(out), "--progress", "none", "--data", str(opts.data), *extra]
    if opts.limit:
        cmd += ["--limit", str(opts.limit)]
    return cmd


def epoch_record(run_dir: Path) -> dict:
    return json.loads((run_dir / "history.json").read_text())[-1]


def run_one(tmp: Path, opts: argparse.Namespace) -> tuple[dict, float]:
    out = tmp / "one"
    started = time.perf_counter()
    subprocess.run(command(out, opts), check=True, env=_env(), stdout=subprocess.DEVNULL)
    return epoch_record(out), time.perf_counter() - started


def run_two(tmp: Path, opts: argparse.Namespace) -> tuple[dict, float]:
    cluster = ",".join(f"127.0.0.1:{p}" for p in free_ports(2))
    started = time.perf_counter()
    procs = [
        subprocess.Popen(
            command(tmp / f"worker{i}", opts, "--strategy", "multiworker", "--cluster", cluster,
                    "--task-index", str(i)),
            env=_env(), stdout=subprocess.DEVNULL)
        for i in range(2)
    ]
    codes = [p.wait(timeout=3600) for p in procs]
    if any(codes):
        raise SystemExit(f"multiworker run failed: exit codes {codes}")
    return epoch_record(tmp / "worker0"), time.perf_counter() - started


def _env() -> dict[str, str]:
    return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=None,
                        help="CIFAR-10 batches (default: ../shared, else the bundled sample)")
    parser.add_argument("--limit", type=int, help="train on the first N training images")
    opts = parser.parse_args()
    print(cpu_line(), flush=True)
    opts.data = opts.data or default_data()
    if not opts.data.is_dir():
        parser.error(f"no CIFAR-10 at {opts.data}; pass --data")
    print(f"exp7, 1 epoch, batch 32, data {opts.data}"
          + (f" (first {opts.limit} images)" if opts.limit else ""), flush=True)
    print(f"cores: {os.cpu_count()}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        one, one_wall = run_one(Path(tmp), opts)
        print(f"1 worker  (--strategy none):        {one['images_per_second']:8.1f} images/s "
              f"(epoch {one['seconds']:.1f} s, process {one_wall:.1f} s)", flush=True)
        two, two_wall = run_two(Path(tmp), opts)
        print(f"2 workers (--strategy multiworker): {two['images_per_second']:8.1f} images/s "
              f"(epoch {two['seconds']:.1f} s, processes {two_wall:.1f} s)", flush=True)
    ratio = two["images_per_second"] / one["images_per_second"]
    print(f"speed-up 2 workers / 1 worker: {ratio:.2f}x"
          + ("  (no speed-up: both workers share this machine's cores)" if ratio < 1.1 else ""))
    overhead = ROOT / "bench" / "sweep_overhead.py"
    if overhead.is_file():
        print(f"\nsweep store overhead ({overhead.name} with the 1-worker trial time, "
              f"{one_wall:.1f} s):", flush=True)
        done = subprocess.run(
            [sys.executable, str(overhead), "--trial-seconds", f"{one_wall:.1f}"], env=_env())
        if done.returncode:
            print(f"{overhead.name} failed (exit {done.returncode})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
