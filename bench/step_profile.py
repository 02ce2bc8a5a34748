"""Where one training step's time goes, float32 vs bf16, per spec and batch.

Why: on a CPU with AMX, TensorFlow's raw bf16 matmul is ~4x float32, yet cnnspec's bf16
training was ~1.2x. This splits a step of cnnspec's own trainer (the same model, compile and
tf.data pipeline as `cnnspec train`) into pieces, each timed alone in a fresh process:

* input     - the tf.data pipeline alone (gather, cast, /255, one-hot), per batch
* forward   - model(x, training=True) on a fixed batch
* fwd+bwd   - forward, loss and gradients (no update)
* update    - the optimizer applying a fixed set of gradients
* step      - Keras's whole train step on a fixed batch (forward, backward, update, metrics)
* fit       - model.fit's steady rate, steps_per_execution 1 and 8 (adds input and per-step
              Python/host overhead)

and, with --ops, TensorFlow's profiler trace of fit steps grouped by op type (convolutions,
matmuls, casts, batch norm, dropout, optimizer, ...) and by the layer kind each op's scope names
(conv, batch norm, dropout, ..., "outside layers": the loss and the L2 penalty), in
thread-milliseconds per step, which shows what is not matrix math. Precisions: float32, bf16 (as
the trainer builds it, with cnnspec.backend.keras_model.prepare_training's fused batch norm and
one-pass L2) and bf16-plain (the same model without them: the "before").

    python bench/step_profile.py                         # exp7 and exp1, batch 32/128, both
    python bench/step_profile.py --specs exp7 --batches 32 --ops
"""

from __future__ import annotations

import argparse
import collections
import glob
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from machine import cpu_line, default_data  # bench/machine.py: beside this script

ROOT = Path(__file__).resolve().parents[1]


def _time(fn: Any, reps: int, inner: int = 1) -> float:
    """Median milliseconds per call of fn() (after two warm-up calls), over reps rounds."""
    fn()
    fn()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        for _ in range(inner):
            out = fn()
        _ = out  # results are numpy-converted inside fn, so the work is done
        times.append((time.perf_counter() - t) / inner * 1000)
    return statistics.median(times)


# op-type buckets for the profiler trace (first match wins); names are oneDNN's or TF's
BUCKETS = (
    ("conv", ("Conv2D", "Conv2DBackprop", "DepthwiseConv")),
    ("matmul", ("MatMul", "BatchMatMul", "Einsum")),
    ("cast", ("Cast",)),
    ("batch norm", ("BatchNorm", "Moments", "SquaredDifference", "Rsqrt")),
    ("dropout", ("Random", "Stateless", "GreaterEqual", "SelectV2", "Select", "RngRead",
                 "RngSkip")),
    ("pool", ("MaxPool", "AvgPool")),
    ("relu/bias", ("Relu", "BiasAdd")),
    ("optimizer", ("ResourceApply", "AssignSubVariable", "AssignAddVariable",
                   "AssignVariable")),
    ("variables", ("ReadVariableOp", "VarHandle", "Identity")),
    ("input", ("Iterator", "GatherV2", "OneHot", "RealDiv", "Prefetch", "MapDataset")),
    ("softmax/loss", ("Softmax", "Log", "Xent", "Exp", "Sum", "Mean")),
)


def _bucket(op_type: str) -> str:
    for name, needles in BUCKETS:
        if any(n in op_type for n in needles):
            return name
    return "other"


# cnnspec's Keras layer names are "<word><numbers>_l<line>c<col>[_<n>]" (bn_l7c13, drop_25_l8c27)
_LAYER_SCOPE = re.compile(r"^([a-z]+)[0-9_]*_l\d+c\d+")
_KIND_OF_WORD = {"bn": "batch norm", "drop": "dropout", "conv": "conv", "dense": "dense",
                 "pool": "pool", "relu": "relu", "flatten": "flatten"}
_OPTIMIZER_SCOPES = ("sgd", "adam", "adamw", "rmsprop", "nadam", "adagrad")


def _layer_kind(name: str) -> str:
    """Which part of the model an op belongs to, from its scope: a layer kind, the optimizer,
    or "outside layers" (the loss, the L2 penalty and its gradient, metrics)."""
    for part in name.rsplit(":", 1)[0].split("/"):
        found = _LAYER_SCOPE.match(part)
        if found:
            return _KIND_OF_WORD.get(found.group(1), found.group(1))
        if part.split("_")[0] in _OPTIMIZER_SCOPES:
            return "optimizer"
    return "outside layers"


