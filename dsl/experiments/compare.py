"""Compare finished runs: one row per run, an overfitting flag, exports and two plots.

The notebook compared its seven runs by scrolling and writing prose ("here we can observe
overfitting"); this module turns the run folders into numbers that say the same thing, with
the rule for "overfitting" written down (see `overfitting`).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

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

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


SORT_KEYS = tuple(RunRow.__dataclass_fields__)
# Short names people type (`--sort val_accuracy`) for the row fields they mean.
SORT_ALIASES = {
    "val_accuracy": "final_val_accuracy",
    "accuracy": "final_train_accuracy",
    "train_accuracy": "final_train_accuracy",
    "val_loss": "final_val_loss",
    "best": "best_val_accuracy",
}


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


def find_runs(paths: Sequence[str | Path]) -> list[Path]:
    """Run folders named directly, or found one level (or two, for sweeps) below a parent."""
    found: list[Path] = []
    for p in map(Path, paths):
        if (p / records.SETTINGS_FILE).is_file():
            found.append(p)
            continue
        if not p.is_dir():
            raise FileNotFoundError(f"{p}: no such run folder")
        below = sorted(q.parent for q in p.glob("*/" + records.SETTINGS_FILE))
        below += sorted(q.parent for q in p.glob("*/*/" + records.SETTINGS_FILE))
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
    return history


def load_row(run_dir: Path) -> RunRow:
    """Read one run folder into a row; tolerates runs that are still going or failed.

    A record that is damaged (not JSON, or not the shape cnnspec writes) raises
    records.RunFolderError (a ValueError) naming the file."""
    run_dir = Path(run_dir)
    settings = _read_record(run_dir / records.SETTINGS_FILE, dict, required=True)
    history = read_history(run_dir)
    status = _read_record(run_dir / records.STATUS_FILE, dict)
    metrics = _read_record(run_dir / records.METRICS_FILE, dict)
    for key, kind in (("model", dict), ("settings", dict), ("spec", dict)):
        if not isinstance(settings.get(key, {}), kind):
            raise _damaged(run_dir / records.SETTINGS_FILE, f"{key} is not an object")
    model = settings.get("model", {})
    train_settings = settings.get("settings", {})
    return build_row(
        run=run_dir.name,
        path=str(run_dir),
        spec=_str(settings.get("spec", {}).get("name")) or run_dir.name,
        status=_str(status.get("status")) or "unknown",
        history=history,
        test_accuracy=_number(metrics.get("test_accuracy")),
        params=_number(model.get("params"), int),
        macs=_number(model.get("macs_per_image"), int),
        epochs_planned=_number(train_settings.get("epochs"), int),
        lr=_number(train_settings.get("lr")),
        batch=_number(train_settings.get("batch"), int),
    )


def build_row(
    *, run: str, path: str, spec: str, status: str, history: Sequence[dict[str, Any]],
    test_accuracy: float | None, params: int | None, macs: int | None,
    epochs_planned: int | None, lr: float | None, batch: int | None,
) -> RunRow:
    """The one builder of a comparison row: everything derived from the per-epoch history
    (best and final accuracies, gap, overfitting, speed) is computed here, for run folders
    (`load_row`) and for studies (`cnnspec.experiments.study.study_view`) alike."""
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
    )


def _number(value: Any, kind: type | tuple[type, ...] = (int, float)) -> Any:
    """value if it is a number of that kind (not a bool), else None: a record's field that
    holds something else is shown as unknown rather than breaking the table."""
    return value if isinstance(value, kind) and not isinstance(value, bool) else None


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def sort_rows(rows: list[RunRow], key: str | None, descending: bool | None = None) -> list[RunRow]:
    """Rows sorted by a field; accuracies sort best first, everything else ascending."""
    if not key:
        return rows
    key = SORT_ALIASES.get(key, key)
    if key not in SORT_KEYS:
        raise KeyError(key)
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
    "final_val_accuracy", "final_train_accuracy", "gap", "overfitting", "overfitting_reason",
    "test_accuracy", "seconds_per_epoch", "images_per_second", "lr", "batch", "path",
)


def to_csv(rows: Sequence[RunRow]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=EXPORT_FIELDS, lineterminator="\n")
    writer.writeheader()
    for r in rows:
        d = r.to_dict()
        writer.writerow({k: ("" if d[k] is None else d[k]) for k in EXPORT_FIELDS})
    return out.getvalue()


def to_json(rows: Sequence[RunRow]) -> str:
    return json.dumps([{k: r.to_dict()[k] for k in EXPORT_FIELDS} for r in rows], indent=2)


def _pct(x: float | None) -> str:
    return "" if x is None else f"{x * 100:.1f}"


def to_markdown(rows: Sequence[RunRow]) -> str:
    runs = run_labels(rows) if names_repeat(rows) else None
    head = ("| spec | " + ("run | " if runs is not None else "")
            + "params | epochs | best val acc % | final val acc % | train acc % | "
            "gap | overfitting | s/epoch | img/s |")
    lines = [head, "|" + "---|" * head.count(" | ") + "---|"]
    def cell(text: str) -> str:  # a `|` in a name would end the cell
        return text.replace("|", "\\|")

    for i, r in enumerate(rows):
        run = f" {cell(runs[i])} |" if runs is not None else ""
        params = "" if r.params is None else f"{r.params:,}"
        lines.append(
            f"| {cell(r.spec)} |{run} {params} | {r.epochs} | {_pct(r.best_val_accuracy)} | "
            f"{_pct(r.final_val_accuracy)} | {_pct(r.final_train_accuracy)} | "
            f"{'' if r.gap is None else f'{r.gap * 100:+.1f}'} | "
            f"{'yes' if r.overfitting else 'no'} | "
            f"{'' if r.seconds_per_epoch is None else f'{r.seconds_per_epoch:.1f}'} | "
            f"{'' if r.images_per_second is None else f'{r.images_per_second:,.0f}'} |"
        )
    return "\n".join(lines) + "\n"


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def run_colors(n: int) -> list[tuple[float, float, float, float]]:
    """n different colours, one per run: tab10, tab20, then a colormap sampled evenly."""
    from matplotlib import colormaps

    if n <= 10:
        return [colormaps["tab10"](i) for i in range(n)]
    if n <= 20:
        return [colormaps["tab20"](i) for i in range(n)]
    cmap = colormaps["turbo"]
    return [cmap(0.05 + 0.9 * i / (n - 1)) for i in range(n)]


def _plotted(row: RunRow) -> bool:
    """Whether a row is a result to plot: a completed run with a final validation accuracy."""
    return row.status == "completed" and row.final_val_accuracy is not None


def curves_figure(run_dirs: Sequence[Path], rows: Sequence[RunRow]) -> Any:
    """The learning-curves Figure: validation (solid, circles) and training (dashed,
    triangles) accuracy and loss per epoch, one colour per run. A run that stopped early
    (failed, interrupted, still running) shows the epochs it has, its label says which."""
    plt = _pyplot()
    from matplotlib.lines import Line2D

    fig, (ax_acc, ax_loss) = plt.subplots(1, 2, figsize=(13, 5))
    names = display_names(rows)
    colors = run_colors(len(rows))
    handles: list[Any] = []
    last_epoch = 1
    for run_dir, row, name, color in zip(run_dirs, rows, names, colors, strict=True):
        try:
            history = read_history(Path(run_dir))
        except (ValueError, OSError):  # damaged: `compare` names it; the plot leaves it out
            history = []
        if not history:
            continue
        epochs = [h["epoch"] for h in history]
        last_epoch = max(last_epoch, *epochs)
        for ax, train_key, val_key in ((ax_acc, "accuracy", "val_accuracy"),
                                       (ax_loss, "loss", "val_loss")):
            vals = [h.get(val_key) for h in history]
            if any(v is not None for v in vals):
                ax.plot(epochs, vals, color=color, marker="o", ms=5, lw=1.8)
            ax.plot(epochs, [h.get(train_key) for h in history], color=color, ls="--",
                    marker="^", ms=4, lw=1.2, alpha=0.75)
        label = name if row.status == "completed" else f"{name} ({row.status})"
        handles.append(Line2D([], [], color=color, lw=2.5, label=label))
    style = "validation: solid, circles · training: dashed, triangles"
    ax_acc.set(title=f"accuracy per epoch\n{style}", xlabel="epoch", ylabel="accuracy")
    ax_loss.set(title=f"loss per epoch\n{style}", xlabel="epoch", ylabel="loss")
    from matplotlib.ticker import MaxNLocator

    for ax in (ax_acc, ax_loss):
        ax.grid(alpha=0.3)
        if last_epoch <= 20:  # every epoch a tick, and room around a single one
            ax.set_xticks(range(1, last_epoch + 1))
            ax.set_xlim(0.5, last_epoch + 0.5)
        else:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    # as many legend columns as the longest name leaves room for (13 in at 110 dpi)
    longest = max((len(h.get_label()) for h in handles), default=1)
    ncol = max(1, min(6, len(handles), int(1350 / (longest * 6.5 + 60))))
    legend_rows = -(-len(handles) // ncol) if handles else 0
    fig.set_size_inches(13, 5 + 0.22 * legend_rows)
    if handles:
        fig.legend(handles=handles, loc="lower center", fontsize="small", frameon=False,
                   ncol=ncol)
    fig.tight_layout(rect=(0, min(0.5, (0.25 * legend_rows + 0.1) / (5 + 0.22 * legend_rows)),
                           1, 1))
    return fig


def plot_curves(run_dirs: Sequence[Path], rows: Sequence[RunRow], path: Path) -> Path:
    """Write curves_figure as a PNG."""
    return _save(curves_figure(run_dirs, rows), _pyplot(), path)


def accuracy_params_figure(rows: Sequence[RunRow]) -> Any:
    """Final validation accuracy against parameter count: one labelled point per completed run
    (x log scale), in the run's colour from the curves plot; overfitting runs ringed in black.
    Runs without a result (failed, running, interrupted) are not points: a note names them."""
    plt = _pyplot()
    from matplotlib.lines import Line2D

    names = display_names(rows)
    colors = run_colors(len(rows))
    fig, ax = plt.subplots(figsize=(9, 5.5))
    shown = [(r, n, c) for r, n, c in zip(rows, names, colors, strict=True)
             if _plotted(r) and r.params]
    left_out = [f"{n} ({r.status})" if not _plotted(r) else f"{n} (no parameter count)"
                for r, n in zip(rows, names, strict=True)
                if not (_plotted(r) and r.params)]
    seen: dict[int, int] = {}
    for row, name, color in shown:
        acc = (row.final_val_accuracy or 0.0) * 100
        ax.scatter([row.params], [acc], s=70, color=[color], zorder=3,
                   edgecolors="black" if row.overfitting else "none", linewidths=2.2)
        k = seen.get(row.params or 0, 0)  # runs of the same size: labels to alternate sides
        seen[row.params or 0] = k + 1
        ax.annotate(f"{name}  {acc:.1f}%", (row.params, acc),
                    xytext=(8 if k % 2 == 0 else -8, 0), textcoords="offset points",
                    ha="left" if k % 2 == 0 else "right", va="center", fontsize="small")
    ax.set_xscale("log")
    if shown:
        lo = min(r.params or 1 for r, _, _ in shown)
        hi = max(r.params or 1 for r, _, _ in shown)
        ax.set_xlim(lo / 3, hi * 3)  # room for the labels either side
    ax.set(xlabel="parameters (log scale)", ylabel="final validation accuracy (%)",
           title="final validation accuracy vs parameters")
    ax.grid(alpha=0.3, which="both")
    if any(r.overfitting for r, _, _ in shown):
        ax.legend(handles=[Line2D([], [], ls="", marker="o", ms=8, color="0.75",
                                  markeredgecolor="black", markeredgewidth=2.2,
                                  label="ringed: overfitting flag")],
                  loc="best", fontsize="small")
    if left_out:
        fig.text(0.01, 0.01, "not shown (no final result): " + ", ".join(left_out),
                 fontsize="small", color="0.35", wrap=True)
    fig.tight_layout(rect=(0, 0.05 if left_out else 0, 1, 1))
    return fig


def plot_accuracy_vs_params(rows: Sequence[RunRow], path: Path) -> Path:
    """Write accuracy_params_figure as a PNG."""
    return _save(accuracy_params_figure(rows), _pyplot(), path)


def _save(fig: Any, plt: Any, path: Path) -> Path:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    records.atomic_write_bytes(path, buffer.getvalue())
    return path
