"""Train a checked spec on CIFAR-10 exactly as the notebook did, but fast, resumable and recorded.

Why it is built this way:

* Faithful. The notebook ran `compile(loss='categorical_crossentropy', optimizer='sgd',
  metrics=['accuracy'])` and `fit(x/255, to_categorical(y), batch_size=32, epochs=10,
  validation_data=test, shuffle=True)`. We use the same loss on one-hot labels (sparse
  cross-entropy on integer labels is the same maths but *not* the same numbers: it goes through
  log/softmax again and differs in the last bits for ~20% of samples), the same optimizer,
  batch, epochs, per-epoch shuffle and per-epoch validation, and `x / 255` as a float32
  division (not a multiplication by 1/255, which rounds differently).
* Fast. Images stay uint8 (4x less memory than the notebook's float copy); a `tf.data`
  pipeline gathers each batch, casts and scales it inside the graph and prefetches the next
  batch while the current one trains. bench/train_speed.py measures it against the notebook's
  `fit` on float arrays: at least as fast, with less memory. Nothing else is on by default:
  steps_per_execution > 1 and thread settings showed no gain beyond noise, op determinism is
  not needed (seeded runs already match, across processes too) and changes the numbers, XLA
  would change them too, and bf16 is ~10x slower on CPUs without native bf16.
  The one deliberate difference from the notebook: the shuffle order comes from numpy's
  seeded generator instead of Keras's, which is what makes seeded runs and resumes exact.
* Reproducible. With a seed, the shuffle order of epoch e is a pure function of (seed, e),
  weights and dropout masks come from Keras's seeded generators, and two runs give the same
  history to the last digit. Without a seed one is drawn and recorded, so every run can be
  repeated.
* Resumable. Each epoch ends with an atomic checkpoint (model + optimizer state + dropout RNG
  state + history). Because the shuffle order depends only on (seed, epoch), a run resumed
  after Ctrl-C or SIGKILL continues exactly where it stopped: same epochs, same numbers.
* Recorded. Every file of the run folder (see cnnspec.training.records) is written atomically.

How it is divided: this module is the run's start (check, new run or resume, settings.json)
and public API; the epochs, records and the end of a run are cnnspec.training.loop (one loop,
with or without a strategy), evaluation is cnnspec.training.evaluation, checkpoints
cnnspec.training.checkpoint, the model cnnspec.training.model, the input
cnnspec.training.pipeline, progress display cnnspec.training.progress. TensorFlow is imported
(through cnnspec.training.model) only when training starts.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import platform
import secrets
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from numbers import Integral
from os import PathLike
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cnnspec import __version__
from cnnspec.language import ir
from cnnspec.language.checker import DEFAULT_MAX_PARAMS, Report, check
from cnnspec.language.errors import SpecError, some
from cnnspec.language.format import format_spec
from cnnspec.language.parse import parse
from cnnspec.language.settings import (
    PRECISIONS,
    REQUESTABLE_PRECISIONS,
    SETTINGS,
    STRATEGIES,
    TrainSettings,
    setting_problems,
)
from cnnspec.language.sweep import variant_named
from cnnspec.training import records
from cnnspec.training.augment import Augment
from cnnspec.training.checkpoint import (
    ResumeRefused,
    check_state_record,
    load_checkpoint,
    load_into,
    model_misfit,
)
from cnnspec.training.evaluation import Evaluator, metrics
from cnnspec.training.loop import (
    EpochHook,
    LocalSteps,
    Loop,
    RunRecords,
    RunResult,
    Stop,
    TrainingFailed,
    divergence_reason,
    guard_callback,
    interrupted_by,
    nonfinite_name,
    progress_callback,
)
from cnnspec.training.model import (
    build_training_model,
    compile_model,
    dtype_policy,
    horizon_of,
    import_tf,
    learning_rate_schedule,
    make_optimizer,
)
from cnnspec.training.pipeline import Pipeline, epoch_order
from cnnspec.training.progress import NoProgress, ProgressReporter, resolve_progress
from cnnspec.training.recipe import EarlyStopping, ema_callback

if TYPE_CHECKING:
    from cnnspec.training.data import Cifar10

# Measured on the 2-core CPU machine: Keras's per-step overhead is ~1 ms, so running 8 or 32
# steps per call could save at most ~2% of an exp1 step (~35 ms) and <0.5% of an exp7 step;
# in-process A/B runs of 1/8/32 gave identical losses and no gain beyond run-to-run noise.
# Above 1 also coarsens the progress bar and the NaN check, so the default stays at 1.
DEFAULT_STEPS_PER_EXECUTION = 1

# the names this module has always offered (tests, bench/, the CLI), now defined beside it
_import_tf, _make_optimizer, _compile = import_tf, make_optimizer, compile_model
_Pipeline = Pipeline
__all__ = [
    "DEFAULT_STEPS_PER_EXECUTION", "DataMismatch", "EpochHook", "ResumeRefused", "RunResult",
    "Stop", "TrainingFailed", "build_training_model", "check_data", "check_settings_record",
    "check_state_record", "data_fingerprint", "epoch_order", "evaluate_run", "load_result",
    "nonfinite_name", "read_run_settings", "recorded_data", "refuse_existing_run", "resume_run",
    "run_differences", "train",
]


# -- helpers without TensorFlow ----------------------------------------------------------------


def data_fingerprint(data: Cifar10) -> str:
    """A hash of the exact arrays trained on, so `resume` can refuse different data."""
    h = hashlib.blake2b(digest_size=16)
    for array in (data.x_train, data.y_train, data.x_test, data.y_test):
        a = np.ascontiguousarray(array)
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(memoryview(a).cast("B"))
    return h.hexdigest()


def _spec_text(spec: ir.Spec) -> str:
    """The text spec.cnn records: the file as written. For a sweep's variant that is the whole
    sweep file (its positions name the Keras layers); `resume_run` takes the variant back out
    of it by the name settings.json records."""
    if spec.source is not None:
        return spec.source
    return format_spec(spec)


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class DataMismatch(ValueError):
    """The spec cannot train on this data (input shape or classes); str(exc) says how to fix."""


def check_data(spec: ir.Spec, data: Cifar10) -> None:
    """DataMismatch unless `spec` can train on `data`: same image shape, enough classes.

    Pure numpy and cheap, so callers (the CLI) run it before TensorFlow starts and before a
    run folder exists: a mismatch is then one clear sentence, not a Keras shape error mid-run.
    """
    for name in ("x_train", "x_test"):
        x = getattr(data, name)
        if x.dtype != np.uint8 or x.ndim != 4:
            raise DataMismatch(
                f"data.{name} must be uint8 images N×H×W×C, got {x.dtype} {x.shape}")
        if tuple(x.shape[1:]) != tuple(spec.input_shape):
            got = "x".join(map(str, x.shape[1:]))
            want = "x".join(map(str, spec.input_shape))
            raise DataMismatch(
                f"{spec.name} declares `input {want}` but the images of {data.source} are "
                f"{got}; write `input {got}` in the spec"
            )
    top = int(max(data.y_train.max(initial=0), data.y_test.max(initial=0)))
    if top >= spec.classes:
        raise DataMismatch(
            f"{spec.name} declares `classes {spec.classes}` but the labels of {data.source} "
            f"go up to {top}; write `classes {top + 1}` in the spec"
        )
    if len(data.x_train) == 0:
        raise DataMismatch("no training images")


_check_data = check_data


# -- the run -----------------------------------------------------------------------------------


def train(
    spec: ir.Spec,
    settings: TrainSettings,
    data: Cifar10,
    out_dir: str | Path,
    *,
    precision: str = "float32",
    steps_per_execution: int | None = None,
    progress: str | ProgressReporter | None = None,
    resume: bool = False,
    max_params: int = DEFAULT_MAX_PARAMS,
    callbacks: Sequence[Any] = (),
    strategy: str = "none",
    cluster: str | Sequence[str] | None = None,
    task_index: int | None = None,
    epoch_hooks: Sequence[EpochHook] = (),
    report: Report | None = None,
    stopped: Stop | None = None,
) -> RunResult:
    """Train `spec` on `data` with `settings`, writing the run folder `out_dir`.

    report: the spec's checked report when the caller already has it (`cnnspec run` checks each
    spec once, before the first one trains); None checks the spec here.

    precision: "float32" (faithful, default), "bf16" (mixed bfloat16, softmax in float32) or
    "auto" (bf16 where the CPU has native bf16 units, else float32; see cnnspec.backend.cpu). The
    default stays float32 here so library callers get the notebook's numbers on every machine;
    the command line defaults to auto. settings.json records the precision actually used, what
    was asked for and why; a resumed run keeps the recorded one.
    steps_per_execution: train steps per graph call, with or without a strategy; None means
    DEFAULT_STEPS_PER_EXECUTION.
    progress: "plain" (a line per epoch; also None), "none", or a
    cnnspec.training.progress.ProgressReporter (the CLI passes its rich bar this way).
    resume: continue from out_dir's checkpoint if it has one (the spec, settings and data must
    be the ones it was started with); without it, a folder that already holds a run is an error.
    callbacks: extra Keras callbacks, called during every epoch's training (their
    on_epoch_end sees the training logs; validation comes after, in the row the hooks get).
    strategy: "none" (model.fit in this process), "mirrored" (tf.distribute.MirroredStrategy
    over the local devices) or "multiworker" (MultiWorkerMirroredStrategy; the cluster comes from
    `cluster` ("host:port,host:port") + `task_index`, else from $TF_CONFIG). Under a strategy the
    batch is the global batch, split evenly over the replicas (see `distributed`), and
    only the chief writes `out_dir`; the other workers write nothing.
    epoch_hooks: callables hook(epoch, row), called after each epoch's record and checkpoint
    are written, with its 1-based number and history row. A hook returns None to go on or a
    `Stop(status, reason)` to end the run there, cleanly: the final model and metrics.json are
    written, status.json says the Stop's status ("pruned", or "completed" for early stopping)
    with its reason. `--resume` of a pruned run is refused (ResumeRefused): pruning is a
    decision about the run, and training on would overwrite the result it was judged by; a
    run a hook completed early is completed, and resuming returns it as it is.
    stopped: with `resume`, a hook's Stop already decided on the epochs the checkpoint keeps
    (a continued sweep's pruner, told those epochs again, stops the run where it stopped it
    before it was interrupted while saving): no epoch is trained, the run ends with it.

    Returns a RunResult with status "completed", a hook's Stop status, or "interrupted" after
    Ctrl-C (the last completed epoch is checkpointed; `resume_run` continues). Raises
    TrainingFailed when the loss becomes NaN or infinite, SpecError for a spec that does not
    check, ValueError for bad arguments. status.json says which, with the reason.
    """
    _check_argument_types(spec, settings, data, out_dir, steps_per_execution, epoch_hooks,
                          callbacks)
    if precision not in REQUESTABLE_PRECISIONS:
        raise ValueError(
            f"precision must be one of {', '.join(REQUESTABLE_PRECISIONS)}, not {precision!r}")
    from cnnspec.backend.cpu import resolve_precision

    requested = precision
    precision, reason = resolve_precision(requested)
    spe = DEFAULT_STEPS_PER_EXECUTION if steps_per_execution is None else steps_per_execution
    if spe < 1:
        raise ValueError(f"steps_per_execution must be at least 1, not {spe}")
    reporter = resolve_progress(progress)
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {', '.join(STRATEGIES)}, not {strategy!r}")
    if report is None:
        report = check(spec, max_params=max_params)  # SpecError before any TensorFlow import
    _check_data(spec, data)
    job = _Job(spec, settings, data, Path(out_dir), report, _spec_text(spec),
               data_fingerprint(data), precision, spe, strategy,
               {"precision_requested": requested, "precision_reason": reason})
    steps = _make_steps(job, cluster, task_index)
    with contextlib.ExitStack() as lock:  # the chief enters the folder's lock in it
        return _run(job, steps, reporter, resume, lock, callbacks, epoch_hooks, stopped)


def _check_argument_types(spec: Any, settings: Any, data: Any, out_dir: Any,
                          steps_per_execution: Any, epoch_hooks: Any, callbacks: Any) -> None:
    """TypeError naming the argument that is not what train() takes, before anything runs:
    the spec's text, a dict of settings or None for the data failed deep inside with an
    AttributeError, and a hook that is no callable only after a whole epoch had trained (the
    run left "failed")."""
    from cnnspec.training.data import Cifar10  # (a type-checking import at the top)

    def refuse(what: str, value: Any, how: str = "") -> TypeError:
        return TypeError(f"train()'s {what}, not {type(value).__name__}{how}")

    if not isinstance(spec, ir.Spec):
        raise refuse("spec is a Spec from cnnspec.parse or cnnspec.load", spec,
                     "; parse the text first" if isinstance(spec, str) else "")
    if not isinstance(settings, TrainSettings):
        raise refuse("settings are TrainSettings (cnnspec.language.settings.settings_of(spec), "
                     "then .override(...))", settings)
    if not isinstance(data, Cifar10):
        raise refuse("data is a Cifar10 from cnnspec.training.data.load_cifar10", data)
    if not isinstance(out_dir, str | PathLike):
        raise refuse("out_dir is a path (str or Path)", out_dir)
    if steps_per_execution is not None and (isinstance(steps_per_execution, bool)
                                            or not isinstance(steps_per_execution, Integral)):
        raise refuse("steps_per_execution is a whole number", steps_per_execution)
    for name, hooks, what in (("epoch_hooks", epoch_hooks, "callables hook(epoch, row)"),
                              ("callbacks", callbacks, "Keras callbacks")):
        if not isinstance(hooks, Sequence) or isinstance(hooks, str):
            raise TypeError(f"train()'s {name} are a list of {what}, not "
                            f"{type(hooks).__name__}")
    odd = [h for h in epoch_hooks if not callable(h)]
    if odd:
        raise TypeError(f"train()'s epoch_hooks are callables hook(epoch, row), and "
                        f"{type(odd[0]).__name__} {odd[0]!r:.40} is not one")


@dataclass(frozen=True)
class _Job:
    """What one call of `train` trains, checked, before anything is decided or written."""

    spec: ir.Spec
    settings: TrainSettings
    data: Cifar10
    run_dir: Path
    report: Report
    text: str  # the spec's text, as spec.cnn records it
    fingerprint: str  # data_fingerprint(data)
    precision: str  # resolved: float32 or bf16
    steps_per_execution: int
    strategy: str
    choice: dict[str, str]  # precision_requested / precision_reason for settings.json


def _make_steps(job: _Job, cluster: str | Sequence[str] | None,
                task_index: int | None) -> LocalSteps | Any:
    """The strategy's step: LocalSteps (no TensorFlow yet), or distributed.Replicated, whose
    strategy is created first (MultiWorkerMirroredStrategy must exist before any other TF op)."""
    if job.strategy == "none":
        return LocalSteps()
    from cnnspec.training.distributed import Replicated, make_strategy

    tf, keras = import_tf()
    dist, chief, worker = make_strategy(tf, job.strategy, cluster, task_index)
    return Replicated(tf, keras, dist, chief, worker, job.settings.batch,
                      job.steps_per_execution, job.settings.label_smoothing)


def _decide_start(
    job: _Job, resume: bool, lock: contextlib.ExitStack
) -> tuple[dict[str, Any] | None, dict[str, Any] | None, bool]:
    """The chief's decision, under the folder's lock (entered into `lock`, held until the run
    ends): (settings record, checkpoint state, already completed). A refused folder (new run
    into a used one, or a resume that does not match) is left untouched."""
    if not resume:
        refuse_existing_run(job.run_dir)  # before the lock: a refused folder is left untouched
    lock.enter_context(records.run_lock(job.run_dir))
    return _start_or_resume(job.run_dir, resume, job.text, job.settings, job.precision,
                            job.fingerprint)


def _prepare_model(job: _Job, steps: Any, keras: Any, state: dict[str, Any] | None) -> Any:
    """The run's model: new (seeded), or the checkpoint's. Without a strategy the checkpoint is
    the model; under one the model is built in the strategy's scope and the checkpoint copied
    in. ResumeRefused, with the folder untouched, if the checkpoint does not load or fit."""
    def build() -> Any:
        model = build_training_model(job.report, keras, job.precision)
        compile_model(model, keras, job.settings, job.steps_per_execution,
                      horizon_of(job.settings, len(job.data.x_train)))
        return model

    policy = dtype_policy(job.precision)
    if state is not None and isinstance(steps, LocalSteps):
        return load_checkpoint(keras, job.run_dir, state, job.report, policy)
    model = steps.build(build)
    if state is not None:
        load_into(keras, job.run_dir, state, model, job.report, policy)
    return model


def _write_start(job: _Job, steps: Any, recorded: dict[str, Any] | None, seed: int,
                 history: list[dict[str, Any]], tf: Any, keras: Any) -> None:
    """The chief's first writes: spec.cnn and settings.json of a new run, status "running"."""
    run_dir = job.run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    records.remove_temporaries(run_dir)
    if recorded is None:
        records.atomic_write_text(run_dir / records.SPEC_FILE, job.text)
        recorded = _settings_record(
            job.spec, job.report, job.settings, job.data, job.precision,
            job.steps_per_execution, seed, job.fingerprint, tf, keras, job.choice)
        if job.strategy != "none":
            recorded["distribution"] = {
                "strategy": job.strategy, "replicas": steps.replicas, "workers": steps.workers}
        records.write_json(run_dir / records.SETTINGS_FILE, recorded)
    records.write_status(run_dir, "running", epochs_completed=len(history),
                         epochs_planned=job.settings.epochs)


