"""Compare finished runs: one row per run, an overfitting flag, exports, and what two plots show.

The notebook compared its seven runs by scrolling and writing prose ("here we can observe
overfitting"); this module turns the run folders into numbers that say the same thing, with
the rule for "overfitting" written down (see `overfitting`).
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from cnnspec.language.settings import SETTINGS
from cnnspec.training import records

# A run overfits when its final train accuracy exceeds its final validation accuracy by more
# than this (10 points), or when validation loss rose for RISING_EPOCHS epochs in a row while
# training loss fell over the same epochs.
GAP_THRESHOLD = 0.10
RISING_EPOCHS = 3
# Accuracies come from Keras as float32 (0.8 - 0.7 there is 0.10000002): a gap counts as above
# the threshold only when it is above it by more than float32 rounding, so a gap of exactly 10
# points (400 vs 350 of 500 images) does not fire, and one image more (0.102) does.
_GAP_TOLERANCE = 1e-6


@dataclass(frozen=True)
class RunRow:
    """What `cnnspec compare` shows for one run folder."""

    run: str
    path: str
    spec: str
    status: str
    params: int | None
    macs: int | None
    epochs: int
    epochs_planned: int | None
    best_val_accuracy: float | None
    best_epoch: int | None
    final_val_accuracy: float | None
    final_train_accuracy: float | None
    final_val_loss: float | None
    test_accuracy: float | None
    gap: float | None
    overfitting: bool
    overfitting_reason: str
    seconds_per_epoch: float | None
    images_per_second: float | None
    lr: float | None
    batch: int | None
    # a pruned run (a pruned sweep stopped it): the epoch it stopped at, and the pruner's why
    pruned_at: int | None = None
    pruned_reason: str = ""
    # the data the run was trained and scored on (settings.json's fingerprint of all its
    # images and labels, its test images and classes): runs scored on other test sets do not
    # compare (`data_note`); empty / None when unknown (a study's rows)
    data_fingerprint: str = ""
    test_images: int | None = None
    classes: int | None = None
    # every training setting as a spec writes it (`setting_texts`), for the recipe columns
    # (`recipe_columns`); empty when the rows come from somewhere without settings.json
    settings: Mapping[str, str] = field(default_factory=dict, hash=False)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "settings": dict(self.settings)}


# `settings` is not a sort key: it is many columns, each a text (`recipe_columns`)
SORT_KEYS = tuple(k for k in RunRow.__dataclass_fields__ if k != "settings")
# Short names people type (`--sort val_accuracy`) for the row fields they mean.
SORT_ALIASES = {
    "val_accuracy": "final_val_accuracy",
    "accuracy": "final_train_accuracy",
    "train_accuracy": "final_train_accuracy",
    "val_loss": "final_val_loss",
    "best": "best_val_accuracy",
}
# Fields a pruned run never reached (or reached fewer epochs of): a sort by one of them places
# every pruned run after the others, whatever its value (`sort_rows`).
RESULT_KEYS = ("best_val_accuracy", "final_val_accuracy", "final_train_accuracy",
               "final_val_loss", "test_accuracy", "gap", "overfitting", "best_epoch", "epochs")


def overfitting(history: Sequence[dict[str, Any]]) -> tuple[bool, str]:
    """(flag, reason) for one run's per-epoch history; the rule is GAP_THRESHOLD/RISING_EPOCHS."""
    if not history:
        return False, ""
    last = history[-1]
    acc, val_acc = last.get("accuracy"), last.get("val_accuracy")
    if acc is not None and val_acc is not None and acc - val_acc > GAP_THRESHOLD + _GAP_TOLERANCE:
        return True, (f"train−val accuracy gap {(acc - val_acc) * 100:.2f} points "
                      f"> {GAP_THRESHOLD * 100:g}")
    run = 0
    for prev, cur in zip(history, history[1:], strict=False):
        vl0, vl1 = prev.get("val_loss"), cur.get("val_loss")
        tl0, tl1 = prev.get("loss"), cur.get("loss")
        if None in (vl0, vl1, tl0, tl1):
            run = 0
            continue
        run = run + 1 if (vl1 > vl0 and tl1 < tl0) else 0
        if run >= RISING_EPOCHS:
            return True, (f"val loss rose {run} epochs in a row while train loss fell "
                          f"(to epoch {cur.get('epoch')})")
    return False, ""


