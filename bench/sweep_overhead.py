"""Sweep storage overhead: what the Optuna study costs per trial, as a fraction of a trial.

Why: `cnnspec sweep --study` puts every variant in a database so that many workers can share
the sweep. That bookkeeping (create the study and queue the variants, the stale-trial check,
pop, parameters, attrs, the heartbeat thread, tell) must be small next to training: the target
is under 1 % of a 1-epoch exp7 trial.

How: the real worker loop (`experiments.worker.Worker`, driven by `experiments.overhead`) runs
a 64-variant sweep of exp7 against a fresh SQLite file with a trainer that returns a one-epoch
result at once, so everything it measures is storage work; once with one worker and once with
two worker processes sharing the file (the per-trial figure sums both workers' time). A
heartbeat write is timed on its own and charged for every beat a trial of that length would
send. The trial time is measured by training exp7 for one epoch through `train_one` (the
sweep's own trainer) on the shared
5,000-image CIFAR-10 subset, or passed in with --trial-seconds.

    python bench/sweep_overhead.py                        # measures the exp7 epoch (~2 min)
    python bench/sweep_overhead.py --trial-seconds 110    # reuse a measured trial time
    python bench/sweep_overhead.py --storage postgresql+psycopg2://postgres@127.0.0.1:5432/db
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

from machine import cpu_line, default_data  # bench/machine.py: beside this script

ROOT = Path(__file__).resolve().parents[1]
HEARTBEAT = 30  # the default of `cnnspec sweep`

# exp7 with 4 x 4 x 4 = 64 variants
SWEEP_TEXT = (ROOT / "specs" / "exp7.cnn").read_text() \
    .replace("conv64 relu", "conv{32,64,96,128} relu", 1) \
    .replace("pool2 drop.25", "pool2 drop{.1,.25,.4,.5}", 1) \
    .replace("dense512", "dense{128,256,512,1024}", 1)



def trial_seconds(data: Path | None, limit: int | None) -> float:
    """Wall time of one sweep trial of exp7 with 1 epoch: train_one, as the worker calls it."""
    from cnnspec.cli.train import load_data, train_one
    from cnnspec.language.parse import load

    args = argparse.Namespace(
        epochs=1, batch=None, lr=None, momentum=None, optimizer=None, seed=1,
        data=str(data) if data else None, limit=limit, precision="float32", progress="none",
        max_params=10**9, runs_dir="runs")
    loaded = load_data(args)
    print(f"trial: exp7, 1 epoch, {loaded.describe()}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        train_one(load(ROOT / "specs" / "exp7.cnn"), args, loaded, Path(tmp) / "run")
        return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trial-seconds", type=float, help="skip measuring the exp7 trial")
    parser.add_argument("--data", type=Path,
                        default=None)
    parser.add_argument("--limit", type=int, help="train the exp7 trial on N images")
    parser.add_argument("--storage", help="measure against this storage instead of SQLite")
    parser.add_argument("--workers", type=int, default=2, help="the shared run (default 2)")
    opts = parser.parse_args()
    print(cpu_line(), flush=True)
    opts.data = opts.data or default_data()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

    from cnnspec.experiments.overhead import measure_overhead

    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for workers in (1, opts.workers):
            url = opts.storage or f"sqlite:///{Path(tmp) / f'overhead-{workers}.sqlite3'}"
            r = measure_overhead(SWEEP_TEXT, url, workers=workers, heartbeat=HEARTBEAT,
                                 study_name=f"overhead-{uuid.uuid4().hex[:8]}")
            results.append(r)
            print(f"{r['workers']} worker(s), {r['trials']} trials: "
                  f"{r['per_trial'] * 1000:.1f} ms of storage work per trial "
                  f"(worker loops {', '.join(f'{s:.2f}' for s in r['worker_seconds'])} s); "
                  f"one heartbeat write {r['heartbeat'] * 1000:.1f} ms", flush=True)
    seconds = opts.trial_seconds
    if seconds is None:
        seconds = trial_seconds(opts.data, opts.limit)
    print(f"1-epoch exp7 trial: {seconds:.1f} s")
    for r in results:
        beats = seconds / HEARTBEAT
        per_trial = r["per_trial"] + beats * r["heartbeat"]
        print(f"  {r['workers']} worker(s): {per_trial * 1000:.0f} ms per trial "
              f"(incl. {beats:.1f} heartbeats) = {per_trial / seconds * 100:.2f} % of the trial "
              f"(target < 1 %)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