def _run(
    job: _Job,
    steps: Any,
    reporter: ProgressReporter,
    resume: bool,
    lock: contextlib.ExitStack,
    callbacks: Sequence[Any],
    hooks: Sequence[EpochHook],
    stopped: Stop | None = None,
) -> RunResult:
    """A run from start (new or resumed) to end, with or without a strategy.

    The chief decides (new run or resume, the seed, the first epoch) and writes; under a
    multiworker strategy the other workers are told by one broadcast (distributed.Start) and
    then run every collective in lockstep with the chief, writing nothing. A refusal on the
    chief is raised at once when there are no other workers to tell.
    """
    from cnnspec.training.distributed import Start, run_key

    chief, alone = steps.chief, steps.workers == 1
    recorded = state = refusal = None
    done = False
    if chief:
        try:
            recorded, state, done = _decide_start(job, resume, lock)
        except (ValueError, FileExistsError) as exc:  # RunFolderError/RunLocked are ValueErrors
            if alone:
                raise
            refusal = exc
    if done and alone:
        return load_result(job.run_dir)
    seed = _run_seed(recorded, job.settings)
    history: list[dict[str, Any]] = list(state["history"]) if state else []

    tf, keras = import_tf()
    keras.utils.set_random_seed(seed)
    try:  # the checkpoint is loaded before anything in the folder is written
        model = _prepare_model(job, steps, keras,
                               state if refusal is None and not done else None)
    except ResumeRefused as exc:
        if alone:
            raise
        refusal = exc
    key = run_key(_sha256(job.text), json.dumps(job.settings.to_dict(), sort_keys=True),
                  job.precision, job.fingerprint)
    start = Start(refusal is not None, done, seed, len(history))
    if not alone:
        start = steps.agree(model, start, key)
    if refusal is not None:
        raise refusal
    if start.refused:
        raise TrainingFailed(f"the chief refused to start {job.run_dir}; see its output")
    if start.done:
        return load_result(job.run_dir) if chief else RunResult(
            job.run_dir, "completed", job.settings.epochs, (), chief=False)
    if not chief:
        keras.utils.set_random_seed(start.seed)  # the dropout states came with the broadcast
        reporter = NoProgress()
        return _loop(job, steps, model, start, history, reporter, callbacks, hooks, tf, keras,
                     stopped if state else None).run()
    try:
        loop = _chief_start(job, steps, model, start, history, reporter, callbacks, hooks,
                            tf, keras, recorded, state, seed, stopped)
    except BaseException as exc:  # after "running" was written, before the loop (which
        # records how it ends) began: the status must not stay "running"
        by = interrupted_by(exc)
        status, reason = ("interrupted", f"interrupted ({by}) before epoch "
                          f"{len(history) + 1}/{job.settings.epochs} began; {len(history)} "
                          "epoch(s) completed and checkpointed; resume to continue") \
            if by is not None else ("failed", f"{type(exc).__name__}: {exc}")
        with contextlib.suppress(OSError):
            records.write_status(job.run_dir, status, reason, epochs_completed=len(history),
                                 epochs_planned=job.settings.epochs)
        if by is not None and not isinstance(exc, KeyboardInterrupt):
            raise KeyboardInterrupt(by) from None  # the CLI's Ctrl-C: exit 130, resumable
        raise
    return loop.run()