# Settings the recipe columns never show: the table already has the epochs a run trained,
# and a run without a seed records the one it drew, so seeds differ between nearly all runs
# and a seed column would only push the settings that matter off the screen.
RECIPE_EXCLUDED = ("epochs", "seed")
UNREADABLE = "?"  # a recorded setting value cnnspec cannot read back (a damaged record)


def setting_texts(recorded: Mapping[str, Any]) -> dict[str, str]:
    """Each training setting of a settings.json "settings" object as a spec writes it
    (`SETTINGS.texts`: defaults for settings recorded before they existed). A value that does
    not read back (a hand-edited or damaged record) is shown as UNREADABLE rather than
    failing the whole comparison, as the row's other odd fields are shown as unknown."""
    try:
        return SETTINGS.texts(recorded)
    except (ValueError, TypeError, KeyError, AttributeError):
        pass
    good, bad = {}, []
    for key, value in recorded.items():
        try:
            SETTINGS.texts({key: value})
        except (ValueError, TypeError, KeyError, AttributeError):
            bad.append(key)
        else:
            good[key] = value
    texts = SETTINGS.texts(good)
    return {**texts, **{k: UNREADABLE for k in bad if k in texts}}


def recipe_columns(rows: Sequence[RunRow]) -> list[str]:
    """The settings (in the settings table's order) whose written value is not the same in
    all rows: what tells the compared runs' recipes apart. `SETTINGS.differing`'s rule,
    applied to the texts the rows hold (so a damaged value counts as its own value);
    RECIPE_EXCLUDED and rows without settings (a study's) are left out."""
    texts = [r.settings for r in rows if r.settings]
    if len(texts) < 2:
        return []
    return [e.name for e in SETTINGS.spec_entries
            if e.name not in RECIPE_EXCLUDED and len({t.get(e.name, "") for t in texts}) > 1]


# A run folder holds both from its start; either marks a folder as a run, so one that lost its
# settings.json is still found, and refused as damaged, naming the file (it was left out
# without a word, and the comparison exited 0). A sweep's own folder has neither; spec.cnn is
# no mark: a project folder may hold a spec of that name (and train reuses a folder with
# only its spec.cnn as no run).
_RUN_MARKS = (records.SETTINGS_FILE, records.STATUS_FILE)


def _is_run(folder: Path) -> bool:
    return any((folder / mark).is_file() for mark in _RUN_MARKS)


def find_runs(paths: Sequence[str | Path]) -> list[Path]:
    """Run folders named directly, or found one level (or two, for sweeps) below a parent."""
    found: list[Path] = []
    for p in map(Path, paths):
        if _is_run(p):
            found.append(p)
            continue
        if not p.is_dir():
            raise FileNotFoundError(f"{p}: " + (
                "a file, not a run folder (compare takes run folders, or folders of them)"
                if p.exists() else "no such run folder"))
        below = sorted({q.parent for mark in _RUN_MARKS for q in p.glob("*/" + mark)})
        below += sorted({q.parent for mark in _RUN_MARKS for q in p.glob("*/*/" + mark)})
        if not below:
            raise FileNotFoundError(f"{p}: not a run folder and holds none")
        found.extend(below)
    return list(dict.fromkeys(found))


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _damaged(path: Path, what: str) -> records.RunFolderError:
    return records.RunFolderError(f"{path}: damaged record: {what}")


def _read_record(path: Path, kind: type, required: bool = False) -> Any:
    """A JSON record of the expected kind (dict or list); missing -> empty unless required."""
    if not path.exists() and not required:
        return kind()
    try:
        value = records.read_json(path)
    except OSError as exc:
        raise records.RunFolderError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if not isinstance(value, kind):
        raise _damaged(path, f"expected a JSON {'object' if kind is dict else 'list'}, "
                             f"found {type(value).__name__}")
    return value


