"""Training settings (`train lr=.01 batch=32`) as ONE declarative table, with the notebook's
defaults.

Every place that knows about a training setting reads `SETTINGS`: the spec parser (which keys
exist, how their values read), `TrainSettings` (generated from the table), `check` and
`validate` (ranges, choices), the command line's flags (`cnnspec.cli.train.add_train_flags`),
the study's "same flags" check (`STUDY_FLAGS`), the run record (`record` / `from_record`), the
editor's completion and hover, and the README's table (`render_markdown`; a test holds the
README to it). Adding a setting is one `Setting(...)` entry plus its tests.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, make_dataclass, replace
from functools import cached_property
from typing import Any

from cnnspec.language.frozen import fast_init
from cnnspec.language.layers import Param, float32_problem, format_number
from cnnspec.language.setting_values import (
    SCHEDULE_EXAMPLES,
    Augment,
    Schedule,
    Written,
    augment_from_record,
    read_atom,
    read_augment,
    read_schedule,
    schedule_from_record,
    schedule_record,
    write_augment,
    write_schedule,
)

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

# Where a setting can be given: in a spec's `train` line only, as a command-line flag only
# (how a run is executed, recorded beside the settings), or both (the flag overrides the spec).
SCOPES = ("spec", "run", "both")
# kind -> the layers.PARAM_KINDS kind of its Param (how a plain number or word reads). "bool" is
# written true|false and kept as that word in the IR (so `fmt` writes it back as written);
# TrainSettings holds a bool. "schedule" is a rate (a float) or a Schedule; "augment" an
# Augment (cnnspec.language.setting_values reads and writes both).
_PARAM_KIND = {"int": "int", "float": "float", "choice": "flag", "bool": "flag",
               "schedule": "float", "augment": "flag"}
_PY_TYPES: dict[str, Any] = {"int": int, "float": float, "choice": str, "bool": bool,
                             "schedule": float | Schedule, "augment": Augment}
_BOOL_WORDS = ("true", "false")
# values kept per setting by Setting.read_token, at most: a long-lived process (the language
# server) reads every value typed, and must not grow the table without bound
MAX_KEPT_READS = 256


@dataclass(frozen=True)
class Setting:
    """One row of the table: everything cnnspec knows about one training setting.

    name is the canonical key: the spec's key as `fmt` writes it, the TrainSettings field, the
    key in settings.json and the argparse dest. cli_type names the command line's reader of the
    flag's text (cnnspec.cli.train maps the name to a function); None reads by kind.
    """

    name: str
    kind: str  # "int" | "float" | "choice" | "bool"
    default: Any
    help: str  # one line: --help, editor hover/completion
    aliases: tuple[str, ...] = ()
    low: float | None = None
    low_open: bool = False
    high: float | None = None
    high_open: bool = False
    choices: tuple[str, ...] = ()
    flag: str | None = None  # e.g. "--batch-size"; None: no command-line flag
    metavar: str | None = None
    cli_type: str | None = None
    scope: str = "both"
    meaning: str = ""  # the README's "meaning" column (markdown); the help when empty
    default_text: str | None = None  # how the README shows the default, when not the value

    def __post_init__(self) -> None:
        if self.kind not in _PARAM_KIND:
            raise ValueError(f"setting {self.name}: unknown kind {self.kind!r}")
        if self.scope not in SCOPES:
            raise ValueError(f"setting {self.name}: scope must be one of {SCOPES}")
        if self.scope != "spec" and self.flag is None:
            raise ValueError(f"setting {self.name}: scope {self.scope} needs a flag")

    @property
    def names(self) -> tuple[str, ...]:
        """The keys a spec may write, canonical first."""
        return (self.name, *self.aliases)

    @property
    def in_spec(self) -> bool:
        return self.scope != "run"

    @property
    def values(self) -> tuple[str, ...]:
        """The words it takes (choice and bool kinds); empty for numbers and structured
        values."""
        return _BOOL_WORDS if self.kind == "bool" else (
            () if self.kind == "augment" else self.choices)

    @cached_property
    def param(self) -> Param:
        """How the parser reads its written value (cnnspec.language.layers.PARAM_KINDS).

        Worked out once per entry (the parser reads it for every setting of every spec); a
        frozen dataclass without slots keeps it in its __dict__, outside the fields."""
        return Param(self.name, _PARAM_KIND[self.kind], self.names, low=self.low,
                     low_open=self.low_open, high=self.high, high_open=self.high_open,
                     flags=self.values or self.choices, doc=self.help)

    @cached_property
    def _read_tokens(self) -> dict[tuple[str, str], Any]:
        """What `read_token` found per (text, token type), kept on the (frozen) entry."""
        return {}

    def read_token(self, w: Written) -> Any:
        """`read(w)` for a value that is one token (`lr=.01`, `optimizer=sgd`, the usual
        case), kept per text and token type: the value depends on nothing else, and the specs
        of a sweep or a batch write the same `train` line again and again (reading it was a
        tenth of a parse). Refusals are not kept: they carry the place to point at."""
        key = (w.text, w.token)
        known = self._read_tokens
        try:
            return known[key]
        except KeyError:
            value = self.read(w)
            if len(known) < MAX_KEPT_READS:
                known[key] = value
            return value

    def read(self, w: Written) -> Any:
        """The IR value of one written value (a sweep's alternatives are read one by one);
        WrittenProblem, with the place to point at, when the setting refuses it."""
        if self.kind == "schedule":
            return read_schedule(self.param, w)
        if self.kind == "augment":
            return read_augment(self.param, w)
        return read_atom(self.param, w, self.name)

    def coerce(self, value: Any) -> Any:
        """The TrainSettings value of a parsed (or recorded) one: `true` -> True, 1 -> 1.0,
        a recorded schedule or augmentation (a JSON object) -> its dataclass."""
        if self.kind == "bool" and isinstance(value, str):
            return value == "true"
        if self.kind in ("float", "schedule") and isinstance(value, int) \
                and not isinstance(value, bool):
            return float(value)
        if self.kind == "schedule":
            return schedule_from_record(value)
        if self.kind == "augment":
            return augment_from_record(value)
        return value

    def accepts(self, value: Any) -> bool:
        """Whether a value (coerced, as from a run record) has this setting's type: a damaged
        settings.json's `"lr": "fast"` is refused when the record is read, not deep in a run."""
        if value is None:
            return self.default is None
        if isinstance(value, bool) and self.kind != "bool":
            return False
        return isinstance(value, _PY_TYPES[self.kind])

    def to_record(self, value: Any) -> Any:
        """The value as settings.json holds it (JSON: a number, a word, an object)."""
        if self.kind == "schedule":
            return schedule_record(value)
        if isinstance(value, Augment):
            return value.params()
        return value

    def written(self, value: Any) -> str:
        """The value as a spec (and the README) writes it."""
        if value is None:
            return "none"
        if isinstance(value, Schedule) or self.kind == "schedule":
            return write_schedule(value)
        if isinstance(value, Augment):
            return write_augment(value)
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, int | float):
            return format_number(value)
        return str(value)

    def allowed(self) -> str:
        """The values it takes, in words: `sgd`, `adam` / `> 0` / `[0, 2³²−1]`."""
        if self.kind == "schedule":
            return "> 0, or " + ", ".join(f"`{e}`" for e in SCHEDULE_EXAMPLES)
        if self.kind == "augment":
            return "`none`, or " + ", ".join(
                f"`{t}`" for t in ("flip", "crop4", "crop(4,mode=zero)", "cutout8")) + (
                " joined by `+`")
        if self.values:
            return ", ".join(f"`{v}`" for v in self.values)
        lo = None if self.low is None else format_number(self.low)
        hi = None if self.high is None else _big(self.high)
        if lo is not None and hi is not None:
            return (f"{'(' if self.low_open else '['}{lo}, {hi}"
                    f"{')' if self.high_open else ']'}")
        if lo is not None:
            return f"{'>' if self.low_open else '≥'} {lo}"
        if hi is not None:
            return f"{'<' if self.high_open else '≤'} {hi}"
        return "any"