def _chief_start(job: _Job, steps: Any, model: Any, start: Any, history: list[dict[str, Any]],
                 reporter: ProgressReporter, callbacks: Sequence[Any],
                 hooks: Sequence[EpochHook], tf: Any, keras: Any,
                 recorded: dict[str, Any] | None, state: dict[str, Any] | None, seed: int,
                 stopped: Stop | None) -> Loop:
    """The chief's first records and words, then its loop (not yet run)."""
    lost = _epochs_without_checkpoint(job.run_dir) if recorded and not state else 0
    _write_start(job, steps, recorded, seed, history, tf, keras)
    if state and len(history) >= job.settings.epochs:  # stopped while finishing
        n = job.settings.epochs
        reporter.say(f"finishing {job.spec.name}: its {n} epoch{'s' * (n != 1)} "
                     f"{'are' if n != 1 else 'is'} trained; writing its final records")
    elif state and stopped is not None:
        reporter.say(f"finishing {job.spec.name}: {stopped.status} after epoch "
                     f"{len(history)}, as decided before it was interrupted; writing its "
                     "final records")
    elif state:
        reporter.say(_resuming_line(job.spec.name, len(history) + 1, job.settings.epochs,
                                    job.precision))
    elif lost:
        reporter.say(f"no checkpoint in {job.run_dir}, though its status names {lost} "
                     f"finished epoch(s): training {job.spec.name} again from epoch 1")
    # only a resumed run's kept epochs were judged before this start
    return _loop(job, steps, model, start, history, reporter, callbacks, hooks, tf, keras,
                 stopped if state else None)


