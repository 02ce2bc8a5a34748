"""Training settings a spec can carry (`train lr=.01 batch=32`), with the notebook's defaults."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from typing import Any

from cnnspec.language.layers import Param, format_number


@dataclass(frozen=True)
class TrainSettings:
    """Everything that decides a training run besides the network.

    Defaults are the notebook's `model.compile(optimizer='sgd', loss='categorical_crossentropy')`
    + `model.fit(batch_size=32, epochs=10, shuffle=True, validation_data=test)`.
    """

    optimizer: str = "sgd"
    lr: float = 0.01
    momentum: float = 0.0
    batch: int = 32
    epochs: int = 10
    seed: int | None = None
    shuffle: bool = True
    loss: str = "categorical_crossentropy"
    validation: str = "test"

    def override(self, **changes: Any) -> TrainSettings:
        """These settings with the given ones replaced; None means keep."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


OPTIMIZERS = ("sgd", "adam", "adamw", "rmsprop", "nadam", "adagrad")
# The optimizers that take a momentum (cnnspec.training.train builds the others without one), so a
# `momentum=` with any other optimizer is refused by `check` instead of failing in `train`.
MOMENTUM_OPTIMIZERS = ("sgd", "rmsprop")
# keras.utils.set_random_seed (numpy underneath) takes seeds below 2**32.
MAX_SEED = 2**32 - 1
# batch and epochs end up in int32 tensors and loop counters; nothing real comes near this.
MAX_COUNT = 2**31 - 1
# How a run is executed (recorded in settings.json, not part of the spec's `train` line); the
# CLI's choices, cnnspec.training.train and cnnspec.training.distributed read these.
PRECISIONS = ("float32", "bf16")  # what a run trains in (recorded in settings.json)
# what a caller may ask for: "auto" resolves to one of PRECISIONS by the CPU's flags
# (cnnspec.backend.cpu.choose_precision); the CLI's default, while `train()` keeps "float32"
REQUESTABLE_PRECISIONS = ("auto", *PRECISIONS)
PROGRESS_MODES = ("rich", "plain", "none")
STRATEGIES = ("none", "mirrored", "multiworker")

# key -> how its value is written; the first name is canonical
SETTING_PARAMS: tuple[Param, ...] = (
    Param("optimizer", "flag", ("optimizer", "opt"), flags=OPTIMIZERS, doc="optimizer"),
    Param("lr", "float", ("lr", "learning_rate"), low=0, low_open=True, doc="learning rate (> 0)"),
    Param("momentum", "float", ("momentum",), low=0, high=1, high_open=True, doc="SGD momentum"),
    Param("batch", "int", ("batch", "batch_size"), low=1, high=MAX_COUNT,
          doc="global batch size"),
    Param("epochs", "int", ("epochs",), low=1, high=MAX_COUNT, doc="epochs"),
    Param("seed", "int", ("seed",), low=0, high=MAX_SEED,
          doc="random seed: same seed, same history"),
    Param("shuffle", "flag", ("shuffle",), flags=("true", "false"), doc="shuffle every epoch"),
    Param(
        "loss", "flag", ("loss",), flags=("categorical_crossentropy",),
        doc="loss (the notebook's categorical cross-entropy)",
    ),
    Param("validation", "flag", ("validation",), flags=("test", "none"), doc="validate on"),
)

SETTING_BY_NAME: dict[str, Param] = {name: p for p in SETTING_PARAMS for name in p.names}
SETTING_FIELDS: frozenset[str] = frozenset(p.field for p in SETTING_PARAMS)


def resolve_settings(pairs: dict[str, Any], base: TrainSettings | None = None) -> TrainSettings:
    """Settings from canonical key -> value pairs (already validated by the parser)."""
    values = dict(pairs)
    if "shuffle" in values and isinstance(values["shuffle"], str):
        values["shuffle"] = values["shuffle"] == "true"
    if "lr" in values:
        values["lr"] = float(values["lr"])
    if "momentum" in values:
        values["momentum"] = float(values["momentum"])
    return (base or TrainSettings()).override(**values)


def settings_of(spec: Any) -> TrainSettings:
    """The training settings a (sweep-free) spec writes, on top of the defaults."""
    return resolve_settings({s.key: s.value for s in spec.settings})


@dataclass(frozen=True)
class SettingProblem:
    """Settings training would refuse: which setting to point at, what is wrong, what to do."""

    key: str
    message: str
    hint: str | None = None

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


def _out_of_range(param: Param, value: float) -> str | None:
    low_ok = param.low is None or (value > param.low if param.low_open else value >= param.low)
    high_ok = param.high is None or (
        value < param.high if param.high_open else value <= param.high)
    if low_ok and high_ok:
        return None
    got = format_number(value)
    if param.high is None and param.low is not None:  # the parser's wording (parse._check_range)
        relation = "greater than" if param.low_open else "at least"
        return f"{param.field} must be {relation} {format_number(param.low)}, got {got}"
    lo = "(" if param.low_open else "["
    hi = ")" if param.high_open else "]"
    low = "-inf" if param.low is None else format_number(param.low)
    high = "inf" if param.high is None else format_number(param.high)
    return f"{param.field} must be in {lo}{low}, {high}{hi}, got {got}"


def setting_problems(settings: TrainSettings) -> list[SettingProblem]:
    """Everything about these settings that would make training fail, in SETTING_PARAMS order.

    The rule is "whatever `check` accepts must train": the checker reports these with the
    setting's position, and command-line overrides (`--optimizer adam --momentum .9`) are
    validated with the same function, so both paths refuse the same things.
    """
    out: list[SettingProblem] = []
    for param in SETTING_PARAMS:
        value = getattr(settings, param.field)
        if value is None:  # seed: none given, one is drawn
            continue
        if param.kind == "flag":
            written = ("true" if value else "false") if isinstance(value, bool) else value
            if written not in param.flags:
                out.append(SettingProblem(
                    param.field, f"{param.field} must be one of {', '.join(param.flags)}, "
                    f"not {written}"))
            continue
        if isinstance(value, bool) or not isinstance(value, int | float):
            out.append(SettingProblem(
                param.field, f"{param.field} must be a number, not {value!r}"))
            continue
        if param.kind == "int" and not isinstance(value, int):
            out.append(SettingProblem(
                param.field, f"{param.field} must be a whole number, not {format_number(value)}"))
            continue
        if isinstance(value, float) and not math.isfinite(value):
            out.append(SettingProblem(param.field, f"{param.field} must be finite, not {value}"))
            continue
        message = _out_of_range(param, value)
        if message is not None:
            out.append(SettingProblem(param.field, message))
    if settings.momentum and settings.optimizer not in MOMENTUM_OPTIMIZERS:
        out.append(SettingProblem(
            "momentum",
            f"momentum applies to {' and '.join(MOMENTUM_OPTIMIZERS)}, not {settings.optimizer}",
            f"remove momentum, or use optimizer=sgd (or rmsprop); {settings.optimizer} has "
            "its own moment estimates",
        ))
    return out


def validate(settings: TrainSettings) -> str | None:
    """None when these settings train; else one line saying what is wrong and how to fix it.

    For callers without a spec position to point at, such as the CLI after applying
    `--optimizer`/`--momentum`/... overrides: print it as `cnnspec: error: ...` and exit 1.
    """
    problems = setting_problems(settings)
    return "; ".join(str(p) for p in problems) if problems else None
