"""Training settings a spec can carry (`train lr=.01 batch=32`), with the notebook's defaults."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any

from cnnspec.layers import Param


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

# key -> how its value is written; the first name is canonical
SETTING_PARAMS: tuple[Param, ...] = (
    Param("optimizer", "flag", ("optimizer", "opt"), flags=OPTIMIZERS, doc="optimizer"),
    Param("lr", "float", ("lr", "learning_rate"), low=0, low_open=True, doc="learning rate (> 0)"),
    Param("momentum", "float", ("momentum",), low=0, high=1, high_open=True, doc="SGD momentum"),
    Param("batch", "int", ("batch", "batch_size"), low=1, doc="global batch size"),
    Param("epochs", "int", ("epochs",), low=1, doc="epochs"),
    Param("seed", "int", ("seed",), low=0, doc="random seed: same seed, same history"),
    Param("shuffle", "flag", ("shuffle",), flags=("true", "false"), doc="shuffle every epoch"),
    Param(
        "loss", "flag", ("loss",), flags=("categorical_crossentropy",),
        doc="loss (the notebook's categorical cross-entropy)",
    ),
    Param("validation", "flag", ("validation",), flags=("test", "none"), doc="validate on"),
)

SETTING_BY_NAME: dict[str, Param] = {name: p for p in SETTING_PARAMS for name in p.names}


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