def _loop(job: _Job, steps: Any, model: Any, start: Any, history: list[dict[str, Any]],
          reporter: ProgressReporter, callbacks: Sequence[Any], hooks: Sequence[EpochHook],
          tf: Any, keras: Any, decided: Stop | None = None) -> Loop:
    """The epochs of the run, from `start.first_epoch` on (see cnnspec.training.loop)."""
    settings, epochs = job.settings, job.settings.epochs
    rec = RunRecords(job.run_dir, job.spec.name, epochs, start.seed, history, steps.chief)
    rec.model = model
    horizon = horizon_of(settings, len(job.data.x_train))
    schedule = learning_rate_schedule(settings)
    recipe_callbacks = [ema_callback(keras)] if settings.ema is not None else []
    return Loop(
        rec=rec,
        steps=steps,
        pipeline=Pipeline(tf, job.data, settings.batch, job.spec.classes,
                          augment=Augment(**settings.augment.params()), seed=start.seed),
        evaluate=Evaluator(tf, keras, model),
        settings=settings,
        first_epoch=start.first_epoch,
        reporter=reporter,
        callbacks=[guard_callback(keras), progress_callback(keras, reporter),
                   *recipe_callbacks, *callbacks],
        hooks=hooks,
        y_test=job.data.y_test,
        label_names=job.data.label_names,
        divergence=lambda d: divergence_reason(
            job.spec.name, d, epochs, horizon.steps_per_epoch, settings,
            lr_now=schedule.lr_at((d.epoch - 1) * horizon.steps_per_epoch + d.batch - 1,
                                  horizon),
            l2_factors=[f for f in (getattr(layer, "l2", None) for layer in job.spec.layers())
                        if f is not None]),
        lr_at_epoch=lambda e: schedule.lr_at((e + 1) * horizon.steps_per_epoch - 1, horizon),
        stopping=None if settings.patience is None else EarlyStopping(
            settings.patience, monitor=settings.monitor),
        tta=settings.tta,
        decided=decided,
    )


