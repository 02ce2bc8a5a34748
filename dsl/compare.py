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

from cnnspec import records

# A run overfits when its final train accuracy exceeds its final validation accuracy by more
# than this (10 points), or when validation loss rose for RISING_EPOCHS epochs in a row while
# training loss fell over the same epochs.
GAP_THRESHOLD = 0.10
RISING_EPOCHS = 3


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
    if acc is not None and val_acc is not None and acc - val_acc > GAP_THRESHOLD:
        return True, f"train−val accuracy gap {acc - val_acc:.3f} > {GAP_THRESHOLD:.2f}"
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


def load_row(run_dir: Path) -> RunRow:
    """Read one run folder into a row; tolerates runs that are still going or failed."""
    settings = records.read_json(run_dir / records.SETTINGS_FILE)
    history = records.read_history(run_dir) if (run_dir / records.HISTORY_JSON).exists() else []
    status = {}
    if (run_dir / records.STATUS_FILE).exists():
        status = records.read_json(run_dir / records.STATUS_FILE)
    metrics = {}
    if (run_dir / records.METRICS_FILE).exists():
        metrics = records.read_json(run_dir / records.METRICS_FILE)
    model = settings.get("model", {})
    train_settings = settings.get("settings", {})
    val = [(h["val_accuracy"], h["epoch"]) for h in history if h.get("val_accuracy") is not None]
    best = max(val, key=lambda t: t[0]) if val else (None, None)
    last = history[-1] if history else {}
    flag, reason = overfitting(history)
    acc, val_acc = last.get("accuracy"), last.get("val_accuracy")
    return RunRow(
        run=run_dir.name,
        path=str(run_dir),
        spec=settings.get("spec", {}).get("name", run_dir.name),
        status=status.get("status", "unknown"),
        params=model.get("params"),
        macs=model.get("macs_per_image"),
        epochs=len(history),
        epochs_planned=train_settings.get("epochs"),
        best_val_accuracy=best[0],
        best_epoch=best[1],
        final_val_accuracy=val_acc,
        final_train_accuracy=acc,
        final_val_loss=last.get("val_loss"),
        test_accuracy=metrics.get("test_accuracy"),
        gap=None if acc is None or val_acc is None else acc - val_acc,
        overfitting=flag,
        overfitting_reason=reason,
        seconds_per_epoch=_mean([h["seconds"] for h in history if h.get("seconds")]),
        images_per_second=_mean(
            [h["images_per_second"] for h in history if h.get("images_per_second")]),
        lr=train_settings.get("lr"),
        batch=train_settings.get("batch"),
    )


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
    for i, r in enumerate(rows):
        run = f" {runs[i]} |" if runs is not None else ""
        lines.append(
            f"| {r.spec} |{run} {r.params or 0:,} | {r.epochs} | {_pct(r.best_val_accuracy)} | "
            f"{_pct(r.final_val_accuracy)} | {_pct(r.final_train_accuracy)} | "
            f"{'' if r.gap is None else f'{r.gap * 100:+.1f}'} | "
            f"{'yes' if r.overfitting else 'no'} | "
            f"{'' if r.seconds_per_epoch is None else f'{r.seconds_per_epoch:.1f}'} | "
            f"{'' if r.images_per_second is None else f'{r.images_per_second:,.0f}'} |"
        )
    return "\n".join(lines) + "\n"


def plot_curves(run_dirs: Sequence[Path], rows: Sequence[RunRow], path: Path) -> Path:
    """Validation accuracy and loss per epoch for every run; training curves dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_acc, ax_loss) = plt.subplots(1, 2, figsize=(13, 5))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (run_dir, row) in enumerate(zip(run_dirs, rows, strict=True)):
        history = records.read_history(run_dir) if (run_dir / records.HISTORY_JSON).exists() \
            else []
        if not history:
            continue
        color = colors[i % len(colors)]
        epochs = [h["epoch"] for h in history]
        label = row.spec
        for ax, train_key, val_key in ((ax_acc, "accuracy", "val_accuracy"),
                                       (ax_loss, "loss", "val_loss")):
            vals = [h.get(val_key) for h in history]
            if any(v is not None for v in vals):
                ax.plot(epochs, vals, color=color, marker="o", ms=3, label=f"{label} val")
            ax.plot(epochs, [h.get(train_key) for h in history], color=color, ls="--",
                    alpha=0.7, label=f"{label} train")
    ax_acc.set(title="accuracy per epoch (val solid, train dashed)", xlabel="epoch",
               ylabel="accuracy")
    ax_loss.set(title="loss per epoch (val solid, train dashed)", xlabel="epoch", ylabel="loss")
    from matplotlib.ticker import MaxNLocator

    for ax in (ax_acc, ax_loss):
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    handles, labels = ax_acc.get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(6, max(1, len(labels))),
               fontsize="small", frameon=False)
    fig.tight_layout(rect=(0, 0.08 + 0.03 * (len(labels) // 6), 1, 1))
    return _save(fig, plt, path)


def plot_accuracy_vs_params(rows: Sequence[RunRow], path: Path) -> Path:
    """Final validation accuracy per run as bars, ordered by parameter count."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ordered = sorted(rows, key=lambda r: (r.params or 0, r.spec))
    fig, ax = plt.subplots(figsize=(max(6, 1.1 * len(ordered) + 2), 4.8))
    heights = [r.final_val_accuracy or 0.0 for r in ordered]
    bars = ax.bar(range(len(ordered)), heights,
                  color=["tab:red" if r.overfitting else "tab:blue" for r in ordered])
    for bar, r in zip(bars, ordered, strict=True):
        ax.annotate(f"{(r.final_val_accuracy or 0) * 100:.1f}%",
                    (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                    ha="center", va="bottom", fontsize="small")
    ax.set_xticks(range(len(ordered)),
                  [f"{r.spec}\n{(r.params or 0) / 1e6:.2f}M params" for r in ordered],
                  fontsize="small", rotation=30 if len(ordered) > 6 else 0)
    ax.set(ylabel="final val accuracy",
           title="final validation accuracy vs parameters (red: overfitting flag)")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return _save(fig, plt, path)


def _save(fig: Any, plt: Any, path: Path) -> Path:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    records.atomic_write_bytes(path, buffer.getvalue())
    return path
