"""Which layers two specs differ in, and what that does to shapes and parameter counts.

A row of a comparison table is explained by the architecture change that caused it, so the diff
is computed on the checked layer rows (the Keras layers), aligned like a text diff.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, fields

from cnnspec.language.checker import Report, Row
from cnnspec.language.format import format_value
from cnnspec.language.setting_values import Augment, Schedule
from cnnspec.language.settings import TrainSettings


@dataclass(frozen=True)
class Change:
    """One aligned step: op is "same", "added", "removed" or "changed"."""

    op: str
    a: Row | None
    b: Row | None

    def to_dict(self) -> dict:
        def side(r: Row | None) -> dict | None:
            if r is None:
                return None
            return {"line": r.line, "defined_at": r.defined_at, "text": r.text,
                    "output_shape": list(r.output_shape), "params": r.params}

        return {"op": self.op, "a": side(self.a), "b": side(self.b)}


@dataclass(frozen=True)
class SpecDiff:
    """The layer-by-layer alignment of two checked specs and their settings' differences."""

    a: Report
    b: Report
    changes: tuple[Change, ...]
    settings: tuple[tuple[str, object, object], ...]

    @property
    def header(self) -> tuple[tuple[str, object, object], ...]:
        """The header lines that differ, `("input", (32, 32, 3), (64, 64, 3))`: they change
        every shape (or the head) below them, and the rows alone would not say why."""
        pairs = (("input", self.a.input_shape, self.b.input_shape),
                 ("classes", self.a.classes, self.b.classes))
        return tuple((k, va, vb) for k, va, vb in pairs if va != vb)

    @property
    def edits(self) -> tuple[Change, ...]:
        return tuple(c for c in self.changes if c.op != "same")

    def to_dict(self) -> dict:
        return {
            "a": self.a.name,
            "b": self.b.name,
            "params": _delta(self.a.params, self.b.params),
            "macs": _delta(self.a.macs, self.b.macs),
            "header": [{"key": k, "a": list(va) if isinstance(va, tuple) else va,
                        "b": list(vb) if isinstance(vb, tuple) else vb}
                       for k, va, vb in self.header],
            "changes": [c.to_dict() for c in self.changes],
            "settings": [{"key": k, "a": va, "b": vb} for k, va, vb in self.settings],
        }


def _delta(a: int, b: int) -> dict[str, int]:
    return {"a": a, "b": b, "delta": b - a}


def _key(row: Row) -> str:
    return row.text


def diff_reports(
    a: Report,
    b: Report,
    settings_a: TrainSettings | None = None,
    settings_b: TrainSettings | None = None,
) -> SpecDiff:
    """Align two reports' layers by their text; a changed shape on an equal layer is "changed".

    The common head and tail are aligned first and only the middle goes to SequenceMatcher,
    which is quadratic on long runs of equal layers (`relu x5000` against `relu x4999 pool2`
    took 2 s); a one-layer edit in a deep network then costs a linear scan.
    """
    keys_a, keys_b = [_key(r) for r in a.rows], [_key(r) for r in b.rows]
    head = 0
    while head < min(len(keys_a), len(keys_b)) and keys_a[head] == keys_b[head]:
        head += 1
    tail = 0
    while (tail < min(len(keys_a), len(keys_b)) - head
           and keys_a[-1 - tail] == keys_b[-1 - tail]):
        tail += 1
    matcher = difflib.SequenceMatcher(
        a=keys_a[head:len(keys_a) - tail], b=keys_b[head:len(keys_b) - tail], autojunk=False
    )
    opcodes = [("equal", 0, head, 0, head)] if head else []
    opcodes += [(op, i1 + head, i2 + head, j1 + head, j2 + head)
                for op, i1, i2, j1, j2 in matcher.get_opcodes()]
    if tail:
        opcodes.append(("equal", len(keys_a) - tail, len(keys_a),
                        len(keys_b) - tail, len(keys_b)))
    changes: list[Change] = []
    for op, i1, i2, j1, j2 in opcodes:
        if op == "equal":
            for ra, rb in zip(a.rows[i1:i2], b.rows[j1:j2], strict=True):
                same = ra.output_shape == rb.output_shape and ra.params == rb.params
                changes.append(Change("same" if same else "changed", ra, rb))
        elif op == "replace":
            left, right = list(a.rows[i1:i2]), list(b.rows[j1:j2])
            for k in range(max(len(left), len(right))):
                ra = left[k] if k < len(left) else None
                rb = right[k] if k < len(right) else None
                kind = "changed" if ra and rb else ("removed" if ra else "added")
                changes.append(Change(kind, ra, rb))
        elif op == "delete":
            changes.extend(Change("removed", r, None) for r in a.rows[i1:i2])
        else:
            changes.extend(Change("added", None, r) for r in b.rows[j1:j2])
    setting_changes: list[tuple[str, object, object]] = []
    if settings_a is not None and settings_b is not None:
        names = [f.name for f in fields(settings_a)]
        setting_changes = [
            (k, _shown(getattr(settings_a, k)), _shown(getattr(settings_b, k)))
            for k in names if getattr(settings_a, k) != getattr(settings_b, k)]
    return SpecDiff(a, b, tuple(changes), tuple(setting_changes))


def _shown(value: object) -> object:
    """A setting's value in a diff: numbers and words as they are (JSON keeps them typed); a
    schedule or an augmentation as the spec writes it, `onecycle(.4,warm=.2)`."""
    if isinstance(value, Schedule | Augment):
        return format_value(value)
    return value