def refuse_existing_run(run_dir: str | Path) -> None:
    """FileExistsError if `run_dir` already holds a run, or anything else.

    A new run writes history.csv, metrics.json, model.keras, … into its folder, replacing
    files of those names: a folder holding a run must be resumed, and one holding other files
    (the user's own, or a sweep's run folders) is not the place for a run at all. What a run
    that stopped before its settings.json left (`spec.cnn`, the lock, a writer's temporary)
    may be there, and hidden files (`.gitkeep`), which no run writes over."""
    folder = Path(run_dir)
    if records.holds_run(folder):
        raise FileExistsError(
            f"{folder} already holds a run; resume it with `cnnspec train --resume {folder}`, "
            "or pick another folder")
    try:
        held = sorted(p.name for p in folder.iterdir()
                      if p.name != records.SPEC_FILE and not p.name.startswith("."))
    except (FileNotFoundError, NotADirectoryError):
        return
    except OSError as exc:
        raise FileExistsError(f"{folder}: cannot list the folder: {exc.strerror or exc}") from None
    if held:
        what = ("the runs of a `cnnspec sweep` or `run`" if _holds_runs(folder, held)
                else f"files that are not a run's ({some(held)})")
        raise FileExistsError(
            f"{folder} holds {what}; a new run writes its records into its folder, so pick a "
            "new or empty folder")


def _holds_runs(folder: Path, names: list[str]) -> bool:
    """Whether a folder is a sweep's or `run`'s --out: its record, or run folders in it."""
    return records.SWEEP_RECORD in names or any(
        (folder / name / records.SETTINGS_FILE).is_file() for name in names[:100])


def _read_run_state(
    run_dir: Path, resume: bool
) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """(settings.json, checkpoint state) of a folder, each checked enough to be used.

    Run under the folder's lock. A record that is missing a key or has the wrong type would
    otherwise surface as a KeyError deep in the trainer; it is a RunFolderError naming the file.
    """
    settings_path = run_dir / records.SETTINGS_FILE
    recorded = records.read_json(settings_path) if settings_path.is_file() else None
    if recorded is not None:
        check_settings_record(recorded, settings_path)
    state = records.read_checkpoint_state(run_dir) if resume and recorded is not None else None
    if state is not None:
        check_state_record(state, run_dir)
    return recorded, state


_KIND_WORDS = {dict: "an object", str: "a string", int: "a whole number"}


