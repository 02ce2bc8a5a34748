"""Parse + check throughput on the seven seed specs, in specs per second (target >= 5,000/s),
and the time to check every variant of a 256-variant sweep (target: well under a second).

Beside the rates it prints where a spec's time goes, in microseconds: the syntax tree (the
contextual lexer and the LALR driver, `lalr_fast`, timed alone), the tree -> IR builder (the
rest of `parse`) and `check` (the rest of parse + check: on a freshly parsed spec, as in a
sweep, not on one checked before, whose layers' texts are already worked out).

Each figure is the median of several rounds measured in this run (the machine is shared, so a
single round means little); the ratio to the target is printed beside it.

    python bench/parse_throughput.py [--seconds 3] [--rounds 5]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path

from machine import cpu_line  # bench/machine.py: beside this script

import cnnspec
from cnnspec.language.parse import _syntax_tree  # the first stage of parse, timed alone
from cnnspec.language.sweep import check_all_variants, variant_count

ROOT = Path(__file__).resolve().parents[1]
TARGET = 5000
SWEEP_TARGET_S = 1.0

# exp7 with eight two-way choices: 2**8 = 256 variants, each checked before anything trains
SWEEP_256 = """\
input 32x32x3
classes 10
train optimizer=sgd lr={.01,.05} batch=32 epochs=10
conv{64,96} relu bn? pool2 drop{.25,.3}
(conv{128,160} relu bn)x2 pool2 drop{.25,.4}
| dense{256,512} l2(.01) relu drop{.4,.5}
"""


def rate(work: Callable[[], int], seconds: float) -> float:
    """Items per second: `work` (returning how many items it did) repeated for `seconds`."""
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        done += work()
    return done / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seconds", type=float, default=3.0, help="per figure, over all rounds")
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    print(cpu_line(), flush=True)
    texts = [p.read_text() for p in sorted((ROOT / "specs").glob("exp*.cnn"))]
    for text in texts:  # warm up: the parser's tables are loaded once per process
        cnnspec.check(cnnspec.parse(text))

    def parse_all() -> int:
        for text in texts:
            cnnspec.parse(text)
        return len(texts)

    def parse_and_check_all() -> int:
        for text in texts:
            cnnspec.check(cnnspec.parse(text))
        return len(texts)

    sweep = cnnspec.parse(SWEEP_256)
    assert variant_count(sweep) == 256

    def check_sweep() -> float:
        start = time.perf_counter()
        reports = check_all_variants(cnnspec.parse(SWEEP_256), max_variants=256)
        assert len(reports) == 256
        return time.perf_counter() - start

    lines = [t if t.endswith("\n") else t + "\n" for t in texts]  # as parse hands them on
    def trees_only() -> int:
        for text in lines:
            _syntax_tree(text)
        return len(lines)

    slice_s = args.seconds / args.rounds
    both, alone, sweeps, trees = [], [], [], []
    for _ in range(args.rounds):  # interleaved, so load on the machine hits every figure alike
        both.append(rate(parse_and_check_all, slice_s))
        alone.append(rate(parse_all, slice_s / 2))
        sweeps.append(check_sweep())
        trees.append(rate(trees_only, slice_s / 4))
    checked, parsed, swept, treed = (
        statistics.median(x) for x in (both, alone, sweeps, trees))
    print(f"parse only        {parsed:10,.0f} specs/s  (median of {args.rounds} rounds)")
    print(f"parse + check     {checked:10,.0f} specs/s  ({checked / TARGET:.2f}x the 5,000/s "
          f"target; rounds {min(both):,.0f}-{max(both):,.0f})")
    print(f"256-variant sweep {swept * 1000:10,.0f} ms to parse, expand and check every variant "
          f"({swept / SWEEP_TARGET_S:.2f} of the 1 s budget; {256 / swept:,.0f} variants/s)")
    tree_us, parse_us, total = 1e6 / treed, 1e6 / parsed, 1e6 / checked
    parts = {"syntax tree": tree_us, "tree -> IR": parse_us - tree_us, "check": total - parse_us}
    print("per spec          " + ", ".join(
        f"{name} {us:,.0f} us ({us / total:.0%})" for name, us in parts.items())
        + f"; the target is {1e6 / TARGET:,.0f} us in all")


if __name__ == "__main__":
    main()