def read_history(run_dir: Path) -> list[dict[str, Any]]:
    """A run's history.json, checked: per-epoch objects with a whole epoch number and numbers
    (or null) for the metrics. [] before the first epoch ends; RunFolderError if damaged."""
    path = Path(run_dir) / records.HISTORY_JSON
    history = _read_record(path, list)
    for i, h in enumerate(history):
        epoch = h.get("epoch") if isinstance(h, dict) else None
        if not isinstance(epoch, int) or isinstance(epoch, bool):
            raise _damaged(path, f"entry {i + 1} is not an epoch with a whole epoch number")
        for key, value in h.items():
            if key != "epoch" and value is not None and (
                    isinstance(value, bool) or not isinstance(value, int | float)):
                raise _damaged(path, f"epoch {epoch}: {key} is not a number")
    # NaN/Infinity (a hand-edited or foreign record; this package writes null) is no value
    return [{k: None if isinstance(v, float) and not math.isfinite(v) else v
             for k, v in h.items()} for h in history]


def load_row(run_dir: Path) -> RunRow:
    """Read one run folder into a row; tolerates runs that are still going or failed.

    A record that is damaged (not JSON, or not the shape cnnspec writes) raises
    records.RunFolderError (a ValueError) naming the file."""
    run_dir = Path(run_dir)
    settings = _read_record(run_dir / records.SETTINGS_FILE, dict, required=True)
    history = read_history(run_dir)
    status = _read_record(run_dir / records.STATUS_FILE, dict)
    metrics = _read_record(run_dir / records.METRICS_FILE, dict)
    for key, kind in (("model", dict), ("settings", dict), ("spec", dict), ("data", dict)):
        if not isinstance(settings.get(key, {}), kind):
            raise _damaged(run_dir / records.SETTINGS_FILE, f"{key} is not an object")
    model = settings.get("model", {})
    train_settings = settings.get("settings", {})
    state = _str(status.get("status")) or "unknown"
    done = status.get("epochs_completed")
    if not history and isinstance(done, int) and not isinstance(done, bool) and done > 0:
        # its status names trained epochs, its history none: listed as a run of 0 epochs
        raise _damaged(run_dir / records.HISTORY_JSON, f"missing or empty, though "
                       f"{records.STATUS_FILE} says {done} epoch(s) completed")
    return build_row(
        run=run_dir.name,
        path=str(run_dir),
        spec=_str(settings.get("spec", {}).get("name")) or run_dir.name,
        status=state,
        history=history,
        test_accuracy=_number(metrics.get("test_accuracy")),
        params=_number(model.get("params"), int),
        macs=_number(model.get("macs_per_image"), int),
        epochs_planned=_number(train_settings.get("epochs"), int),
        lr=_number(train_settings.get("lr")),
        batch=_number(train_settings.get("batch"), int),
        pruned_reason=(_str(status.get("reason")) or "") if state == "pruned" else "",
        settings=setting_texts(train_settings),
        data=settings.get("data", {}),
    )


def build_row(
    *, run: str, path: str, spec: str, status: str, history: Sequence[dict[str, Any]],
    test_accuracy: float | None, params: int | None, macs: int | None,
    epochs_planned: int | None, lr: float | None, batch: int | None,
    pruned_reason: str = "", settings: Mapping[str, str] | None = None,
    data: Mapping[str, Any] | None = None,
) -> RunRow:
    """The one builder of a comparison row: everything derived from the per-epoch history
    (best and final accuracies, gap, overfitting, speed) is computed here, for run folders
    (`load_row`) and for studies alike (`view.study_view`, and `results.result_record` for
    what a trial stores). A pruned run's `pruned_at` is its last epoch. `settings` are the
    run's setting texts (`setting_texts`), when its settings record is at hand."""
    val = [(h["val_accuracy"], h["epoch"]) for h in history if h.get("val_accuracy") is not None]
    best = max(val, key=lambda t: t[0]) if val else (None, None)
    last = history[-1] if history else {}
    flag, reason = overfitting(history)
    acc, val_acc = last.get("accuracy"), last.get("val_accuracy")
    return RunRow(
        run=run,
        path=path,
        spec=spec,
        status=status,
        params=params,
        macs=macs,
        epochs=len(history),
        epochs_planned=epochs_planned,
        best_val_accuracy=best[0],
        best_epoch=best[1],
        final_val_accuracy=val_acc,
        final_train_accuracy=acc,
        final_val_loss=last.get("val_loss"),
        test_accuracy=test_accuracy,
        gap=None if acc is None or val_acc is None else acc - val_acc,
        overfitting=flag,
        overfitting_reason=reason,
        seconds_per_epoch=_mean([h["seconds"] for h in history if h.get("seconds")]),
        images_per_second=_mean(
            [h["images_per_second"] for h in history if h.get("images_per_second")]),
        lr=lr,
        batch=batch,
        pruned_at=(last.get("epoch") or len(history)) if status == "pruned" else None,
        pruned_reason=pruned_reason,
        data_fingerprint=_str((data or {}).get("fingerprint")) or "",
        test_images=_number((data or {}).get("test_images"), int),
        classes=len(labels) if isinstance(labels := (data or {}).get("label_names"), list)
        else None,
        settings=dict(settings or {}),
    )


