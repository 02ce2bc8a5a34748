"""What the study's bookkeeping costs per trial, for bench/sweep_overhead.py.

The real worker loop (open the storage, create the study and enqueue, stale check, pop,
parameters, attrs, heartbeat thread, tell) with a trainer that returns a one-epoch result at
once, so everything measured is storage work.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from cnnspec.experiments.definition import SweepOptions, sweep_def
from cnnspec.experiments.heartbeat import DEFAULT_HEARTBEAT, GRACE_BEATS
from cnnspec.experiments.queue import create_or_join, load_study, quiet_optuna
from cnnspec.experiments.results import Outcome
from cnnspec.experiments.storage import open_storage
from cnnspec.experiments.worker import Worker
from cnnspec.language.sweep import Variant, expand


def _noop_trainer(variant: Variant, run_dir: Path) -> Outcome:
    """A trainer that returns a one-epoch result at once (for measuring the storage alone)."""
    return Outcome("completed", [{"epoch": 1, "loss": 2.0, "accuracy": 0.3, "val_loss": 2.1,
                                  "val_accuracy": 0.28, "seconds": 30.0,
                                  "images_per_second": 160.0}], {"test_accuracy": 0.28})


def _overhead_worker(text: str, url: str, heartbeat: int, study_name: str, out: Any) -> None:
    """One worker of `measure_overhead`; puts (seconds from opening the storage to the end of
    its loop, trials it finished) on `out`."""
    from cnnspec.language.parse import parse

    sweep = sweep_def(parse(text), SweepOptions())
    quiet_optuna()  # imports are start-up cost, not per-trial cost
    started = time.perf_counter()
    storage = open_storage(url, heartbeat)
    study, _ = create_or_join(storage, study_name, sweep, heartbeat, GRACE_BEATS * heartbeat)
    worker = Worker(study, storage, sweep, _noop_trainer, Path("/nonexistent"))
    worker.run(poll=0.05)
    out.put((time.perf_counter() - started, worker.recorded))


def measure_overhead(text: str, url: str, workers: int = 1, heartbeat: int = DEFAULT_HEARTBEAT,
                     study_name: str = "overhead") -> dict[str, Any]:
    """Storage seconds per trial: the real worker loop (open the storage, create the study and
    enqueue, stale check, pop, parameters, attrs, heartbeat thread, tell) with a trainer that
    returns a one-epoch result at once, in `workers` processes against one storage (1: in this
    process); and the cost of one heartbeat write."""
    import multiprocessing
    import queue

    from cnnspec.language.parse import parse

    n = len(expand(parse(text), max_variants=256))
    out: Any
    if workers == 1:
        out = queue.Queue()
        _overhead_worker(text, url, heartbeat, study_name, out)
    else:
        ctx = multiprocessing.get_context("spawn")
        out = ctx.Queue()
        procs = [ctx.Process(target=_overhead_worker,
                             args=(text, url, heartbeat, study_name, out))
                 for _ in range(workers)]
        for proc in procs:
            proc.start()
        for proc in procs:
            proc.join()
        if any(proc.exitcode for proc in procs):
            raise RuntimeError(f"worker exit codes {[proc.exitcode for proc in procs]}")
    loops = [out.get() for _ in range(workers)]
    storage = open_storage(url, heartbeat)
    study = load_study(storage, study_name)
    done = [t for t in study.get_trials(deepcopy=False) if t.state.is_finished()]
    if len(done) != n or sum(k for _, k in loops) != n:
        raise RuntimeError(f"{len(done)} of {n} trials finished")
    beats = 50
    t0 = time.perf_counter()
    for _ in range(beats):
        storage.record_heartbeat(done[0]._trial_id)
    return {"trials": n, "workers": workers, "worker_seconds": [s for s, _ in loops],
            "per_trial": sum(s for s, _ in loops) / n,
            "heartbeat": (time.perf_counter() - t0) / beats}
