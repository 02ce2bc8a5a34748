"""Graph specs at the speed of stacks: parse + check of examples/resnet20.cnn (target >= 500
specs/s) and `cnnspec summary examples/resnet20.cnn` as a fresh process (target well under
0.5 s, no TensorFlow import), measured in one run.

    python bench/graph_speed.py [--seconds 3] [--runs 5]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

from machine import cpu_line  # bench/machine.py: beside this script

import cnnspec

ROOT = Path(__file__).resolve().parents[1]
SPEC = ROOT / "examples" / "resnet20.cnn"
RATE_TARGET = 500
SUMMARY_TARGET = 0.5


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    print(cpu_line(), flush=True)
    text = SPEC.read_text()
    cnnspec.check(cnnspec.parse(text))  # warm up: grammar built once per process
    checked = 0
    start = time.perf_counter()
    while time.perf_counter() - start < args.seconds:
        cnnspec.check(cnnspec.parse(text))
        checked += 1
    rate = checked / (time.perf_counter() - start)
    print(f"resnet20 parse + check  {rate:8,.0f} specs/s  ({rate / RATE_TARGET:.2f}x the "
          f"{RATE_TARGET}/s target)")
    code = (f"import sys, runpy; sys.argv = ['cnnspec', 'summary', {str(SPEC)!r}]\n"
            "try:\n    runpy.run_module('cnnspec', run_name='__main__')\n"
            "except SystemExit:\n    pass\n"
            "heavy = [m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras')]\n"
            "sys.stderr.write('heavy:' + ','.join(heavy))")
    times = []
    for _ in range(args.runs):
        start = time.perf_counter()
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              check=True)
        times.append(time.perf_counter() - start)
    heavy = done.stderr.rsplit("heavy:", 1)[-1].strip()
    median = statistics.median(times)
    print(f"summary resnet20 cold  {median:8.3f} s median of {args.runs}  "
          f"({SUMMARY_TARGET / median:.1f}x under the {SUMMARY_TARGET} s target); "
          f"TensorFlow imported: {'yes: ' + heavy if heavy else 'no'}")


if __name__ == "__main__":
    main()