def _op_profile(trace_dir: str, steps: int) -> dict[str, Any]:
    """Thread-milliseconds per step by op type and by layer kind from the profiler's xplane.

    Only TF op events count ("scope/name:OpType"); the executor's and the function's frames
    (ExecutorState::Process, KernelAndDeviceFunc::Run, EagerLocalExecute) contain them and
    would count every op twice.
    """
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    files = glob.glob(os.path.join(trace_dir, "**", "*.xplane.pb"), recursive=True)
    if not files:
        return {}
    space = xplane_pb2.XSpace()
    space.ParseFromString(Path(files[0]).read_bytes())
    by_type: collections.Counter[str] = collections.Counter()
    by_name: collections.Counter[str] = collections.Counter()
    by_kind: collections.Counter[str] = collections.Counter()
    for plane in space.planes:
        if not plane.name.startswith("/host:CPU"):
            continue
        names = {k: v.name for k, v in plane.event_metadata.items()}
        for line in plane.lines:
            for ev in line.events:
                name = names.get(ev.metadata_id, "")
                if (":" not in name or "::" in name or "/" not in name
                        or name.startswith(("tf_", "Thread", "$", "EagerLocalExecute"))):
                    continue
                op_type = name.rsplit(":", 1)[1].strip()
                if not op_type or " " in op_type:
                    continue
                ms = ev.duration_ps / 1e9
                by_type[op_type] += ms
                by_name[name] += ms
                kind = _layer_kind(name)
                by_kind[kind + (" (casts)" if op_type == "Cast" else "")] += ms
    per_step = {k: v / steps for k, v in by_type.items()}
    buckets: collections.Counter[str] = collections.Counter()
    for k, v in per_step.items():
        buckets[_bucket(k)] += v
    return {"buckets": dict(buckets.most_common()),
            "layers": {k: v / steps for k, v in by_kind.most_common()},
            "top_ops": dict(collections.Counter(per_step).most_common(25)),
            "top_names": {k: v / steps for k, v in by_name.most_common(40)}}


