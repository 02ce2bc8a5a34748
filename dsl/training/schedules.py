"""Learning-rate schedules: constant, step, cosine and one-cycle, each with a linear warm-up.

Why it is built this way:

* One formula, two evaluators. Each schedule writes its formula once, over a tiny maths
  namespace: Python's `math` for `lr_at` (closed form, float64, no TensorFlow: what records,
  plots and tests use) and `keras.ops` for the Keras schedule the optimizer calls (float32,
  in the graph). The two agree to float32 rounding of the rate (differences ~1e-7 of the
  schedule's largest rate; near the end of a decay, where the rate is near 0, that can be a
  few percent of the rate itself).
* Stepped by the optimizer, so resumes are exact. The Keras schedule is a function of
  `optimizer.iterations`, which is an optimizer variable: it is saved in every checkpoint and
  restored on `--resume`, so the resumed run continues the schedule at the very step it
  stopped at. Nothing is kept in a callback or in Python state.
* Serialisable. The Keras schedule is one registered class (`cnnspec>LearningRate`) whose
  config is the dataclass's fields plus the horizon, so `model.keras` and checkpoints load
  back with the same schedule. Keras must know the class before it loads such a file: call
  `register_keras_objects()` first (building a schedule with `keras_learning_rate` does too).
* A constant rate without warm-up is handed to Keras as a plain float, exactly as before
  schedules existed, so such runs keep their numbers and their checkpoint layout (a float
  rate is an optimizer variable; a schedule is not).

The shape of every schedule, with W = round(warm * total_steps) warm-up steps (at most
total_steps - 1: a run so short that the warm-up would take every step, e.g. one step with
warm=.6, would otherwise never leave it, and one step from `start` = 0 does not train at all):

    step t <  W:  start + (top - start) * t / W        (linear warm-up; top = the value at W)
    step t >= W:  the decay of the kind, over the remaining total_steps - W steps

    constant(lr)                 lr
    step(lr, every, factor)      lr * factor ** floor(t / (every * steps_per_epoch))
                                 (epochs counted from the first step, warm-up included)
    cosine(lr, final)            final + (lr - final) * (1 + cos(pi * p)) / 2
    onecycle(peak, final)        peak + (final - peak) * p       (a piecewise-linear triangle
                                 with warm-up: Page's DAWNBench 0 -> .4 -> 0 schedule)

where p = (t - W) / (total_steps - W), clamped to 0..1. So a decay reaches `final` one step
after the last (steps are numbered 0 .. total_steps - 1), as Keras's own CosineDecay does with
decay_steps = the run's steps, and the per-epoch form Page's schedule is written in (the rate
at epoch e of E); the last step's rate is one step's worth above `final`. Warm-up starts at
`start` (0 unless given, as in Page's and Keras's warm-ups), so the very first step has
learning rate `start`.
TensorFlow and Keras are imported only when a Keras schedule is built.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, ClassVar

KERAS_NAME = "cnnspec>LearningRate"  # the registered name Keras writes into saved files

_PY = SimpleNamespace(
    where=lambda cond, a, b: a if cond else b,
    cos=math.cos, floor=math.floor, minimum=min, maximum=max, power=lambda a, b: a ** b)


@dataclass(frozen=True)
class Horizon:
    """How long the schedule runs: steps (batches) per epoch and epochs."""

    steps_per_epoch: int
    epochs: int

    def __post_init__(self) -> None:
        for name in ("steps_per_epoch", "epochs"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a whole number >= 1, not {value!r}")

    @property
    def total_steps(self) -> int:
        return self.steps_per_epoch * self.epochs


class _Schedule:
    """What every schedule shares: the warm-up, the closed form and the Keras schedule."""

    kind: ClassVar[str]
    warm: float
    start: float = 0.0

    def _check(self, rates: tuple[str, ...]) -> None:
        for name in rates:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) \
                    or not math.isfinite(value) or value < 0:
                raise ValueError(f"{self.kind}: {name} must be a number >= 0, not {value!r}")
        warm = self.warm
        if isinstance(warm, bool) or not isinstance(warm, (int, float)) or not 0 <= warm < 1:
            raise ValueError(f"{self.kind}: warm must be a fraction in [0, 1), not {warm!r}")

    def warm_steps(self, horizon: Horizon) -> int:
        """W: the number of warm-up steps (at most all but the last: see the module)."""
        return min(round(self.warm * horizon.total_steps), horizon.total_steps - 1)

    def _decay(self, m: Any, t: Any, warm_steps: int, horizon: Horizon) -> Any:
        raise NotImplementedError

    def _formula(self, m: Any, t: Any, horizon: Horizon) -> Any:
        w = self.warm_steps(horizon)
        after = self._decay(m, t, w, horizon)
        if w == 0:
            return after
        top = self._decay(_PY, float(w), w, horizon)
        return m.where(t < w, self.start + (top - self.start) * t / w, after)

    def _progress(self, m: Any, t: Any, warm_steps: int, horizon: Horizon) -> Any:
        span = max(horizon.total_steps - warm_steps, 1)
        return m.minimum(m.maximum((t - warm_steps) / span, 0.0), 1.0)

    def lr_at(self, step: int, horizon: Horizon) -> float:
        """The learning rate of (0-based) optimizer step `step`, in closed form."""
        return float(self._formula(_PY, float(step), horizon))

    def params(self) -> dict[str, Any]:
        """The fields as plain values (for JSON records and the Keras config)."""
        return dataclasses.asdict(self)  # type: ignore[call-overload, no-any-return]


@dataclass(frozen=True)
class Constant(_Schedule):
    """lr throughout (after an optional warm-up from 0)."""

    kind: ClassVar[str] = "constant"
    lr: float
    warm: float = 0.0

    def __post_init__(self) -> None:
        self._check(("lr",))

    def _decay(self, m: Any, t: Any, warm_steps: int, horizon: Horizon) -> Any:
        return self.lr + 0.0 * t


@dataclass(frozen=True)
class Step(_Schedule):
    """lr multiplied by `factor` every `every` epochs."""

    kind: ClassVar[str] = "step"
    lr: float
    every: int
    factor: float = 0.1
    warm: float = 0.0

    def __post_init__(self) -> None:
        self._check(("lr", "factor"))
        if isinstance(self.every, bool) or not isinstance(self.every, int) or self.every < 1:
            raise ValueError(f"step: every must be a whole number of epochs >= 1, "
                             f"not {self.every!r}")

    def _decay(self, m: Any, t: Any, warm_steps: int, horizon: Horizon) -> Any:
        drops = m.floor(t / (self.every * horizon.steps_per_epoch))
        return self.lr * m.power(self.factor, drops)


@dataclass(frozen=True)
class Cosine(_Schedule):
    """Half a cosine from lr down to `final` over the steps after the warm-up."""

    kind: ClassVar[str] = "cosine"
    lr: float
    final: float = 0.0
    warm: float = 0.0

    def __post_init__(self) -> None:
        self._check(("lr", "final"))

    def _decay(self, m: Any, t: Any, warm_steps: int, horizon: Horizon) -> Any:
        p = self._progress(m, t, warm_steps, horizon)
        return self.final + (self.lr - self.final) * 0.5 * (1.0 + m.cos(math.pi * p))


@dataclass(frozen=True)
class OneCycle(_Schedule):
    """Piecewise linear: start -> peak over the warm-up, then peak -> final at the end."""

    kind: ClassVar[str] = "onecycle"
    peak: float
    warm: float = 0.3
    final: float = 0.0
    start: float = 0.0

    def __post_init__(self) -> None:
        self._check(("peak", "final", "start"))

    def _decay(self, m: Any, t: Any, warm_steps: int, horizon: Horizon) -> Any:
        return self.peak + (self.final - self.peak) * self._progress(m, t, warm_steps, horizon)


Schedule = Constant | Step | Cosine | OneCycle
KINDS: dict[str, type[_Schedule]] = {
    c.kind: c for c in (Constant, Step, Cosine, OneCycle)}


def make_schedule(kind: str, **values: Any) -> Schedule:
    """A schedule from its kind and plain values, e.g. make_schedule("onecycle", peak=.4,
    warm=.2); ValueError with a message for an unknown kind or field or a bad value."""
    if kind not in KINDS:
        raise ValueError(f"unknown schedule {kind!r}; use one of {', '.join(KINDS)}")
    cls = KINDS[kind]
    fields = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ValueError(f"{kind} has no setting {unknown[0]!r}; its settings: "
                         f"{', '.join(fields)}")
    try:
        return cls(**values)  # type: ignore[return-value]
    except TypeError as exc:  # a required value is missing
        raise ValueError(f"{kind} needs {', '.join(fields[:1])}: {exc}") from None


# -- Keras -------------------------------------------------------------------------------------


@functools.cache
def _keras_class() -> type:
    """The Keras schedule class, defined and registered once (Keras keeps a global registry)."""
    import keras

    @keras.saving.register_keras_serializable(package="cnnspec", name="LearningRate")
    class LearningRate(keras.optimizers.schedules.LearningRateSchedule):  # type: ignore[misc]
        def __init__(self, kind: str, params: dict[str, Any], steps_per_epoch: int,
                     epochs: int) -> None:
            self.schedule = make_schedule(kind, **params)
            self.horizon = Horizon(steps_per_epoch, epochs)

        def __call__(self, step: Any) -> Any:
            t = keras.ops.cast(step, "float32")
            maths = SimpleNamespace(
                where=keras.ops.where, cos=keras.ops.cos, floor=keras.ops.floor,
                minimum=keras.ops.minimum, maximum=keras.ops.maximum, power=keras.ops.power)
            return keras.ops.cast(self.schedule._formula(maths, t, self.horizon), "float32")

        def get_config(self) -> dict[str, Any]:
            return {"kind": self.schedule.kind, "params": self.schedule.params(),
                    "steps_per_epoch": self.horizon.steps_per_epoch,
                    "epochs": self.horizon.epochs}

    return LearningRate


def register_keras_objects() -> None:
    """Make Keras able to load files whose optimizer uses a cnnspec schedule.

    Call before `keras.saving.load_model` on a model.keras or checkpoint of a scheduled run.
    """
    _keras_class()


def keras_schedule(schedule: Schedule, horizon: Horizon) -> Any:
    """The Keras LearningRateSchedule computing `schedule.lr_at(iterations, horizon)`."""
    return _keras_class()(schedule.kind, schedule.params(), horizon.steps_per_epoch,
                          horizon.epochs)


def keras_learning_rate(schedule: Schedule, horizon: Horizon) -> Any:
    """What to pass as the optimizer's learning_rate: a float for a constant rate without
    warm-up (the optimizer as it always was), else the Keras schedule."""
    if isinstance(schedule, Constant) and schedule.warm_steps(horizon) == 0:
        return float(schedule.lr)
    return keras_schedule(schedule, horizon)