def _number(value: Any, kind: type | tuple[type, ...] = (int, float)) -> Any:
    """value if it is a number of that kind (not a bool), else None: a record's field that
    holds something else is shown as unknown rather than breaking the table."""
    return value if isinstance(value, kind) and not isinstance(value, bool) else None


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def sort_rows(rows: list[RunRow], key: str | None, descending: bool | None = None) -> list[RunRow]:
    """Rows sorted by a field; accuracies sort best first, everything else ascending.

    Pruned runs come after the others, in their own order, when there is no key and when the
    key is a result (RESULT_KEYS): a run stopped at epoch 2 did not reach the final epoch its
    value would be compared at, so it is never ranked above (nor among) the runs that did.
    """
    key = SORT_ALIASES.get(key, key) if key else key
    if key and key not in SORT_KEYS:
        raise KeyError(key)
    if not key or key in RESULT_KEYS:
        return (_sorted(rows, key, descending, lambda r: r.status != "pruned")
                + _sorted(rows, key, descending, lambda r: r.status == "pruned"))
    return _sorted(rows, key, descending, lambda r: True)


def _sorted(rows: list[RunRow], key: str | None, descending: bool | None,
            keep: Any) -> list[RunRow]:
    rows = [r for r in rows if keep(r)]
    if not key:
        return rows
    if descending is None:
        descending = "accuracy" in key or key == "images_per_second"
    present = [r for r in rows if getattr(r, key) is not None]
    missing = [r for r in rows if getattr(r, key) is None]
    return sorted(present, key=lambda r: getattr(r, key), reverse=descending) + missing


def run_labels(rows: Sequence[RunRow]) -> list[str]:
    """A short name per row that tells its run apart from every other row's.

    The run folder's name, with as many of its parent folders as it takes to be unique
    (`a/exp7`, `b/exp7`); the full path when even that does not separate two rows.
    """
    parts = [Path(r.path).parts if r.path else (r.run,) for r in rows]
    labels = [r.run for r in rows]
    depth = 1
    while len(set(labels)) < len(labels) and depth < max((len(p) for p in parts), default=1):
        depth += 1
        counts: dict[str, int] = {}
        for label in labels:
            counts[label] = counts.get(label, 0) + 1
        labels = [
            "/".join(p[-depth:]) if counts[label] > 1 else label
            for p, label in zip(parts, labels, strict=True)
        ]
    return labels


def names_repeat(rows: Sequence[RunRow]) -> bool:
    """True when two rows show the same spec name, so the name alone does not say which run."""
    names = [r.spec for r in rows]
    return len(set(names)) < len(names)


def display_names(rows: Sequence[RunRow]) -> list[str]:
    """Each row's spec name, followed by its run (see run_labels) when spec names repeat."""
    if not names_repeat(rows):
        return [r.spec for r in rows]
    return [f"{r.spec} ({label})" for r, label in zip(rows, run_labels(rows), strict=True)]


EXPORT_FIELDS = (
    "spec", "run", "status", "params", "macs", "epochs", "best_val_accuracy", "best_epoch",
    "final_val_accuracy", "final_train_accuracy", "final_val_loss", "gap", "overfitting",
    "overfitting_reason",
    "test_accuracy", "seconds_per_epoch", "images_per_second", "lr", "batch", "path",
    "pruned_at", "pruned_reason", "test_images", "classes", "data_fingerprint",
)