def check_settings_record(recorded: Any, path: Path) -> None:
    """RunFolderError unless settings.json has what resume/evaluate read from it."""
    def bad(what: str) -> records.RunFolderError:
        return records.RunFolderError(f"{path}: corrupted record: {what}")

    def field(record: dict[str, Any], key: str, kind: type, where: str = "") -> None:
        """'data.train_images' is missing / must be a whole number, not "64"."""
        if key not in record:
            raise bad(f"'{where}{key}' is missing")
        value = record[key]
        if not isinstance(value, kind) or isinstance(value, bool):
            shown = json.dumps(value)
            shown = shown if len(shown) <= 40 else shown[:40] + "…"
            raise bad(f"'{where}{key}' must be {_KIND_WORDS[kind]}, not {shown}")

    if not isinstance(recorded, dict):
        raise bad("not a JSON object")
    need = {"spec": dict, "settings": dict, "effective_seed": int, "precision": str,
            "steps_per_execution": int, "data": dict}
    for key, kind in need.items():
        field(recorded, key, kind)
    for key in ("name", "sha256"):
        field(recorded["spec"], key, str, "spec.")
    for key, kind in (("source", str), ("train_images", int), ("fingerprint", str)):
        field(recorded["data"], key, kind, "data.")
    unknown = SETTINGS.unknown_record_keys(recorded["settings"])
    if unknown:  # missing ones take their defaults (a run recorded before they existed)
        raise bad(f"unknown setting(s) {', '.join(unknown)}")
    for key in ("epochs", "batch"):
        value = recorded["settings"].get(key)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise bad(f"'settings.{key}' must be a positive whole number")
    try:
        settings = SETTINGS.from_record(recorded["settings"])
    except (TypeError, ValueError, KeyError, AttributeError) as exc:
        raise bad(f"unreadable settings ({exc})") from None
    for entry in SETTINGS.spec_entries:
        value = getattr(settings, entry.name)
        if not entry.accepts(value):
            raise bad(f"'settings.{entry.name}' cannot be {str(value)[:40]!r}")
    problems = setting_problems(settings)
    if problems:
        raise bad(f"'settings.{problems[0].key}': {problems[0].message}")
    if recorded["precision"] not in PRECISIONS:
        raise bad(f"unknown precision {recorded['precision']!r}")
    if not 0 <= recorded["effective_seed"] < 2**32:  # what Keras's set_random_seed takes
        raise bad("'effective_seed' must be a whole number from 0 to 2**32 - 1")
    if recorded["steps_per_execution"] < 1:
        raise bad("'steps_per_execution' must be at least 1")
    if recorded["data"]["train_images"] < 1 or isinstance(recorded["data"]["train_images"], bool):
        raise bad("'data.train_images' must be a positive whole number")


def _start_or_resume(
    run_dir: Path, resume: bool, text: str, settings: TrainSettings, precision: str,
    fingerprint: str,
) -> tuple[dict[str, Any] | None, dict[str, Any] | None, bool]:
    """New run or resume, decided under the folder's lock: (settings record, checkpoint state,
    already completed). A resume of a different run, or a new run into a used folder, raises."""
    recorded, state = _read_run_state(run_dir, resume)
    done = False
    if resume and recorded is not None:
        _same_run_or_raise(run_dir, recorded, text, settings, precision, fingerprint)
        status = records.read_status(run_dir)
        if status is not None and status.get("status") == "pruned":
            raise ResumeRefused(
                f"cannot resume {run_dir}: it was pruned after epoch "
                f"{status.get('epochs_completed')} ({status.get('reason')}); a pruned run is "
                "finished, as the sweep judged it: start a new run to train it further")
        done = status is not None and status.get("status") == "completed"
    elif not resume:
        refuse_existing_run(run_dir)  # again, under the lock: another writer may have been first
    return recorded, state, done


def _run_seed(recorded: dict[str, Any] | None, settings: TrainSettings) -> int:
    """The recorded seed of a resumed run; else the settings' seed, or a fresh random one."""
    if recorded:
        return recorded["effective_seed"]  # type: ignore[no-any-return]
    return settings.seed if settings.seed is not None else secrets.randbelow(2**31 - 1)


def _epochs_without_checkpoint(run_dir: Path) -> int:
    """On a resume that found no checkpoint: how many finished epochs status.json names (they
    are lost: the checkpoint folder was deleted), so the restart is said, not silent."""
    try:
        status = records.read_status(run_dir)
    except records.RunFolderError:
        return 0
    done = (status or {}).get("epochs_completed")  # read_status: a checked object, or None
    return done if isinstance(done, int) and not isinstance(done, bool) and done > 0 else 0


def _resuming_line(name: str, epoch: int, epochs: int, precision: str) -> str:
    """`resuming exp7 at epoch 3/10 in bf16 (recorded in the run)`: it keeps its precision.

    A run started in bf16 on an AMX machine continues in bf16 on an AVX2 one (correct, but
    slow there: bf16 is emulated), never silently in another precision; the line says so.
    """
    from cnnspec.backend.cpu import resolve_precision

    here, _ = resolve_precision("auto")
    note = "" if here == precision else f"; auto would pick {here} on this CPU"
    return f"resuming {name} at epoch {epoch}/{epochs} in {precision} (recorded in the run{note})"


