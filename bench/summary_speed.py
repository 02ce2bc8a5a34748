"""Wall time of `cnnspec summary specs/exp7.cnn` vs building the same model in Keras and
calling `model.summary()`, both as fresh processes, interleaved in one run (target >= 25x).

With --importtime N it also prints the N costliest imports of a cold `cnnspec summary`
(`python -X importtime`, cumulative, the modules the summary itself imports), which is most of
what the command costs.

    python bench/summary_speed.py [--runs 5] [--importtime 12]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from machine import cpu_line  # bench/machine.py: beside this script

ROOT = Path(__file__).resolve().parents[1]
SPEC = ROOT / "specs" / "exp7.cnn"
TARGET = 25

KERAS_SCRIPT = f"""
import cnnspec, keras
from cnnspec.backend.keras_model import build_model
model = build_model(cnnspec.check(cnnspec.load({str(SPEC)!r})))
model.summary()
"""

HAND_KERAS_SCRIPT = """
import keras
from keras import layers as L
m = keras.Sequential([keras.Input((32, 32, 3)),
    L.Conv2D(64, 3, padding="same"), L.Activation("relu"), L.BatchNormalization(),
    L.MaxPool2D(2, 2), L.Dropout(.25),
    L.Conv2D(128, 3, padding="same"), L.Activation("relu"), L.BatchNormalization(),
    L.Conv2D(128, 3, padding="same"), L.Activation("relu"), L.BatchNormalization(),
    L.MaxPool2D(2, 2), L.Dropout(.25), L.Flatten(),
    L.Dense(512, kernel_regularizer=keras.regularizers.L2(.01)), L.Activation("relu"),
    L.Dropout(.5), L.Dense(10), L.Activation("softmax")])
m.summary()
"""


def timed(cmd: list[str]) -> float:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    start = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True, env=env)
    return time.perf_counter() - start


def import_times(top: int) -> list[tuple[int, str]]:
    """The `top` costliest imports of one cold `cnnspec summary`, (µs, module) with the
    module indented under its importer; two levels deep."""
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "cnnspec", "summary", str(SPEC)],
        check=True, capture_output=True, text=True)
    rows = []
    for line in result.stderr.splitlines():
        if line.startswith("import time:") and "cumulative" not in line:
            _, cumulative, name = line[len("import time:"):].split("|")
            depth = (len(name) - len(name.lstrip()) - 1) // 2
            if depth <= 1:  # what the command imports, and what those import
                rows.append((int(cumulative), "  " * depth + name.strip()))
    return sorted(rows, reverse=True)[:top]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--importtime", type=int, default=0, metavar="N",
                    help="also print the N costliest imports of a cold `cnnspec summary`")
    args = ap.parse_args()
    print(cpu_line(), flush=True)
    # Bytecode compiled, as a pip install leaves it (with PYTHONDONTWRITEBYTECODE set, a module
    # edited since its last .pyc would be compiled again in every run), and the parser's tables
    # in their cache folder, as after any first run.
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(ROOT / "dsl")], check=True,
                   capture_output=True)
    timed([sys.executable, "-m", "cnnspec", "summary", str(SPEC)])
    ours, keras_hand, keras_compiled = [], [], []
    for _ in range(args.runs):  # interleaved so machine noise hits both sides alike
        ours.append(timed([sys.executable, "-m", "cnnspec", "summary", str(SPEC)]))
        keras_hand.append(timed([sys.executable, "-c", HAND_KERAS_SCRIPT]))
        keras_compiled.append(timed([sys.executable, "-c", KERAS_SCRIPT]))
    o, h, c = (statistics.median(x) for x in (ours, keras_hand, keras_compiled))
    print(f"cnnspec summary exp7             median {o * 1000:8.0f} ms  ({args.runs} runs)")
    print(f"hand-written Keras + summary()   median {h * 1000:8.0f} ms")
    print(f"cnnspec -> Keras + summary()     median {c * 1000:8.0f} ms")
    print(f"ratio (Keras hand / cnnspec)     {h / o:8.1f}x   target >= {TARGET}x")
    print(f"ratio (cnnspec -> Keras / cnnspec) {c / o:6.1f}x")
    if args.importtime:
        print(f"costliest imports of `cnnspec summary` (cumulative; {args.importtime} shown):")
        for micros, name in import_times(args.importtime):
            print(f"  {micros / 1000:7.1f} ms  {name}")


if __name__ == "__main__":
    main()