def worker(args: argparse.Namespace) -> None:
    import numpy as np

    import cnnspec
    from cnnspec.backend.keras_model import import_keras
    from cnnspec.language.checker import check
    from cnnspec.language.settings import TrainSettings
    from cnnspec.training.data import load_cifar10
    try:  # the training package's modules after its split; before it, all in train.py
        from cnnspec.training.model import build_training_model
        from cnnspec.training.model import compile_model as _compile
        from cnnspec.training.pipeline import Pipeline as _Pipeline
    except ImportError:
        from cnnspec.training.train import _compile, _Pipeline, build_training_model

    keras = import_keras()
    import tensorflow as tf

    spec = cnnspec.load(ROOT / "specs" / f"{args.spec}.cnn")
    report = check(spec)
    data = load_cifar10(args.data)
    settings = TrainSettings(optimizer="sgd", lr=0.01, batch=args.batch, epochs=1, seed=1)
    keras.utils.set_random_seed(1)
    precision = args.precision.removesuffix("-plain")
    # "bf16-plain": the bf16 model without prepare_training's speed-ups (the "before")
    model = build_training_model(report, keras, precision,
                                 prepare=not args.precision.endswith("-plain"))
    _compile(model, keras, settings, 1)
    pipeline = _Pipeline(tf, data, args.batch, spec.classes)
    order = np.arange(len(data.x_train), dtype=np.int64)
    steps = len(order) // args.batch
    x, y = next(iter(pipeline.train(order)))
    out: dict[str, Any] = {"spec": args.spec, "batch": args.batch, "precision": args.precision,
                           "jit_compile": bool(getattr(model, "jit_compile", False))}
    reps = args.reps

    def input_only() -> Any:
        n = 0
        for _xb, _yb in pipeline.train(order[: args.batch * 20]):
            n += 1
        return n

    out["input_ms"] = _time(input_only, 3) / 20

    fwd = tf.function(lambda xb: model(xb, training=True))
    out["forward_ms"] = _time(lambda: fwd(x).numpy(), reps)

    loss_fn = keras.losses.CategoricalCrossentropy()

    @tf.function
    def fwd_bwd(xb: Any, yb: Any) -> Any:
        with tf.GradientTape() as tape:
            pred = model(xb, training=True)
            loss = loss_fn(yb, pred) + tf.add_n([tf.cast(v, tf.float32) for v in model.losses]
                                                 or [tf.constant(0.0)])
        return loss, tape.gradient(loss, model.trainable_variables)

    out["fwd_bwd_ms"] = _time(lambda: fwd_bwd(x, y)[0].numpy(), reps)
    _, grads = fwd_bwd(x, y)
    grads = [tf.identity(g) for g in grads]
    model.optimizer.build(model.trainable_variables)

    @tf.function
    def update(gs: Any) -> Any:
        model.optimizer.apply(gs, model.trainable_variables)
        return model.optimizer.iterations

    out["update_ms"] = _time(lambda: update(grads).numpy(), reps)

    step = tf.function(model.train_step)
    out["step_ms"] = _time(lambda: step((x, y))["loss"].numpy(), reps)

    # casts the mixed policy adds per step: every float32 weight read as bf16 (forward) and
    # every bf16 gradient back to float32 (timed alone: an upper bound on their cost)
    variables = model.trainable_variables

    @tf.function
    def casts() -> Any:
        down = [tf.cast(v, tf.bfloat16) for v in variables]
        up = [tf.cast(d, tf.float32) for d in down]
        return tf.add_n([tf.reduce_sum(u[:1]) for u in up])

    out["weight_casts_ms"] = _time(lambda: casts().numpy(), reps) if precision == "bf16" \
        else 0.0
    out["cast_ops_in_step"] = sum(
        1 for op in step.get_concrete_function((x, y)).graph.get_operations()
        if op.type == "Cast")

    # model.fit's epoch per step at steps_per_execution 1 and 8, alternated --fit-rounds times
    # (best of each: other processes only ever slow a round down)
    # and the process's CPU time per step over the same epoch (all threads): less moved by
    # other jobs on a shared machine than wall time
    fit_ms: dict[int, list[float]] = {1: [], 8: []}
    fit_cpu_ms: dict[int, list[float]] = {1: [], 8: []}
    for _ in range(args.fit_rounds):
        for spe in (1, 8):
            _compile(model, keras, settings, spe)
            # trace the new train function for a full and the last, partial batch: timing
            # a retrace (~1 s, more in bf16) would read as per-step cost
            tail = len(order) % args.batch or args.batch
            model.fit(pipeline.train(order[: args.batch * 2 + tail]), epochs=1, verbose=0)
            t, cpu = time.perf_counter(), time.process_time()
            model.fit(pipeline.train(order), epochs=1, verbose=0)
            fit_ms[spe].append((time.perf_counter() - t) / steps * 1000)
            fit_cpu_ms[spe].append((time.process_time() - cpu) / steps * 1000)
    for spe, times in fit_ms.items():
        out[f"fit_spe{spe}_ms"] = min(times)
        out[f"fit_spe{spe}_cpu_ms"] = min(fit_cpu_ms[spe])
    if args.ops:
        _compile(model, keras, settings, 1)
        model.fit(pipeline.train(order[: args.batch * 8]), epochs=1, verbose=0)
        with tempfile.TemporaryDirectory() as tmp:
            n = min(steps, 40)
            tf.profiler.experimental.start(tmp)
            model.fit(pipeline.train(order[: args.batch * n]), epochs=1, verbose=0)
            tf.profiler.experimental.stop()
            out["ops"] = _op_profile(tmp, n)
    print("RESULT " + json.dumps(out), flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=None)
    parser.add_argument("--specs", default="exp7,exp1")
    parser.add_argument("--batches", default="32,128")
    parser.add_argument("--precisions", default="float32,bf16-plain,bf16")
    parser.add_argument("--reps", type=int, default=15)
    parser.add_argument("--ops", action="store_true", help="also a profiler trace by op type")
    parser.add_argument("--fit-rounds", type=int, default=1,
                        help="alternating rounds of fit at steps_per_execution 1 and 8")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--spec", help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--precision", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.data is None:
        args.data = default_data()  # as the other benches: never the loader's own search
    if args.worker:
        worker(args)
        return
    print(cpu_line(), flush=True)
    print(f"data: {args.data}", flush=True)
    rows = []
    for spec in args.specs.split(","):
        for batch in (int(b) for b in args.batches.split(",")):
            for precision in args.precisions.split(","):
                cmd = [sys.executable, __file__, "--worker", "--spec", spec, "--batch",
                       str(batch), "--precision", precision, "--reps", str(args.reps),
                       "--fit-rounds", str(args.fit_rounds)]
                cmd += ["--data", str(args.data)]
                if args.ops:
                    cmd.append("--ops")
                env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
                proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
                lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
                if proc.returncode != 0 or not lines:
                    sys.exit(f"worker {spec} {batch} {precision} failed:\n{proc.stderr[-3000:]}")
                row = json.loads(lines[-1][len("RESULT "):])
                rows.append(row)
                print(f"{spec:5} b{batch:<4} {precision:8} input {row['input_ms']:6.1f}  "
                      f"forward {row['forward_ms']:6.1f}  fwd+bwd {row['fwd_bwd_ms']:6.1f}  "
                      f"update {row['update_ms']:5.1f}  weight casts "
                      f"{row['weight_casts_ms']:5.1f} ({row['cast_ops_in_step']} Cast ops)  "
                      f"step {row['step_ms']:6.1f}  fit spe=1 {row['fit_spe1_ms']:6.1f}  "
                      f"spe=8 {row['fit_spe8_ms']:6.1f} ms; fit CPU-ms/step spe=1 "
                      f"{row['fit_spe1_cpu_ms']:6.1f}"
                      f"{'  (XLA)' if row['jit_compile'] else ''}", flush=True)
                if row.get("ops"):
                    buckets = row["ops"]["buckets"]
                    total = sum(buckets.values())
                    print("      ops/step (profiler, TF op time summed over threads): " + ", ".join(
                        f"{k} {v:.1f}" for k, v in buckets.items()) + f"; total {total:.1f} ms")
                    print("      by layer kind: " + ", ".join(
                        f"{k} {v:.1f}" for k, v in row["ops"]["layers"].items() if v >= 0.05))
                    print("      top ops: " + ", ".join(
                        f"{k} {v:.1f}" for k, v in list(row["ops"]["top_ops"].items())[:12]))
    print("ms per step (median); input = the tf.data pipeline alone; step = Keras's train_step "
          "on a fixed batch; fit = model.fit's whole epoch / steps (input, callbacks, host).")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
