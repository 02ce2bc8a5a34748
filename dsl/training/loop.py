"""The one epoch loop of every run, with or without a tf.distribute strategy.

A run is: epochs (a step function trains one epoch; the one evaluation scores it), after each
epoch its record, checkpoint, progress and hooks; then the final save and metrics; and one
place that decides how the run ended (completed, stopped by a hook, diverged, interrupted,
failed). What a strategy changes is only the `Steps` object: how an epoch's steps are computed
and sharded (`LocalSteps` here: Keras's `model.fit`; `distributed.Replicated`: our own step
over the replicas) and whether this process writes (the chief) - so a per-epoch feature
(schedules, augmentation, pruning reports) is written once, here or as an epoch hook.
"""

from __future__ import annotations

import contextlib
import math
import signal
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from cnnspec.language.settings import TrainSettings
from cnnspec.training import records
from cnnspec.training.checkpoint import (
    keep_best,
    keep_interrupted,
    restore_best,
    save_progress,
    write_checkpoint,
)
from cnnspec.training.evaluation import Evaluator, metrics
from cnnspec.training.pipeline import Pipeline, epoch_order
from cnnspec.training.progress import ProgressReporter
from cnnspec.training.recipe import (
    EarlyStopping,
    StopDecision,
    early_stopping,
    ema_weights,
)


