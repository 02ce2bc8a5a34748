"""Parse + check throughput on the seven seed specs, in specs per second (target >= 5,000/s).

Prints the rate and the ratio to the target, measured in this run.

    python bench/parse_throughput.py [--seconds 3]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from machine import cpu_line  # bench/machine.py: beside this script

import cnnspec

ROOT = Path(__file__).resolve().parents[1]
TARGET = 5000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seconds", type=float, default=3.0)
    args = ap.parse_args()
    print(cpu_line(), flush=True)
    texts = [p.read_text() for p in sorted((ROOT / "specs").glob("exp*.cnn"))]
    for text in texts:  # warm up: grammar built once per process
        cnnspec.check(cnnspec.parse(text))
    parsed = checked = 0
    start = time.perf_counter()
    while time.perf_counter() - start < args.seconds:
        for text in texts:
            cnnspec.check(cnnspec.parse(text))
            checked += 1
    elapsed = time.perf_counter() - start
    rate = checked / elapsed
    start = time.perf_counter()
    while time.perf_counter() - start < args.seconds / 2:
        for text in texts:
            cnnspec.parse(text)
            parsed += 1
    parse_rate = parsed / (time.perf_counter() - start)
    print(f"parse only        {parse_rate:10,.0f} specs/s")
    print(f"parse + check     {rate:10,.0f} specs/s  ({rate / TARGET:.2f}x the 5,000/s target)")


if __name__ == "__main__":
    main()
