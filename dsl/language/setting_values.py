"""Setting values that are more than a number or a word: learning-rate schedules and
augmentation.

    lr=.01                          a constant rate (a plain float, as before schedules)
    lr=onecycle(.4,warm=.2)         a Schedule: its kind and every argument, defaults filled in
    augment=flip+crop4+cutout8      an Augment: flip, crop padding (and mode), cutout size
    augment=crop(4,mode=zero)       the same term as a call

The parser hands these readers a `Written` value (a word, a number, a call or a `+` list, each
with its position) instead of its own tree types, so the rules live here, beside the table of
settings, and the command line reads a flag's text through the same parser and readers. Each
reader returns the typed value or raises `WrittenProblem` naming the place to point at.

The values are frozen dataclasses with the field names of the TensorFlow side
(`cnnspec.training.schedules.make_schedule(s.kind, **s.params())`,
`cnnspec.training.augment.Augment(**s.params())`); this module imports no TensorFlow.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import asdict, dataclass, field
from typing import Any

from cnnspec.language import ir
from cnnspec.language.errors import Span
from cnnspec.language.frozen import fast_init
from cnnspec.language.layers import Param, ValueProblem, format_number, read_value

MAX_STEPS = 2**31 - 1


@fast_init
@dataclass(frozen=True)
class Written:
    """One written setting value. token is NUMBER, WORD or SHAPE for a single token, CALL for
    `name(args)` (text is the name) and PLUS for `a+b` (terms)."""

    text: str
    token: str
    args: tuple[Arg, ...] = ()
    terms: tuple[Written, ...] = ()
    span: Span | None = field(default=None, compare=False)

    def shown(self) -> str:
        """The value as written (canonical spacing), for messages."""
        if self.token == "CALL":
            return f"{self.text}(" + ",".join(a.shown() for a in self.args) + ")"
        if self.token == "PLUS":
            return "+".join(t.shown() for t in self.terms)
        return self.text


@fast_init
@dataclass(frozen=True)
class Arg:
    """One argument of a call: `warm=.2` (name "warm") or `.4` (name None)."""

    name: str | None
    value: Written
    span: Span | None = field(default=None, compare=False)

    def shown(self) -> str:
        return f"{self.name}={self.value.shown()}" if self.name else self.value.shown()


class WrittenProblem(ValueProblem):
    """A written value its setting refuses, with the place to point at (None: the value)."""

    def __init__(self, message: str, hint: str | None = None, span: Span | None = None) -> None:
        super().__init__(message, hint)
        self.span = span


def _suggest(word: str, known: list[str]) -> str | None:
    close = difflib.get_close_matches(word, known, n=1, cutoff=0.6)
    return f"did you mean `{close[0]}`?" if close else None


def read_atom(param: Param, w: Written, what: str) -> Any:
    """A number or word argument read by its Param (the layers' readers and wording)."""
    if w.token not in ("NUMBER", "WORD", "SHAPE"):
        raise WrittenProblem(f"{what} must be a single value, not {w.shown()}", None, w.span)
    try:
        return read_value(param, w.text, w.token, what)
    except ValueProblem as p:
        raise WrittenProblem(p.message, p.hint, w.span) from None


def _bind(kind: str, args: tuple[Arg, ...], params: tuple[Param, ...], call: Written,
          ) -> dict[str, Written]:
    """Positional and named arguments matched to params (in order), each given once."""
    bound: dict[str, Written] = {}
    names = {n: p for p in params for n in p.names}
    for i, arg in enumerate(args):
        if arg.name is None:
            if any(a.name for a in args[:i]):
                raise WrittenProblem(
                    f"{kind}: a value without a name after a named one",
                    f"name it, or write the values by position first, e.g. {kind}(" + ",".join(
                        f"{p.field}=..." if j else "..." for j, p in enumerate(params[:2])) + ")",
                    arg.value.span)
            if i >= len(params):
                raise WrittenProblem(
                    f"{kind} takes {len(params)} argument(s) in order "
                    f"({', '.join(p.field for p in params)}), not {len(args)}",
                    "remove the values after the last one", arg.value.span)
            param = params[i]
        else:
            param = names.get(arg.name)  # type: ignore[assignment]
            if param is None:
                raise WrittenProblem(
                    f"{kind} has no argument `{arg.name}`",
                    _suggest(arg.name, list(names)) or
                    f"its arguments: {', '.join(_written(p) for p in params)}", arg.span)
        if param.field in bound:
            raise WrittenProblem(f"{kind}'s `{_written(param)}` is given twice", "keep one",
                                 arg.span or arg.value.span)
        bound[param.field] = arg.value
    missing = [p.field for p in params if p.required and p.field not in bound]
    if missing:
        raise WrittenProblem(f"{kind} needs its `{missing[0]}`",
                             f"e.g. {_EXAMPLES.get(kind, kind + '(...)')}", call.span)
    return bound


def _written(param: Param) -> str:
    """A parameter as a spec writes it (`mode`), not its field (`crop_mode`)."""
    return param.names[0] if param.names else param.field


# -- learning-rate schedules -------------------------------------------------------------------

_RATE = dict(kind="float", low=0, low_open=True)
_WARM = Param("warm", "float", ("warm",), low=0, high=1, high_open=True,
              doc="fraction of all steps spent warming up linearly from `start` (0)")

# kind -> its arguments in positional order (required ones first) and their defaults; the
# formulas are in cnnspec.training.schedules, which takes these names.
SCHEDULES: dict[str, tuple[tuple[Param, Any], ...]] = {
    "constant": (
        (Param("lr", names=("lr",), required=True, doc="the rate", **_RATE), None),
        (_WARM, 0.0),
    ),
    "step": (
        (Param("lr", names=("lr",), required=True, doc="the first rate", **_RATE), None),
        (Param("every", "int", ("every",), low=1, high=MAX_STEPS, required=True,
               doc="epochs between drops"), None),
        (Param("factor", "float", ("factor",), low=0, low_open=True, high=1,
               doc="the rate is multiplied by this at each drop"), 0.1),
        (_WARM, 0.0),
    ),
    "cosine": (
        (Param("lr", names=("lr",), required=True, doc="the rate after warm-up", **_RATE),
         None),
        (Param("final", "float", ("final",), low=0, doc="the rate at the last step"), 0.0),
        (_WARM, 0.0),
    ),
    "onecycle": (
        (Param("peak", names=("peak",), required=True, doc="the rate at the end of warm-up",
               **_RATE), None),
        (_WARM, 0.3),
        (Param("final", "float", ("final",), low=0, doc="the rate at the last step"), 0.0),
        (Param("start", "float", ("start",), low=0, doc="the rate at the first step"), 0.0),
    ),
}
_EXAMPLES = {"constant": "constant(.01,warm=.1)", "step": "step(.1,every=10,factor=.1)",
             "cosine": "cosine(.1,warm=.05)", "onecycle": "onecycle(.4,warm=.2)",
             "crop": "crop4 or crop(4,mode=zero)", "cutout": "cutout8"}
SCHEDULE_EXAMPLES = tuple(_EXAMPLES[k] for k in SCHEDULES)
SCHEDULE_DOCS = {
    "constant": "constant(lr, warm=0): lr throughout, after a linear warm-up over the first "
                "`warm` fraction of all steps",
    "step": "step(lr, every=N, factor=.1, warm=0): lr multiplied by `factor` every N epochs",
    "cosine": "cosine(lr, final=0, warm=0): half a cosine from lr down to `final` at the last "
              "step",
    "onecycle": "onecycle(peak, warm=.3, final=0, start=0): piecewise linear, start → peak "
                "over the `warm` fraction of all steps, then down to `final`",
}


@dataclass(frozen=True)
class Schedule:
    """A learning-rate schedule: its name (constant, step, cosine, onecycle) and all its
    arguments (defaults filled in, so two spellings of one schedule are equal), in the order
    of SCHEDULES[name]."""

    name: str
    args: tuple[tuple[str, float | int], ...]

    @property
    def kind(self) -> str:
        """The name, as cnnspec.training.schedules calls it."""
        return self.name

    def params(self) -> dict[str, float | int]:
        """What cnnspec.training.schedules.make_schedule(kind, **params) takes."""
        return dict(self.args)

    def get(self, name: str) -> float | int:
        return self.params()[name]

    @property
    def top(self) -> float:
        """The largest rate it reaches (the peak or first rate): for tables of runs."""
        p = self.params()
        return max(float(p.get("peak", p.get("lr", 0.0))), float(p.get("start", 0.0)))


# the spec's JSON form (cnnspec.language.ir.to_json/from_json) knows these values by class name
# (its "kind" key is the node type: hence Schedule.name, not .kind, as the field)
ir.NODE_TYPES["Schedule"] = Schedule


def make_schedule(kind: str, **values: float | int) -> Schedule | float:
    """The schedule of these values (defaults filled in); `constant` without warm-up is the
    plain float, exactly what `lr=.01` reads as. ValueError for an unknown kind or argument."""
    if kind not in SCHEDULES:
        raise ValueError(f"unknown schedule {kind!r}")
    spec = SCHEDULES[kind]
    unknown = set(values) - {p.field for p, _ in spec}
    if unknown:
        raise ValueError(f"{kind} has no argument {sorted(unknown)[0]!r}")
    args = []
    for p, default in spec:
        value = values.get(p.field, default)
        if value is None:
            raise ValueError(f"{kind} needs {p.field}")
        args.append((p.field, float(value) if p.kind == "float" else value))
    if kind == "constant" and dict(args)["warm"] == 0:
        return dict(args)["lr"]  # type: ignore[return-value]
    return Schedule(kind, tuple(args))


def read_schedule(param: Param, w: Written) -> float | Schedule:
    """`lr=.01` (a positive number) or `lr=onecycle(.4,warm=.2)`."""
    if w.token == "NUMBER":
        return read_atom(param, w, param.field)  # type: ignore[no-any-return]
    if w.token == "WORD" and w.text in SCHEDULES:
        raise WrittenProblem(f"{w.text} needs its arguments",
                             f"e.g. {_EXAMPLES[w.text]}", w.span)
    if w.token != "CALL" or w.text not in SCHEDULES:
        name = w.text if w.token in ("CALL", "WORD") else ""
        raise WrittenProblem(
            f"{param.field} must be a number or a schedule ({', '.join(SCHEDULES)}), "
            f"not {w.shown()}",
            _suggest(name, list(SCHEDULES)) or "e.g. lr=.01 or lr=onecycle(.4,warm=.2)",
            w.span)
    spec = SCHEDULES[w.text]
    bound = _bind(w.text, w.args, tuple(p for p, _ in spec), w)
    values = {name: read_atom(next(p for p, _ in spec if p.field == name), v,
                               f"{w.text}'s {name}")
              for name, v in bound.items()}
    above = _above_the_top(w.text, values)
    if above is not None:
        name, message, hint = above
        raise WrittenProblem(message, hint, bound[name].span)
    return make_schedule(w.text, **values)


def _above_the_top(kind: str, values: dict[str, Any]) -> tuple[str, str, str] | None:
    """(argument, message, hint) for a rate above the schedule's top one: `cosine(.1,final=.5)`
    would climb from .1 to .5 (`final` is a rate, not a fraction of lr: usually a slip), and
    onecycle's start or final above its peak would turn the cycle upside down."""
    if kind not in ("cosine", "onecycle"):
        return None
    top = "peak" if kind == "onecycle" else "lr"
    for name in ("final", "start"):
        if name in values and float(values[name]) > float(values[top]):
            return (name, f"{kind}'s {name} ({values[name]:g}) is above its {top} "
                          f"({values[top]:g}): " + ("a cosine decays from lr to final"
                          if kind == "cosine" else "the peak is the cycle's highest rate"),
                    f"`{name}` is a rate, not a fraction of {top}: e.g. "
                    f"{name}={float(values[top]) / 100:g} for 1 % of it")
    return None


def write_schedule(value: float | Schedule) -> str:
    """The canonical text: `.01`, `onecycle(.4,warm=.2)` (defaults left out; the first
    argument by position, the others by name)."""
    if not isinstance(value, Schedule):
        return format_number(value)
    parts = []
    for i, (p, default) in enumerate(SCHEDULES[value.kind]):
        v = value.get(p.field)
        if i == 0:
            parts.append(format_number(v))
        elif default is None or v != default:
            parts.append(f"{p.field}={format_number(v)}")
    return f"{value.kind}(" + ",".join(parts) + ")"


def schedule_record(value: float | Schedule) -> Any:
    """settings.json's form: the float, or {"kind": ..., arguments...}."""
    return {"kind": value.kind, **value.params()} if isinstance(value, Schedule) else value


def schedule_from_record(recorded: Any) -> float | Schedule:
    if isinstance(recorded, dict):
        values = {k: v for k, v in recorded.items() if k != "kind"}
        return make_schedule(str(recorded.get("kind")), **values)
    return recorded  # type: ignore[no-any-return]


# -- augmentation ------------------------------------------------------------------------------

CROP_MODES = ("reflect", "zero")
_CROP = Param("crop", "int", ("crop", "pad"), low=1, high=64, required=True,
              doc="padding in pixels of the random crop (a translation by up to this much)")
_MODE = Param("crop_mode", "flag", ("mode",), flags=CROP_MODES,
              doc="how the padding is filled: reflect (the image mirrored) or zero")
_CUTOUT = Param("cutout", "int", ("cutout", "size"), low=1, high=256, required=True,
                doc="side in pixels of the square set to zero")
# term -> its arguments (the first may be written as the word's number: crop4, cutout8)
AUGMENTS: dict[str, tuple[Param, ...]] = {"flip": (), "crop": (_CROP, _MODE),
                                          "cutout": (_CUTOUT,)}
_TERM = re.compile(r"([a-z_]+?)([0-9]+)?")


@dataclass(frozen=True)
class Augment:
    """Which augmentations training applies, with their sizes (0 = off): the fields of
    cnnspec.training.augment.Augment."""

    flip: bool = False
    crop: int = 0
    crop_mode: str = "reflect"
    cutout: int = 0

    def params(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def active(self) -> bool:
        return self.flip or self.crop > 0 or self.cutout > 0

    def problem_with(self, height: int, width: int) -> str | None:
        """Why these sizes cannot augment height x width images (None when they can)."""
        return augment_size_problem(self.crop, self.crop_mode, self.cutout, height, width)


def augment_size_problem(crop: int, crop_mode: str, cutout: int, height: int,
                         width: int) -> str | None:
    """The one rule for augmentation sizes against the image size: `check` applies it to the
    spec, the command line after its overrides, and cnnspec.training.augment in the graph."""
    if crop and crop_mode == "reflect" and crop >= min(height, width):
        return (f"augment: reflect padding of {crop} needs images larger than {crop} pixels, "
                f"not {height}x{width}")
    if cutout > max(height, width):
        return f"augment: cutout{cutout} is larger than the {height}x{width} images"
    return None


ir.NODE_TYPES["Augment"] = Augment


def _augment_term(w: Written, seen: dict[str, Any]) -> None:
    """One `flip` / `crop4` / `crop(4,mode=zero)` / `cutout8` into seen (field -> value)."""
    if w.token not in ("WORD", "CALL"):
        raise WrittenProblem(f"augment terms are flip, crop and cutout, not {w.shown()}",
                             "e.g. augment=flip+crop4+cutout8", w.span)
    m = _TERM.fullmatch(w.text)
    name, number = (m.group(1), m.group(2)) if m else (w.text, None)
    if name not in AUGMENTS:
        raise WrittenProblem(f"unknown augmentation `{w.text}`",
                             _suggest(name, [*AUGMENTS, "none"]) or
                             "augment with flip, crop4 (or crop(4,mode=zero)) and cutout8",
                             w.span)
    if name in seen:
        raise WrittenProblem(f"`{name}` is written twice in augment", "keep one", w.span)
    params = AUGMENTS[name]
    args = w.args
    if number is not None:
        if not params:
            raise WrittenProblem(f"{name} takes no size, not {w.text}", f"write {name}",
                                 w.span)
        args = (Arg(None, Written(number, "NUMBER", span=w.span), w.span), *args)
    if not params and args:
        raise WrittenProblem(f"{name} takes no arguments", f"write {name}", w.span)
    bound = _bind(name, args, params, w) if params else {}
    if name == "flip":
        seen["flip"] = True
    for field_name, value in bound.items():
        param = next(p for p in params if p.field == field_name)
        seen[field_name] = read_atom(param, value, f"{name}'s {param.names[-1]}"
                                      if field_name == "crop_mode" else field_name)


def read_augment(param: Param, w: Written) -> Augment:
    """`none`, or terms joined by `+`: `flip+crop4+cutout8`, `crop(4,mode=zero)`."""
    if w.token == "WORD" and w.text == "none":
        return Augment()
    terms = w.terms if w.token == "PLUS" else (w,)
    seen: dict[str, Any] = {}
    for term in terms:
        if term.token == "WORD" and term.text == "none":
            raise WrittenProblem("`none` cannot be joined with other augmentations",
                                 "write augment=none alone", term.span)
        _augment_term(term, seen)
    return Augment(flip=bool(seen.get("flip", False)), crop=int(seen.get("crop", 0)),
                   crop_mode=str(seen.get("crop_mode", "reflect")),
                   cutout=int(seen.get("cutout", 0)))


def write_augment(value: Augment) -> str:
    """`none`, or the terms in the order flip, crop, cutout: `flip+crop4(mode=zero)+cutout8`."""
    parts = []
    if value.flip:
        parts.append("flip")
    if value.crop:
        parts.append(f"crop{value.crop}" + (
            f"(mode={value.crop_mode})" if value.crop_mode != "reflect" else ""))
    if value.cutout:
        parts.append(f"cutout{value.cutout}")
    return "+".join(parts) or "none"


def augment_from_record(recorded: Any) -> Augment:
    if isinstance(recorded, dict):
        return Augment(**recorded)
    return recorded  # type: ignore[no-any-return]
