"""Training speed: cnnspec's trainer vs the notebook's `model.fit` on float arrays, side by side.

Why: the trainer promises to be faithful *and* never slower than the notebook. This measures
both paths on the same model, data, batch (32 and 128), optimizer (SGD) and seed, each in a
fresh process (TensorFlow settings are process-global), interleaved in one run so machine load
hits both alike. It also prints the machine's matmul limits (numpy sgemm, and TensorFlow's
2048² matmul in float32 and bfloat16, measured in the same run) and each path as a fraction of
the matching one (training FLOPs = 6 x the checker's MACs per image), the memory the inputs
take (uint8 vs float32 arrays, and each process's peak RSS), and bf16 vs float32 per spec and
batch, beside the CPU's bf16 capability (what `--precision auto` picks on it). "cnnspec bf16"
is the model as the trainer builds and compiles it: cnnspec.backend.keras_model.prepare_training
(fused batch norm, one-pass L2, dropout from 8 random bits per value) and, under plain SGD, the
L2 step folded into the optimizer's update (cnnspec.backend.l2_penalty.fold_l2_into_sgd).

    python bench/train_speed.py                      # exp1 and exp7, batch 32 and 128, 1 epoch
    python bench/train_speed.py --specs exp7 --batches 32 --epochs 10 --accuracy --no-notebook
    python bench/train_speed.py --variants           # also steps_per_execution, threads, ...

Data: the shared 5,000-image CIFAR-10 subset (../shared/data/cifar-10-batches-py) when it is
beside the clone, else the bundled 1,000-image sample, or --data.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from machine import cpu_line, default_data  # bench/machine.py: beside this script

ROOT = Path(__file__).resolve().parents[1]
BATCH = 32  # the notebook's; --batches adds others
SEED = 1
WARMUP_BATCHES = 16  # skipped for the steady-state rate (tracing, allocator warm-up)



# -- worker side (one measured path per process) -----------------------------------------------


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _timer(keras: Any, batch_size: int = BATCH) -> Any:
    class Timer(keras.callbacks.Callback):
        """Per epoch: training-phase seconds and batch-end timestamps (validation excluded)."""

        def __init__(self) -> None:
            super().__init__()
            self.epochs: list[dict[str, Any]] = []

        def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
            self.start = time.perf_counter()
            self.cpu_start = time.process_time()
            self.marks: list[tuple[int, float]] = []
            self.train_end: float | None = None
            self.cpu_end: float | None = None

        def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
            self.marks.append((batch, time.perf_counter()))

        def on_test_begin(self, logs: Any = None) -> None:
            if self.train_end is None:
                self.train_end = time.perf_counter()
                self.cpu_end = time.process_time()

        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            end = self.train_end or time.perf_counter()
            cpu_end = self.cpu_end or time.process_time()
            warm = [(b, t) for b, t in self.marks if b >= WARMUP_BATCHES - 1]
            steady = None
            if len(warm) >= 2:
                (b0, t0), (b1, t1) = warm[0], warm[-1]
                steady = (b1 - b0) * batch_size / (t1 - t0)
            self.epochs.append({"train_seconds": end - self.start,
                                "train_cpu_seconds": cpu_end - self.cpu_start,
                                "steady_ips": steady,
                                "val_accuracy": (logs or {}).get("val_accuracy")})

    return Timer()


def tf_gemm_worker() -> None:
    """TensorFlow's own 2048² matmul in float32 and bfloat16 (oneDNN's kernels, best of 5).

    numpy's sgemm says nothing about bf16; this is the raw rate the bf16 training path can at
    best approach on this CPU (AMX/AVX-512-BF16 kernels, or emulation on AVX2).
    """
    import tensorflow as tf

    out = {}
    for name, dtype in (("float32", tf.float32), ("bf16", tf.bfloat16)):
        a = tf.random.normal((2048, 2048), dtype=tf.float32, seed=1)
        a = tf.cast(a, dtype)
        mm = tf.function(lambda x: tf.linalg.matmul(x, x))
        mm(a).numpy()
        best = float("inf")
        for _ in range(5):
            t = time.perf_counter()
            mm(a).numpy()
            best = min(best, time.perf_counter() - t)
        out[name] = 2 * 2048**3 / best / 1e9
    print("RESULT " + json.dumps(out), flush=True)


def worker(args: argparse.Namespace) -> None:
    if args.intra or args.inter:
        import tensorflow as tf

        if args.intra:
            tf.config.threading.set_intra_op_parallelism_threads(args.intra)
        if args.inter:
            tf.config.threading.set_inter_op_parallelism_threads(args.inter)
    import cnnspec
    from cnnspec.backend.keras_model import build_model, import_keras
    from cnnspec.language.checker import check
    from cnnspec.training.data import load_cifar10

    keras = import_keras()
    if args.determinism:
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()
    spec = cnnspec.load(ROOT / "specs" / f"{args.spec}.cnn")
    report = check(spec)
    rss0 = _rss_bytes()
    data = load_cifar10(args.data)
    timer = _timer(keras, args.batch)
    out: dict[str, Any] = {"path": args.path, "spec": args.spec, "images": len(data.x_train),
                           "batch": args.batch, "precision": args.precision}
    start = time.perf_counter()
    if args.path == "notebook":
        # the notebook, cell for cell: float arrays / 255, one-hot labels, compile + fit
        x_train = data.x_train.astype("float32")
        x_test = data.x_test.astype("float32")
        x_train /= 255
        x_test /= 255
        y_train = keras.utils.to_categorical(data.y_train, 10)
        y_test = keras.utils.to_categorical(data.y_test, 10)
        out["input_bytes"] = x_train.nbytes + x_test.nbytes + y_train.nbytes + y_test.nbytes
        keras.utils.set_random_seed(SEED)
        model = build_model(report, keras)
        model.compile(loss="categorical_crossentropy", optimizer="sgd", metrics=["accuracy"])
        model.fit(x_train, y_train, batch_size=args.batch, epochs=args.epochs, verbose=0,
                  validation_data=(x_test, y_test), shuffle=True, callbacks=[timer])
        out["test_accuracy"] = timer.epochs[-1]["val_accuracy"]
    else:
        from cnnspec.language.settings import TrainSettings
        from cnnspec.training.train import train

        out["input_bytes"] = sum(
            a.nbytes for a in (data.x_train, data.y_train, data.x_test, data.y_test))
        settings = TrainSettings(optimizer="sgd", lr=0.01, batch=args.batch, epochs=args.epochs,
                                 seed=SEED)
        precision = args.precision
        with tempfile.TemporaryDirectory() as tmp:
            result = train(spec, settings, data, Path(tmp) / "run", precision=precision,
                           steps_per_execution=args.spe, progress="none", callbacks=[timer])
        out["test_accuracy"] = result.metrics["test_accuracy"]
    out["wall_seconds"] = time.perf_counter() - start
    out["epochs"] = timer.epochs
    out["peak_rss_delta"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - rss0
    print("RESULT " + json.dumps(out), flush=True)


def sgemm_gflops(n: int = 2048, reps: int = 5) -> float:
    """numpy float32 matmul throughput (best of reps): the machine's practical FLOP ceiling."""
    import numpy as np

    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    a @ b  # warm up the BLAS threads
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best / 1e9