def data_note(rows: Sequence[RunRow]) -> str | None:
    """A warning when the rows were scored on different test sets (told apart by their number
    of test images and of classes, which settings.json records), or None: a 3-class run's 34 %
    beside 10-class runs' 8 %, or a run scored on the bundled 500 test images beside one on
    10,000, was shown as one ranking without a word. (The data fingerprint covers the
    training images too, which `--limit` changes without changing the test set.)"""
    groups: dict[tuple[int | None, int | None], list[RunRow]] = {}
    for r in rows:
        if r.test_images is not None or r.classes is not None:
            groups.setdefault((r.test_images, r.classes), []).append(r)
    if len(groups) < 2:
        return None

    def described(key: tuple[int | None, int | None], group: list[RunRow]) -> str:
        images, classes = key
        what = ", ".join(x for x in (
            f"{images:,} test images" if images is not None else "",
            f"{classes} classes" if classes is not None else "") if x)
        names = ", ".join(display_names(group)[:3]) + (", …" if len(group) > 3 else "")
        return f"{names} ({what})"
    return (f"these runs were scored on {len(groups)} different test sets, so their accuracies "
            "do not compare across them: "
            + "; ".join(described(k, g) for k, g in groups.items()))


def to_csv(rows: Sequence[RunRow]) -> str:
    """EXPORT_FIELDS, then a `settings.NAME` column per recipe column (`recipe_columns`):
    prefixed, because `lr` and `batch` are already numeric columns."""
    recipe = recipe_columns(rows)
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=[*EXPORT_FIELDS, *(f"settings.{n}" for n in recipe)],
                            lineterminator="\n")
    writer.writeheader()
    for r in rows:
        d = r.to_dict()
        writer.writerow({**{k: ("" if d[k] is None else d[k]) for k in EXPORT_FIELDS},
                         **{f"settings.{n}": r.settings.get(n, "") for n in recipe}})
    return out.getvalue()


def to_json(rows: Sequence[RunRow]) -> str:
    """EXPORT_FIELDS per row and, when some settings differ between the rows, a "settings"
    object of those (`recipe_columns`), name -> text as a spec writes it."""
    recipe = recipe_columns(rows)

    def record(r: RunRow) -> dict[str, Any]:
        d = r.to_dict()
        out = {k: d[k] for k in EXPORT_FIELDS}
        if recipe:
            out["settings"] = {n: r.settings.get(n, "") for n in recipe}
        return out

    return json.dumps([record(r) for r in rows], indent=2)


def _pct(x: float | None) -> str:
    return "" if x is None else f"{x * 100:.1f}"


def to_markdown(rows: Sequence[RunRow]) -> str:
    """The table as markdown: the names, the recipe columns (`recipe_columns`), the results,
    with the terminal table's MACs and status (a failed or pruned run read as a finished one)."""
    runs = run_labels(rows) if names_repeat(rows) else None
    recipe = recipe_columns(rows)
    head = ("| spec | " + ("run | " if runs is not None else "")
            + "".join(f"{n} | " for n in recipe)
            + "params | MACs | epochs | best val acc % | final val acc % | train acc % | "
            "gap | overfitting | s/epoch | img/s | status |")
    lines = [head, "|" + "---|" * head.count(" | ") + "---|"]
    def cell(text: str) -> str:  # a `|` in a name would end the cell
        return text.replace("|", "\\|")

    for i, r in enumerate(rows):
        run = f" {cell(runs[i])} |" if runs is not None else ""
        run += "".join(f" {cell(r.settings.get(n, ''))} |" for n in recipe)
        params = "" if r.params is None else f"{r.params:,}"
        macs = "" if r.macs is None else f"{r.macs:,}"
        status = f"pruned at {r.pruned_at}" if r.status == "pruned" else r.status
        lines.append(
            f"| {cell(r.spec)} |{run} {params} | {macs} | {r.epochs} | "
            f"{_pct(r.best_val_accuracy)} | "
            f"{_pct(r.final_val_accuracy)} | {_pct(r.final_train_accuracy)} | "
            f"{'' if r.gap is None else f'{r.gap * 100:+.1f}'} | "
            f"{'yes' if r.overfitting else 'no'} | "
            f"{'' if r.seconds_per_epoch is None else f'{r.seconds_per_epoch:.1f}'} | "
            f"{'' if r.images_per_second is None else f'{r.images_per_second:,.0f}'} | "
            f"{cell(status)} |"
        )
    return "\n".join(lines) + "\n"