def _settings_record(
    spec: ir.Spec,
    report: Report,
    settings: TrainSettings,
    data: Cifar10,
    precision: str,
    steps_per_execution: int,
    seed: int,
    fingerprint: str,
    tf: Any,
    keras: Any,
    choice: dict[str, str] | None = None,
) -> dict[str, Any]:
    """settings.json's content; `choice` adds precision_requested/_reason beside precision."""
    return {
        "spec": {
            "name": spec.name,
            "file": spec.filename,
            "sha256": _sha256(_spec_text(spec)),
        },
        "settings": SETTINGS.record(settings),
        "effective_seed": seed,
        "precision": precision,
        **(choice or {}),
        "steps_per_execution": steps_per_execution,
        "data": {
            # absolute: `--data ../cifar` must still name the folder when the run is resumed
            # or evaluated from another working directory
            "source": str(Path(data.source).absolute()),
            "origin": data.origin,
            "train_images": int(len(data.x_train)),
            "test_images": int(len(data.x_test)),
            "label_names": list(data.label_names),
            "fingerprint": fingerprint,
        },
        "model": {
            "params": report.params,
            "trainable_params": report.trainable,
            "non_trainable_params": report.non_trainable,
            "macs_per_image": report.macs,
        },
        "versions": {
            "cnnspec": __version__,
            "tensorflow": tf.__version__,
            "keras": keras.__version__,
            "numpy": np.__version__,
            "python": platform.python_version(),
        },
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def _same_run_or_raise(
    run_dir: Path,
    recorded: dict[str, Any],
    text: str,
    settings: TrainSettings,
    precision: str,
    fingerprint: str,
) -> None:
    problems = _run_differences(recorded, text, settings, precision)
    if recorded["data"]["fingerprint"] != fingerprint:
        problems.append(
            f"the data differ from the {recorded['data']['train_images']:,} training images "
            f"of {recorded['data']['source']}"
        )
    if problems:
        raise ResumeRefused(f"cannot resume {run_dir}: " + "; ".join(problems))


def _run_differences(recorded: dict[str, Any], text: str, settings: TrainSettings,
                     precision: str | None) -> list[str]:
    """What makes a run other than the recorded one, the data aside (precision None: any)."""
    problems = []
    if recorded["spec"]["sha256"] != _sha256(text):
        problems.append("the spec text differs")
    if SETTINGS.from_record(recorded["settings"]) != settings:
        was, now = SETTINGS.texts(recorded["settings"]), SETTINGS.texts(SETTINGS.record(settings))
        changed = [f"{k} {was[k]} there, {now[k]} here" for k in was if was[k] != now.get(k)]
        problems.append(f"the training settings differ ({'; '.join(changed)})" if changed
                        else "the training settings differ")
    if precision is not None and recorded["precision"] != precision:
        problems.append(f"precision was {recorded['precision']}, not {precision}")
    return problems


def run_differences(recorded: dict[str, Any], spec: ir.Spec, settings: TrainSettings,
                    precision: str | None = None) -> list[str]:
    """Why training `spec` with `settings` would not continue the run whose settings.json is
    `recorded` (`read_run_settings`): [] when it is the same run (spec text, settings and,
    unless None, the resolved precision; the data are compared when training starts).

    Why: a sweep continued in its --out folder checks every variant's folder before the data
    is read or anything trains, so a changed flag is refused once, not variant by variant."""
    return _run_differences(recorded, _spec_text(spec), settings, precision)


def load_result(run_dir: str | Path) -> RunResult:
    """The RunResult recorded in a run folder, without TensorFlow."""
    folder = Path(run_dir)
    status = records.read_status(folder) or {"status": "running"}
    settings = records.read_json(folder / records.SETTINGS_FILE)
    metrics_path = folder / records.METRICS_FILE
    return RunResult(
        folder,
        status["status"],
        settings["settings"]["epochs"],
        tuple(records.read_history(folder)),
        records.read_json(metrics_path) if metrics_path.is_file() else None,
        status.get("reason"),
    )


def read_run_settings(run_dir: str | Path) -> dict[str, Any]:
    """settings.json of a run folder, checked; RunFolderError saying what is wrong if not.

    For `--resume` and `evaluate`: a path that does not exist, is not a folder, or is a folder
    without a run gets one clear sentence instead of a FileNotFoundError/KeyError traceback.
    """
    folder = Path(run_dir)
    if not folder.exists():
        raise records.RunFolderError(f"{folder}: no such run folder")
    if not folder.is_dir():
        raise records.RunFolderError(f"{folder}: not a run folder (not a directory)")
    path = folder / records.SETTINGS_FILE
    if not path.is_file():
        raise records.RunFolderError(
            f"{folder} is not a run folder: it has no {records.SETTINGS_FILE}")
    try:
        recorded = records.read_json(path)
    except OSError as exc:
        raise records.RunFolderError(f"{path}: cannot read ({exc.strerror or exc})") from None
    check_settings_record(recorded, path)
    return recorded


def recorded_data(recorded: dict[str, Any], limit: int | None = None,
                  test_only: bool = False) -> Cifar10:
    """The data a run was trained on: its recorded source folder and image count.

    `limit` is the recorded number of training images, so a run trained with `--limit 256`
    gets the same 256 images back (and the same fingerprint), not the whole source; a
    `limit` given (a resume's --limit) is used instead, for the fingerprint to judge.
    test_only: its test images alone (evaluate), see load_cifar10.
    """
    from cnnspec.training.data import load_cifar10

    info = recorded["data"]
    return load_cifar10(info["source"], limit=info["train_images"] if limit is None else limit,
                        recorded_origin=info.get("origin") or "", test_only=test_only)


_load_recorded_data = recorded_data


def resume_run(
    run_dir: str | Path,
    data: Cifar10 | None = None,
    *,
    progress: str | ProgressReporter | None = None,
    callbacks: Sequence[Any] = (),
    strategy: str = "none",
    cluster: str | Sequence[str] | None = None,
    task_index: int | None = None,
    epoch_hooks: Sequence[EpochHook] = (),
) -> RunResult:
    """Continue an interrupted or killed run to its planned epoch count.

    Spec, settings, precision and seed come from the run folder; `data` defaults to reloading
    the recorded source (and must hash to the recorded fingerprint). The history continues
    without gaps or repeats: epochs after the last checkpoint are trained again from it, with the
    same shuffle order and dropout RNG state they would have had. A completed run is returned
    as it is; a pruned one is refused (ResumeRefused; see `train`'s epoch_hooks).
    """

    folder = Path(run_dir)
    recorded = read_run_settings(folder)
    spec = recorded_spec(folder, recorded)
    settings = SETTINGS.from_record(recorded["settings"])
    if data is None:
        data = _load_recorded_data(recorded)
    return train(
        spec, settings, data, folder,
        precision=recorded["precision"],
        steps_per_execution=recorded["steps_per_execution"],
        progress=progress,
        resume=True,
        callbacks=callbacks,
        strategy=strategy,
        cluster=cluster,
        task_index=task_index,
        epoch_hooks=epoch_hooks,
    )


def recorded_spec(folder: Path, recorded: dict[str, Any]) -> ir.Spec:
    """The spec a run folder trained (its spec.cnn; a sweep's variant by its recorded name),
    or RunFolderError saying the folder is damaged: a spec.cnn edited so that it no longer
    parses was told as a bare spec error, not as the run folder's problem."""
    spec_path = folder / records.SPEC_FILE
    try:
        text = spec_path.read_text("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise records.RunFolderError(
            f"{spec_path}: cannot read the run's spec ({exc}); the folder is damaged") from None
    name = recorded["spec"]["name"]
    try:
        spec = parse(text, filename=str(spec_path), name=name)
    except SpecError as exc:
        d = exc.diagnostics[0]
        where = f":{d.span.line}:{d.span.column}" if d.span else ""
        raise records.RunFolderError(
            f"{spec_path}{where}: the run's spec no longer parses ({d.message}); the folder "
            "is damaged") from None
    if spec.has_sweep():  # a sweep's variant: the sweep file as written, and the variant's name
        variant = variant_named(spec, name)
        if variant is None:
            raise records.RunFolderError(
                f"{spec_path}: a sweep with no variant named {name} (settings.json); the "
                "folder is damaged")
        spec = variant
    return spec


def missing_model(folder: Path) -> str | None:
    """Why a run folder has no model.keras to evaluate (None when it has one). A run stopped
    before writing it may still have a checkpoint, which `--resume` continues from."""
    model = folder / records.MODEL_FILE
    if model.exists() or model.is_symlink():  # a file, or something else evaluate names
        return None
    try:
        record = records.read_status(folder) or {}
    except records.RunFolderError:
        record = {}
    status, reason = record.get("status"), record.get("reason")
    checkpointed = (records.checkpoint_dir(folder) / records.CHECKPOINT_STATE).is_file()
    if status == "completed":  # resume returns a completed run as it is: no help there
        why = "the run completed, so the file was removed after it"
    elif status == "failed" and isinstance(reason, str) and "diverged" in reason:
        # resuming replays the same steps into the same divergence: a new run is the way on
        why = (f"the run failed ({reason.split(';')[0].split('. ')[0]}); start a new run "
               "with the fix its error names (e.g. a lower learning rate)")
    elif checkpointed:
        why = (f"the run was stopped before writing it; `cnnspec train --resume {folder}` "
               "continues from its last checkpoint and writes it")
    else:
        why = "the run did not finish an epoch"
    return f"{folder} has no {records.MODEL_FILE}: {why}"


def evaluate_run(run_dir: str | Path, data: Cifar10) -> dict[str, Any]:
    """Re-score a run's saved model.keras on data's test split.

    Returns the same keys as metrics.json (test_loss, test_accuracy, test_images, per_class).
    """
    from cnnspec.training.data import Cifar10

    if not isinstance(data, Cifar10):
        raise TypeError("evaluate_run()'s data is a Cifar10 from "
                        f"cnnspec.training.data.load_cifar10, not {type(data).__name__}")
    folder = Path(run_dir)
    recorded = read_run_settings(folder)
    model_path = folder / records.MODEL_FILE
    missing = missing_model(folder)
    if missing is not None:
        raise records.RunFolderError(missing)
    unreadable = records.keras_file_problem(model_path)
    if unreadable is not None:
        raise records.RunFolderError(f"{model_path}: {unreadable}")
    tf, keras = import_tf()
    try:
        model = keras.models.load_model(model_path)
    except Exception as exc:  # noqa: BLE001 - any failure to read the file means a damaged file
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
        raise records.RunFolderError(
            f"{model_path}: cannot load the model ({type(exc).__name__}: {first}); the file is "
            "damaged") from None
    try:  # the model of this run's spec and precision, not one copied in from another run
        report = check(recorded_spec(folder, recorded), max_params=sys.maxsize)
    except (SpecError, records.RunFolderError):  # a spec.cnn damaged (resume says so) or
        report = None  # refused by a newer cnnspec: the model is scored as it is
    misfit = None if report is None else model_misfit(
        model, report, dtype_policy(recorded["precision"]))
    if misfit is not None:
        raise records.RunFolderError(
            f"{model_path} is not this run's model ({misfit}); the folder is damaged")
    classes = int(model.output_shape[-1])
    if tuple(model.input_shape[1:]) != data.x_test.shape[1:]:
        raise records.RunFolderError(
            f"{model_path} takes {'x'.join(map(str, model.input_shape[1:]))} images, but the "
            f"data's are {'x'.join(map(str, data.x_test.shape[1:]))}")
    pipeline = Pipeline(tf, data, recorded["settings"]["batch"], classes, with_train=False)
    return metrics(Evaluator(tf, keras, model)(pipeline.test()), data.y_test, classes,
                   data.label_names)