@contextlib.contextmanager
def signals_held() -> Iterator[None]:
    """Ctrl-C and SIGTERM ignored while a stopped run rewinds its records to the checkpoint.

    Why: people press Ctrl-C twice. The first stops the run; a second one landing while
    history.csv, the curve and status.json are rewritten would leave the folder half rewound
    and its status "running". The rewrite takes well under a second, so the second press is
    simply not needed. Only in the main thread (the only one that may set handlers)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held = (signal.SIGINT, signal.SIGTERM)
    before = {sig: signal.getsignal(sig) for sig in held}
    for sig in held:
        signal.signal(sig, signal.SIG_IGN)
    try:
        yield
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)


class InterruptLatch:
    """Remembers a Ctrl-C or SIGTERM that came while a run trains, so that one the process
    lost is still obeyed at the next epoch boundary.

    Why: the signal's KeyboardInterrupt is raised wherever Python is when it arrives, and in a
    weakref callback or `__del__` (matplotlib's transform tree, garbage-collected while the
    learning curve is drawn) Python prints "Exception ignored" and carries on: the run, and a
    whole sweep, went on to the end. The latch wraps the handlers already there (Python's
    for SIGINT, the CLI's for SIGTERM), records the signal, and lets them raise as before; the
    loop asks `lost()` between epochs. Handlers that are not Python functions (ignored, the
    default) are left alone, and only the main thread may set any."""

    def __init__(self) -> None:
        self.by: str | None = None
        self._before: dict[int, Any] = {}

    def __enter__(self) -> InterruptLatch:
        if threading.current_thread() is threading.main_thread():
            for sig, name in ((signal.SIGINT, "Ctrl-C"), (signal.SIGTERM, "SIGTERM")):
                previous = signal.getsignal(sig)
                if callable(previous):
                    self._before[sig] = previous
                    signal.signal(sig, self._handler(previous, name))
        return self

    def _handler(self, previous: Any, name: str) -> Any:
        def handler(signum: int, frame: Any) -> None:
            self.by = name
            previous(signum, frame)
        return handler

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._before.items():
            signal.signal(sig, handler)

    def lost(self) -> None:
        """Raise the interrupt again if one came and the run is still going (it was lost)."""
        if self.by is not None:
            raise KeyboardInterrupt(self.by)


class TrainingFailed(Exception):
    """Training stopped because the run cannot go on (e.g. the loss became NaN).

    str(exc) is a complete message for the user; `run_dir` is the folder whose status.json
    now says "failed" with the same reason.
    """

    def __init__(self, message: str, run_dir: Path | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.run_dir = run_dir


@dataclass(frozen=True)
class RunResult:
    """The outcome of `train`/`resume_run`.

    status is "completed", "interrupted" or the status of an epoch hook's Stop ("pruned");
    failures raise TrainingFailed instead. history has one dict per completed epoch with
    records.HISTORY_FIELDS; metrics is metrics.json's content for a run that ended cleanly
    (completed or stopped by a hook), else None.
    """

    run_dir: Path
    status: str
    epochs_planned: int
    history: tuple[dict[str, Any], ...]
    metrics: dict[str, Any] | None = None
    reason: str | None = None
    chief: bool = True  # False on a non-chief worker of a multiworker run: it wrote nothing

    @property
    def epochs_completed(self) -> int:
        return len(self.history)

    @property
    def test_accuracy(self) -> float | None:
        return None if self.metrics is None else self.metrics["test_accuracy"]


# statuses an epoch hook may end a run with: "pruned" (a sweep gave up on it) or "completed"
# (early stopping: the run is done, with fewer epochs than planned)
STOP_STATUSES = ("pruned", "completed")


@dataclass(frozen=True)
class Stop:
    """An epoch hook's request to end the run now, cleanly, with `status` and `reason`."""

    status: str
    reason: str

    def __post_init__(self) -> None:
        if self.status not in STOP_STATUSES:
            raise ValueError(
                f"Stop status must be one of {', '.join(STOP_STATUSES)}, not {self.status!r}")


# called after epoch `epoch` (1-based) has its record and checkpoint written, with its history
# row; returns a Stop to end the run there, or None to go on
EpochHook = Callable[[int, dict[str, Any]], "Stop | None"]


class Steps(Protocol):
    """How one epoch is trained: the part of a run that a strategy changes."""

    chief: bool

    def fit_epoch(self, model: Any, pipeline: Pipeline, order: np.ndarray, epoch: int,
                  callbacks: Sequence[Any]) -> dict[str, float]: ...

    def chief_says(self, flag: bool) -> bool:
        """The chief's `flag`, on every worker (a decision all must take together)."""
        ...


class LocalSteps:
    """No strategy: Keras's `model.fit` for one epoch in this process (steps_per_execution is
    compiled into the model)."""

    chief = True
    workers = 1

    def build(self, make: Callable[[], Any]) -> Any:
        return make()

    def chief_says(self, flag: bool) -> bool:
        return flag

    def fit_epoch(self, model: Any, pipeline: Pipeline, order: np.ndarray, epoch: int,
                  callbacks: Sequence[Any]) -> dict[str, float]:
        """Trains epoch `epoch` on `order`; returns fit's logs (loss, accuracy)."""
        fitted = model.fit(
            pipeline.train(order, epoch),
            epochs=epoch + 1,
            initial_epoch=epoch,
            verbose=0,
            shuffle=False,  # the order is the shuffle
            callbacks=list(callbacks),
        )
        return {k: v[-1] for k, v in fitted.history.items() if v}


class Diverged(Exception):
    def __init__(self, epoch: int, batch: int, loss: float) -> None:
        super().__init__(f"loss {loss} at epoch {epoch}, batch {batch}")
        self.epoch, self.batch, self.loss = epoch, batch, loss


def nonfinite_name(value: float) -> str:
    """"nan", "inf" or "-inf": which way a loss left the finite numbers.

    Which one a diverging run hits depends on the CPU (the same run overflows to inf on AMX
    machines and to nan on AVX2-only ones), so every value is divergence and the message says
    which it was. Finite values are returned as Python prints them.
    """
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return repr(float(value))


def divergence_reason(
    name: str, d: Diverged, epochs: int, steps: int, settings: TrainSettings,
    lr_now: float | None = None, l2_factors: Iterable[float] = (),
) -> str:
    """Why the run stopped, and what to change. The learning rate is the usual culprit, but a
    weight decay or an `l2()` factor too large for it diverges at any learning rate that is
    not tiny, and then the decay is what to lower: with lr_now (the rate at the step that
    diverged), decoupled decay multiplies each weight by 1 - lr*wd every step, which grows
    without bound once lr*wd > 2; plain SGD's step on an `l2(c)` penalty multiplies it by
    1 - 2*lr*c (momentum m: stable while lr*c < 1 + m)."""
    kind = {"nan": "not a number", "inf": "infinite", "-inf": "infinite"}.get(
        nonfinite_name(d.loss), "not finite")
    plain = isinstance(settings.lr, int | float)
    lr = f"{settings.lr:g}" if plain else settings.table.by_name["lr"].written(settings.lr)
    what = (
        f"{name}: training diverged: the loss became {nonfinite_name(d.loss)} ({kind}) in epoch "
        f"{d.epoch}/{epochs} at batch {d.batch}/{steps} ({settings.optimizer}, "
        f"lr={lr}). The run stopped; {d.epoch - 1} epoch(s) completed before it. ")
    wd = settings.weight_decay
    if lr_now is not None and wd is not None and lr_now * wd > 2:
        return what + (
            f"weight_decay={wd:g} is too large for lr={lr_now:g}: each step multiplies every "
            f"weight by 1 - lr·weight_decay = {1 - lr_now * wd:.3g}, so the weights grow "
            "without bound. Lower it so that lr·weight_decay stays well below 1, e.g. "
            "`train weight_decay=5e-4`.")
    l2 = max(l2_factors, default=0.0)
    if (lr_now is not None and settings.optimizer == "sgd"
            and lr_now * l2 > 1 + settings.momentum):
        return what + (
            f"l2({l2:g}) is too large for lr={lr_now:g}: each SGD step multiplies the layer's "
            f"weights by 1 - 2·lr·l2 = {1 - 2 * lr_now * l2:.3g}, so they grow without "
            "bound. Lower the l2 factor (the notebook's is .01) or the learning rate.")
    lower = f"e.g. `train lr={settings.lr / 10:g}`" if plain else "e.g. a lower schedule peak"
    return what + f"Lower the learning rate, {lower}."


def history_row(
    epoch: int, logs: dict[str, Any], seconds: float, train_seconds: float, images: int,
    lr: float | None = None,
) -> dict[str, Any]:
    def value(key: str) -> float | None:
        v = logs.get(key)
        return None if v is None else float(v)

    return {
        "epoch": epoch,
        "loss": value("loss"),
        "accuracy": value("accuracy"),
        "val_loss": value("val_loss"),
        "val_accuracy": value("val_accuracy"),
        "seconds": round(seconds, 3),
        "images_per_second": round(images / train_seconds, 1) if train_seconds > 0 else None,
        "lr": lr,
    }


# -- Keras callbacks: the divergence guard and the reporter's batch updates --------------------


def guard_callback(keras: Any) -> Any:
    """A Keras callback that stops at the first batch whose running loss is NaN or infinite."""

    class Guard(keras.callbacks.Callback):  # type: ignore[misc, name-defined]
        def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
            self.epoch = epoch

        def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
            loss = (logs or {}).get("loss")
            if loss is not None and not math.isfinite(float(loss)):
                raise Diverged(self.epoch + 1, batch + 1, float(loss))

    return Guard()


def progress_callback(keras: Any, reporter: ProgressReporter) -> Any:
    """A Keras callback that passes epoch starts and batch ends on to `reporter`."""

    class Progress(keras.callbacks.Callback):  # type: ignore[misc, name-defined]
        def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
            reporter.epoch_start(epoch + 1)

        def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
            reporter.batch_done(batch + 1, dict(logs or {}))

    return Progress()


# -- what a run writes as it goes --------------------------------------------------------------


class RunRecords:
    """What a run writes as it goes, the same with or without a strategy.

    Under a strategy only the chief writes (`chief` False: a worker that writes nothing, yet
    keeps the history in memory for its RunResult). `model` is set once the model exists.
    """

    def __init__(self, run_dir: Path, name: str, epochs: int, seed: int,
                 history: list[dict[str, Any]], chief: bool = True) -> None:
        self.run_dir, self.name, self.epochs, self.seed = run_dir, name, epochs, seed
        self.history, self.chief = history, chief
        self.model: Any = None

    def status(self, status: str, reason: str | None = None) -> None:
        if self.chief:
            records.write_status(self.run_dir, status, reason,
                                 epochs_completed=len(self.history), epochs_planned=self.epochs)

    def save_progress(self) -> None:
        if self.chief:
            save_progress(self.run_dir, self.history, self.name)

    def epoch_done(self, row: dict[str, Any], best: bool = False) -> None:
        """One more epoch: its row, then (if it is early stopping's best so far) its weights
        as scored, then the checkpoint, history and curve, then the status."""
        self.history.append(row)
        if self.chief:
            if best:
                with ema_weights(self.model):
                    keep_best(self.run_dir, self.model, len(self.history))
            write_checkpoint(self.run_dir, self.model, self.history, self.seed)
        self.save_progress()
        self.status("running")


# -- the loop ----------------------------------------------------------------------------------


def interrupted_by(exc: BaseException) -> str | None:
    """What interrupted the run, when exc is (or was caused by) a KeyboardInterrupt: "Ctrl-C",
    or the signal the CLI names (it raises KeyboardInterrupt("SIGTERM")); None otherwise.

    Why the chain: a signal that lands inside a C function (numpy's `__array__` under
    TensorFlow) surfaces as that function's SystemError "returned a result with an exception
    set", with the KeyboardInterrupt as its context; the run was interrupted all the same."""
    seen = 0
    while exc is not None and seen < 8:
        if isinstance(exc, KeyboardInterrupt):
            return exc.args[0] if exc.args and isinstance(exc.args[0], str) else "Ctrl-C"
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
        seen += 1
    return None


@dataclass
class Loop:
    """Everything the epochs of one run need, prepared by `train` (start or resume)."""

    rec: RunRecords
    steps: Steps
    pipeline: Pipeline
    evaluate: Evaluator
    settings: TrainSettings
    first_epoch: int
    reporter: ProgressReporter
    callbacks: Sequence[Any]  # Keras callbacks: the guard, the reporter's, the caller's
    hooks: Sequence[EpochHook]
    y_test: np.ndarray
    label_names: Sequence[str]
    divergence: Callable[[Diverged], str]
    lr_at_epoch: Callable[[int], float] = lambda epoch: math.nan  # its last step's rate
    stopping: EarlyStopping | None = None  # `patience=`: stop, and keep the best weights
    tta: str = "none"  # "flip": the final metrics also score each test image mirrored
    # a hook's Stop decided before this start on a resumed run's kept epochs (see `train`)
    decided: Stop | None = None
    latch: InterruptLatch = field(default_factory=InterruptLatch)  # a lost Ctrl-C, obeyed

    def epoch(self, epoch: int) -> dict[str, Any]:
        """Train epoch `epoch` (0-based), validate, return its history row (nothing written)."""
        order = epoch_order(self.rec.seed, epoch, self.pipeline.n_train, self.settings.shuffle)
        start = time.perf_counter()
        logs = self.steps.fit_epoch(self.rec.model, self.pipeline, order, epoch, self.callbacks)
        trained = time.perf_counter()
        if self.settings.validation == "test":
            with ema_weights(self.rec.model):  # with `ema=`, the averaged weights are scored
                scores = self.evaluate(self.pipeline.test())
            logs = {**logs, "val_loss": scores.loss, "val_accuracy": scores.accuracy}
        end = time.perf_counter()
        return history_row(epoch + 1, logs, end - start, trained - start, self.pipeline.n_train,
                           self.lr_at_epoch(epoch))

    def stopped_already(self) -> Stop | None:
        """The Stop of a resumed run whose kept epochs already end it (interrupted while saving
        its final model): a hook's decided before the start, or early stopping's on the
        history; so no epoch is trained beyond the uninterrupted run's."""
        # every worker of a resumed run starts at the same epoch, so all take this one
        # decision together; only the chief's hooks judged the kept epochs
        if self.first_epoch > 0 and self.steps.chief_says(self.decided is not None):
            return self.decided or Stop("pruned", "stopped by the chief")
        decision = self.history_decision()
        if decision is None:
            return None
        return self.early_stop(decision) if self.steps.chief_says(decision.stop) else None

    def history_decision(self) -> StopDecision | None:
        """Early stopping's verdict on the history as it stands (None without the rule or
        before the first epoch)."""
        if self.stopping is None or not self.rec.history:
            return None
        return early_stopping(self.rec.history, self.stopping)

    def stop_decision(self, row: dict[str, Any]) -> StopDecision | None:
        """Early stopping's verdict on the history with this row added (None without it): a
        pure function of the rows, so a resumed run decides as the uninterrupted one."""
        if self.stopping is None:
            return None
        return early_stopping([*self.rec.history, row], self.stopping)

    def hooks_say(self, epoch: int, row: dict[str, Any]) -> Stop | None:
        """The first Stop an epoch hook asks for after this epoch, if any."""
        for hook in self.hooks:
            stop = hook(epoch, row)
            if stop is not None:
                if not isinstance(stop, Stop):
                    raise TypeError(f"an epoch hook returned {stop!r}, not a Stop or None")
                return stop
        return None

    def early_stop(self, decision: StopDecision) -> Stop:
        """The Stop early stopping ends a run with: completed, with the why."""
        rule = self.stopping
        assert rule is not None
        best = ("no epoch had a finite value" if decision.best_epoch is None else
                f"best epoch {decision.best_epoch} ({rule.monitor} "
                f"{decision.best_value:.4f}), whose weights are kept")
        return Stop("completed", f"early stopping: {rule.monitor} did not improve for "
                                 f"{decision.epochs_since_best} epoch(s) (patience "
                                 f"{rule.patience}); {best}")

    def final_save(self) -> dict[str, Any] | None:
        """model.keras and metrics.json (the chief's); returns the metrics."""
        if not self.rec.chief:
            return None
        model, run_dir = self.rec.model, self.rec.run_dir
        best = restore_best(run_dir, model) if self.stopping is not None else None
        # the weights the run is judged by: early stopping's best (already as scored), else
        # the EMA of the weights with `ema=`, else the trained ones
        with contextlib.nullcontext() if best is not None else ema_weights(model):
            with records.atomic_path(run_dir / records.MODEL_FILE) as tmp:
                model.save(tmp)
            scored = metrics(self.evaluate(self.pipeline.test()), self.y_test,
                             self.pipeline.classes, self.label_names)
            if self.tta == "flip":  # the evaluator's own step: no collective, as above
                scored["test_accuracy_flip"] = self.evaluate.flip_accuracy(self.pipeline.test())
        scored["epochs"] = len(self.rec.history)
        if best is not None and self.stopping is not None:
            scored["best_epoch"] = best
            scored["monitor"] = self.stopping.monitor
            scored["best_" + self.stopping.monitor] = self.rec.history[best - 1].get(
                self.stopping.monitor)
        records.write_json(run_dir / records.METRICS_FILE, scored)
        return scored

    def body(self) -> tuple[dict[str, Any] | None, Stop | None]:
        """The epochs and the final save: (metrics, the hook's Stop or None)."""
        self.reporter.start(self.rec.epochs, math.ceil(self.pipeline.n_train
                                                       / self.settings.batch))
        stop = self.stopped_already()
        for epoch in range(self.first_epoch, self.rec.epochs):
            self.latch.lost()  # (an interrupt lost while the run started or an epoch ended)
            if stop is not None:
                break
            row = self.epoch(epoch)
            decision = self.stop_decision(row)
            self.rec.epoch_done(row, best=decision is not None
                                and decision.best_epoch == epoch + 1)
            self.reporter.epoch_done(row)
            stop = self.hooks_say(epoch + 1, row)
            # under a multiworker strategy only the chief holds a resumed run's whole history,
            # so its verdict is the one every worker follows
            if (stop is None and decision is not None
                    and self.steps.chief_says(decision.stop)):
                stop = self.early_stop(decision)
        self.latch.lost()
        self.reporter.finish()
        return self.final_save(), stop

    def run(self) -> RunResult:
        """Run the epochs and record how the run ended.

        The one place for how a run ends, with or without a strategy: completed; stopped by
        an epoch hook (its status and reason, the folder complete: history so far, model,
        metrics); diverged (TrainingFailed, the epochs so far kept); interrupted (Ctrl-C: every
        record rewound to the last checkpoint, a RunResult to resume from); any other error
        (status failed, re-raised).
        """
        rec = self.rec
        try:
            with self.latch:
                scored, stop = self.body()
        except Diverged as d:
            self.reporter.finish()
            reason = self.divergence(d)
            if rec.history:
                rec.save_progress()
            rec.status("failed", reason)
            raise TrainingFailed(reason, rec.run_dir if rec.chief else None) from None
        except BrokenPipeError:
            # the progress's reader went away (`cnnspec train ... | head`): nothing is wrong
            # with the run or its records, so it stops as for Ctrl-C, resumable, instead of
            # "failed: cannot write its records"
            with contextlib.suppress(BrokenPipeError):
                self.reporter.finish()
            return self._interrupted("its output was closed")
        except BaseException as exc:
            by = interrupted_by(exc)  # Ctrl-C or SIGTERM; also one that landed in a C call
            if by is not None:  # (numpy, TensorFlow) and came out as the error it reported
                self.reporter.finish()
                return self._interrupted(by)
            self.reporter.finish()
            why = (f"cannot write its records: {exc.strerror}" if isinstance(exc, OSError)
                   and exc.strerror else f"{type(exc).__name__}: {exc}")
            with contextlib.suppress(Exception):  # the status counts the checkpointed epochs,
                state = records.read_checkpoint_state(rec.run_dir)  # which a resume starts
                if state is not None:  # from, not an epoch whose checkpoint failed
                    rec.history[:] = list(state["history"])
            with contextlib.suppress(OSError):  # a full disk may refuse this one too
                rec.status("failed", why)
            raise
        status, reason = ("completed", None) if stop is None else (stop.status, stop.reason)
        rec.status(status, reason)
        return RunResult(rec.run_dir, status, rec.epochs, tuple(rec.history), scored, reason,
                         chief=rec.chief)

    def _interrupted(self, by: str = "Ctrl-C") -> RunResult:
        with signals_held():
            return self._record_interrupted(by)

    def _record_interrupted(self, by: str) -> RunResult:
        rec = self.rec
        if rec.chief:
            rec.history[:] = keep_interrupted(rec.run_dir, rec.name)
        done = len(rec.history)
        decision = self.history_decision()
        stopped = decision is not None and decision.stop
        where = (f"during epoch {done + 1}/{rec.epochs}" if done < rec.epochs and not stopped
                 else "while saving the final model")
        reason = (
            f"interrupted ({by}) {where}; {done} epoch(s) completed and "
            "checkpointed; resume to continue"
        )
        rec.status("interrupted", reason)
        with contextlib.suppress(BrokenPipeError):  # the output may be what stopped it
            self.reporter.say(reason)
        return RunResult(rec.run_dir, "interrupted", rec.epochs, tuple(rec.history), None,
                         reason, chief=rec.chief)