def _plotted(row: RunRow) -> bool:
    """Whether a row is a result to plot: a completed run with a final validation accuracy."""
    return row.status == "completed" and row.final_val_accuracy is not None


def curves_figure(run_dirs: Sequence[Path], rows: Sequence[RunRow]) -> Any:
    """The learning-curves Figure: validation (solid, circles) and training (dashed,
    triangles) accuracy and loss per epoch, one colour per run. A run that stopped early
    (failed, interrupted, still running) shows the epochs it has, its label says which; a
    pruned run is drawn in the pruned styles (dotted and faded: it stopped by design, not a
    result to read at its last epoch), and its legend entry says the epoch and the style.
    The drawing is `cnnspec.training.plots`'; this says what to draw."""
    from cnnspec.training import plots

    acc: list[plots.Series] = []
    loss: list[plots.Series] = []
    runs: list[tuple[str, Any]] = []
    colors = plots.run_colors(len(rows))
    for run_dir, row, name, color in zip(run_dirs, rows, display_names(rows), colors,
                                         strict=True):
        try:
            history = read_history(Path(run_dir))
        except (ValueError, OSError):  # damaged: `compare` names it; the plot leaves it out
            history = []
        if not history:
            continue
        epochs = tuple(h["epoch"] for h in history)
        pruned = row.status == "pruned"
        val_style, train_style = ("pruned", "pruned-training") if pruned \
            else ("validation", "training")
        for lines, key in ((acc, "accuracy"), (loss, "loss")):
            lines.append(plots.Series(epochs, tuple(h.get("val_" + key) for h in history),
                                      val_style, color))
            lines.append(plots.Series(epochs, tuple(h.get(key) for h in history),
                                      train_style, color))
        if pruned:
            runs.append(plots.RunKey(f"{name} (pruned at epoch {row.pruned_at or len(history)})",
                                     color, "pruned"))
        else:
            runs.append((name if row.status == "completed" else f"{name} ({row.status})", color))
    note = plots.STYLE_NOTE + ("\n" + plots.PRUNED_NOTE if any(
        isinstance(r, plots.RunKey) and r.style == "pruned" for r in runs) else "")
    return plots.curves_figure(
        (plots.Panel(f"accuracy per epoch\n{note}", "accuracy", tuple(acc)),
         plots.Panel(f"loss per epoch\n{note}", "loss", tuple(loss))),
        runs=runs)


def plot_curves(run_dirs: Sequence[Path], rows: Sequence[RunRow], path: Path) -> Path:
    """Write curves_figure as a PNG."""
    from cnnspec.training import plots

    plots.save_png(curves_figure(run_dirs, rows), path)
    return path


def accuracy_params_figure(rows: Sequence[RunRow]) -> Any:
    """Final validation accuracy against parameter count: one labelled point per completed run
    (x log scale), in the run's colour from the curves plot; overfitting runs ringed in black.
    Runs without a result (failed, running, interrupted, pruned) are not points: a note names
    them."""
    from cnnspec.training import plots

    points, left_out = [], []
    colors = plots.run_colors(len(rows))
    for row, name, color in zip(rows, display_names(rows), colors, strict=True):
        if _plotted(row) and row.params:
            acc = (row.final_val_accuracy or 0.0) * 100
            points.append(plots.Point(row.params, acc, f"{name}  {acc:.1f}%", color,
                                      row.overfitting))
        else:
            left_out.append(f"{name} ({row.status})" if not _plotted(row)
                            else f"{name} (no parameter count)")
    return plots.scatter_figure(
        points, xlabel="parameters (log scale)", ylabel="final validation accuracy (%)",
        title="final validation accuracy vs parameters", ring_label="ringed: overfitting flag",
        note="not shown (no final result): " + ", ".join(left_out) if left_out else "")


def plot_accuracy_vs_params(rows: Sequence[RunRow], path: Path) -> Path:
    """Write accuracy_params_figure as a PNG."""
    from cnnspec.training import plots

    plots.save_png(accuracy_params_figure(rows), path)
    return path