def run_worker(path: str, spec: str, args: argparse.Namespace, **extra: Any) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--worker", path, "--spec", spec, "--data", str(args.data),
           "--epochs", str(args.epochs)]
    if path == "tf-gemm":
        cmd = [sys.executable, __file__, "--worker", path]
    for key, value in extra.items():
        if value is True:
            cmd.append(f"--{key}")
        elif value not in (None, False):
            cmd += [f"--{key}", str(value)]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        sys.exit(f"worker {path} {spec} {extra} failed:\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def summarize(runs: list[dict[str, Any]], flops_per_image: float, gflops: float) -> dict:
    """Best and median over repeats and epochs of images/s, plus accuracy and memory.

    Best-of is the headline: other processes on a shared machine only ever slow a run down, so
    the fastest repeat is the closest to what the path itself costs.
    """
    epoch_ips = [r["images"] / e["train_seconds"] for r in runs for e in r["epochs"]]
    # images per CPU-second of the whole process (all threads): barely moved by other
    # processes competing for the cores, so it separates the paths when wall time is noisy
    cpu_ips = [r["images"] / e["train_cpu_seconds"] for r in runs for e in r["epochs"]]
    steady = [e["steady_ips"] for r in runs for e in r["epochs"] if e["steady_ips"]] or [0.0]
    return {
        "ips": max(epoch_ips),
        "ips_median": statistics.median(epoch_ips),
        "steady_ips": max(steady),
        "cpu_ips": statistics.median(cpu_ips),
        "limit_fraction": max(steady) * flops_per_image / (gflops * 1e9),
        "accuracy": statistics.median(r["test_accuracy"] for r in runs),
        "input_bytes": runs[0]["input_bytes"],
        "peak_rss_delta": statistics.median(r["peak_rss_delta"] for r in runs),
    }


def _label(precision: str, path: str = "cnnspec") -> str:
    return "notebook" if path == "notebook" else f"cnnspec {precision}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=None)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=1, help="interleaved repeats (medians)")
    parser.add_argument("--specs", default="exp1,exp7")
    parser.add_argument("--batches", default="32,128",
                        help="batch sizes to time (default 32,128; the notebook's is 32)")
    parser.add_argument("--accuracy", action="store_true",
                        help="also print bf16 and float32 test accuracy after --epochs, side "
                             "by side, and whether bf16 is within 1 point")
    parser.add_argument("--no-bf16", action="store_true")
    parser.add_argument("--no-notebook", action="store_true",
                        help="skip the notebook path (only cnnspec float32 vs bf16)")
    parser.add_argument("--variants", action="store_true",
                        help="also time steps_per_execution 8/32, TF threads and op determinism")
    parser.add_argument("--json", type=Path, help="write all raw results here")
    # worker mode (internal)
    parser.add_argument("--worker", dest="path", help=argparse.SUPPRESS)
    parser.add_argument("--spec", help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, default=BATCH, help=argparse.SUPPRESS)
    parser.add_argument("--precision", default="float32", help=argparse.SUPPRESS)
    parser.add_argument("--spe", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--intra", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--inter", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--determinism", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.path == "tf-gemm":
        tf_gemm_worker()
        return
    if args.path:
        worker(args)
        return
    print(cpu_line(), flush=True)
    from cnnspec.backend.cpu import choose_precision, cpu_flags

    auto, why = choose_precision(cpu_flags())
    print(f"bf16 capability: `--precision auto` picks {auto} ({why})", flush=True)
    args.data = args.data or default_data()
    if not (args.data / "data_batch_1").is_file() and not (
            args.data / "cifar-10-batches-py" / "data_batch_1").is_file():
        sys.exit(f"no CIFAR-10 batches at {args.data}; pass --data DIR")

    import cnnspec

    specs = [s for s in args.specs.split(",") if s]
    batches = [int(b) for b in args.batches.split(",") if b]
    macs = {s: cnnspec.check(cnnspec.load(ROOT / "specs" / f"{s}.cnn")).macs for s in specs}
    gflops = sgemm_gflops()
    print(f"numpy float32 sgemm (2048², best of 5): {gflops:.1f} GFLOP/s; "
          f"{os.cpu_count()} CPU(s); batches {batches}; {args.epochs} epoch(s); "
          f"{args.repeat} repeat(s)", flush=True)
    sgemm = [gflops]
    tf_gemm = [run_worker("tf-gemm", "", args)]
    print(f"TensorFlow matmul 2048²: float32 {tf_gemm[0]['float32']:.0f} GFLOP/s, "
          f"bf16 {tf_gemm[0]['bf16']:.0f} GFLOP/s", flush=True)

    # (spec, batch, label, path, worker args)
    plan: list[tuple[str, int, str, str, dict[str, Any]]] = []
    for s in specs:
        for b in batches:
            if not args.no_notebook:
                plan.append((s, b, "notebook", "notebook", {"batch": b}))
            plan.append((s, b, "cnnspec float32", "cnnspec", {"batch": b}))
            if not args.no_bf16:
                plan.append((s, b, "cnnspec bf16", "cnnspec", {"batch": b, "precision": "bf16"}))
            if args.variants:
                plan += [
                    (s, b, "cnnspec spe=8", "cnnspec", {"batch": b, "spe": 8}),
                    (s, b, "cnnspec spe=32", "cnnspec", {"batch": b, "spe": 32}),
                    (s, b, "cnnspec intra2/inter1", "cnnspec",
                     {"batch": b, "intra": 2, "inter": 1}),
                    (s, b, "cnnspec op-determinism", "cnnspec",
                     {"batch": b, "determinism": True}),
                ]
                if not args.no_bf16:
                    plan.append((s, b, "cnnspec bf16 spe=8", "cnnspec",
                                 {"batch": b, "precision": "bf16", "spe": 8}))

    results: dict[tuple[str, int, str], list[dict[str, Any]]] = {}
    for r in range(args.repeat):
        # alternate the order each repeat so drift in machine load does not favour one path
        for s, b, label, path, extra in plan if r % 2 == 0 else plan[::-1]:
            t = time.perf_counter()
            out = run_worker(path, s, args, **extra)
            results.setdefault((s, b, label), []).append(out)
            print(f"  [{r + 1}/{args.repeat}] {s:5} b{b:<4} {label:24} "
                  f"{out['images'] / out['epochs'][-1]['train_seconds']:7.1f} img/s "
                  f"({time.perf_counter() - t:.0f}s)", flush=True)
        sgemm.append(sgemm_gflops())  # again after each repeat: the limit is the best seen
        tf_gemm.append(run_worker("tf-gemm", "", args))
    gflops = max(sgemm)
    limit = {p: max(g[p] for g in tf_gemm) for p in ("float32", "bf16")}
    print(f"sgemm limit used: {gflops:.1f} GFLOP/s (best of {len(sgemm)} measurements: "
          f"{', '.join(f'{g:.0f}' for g in sgemm)}); TensorFlow matmul best: float32 "
          f"{limit['float32']:.0f}, bf16 {limit['bf16']:.0f} GFLOP/s "
          f"({limit['bf16'] / limit['float32']:.2f}x)")

    print()
    header = (f"{'spec':5} {'batch':>5} {'path':24} {'img/s':>7} {'median':>7} {'steady':>7} "
              f"{'vs f32':>6} {'img/cpu-s':>9} {'vs f32':>6} {'% sgemm':>8} {'% tf mm':>8} "
              f"{'inputs MB':>9} {'peak RSS MB':>11} {'test acc':>8}")
    print(header)
    print("-" * len(header))
    table = {}
    for s, b, label, _, _extra in plan:  # every row first: the notebook's is planned before
        if (s, b, label) not in table and (s, b, label) in results:  # the float32 row it is
            table[(s, b, label)] = summarize(results[(s, b, label)], 6 * macs[s], gflops)
    printed = set()
    for s, b, label, _, extra in plan:  # compared with ("vs f32"), which it was compared
        if (s, b, label) in printed or (s, b, label) not in table:  # with itself before
            continue
        printed.add((s, b, label))
        row = table[(s, b, label)]
        base = table.get((s, b, "cnnspec float32"), row)
        mm = limit["bf16" if str(extra.get("precision")).startswith("bf16") else "float32"]
        mm_fraction = row["steady_ips"] * 6 * macs[s] / (mm * 1e9)
        print(f"{s:5} {b:5} {label:24} {row['ips']:7.1f} {row['ips_median']:7.1f} "
              f"{row['steady_ips']:7.1f} {row['ips'] / base['ips']:5.2f}x "
              f"{row['cpu_ips']:9.1f} {row['cpu_ips'] / base['cpu_ips']:5.2f}x "
              f"{100 * row['limit_fraction']:7.1f}% {100 * mm_fraction:7.1f}% "
              f"{row['input_bytes'] / 1e6:9.1f} {row['peak_rss_delta'] / 1e6:11.0f} "
              f"{row['accuracy']:8.4f}")
    print()
    for s in specs:
        for b in batches:
            nb, cs = table.get((s, b, "notebook")), table.get((s, b, "cnnspec float32"))
            if nb and cs:
                print(f"{s} batch {b}: cnnspec/notebook = {cs['ips'] / nb['ips']:.2f}x per "
                      f"epoch, {cs['steady_ips'] / nb['steady_ips']:.2f}x steady, "
                      f"{cs['cpu_ips'] / nb['cpu_ips']:.2f}x per CPU-second; inputs "
                      f"{nb['input_bytes'] / cs['input_bytes']:.1f}x smaller")
            for name in ("bf16",):
                f32, bf16 = cs, table.get((s, b, f"cnnspec {name}"))
                if not (f32 and bf16):
                    continue
                line = (f"{s} batch {b}: {name}/float32 = {bf16['ips'] / f32['ips']:.2f}x per "
                        f"epoch ({f32['ips']:.0f} -> {bf16['ips']:.0f} img/s), "
                        f"{bf16['steady_ips'] / f32['steady_ips']:.2f}x steady, "
                        f"{bf16['cpu_ips'] / f32['cpu_ips']:.2f}x per CPU-second")
                if args.accuracy:
                    gap = 100 * (bf16["accuracy"] - f32["accuracy"])
                    line += (f"; test accuracy after {args.epochs} epoch(s): float32 "
                             f"{f32['accuracy']:.4f}, {name} {bf16['accuracy']:.4f} "
                             f"({gap:+.1f} points: "
                             f"{'within' if abs(gap) <= 1 else 'NOT within'} 1 point)")
                print(line)
    print("img/s: best (and median) over repeats/epochs of training images / training-phase "
          "seconds (validation excluded, first-step tracing included); steady: best rate after "
          f"the first {WARMUP_BATCHES} batches; % sgemm = steady img/s x 6 x MACs / numpy sgemm "
          "FLOP/s; % tf mm = the same over TensorFlow's matmul rate in the row's precision; "
          "img/cpu-s: median images per CPU-second of the process; "
          "peak RSS: process high-water mark above its RSS before loading data.")
    if args.json:
        args.json.write_text(json.dumps(
            {"sgemm_gflops": sgemm, "tf_matmul_gflops": tf_gemm,
             "results": {f"{k[0]}/b{k[1]}/{k[2]}": v for k, v in results.items()}},
            indent=2))


if __name__ == "__main__":
    main()