def _big(value: float) -> str:
    """2³²−1 and 2³¹−1 as a reader knows them, other bounds as numbers."""
    for bits in (31, 32):
        if value == 2**bits - 1:
            return f"2{'³¹' if bits == 31 else '³²'}−1"
    return format_number(value)


@dataclass(frozen=True)
class SettingProblem:
    """Settings training would refuse: which setting to point at, what is wrong, what to do."""

    key: str
    message: str
    hint: str | None = None

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


# A rule about several settings together (momentum needs an optimizer that takes it): it gets
# the resolved settings and returns a problem or None.
Rule = Callable[[Any], "SettingProblem | None"]


def _settings_methods() -> dict[str, Any]:
    def override(self: Any, **changes: Any) -> Any:
        """These settings with the given ones replaced; None means keep."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})

    def to_dict(self: Any) -> dict[str, Any]:
        """The settings as settings.json records them: JSON values only (a schedule or an
        augmentation is an object)."""
        table = type(self).table
        return {f.name: table.by_name[f.name].to_record(getattr(self, f.name))
                for f in fields(self)}

    return {"override": override, "to_dict": to_dict}


@dataclass(frozen=True)
class SettingsTable:
    """The table and what is derived from it. Pure: a copy with one more entry
    (`with_setting`) has its own TrainSettings class, parser keys, flags and record."""

    entries: tuple[Setting, ...]
    rules: tuple[Rule, ...] = field(default=())

    def with_setting(self, entry: Setting) -> SettingsTable:
        return replace(self, entries=(*self.entries, entry))

    @cached_property
    def spec_entries(self) -> tuple[Setting, ...]:
        """The settings a spec's `train` line may write (TrainSettings' fields), in order."""
        return tuple(e for e in self.entries if e.in_spec)

    @cached_property
    def by_key(self) -> dict[str, Setting]:
        """Every key a spec may write (aliases too) -> its entry."""
        return {name: e for e in self.spec_entries for name in e.names}

    @cached_property
    def by_name(self) -> dict[str, Setting]:
        return {e.name: e for e in self.entries}

    @cached_property
    def flag_entries(self) -> tuple[Setting, ...]:
        """The settings with a command-line flag (spec ones override the spec)."""
        return tuple(e for e in self.entries if e.flag is not None)

    @cached_property
    def settings_class(self) -> type:
        """The frozen dataclass of a run's settings: one field per spec setting.

        Defaults are the notebook's `model.compile(optimizer='sgd',
        loss='categorical_crossentropy')` + `model.fit(batch_size=32, epochs=10, shuffle=True,
        validation_data=test)`.
        """
        cls = make_dataclass(
            "TrainSettings",
            [(e.name, _PY_TYPES[e.kind] | None if e.default is None else _PY_TYPES[e.kind],
              field(default=e.default)) for e in self.spec_entries],
            namespace={**_settings_methods(), "table": self}, frozen=True)
        cls.__module__ = __name__
        cls.__doc__ = "Everything that decides a training run besides the network."
        fast_init(cls)  # `check` builds one per spec
        return cls

    @cached_property
    def params(self) -> tuple[Param, ...]:
        return tuple(e.param for e in self.spec_entries)

    def resolve(self, pairs: Mapping[str, Any], base: Any = None) -> Any:
        """Settings from canonical key -> parsed value pairs (already validated by the parser)."""
        values = {k: self.by_name[k].coerce(v) if k in self.by_name else v
                  for k, v in pairs.items()}
        if base is None:  # the defaults overridden: built in one go (check does this per spec)
            return self.settings_class(**{k: v for k, v in values.items() if v is not None})
        return base.override(**values)

    def record(self, settings: Any) -> dict[str, Any]:
        """settings.json's "settings" object."""
        return settings.to_dict()  # type: ignore[no-any-return]

    def from_record(self, recorded: Mapping[str, Any]) -> Any:
        """The settings of a run record; keys recorded before a setting existed take its
        default, so old run folders still resume."""
        known = {k: self.by_name[k].coerce(v) for k, v in recorded.items()
                 if k in self.by_name and self.by_name[k].in_spec}
        return self.settings_class(**known)

    def texts(self, recorded: Mapping[str, Any]) -> dict[str, str]:
        """Each setting of a run record as a spec writes it (`lr` -> `onecycle(.4,warm=.2)`),
        defaults filled in: for tables of runs that show the settings which differ."""
        settings = self.from_record(recorded)
        return {e.name: e.written(getattr(settings, e.name)) for e in self.spec_entries}

    def differing(self, records: list[Mapping[str, Any]]) -> list[str]:
        """The settings (in table order) whose written value is not the same in all these
        run records."""
        texts = [self.texts(r) for r in records]
        return [e.name for e in self.spec_entries
                if len({t[e.name] for t in texts}) > 1]

    def unknown_record_keys(self, recorded: Mapping[str, Any]) -> list[str]:
        return sorted(set(recorded) - {e.name for e in self.spec_entries})

    def problems(self, settings: Any) -> list[SettingProblem]:
        """Everything about these settings that would make training fail, in table order."""
        out = []
        for e, default, problem in self._default_problems:
            value = getattr(settings, e.name)
            if value is not default:  # a setting left at its default: its verdict is known
                problem = _value_problem(e, value)
            if problem is not None:
                out.append(problem)
        return out + [p for rule in self.rules if (p := rule(settings)) is not None]

    @cached_property
    def _default_problems(self) -> tuple[tuple[Setting, Any, SettingProblem | None], ...]:
        """Each spec setting with its default and what _value_problem says of it (worked out
        once: `check` asks `problems` of every spec, and most settings keep their default)."""
        return tuple((e, e.default, _value_problem(e, e.default)) for e in self.spec_entries)

    def render_markdown(self) -> str:
        """The README's settings table (a test checks the README holds exactly this)."""
        rows = ["| setting | default | values | command line | meaning |",
                "| --- | --- | --- | --- | --- |"]
        for e in self.entries:
            key = " / ".join(f"`{n}`" for n in e.names) if e.in_spec else "—"
            default = e.default_text or f"`{e.written(e.default)}`"
            flag = "—" if e.flag is None else f"`{e.flag}`" + (
                " (run only)" if e.scope == "run" else "")
            rows.append(f"| {key} | {default} | {e.allowed()} | {flag} | "
                        f"{e.meaning or e.help} |")
        return "\n".join(rows) + "\n"


def _value_problem(e: Setting, value: Any) -> SettingProblem | None:
    """Why one value cannot train, in the parser's wording; None when it can."""
    if value is None:  # seed: none given, one is drawn
        return None
    if e.kind == "augment" or isinstance(value, Schedule):
        # read (and range-checked) by setting_values, from the spec or a flag's text
        if isinstance(value, Schedule if e.kind == "schedule" else Augment):
            return None
        return SettingProblem(e.name, f"{e.name} cannot be {value!r}")
    if e.values:
        written = ("true" if value else "false") if isinstance(value, bool) else value
        if written not in e.values:
            return SettingProblem(e.name, f"{e.name} must be one of {', '.join(e.values)}, "
                                  f"not {written}")
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        return SettingProblem(e.name, f"{e.name} must be a number, not {value!r}")
    if e.kind == "int" and not isinstance(value, int):
        return SettingProblem(
            e.name, f"{e.name} must be a whole number, not {format_number(value)}")
    if isinstance(value, float) and not math.isfinite(value):
        return SettingProblem(e.name, f"{e.name} must be finite, not {value}")
    message = _out_of_range(e, value)
    if message is None and isinstance(value, float):  # `--ema .99999999999`: 1 in float32
        text = format_number(value) if abs(value) < 1e16 else repr(value)
        message = float32_problem(e.name, value, text, e.high, e.high_open)
    return None if message is None else SettingProblem(e.name, message)


def _out_of_range(e: Setting, value: float) -> str | None:
    low_ok = e.low is None or (value > e.low if e.low_open else value >= e.low)
    high_ok = e.high is None or (value < e.high if e.high_open else value <= e.high)
    if low_ok and high_ok:
        return None
    got = format_number(value)
    if e.high is None and e.low is not None:  # the parser's wording (layers.check_range)
        relation = "greater than" if e.low_open else "at least"
        return f"{e.name} must be {relation} {format_number(e.low)}, got {got}"
    lo = "(" if e.low_open else "["
    hi = ")" if e.high_open else "]"
    low = "-inf" if e.low is None else format_number(e.low)
    high = "inf" if e.high is None else format_number(e.high)
    return f"{e.name} must be in {lo}{low}, {high}{hi}, got {got}"


def _momentum_needs_its_optimizer(settings: Any) -> SettingProblem | None:
    if settings.momentum and settings.optimizer not in MOMENTUM_OPTIMIZERS:
        return SettingProblem(
            "momentum",
            f"momentum applies to {' and '.join(MOMENTUM_OPTIMIZERS)}, not {settings.optimizer}",
            f"remove momentum, or use optimizer=sgd (or rmsprop); {settings.optimizer} has "
            "its own moment estimates",
        )
    return None


def _nesterov_needs_sgd_with_momentum(settings: Any) -> SettingProblem | None:
    if not settings.nesterov:
        return None
    if settings.optimizer != "sgd":
        return SettingProblem(
            "nesterov", f"nesterov applies to sgd, not {settings.optimizer}",
            "remove nesterov, or use optimizer=sgd with a momentum")
    if not settings.momentum:
        return SettingProblem("nesterov", "nesterov needs a momentum above 0",
                              "add momentum=.9, as in the fast CIFAR-10 recipes")
    return None


MONITOR_DEFAULT = "val_loss"  # the table's default for `monitor` (below)


def _monitor_needs_patience(settings: Any) -> SettingProblem | None:
    """`monitor` only chooses what early stopping watches: without `patience` it would be
    accepted and do nothing (and a sweep over it would train one network twice)."""
    if settings.patience is None and settings.monitor != MONITOR_DEFAULT:
        return SettingProblem(
            "monitor", "monitor chooses what early stopping watches, and there is no patience",
            f"add patience=N (e.g. patience=5 monitor={settings.monitor}), or remove monitor")
    return None


def _patience_needs_validation(settings: Any) -> SettingProblem | None:
    if settings.patience is not None and settings.validation == "none":
        return SettingProblem(
            "patience", "patience needs validation to watch, but validation=none",
            "remove patience, or validate on the test split (validation=test)")
    return None


SETTINGS = SettingsTable(
    entries=(
        Setting("optimizer", "choice", "sgd", "optimizer", aliases=("opt",),
                choices=OPTIMIZERS, flag="--optimizer"),
        Setting("lr", "schedule", 0.01, "learning rate: a number, or a schedule such as "
                "onecycle(.4,warm=.2)", aliases=("learning_rate",), low=0,
                low_open=True, flag="--lr", metavar="X", cli_type="positive_float_or_value",
                meaning="learning rate (Keras SGD's default, which the notebook used), or a "
                        "schedule over all steps: see [Learning-rate schedules]"
                        "(#learning-rate-schedules)"),
        Setting("momentum", "float", 0.0, "momentum (sgd and rmsprop)", low=0, high=1,
                high_open=True, flag="--momentum", metavar="X",
                meaning="momentum (`sgd` and `rmsprop` only)"),
        Setting("batch", "int", 32, "global batch size", aliases=("batch_size",), low=1,
                high=MAX_COUNT, flag="--batch-size", metavar="N", cli_type="positive_int"),
        Setting("epochs", "int", 10, "epochs", low=1, high=MAX_COUNT, flag="--epochs",
                metavar="N", cli_type="positive_int"),
        Setting("seed", "int", None, "same seed, same history", low=0, high=MAX_SEED,
                flag="--seed", metavar="N",
                meaning="with a seed, two runs give the same history to the last digit; "
                        "without, one is drawn and recorded"),
        Setting("shuffle", "bool", True, "reshuffle the training set every epoch",
                scope="spec"),
        Setting("loss", "choice", "categorical_crossentropy",
                "loss (the notebook's categorical cross-entropy)",
                choices=("categorical_crossentropy",), scope="spec"),
        Setting("validation", "choice", "test", "validate on the test split every epoch "
                "(`none` to skip)", choices=("test", "none"), scope="spec"),
        Setting("augment", "augment", Augment(),
                "augmentation of training batches: flip, crop (translate) with padding, "
                "cutout", flag="--augment", metavar="A", cli_type="value",
                meaning="random horizontal `flip`; random crop after padding by N pixels, "
                        "`cropN` (the padding mirrors the image; `crop(N,mode=zero)` pads "
                        "with zeros); `cutoutN` sets an N×N square to zero. Seeded per "
                        "epoch and batch"),
        Setting("nesterov", "bool", False, "Nesterov momentum (sgd with momentum only)",
                flag="--nesterov"),
        Setting("weight_decay", "float", None,
                "decoupled weight decay (w -= lr·wd·w each step), not the layers' l2()",
                low=0, flag="--weight-decay", metavar="X",
                default_text="none (AdamW: Keras's .004)"),
        Setting("label_smoothing", "float", 0.0, "label smoothing of the one-hot targets",
                low=0, high=1, high_open=True, flag="--label-smoothing", metavar="X"),
        Setting("tta", "choice", "none",
                "test-time augmentation: `flip` also scores each test image mirrored, "
                "reported beside the plain accuracy", choices=("none", "flip"), flag="--tta"),
        Setting("patience", "int", None,
                "stop after this many epochs without improvement of `monitor`; the best "
                "epoch's weights are kept", low=1, high=MAX_COUNT, flag="--patience",
                metavar="N", default_text="none (train every epoch)"),
        Setting("monitor", "choice", MONITOR_DEFAULT, "what `patience` watches",
                choices=("val_loss", "val_accuracy"), flag="--monitor"),
        Setting("ema", "float", None,
                "exponential moving average of the weights with this momentum, evaluated "
                "and saved instead of the trained weights", low=0, low_open=True, high=1,
                high_open=True, flag="--ema", metavar="X", default_text="none (off)"),
        Setting("limit", "int", None, "train on the first N training images", low=1,
                flag="--limit", metavar="N", cli_type="positive_int", scope="run",
                default_text="all"),
        Setting("precision", "choice", "auto",
                "auto (default): bf16 where the CPU has native bf16 units (AMX or AVX-512 "
                "BF16), else float32; bf16: mixed bfloat16 (changes the numbers); float32: the "
                "notebook's numbers on every CPU",
                choices=REQUESTABLE_PRECISIONS, flag="--precision", scope="run",
                meaning="what the run computes in (`auto`: bf16 on a CPU with native bf16 "
                        "units, else float32)"),
    ),
    rules=(_momentum_needs_its_optimizer, _nesterov_needs_sgd_with_momentum,
           _monitor_needs_patience, _patience_needs_validation),
)

TrainSettings: Any = SETTINGS.settings_class
# The study's "same flags" check: every setting with a command-line flag must be the same on
# every worker of a study (cnnspec.experiments.definition reads this).
STUDY_FLAGS: tuple[str, ...] = tuple(e.name for e in SETTINGS.flag_entries)

# key -> how its value is written; the first name is canonical (the parser reads these)
SETTING_PARAMS: tuple[Param, ...] = SETTINGS.params
SETTING_BY_NAME: dict[str, Param] = {name: p for p in SETTING_PARAMS for name in p.names}
SETTING_FIELDS: frozenset[str] = frozenset(p.field for p in SETTING_PARAMS)


def flag_record(name: str, value: Any) -> Any:
    """A flag's value as JSON (a study stores its workers' flags): a schedule or an
    augmentation as its record, anything else as it is."""
    entry = SETTINGS.by_name.get(name)
    return value if entry is None or value is None else entry.to_record(value)


def resolve_settings(pairs: dict[str, Any], base: Any = None) -> Any:
    """Settings from canonical key -> value pairs (already validated by the parser)."""
    return SETTINGS.resolve(pairs, base)


def settings_of(spec: Any, table: SettingsTable = SETTINGS) -> Any:
    """The training settings a (sweep-free) spec writes, on top of the defaults."""
    return table.resolve({s.key: s.value for s in spec.settings})


def setting_problems(settings: Any) -> list[SettingProblem]:
    """Everything about these settings that would make training fail, in table order.

    The rule is "whatever `check` accepts must train": the checker reports these with the
    setting's position, and command-line overrides (`--optimizer adam --momentum .9`) are
    validated with the same function, so both paths refuse the same things.
    """
    return SETTINGS.problems(settings)


def augment_problem(settings: Any, input_shape: Any) -> str | None:
    """Why the settings' augmentation cannot apply to images of `input_shape` (H, W, C), or
    None: `check` reports it at the setting, the command line after its overrides."""
    augment = settings.augment
    if augment is None or len(input_shape) < 2:
        return None
    return augment.problem_with(int(input_shape[0]), int(input_shape[1]))  # type: ignore[no-any-return]


def validate(settings: Any) -> str | None:
    """None when these settings train; else one line saying what is wrong and how to fix it.

    For callers without a spec position to point at, such as the CLI after applying
    `--optimizer`/`--momentum`/... overrides: print it as `cnnspec: error: ...` and exit 1.
    """
    problems = setting_problems(settings)
    return "; ".join(str(p) for p in problems) if problems else None
