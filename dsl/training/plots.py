"""Every PNG cnnspec draws: a run's learning curve and the two comparison plots.

Why one module: the drawing rules (styles, epoch ticks, legends, writing the file atomically)
live in one place, and callers only describe what to draw: a `Series` per line, a `Panel` per
axes, a `Point` per scatter point. The training layer's run records use it
(`write_learning_curve`), and so does the comparison of many runs (`cnnspec.experiments.compare`
turns its rows into series and points).

matplotlib's object API only (a `Figure` with its own `FigureCanvasAgg`), never `pyplot`: no
global backend is switched, no figure is kept in a global registry, no window can open.
matplotlib is imported inside the functions, so `check` and `summary` never load it.
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from cnnspec.training import records

# How each kind of line is drawn; `Series.style` names one. The comparison's titles explain
# them with STYLE_NOTE.
STYLES: dict[str, dict[str, Any]] = {
    "validation": {"ls": "-", "marker": "o", "ms": 5, "lw": 1.8},
    "training": {"ls": "--", "marker": "^", "ms": 4, "lw": 1.2, "alpha": 0.75},
    # a run a pruned sweep stopped early: faded, dotted, crosses (it is shorter by design)
    "pruned": {"ls": ":", "marker": "x", "ms": 5, "lw": 1.6, "alpha": 0.45},
    "pruned-training": {"ls": ":", "marker": "x", "ms": 4, "lw": 1.0, "alpha": 0.3},
    # a panel's second quantity on its own y axis (a run's learning rate): grey and dashed,
    # without markers, so it reads as context behind the metrics rather than one of them
    "secondary": {"ls": "--", "lw": 1.3, "color": "0.45", "alpha": 0.9},
}
STYLE_NOTE = "validation: solid, circles · training: dashed, triangles"
PRUNED_NOTE = "pruned runs (stopped early): dotted, faded, crosses"
CURVE_DPI = 100  # a run's learning_curve.png
COMPARE_DPI = 110  # the comparison PNGs


@dataclass(frozen=True)
class Series:
    """One line: a value per epoch (None where there is none: a gap), drawn in a style of
    STYLES, in `color` (None: the axes' next colour), with `label` in the panel's legend
    (None: no legend entry)."""

    epochs: tuple[int, ...]
    values: tuple[float | None, ...]
    style: str = "validation"
    color: Any = None
    label: str | None = None

    def drawn(self) -> bool:
        """Whether the line has any point to draw."""
        return any(v is not None for v in self.values)


@dataclass(frozen=True)
class RunKey:
    """A run's entry in a figure's legend: its label and colour, with its line drawn in a
    style of STYLES (a plain (label, colour) pair is a solid line)."""

    label: str
    color: Any
    style: str = "validation"


@dataclass(frozen=True)
class Panel:
    """One axes of a curves figure: its title, y label and lines (x is always the epoch).

    `twin` is a line on a second y axis at the right, labelled `twin_label`: a quantity of
    another unit and scale (a run's learning rate beside its loss) that would squash the
    panel's own lines if it shared their axis."""

    title: str
    ylabel: str
    series: tuple[Series, ...]
    twin: Series | None = None
    twin_label: str = ""


@dataclass(frozen=True)
class Point:
    """One point of a scatter figure, labelled beside it; `ringed` draws a black ring."""

    x: float
    y: float
    label: str
    color: Any
    ringed: bool = False


def _figure(width: float, height: float, dpi: float = CURVE_DPI) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=dpi)
    FigureCanvasAgg(fig)
    return fig


def run_colors(n: int) -> list[tuple[float, float, float, float]]:
    """n different colours, one per run: tab10, tab20, then a colormap sampled evenly."""
    from matplotlib import colormaps

    if n <= 10:
        return [colormaps["tab10"](i) for i in range(n)]
    if n <= 20:
        return [colormaps["tab20"](i) for i in range(n)]
    cmap = colormaps["turbo"]
    return [cmap(0.05 + 0.9 * i / (n - 1)) for i in range(n)]


def _draw(ax: Any, series: Series) -> None:
    values = [math.nan if v is None else v for v in series.values]
    kwargs = dict(STYLES[series.style])
    if series.color is not None:
        kwargs["color"] = series.color
    ax.plot(list(series.epochs), values, label=series.label, **kwargs)


def _draw_twin(ax: Any, series: Series, label: str) -> Any:
    """The series on a second y axis of ax (sharing its epochs), labelled; returns that axes.
    Its scale starts at 0 so a rate's warm-up and decay are seen in proportion."""
    twin = ax.twinx()
    _draw(twin, series)
    twin.set_ylabel(label, color=STYLES[series.style].get("color"))
    twin.set_ylim(bottom=0)
    return twin


def _epoch_ticks(ax: Any, last_epoch: int) -> None:
    """Whole epochs only: every epoch a tick up to 20 (with room around a single one)."""
    from matplotlib.ticker import MaxNLocator

    if last_epoch <= 20:
        ax.set_xticks(range(1, last_epoch + 1))
        ax.set_xlim(0.5, last_epoch + 0.5)
    else:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def curves_figure(panels: Sequence[Panel], runs: Sequence[tuple[str, Any] | RunKey] = (),
                  title: str = "", size: tuple[float, float] = (13, 5),
                  dpi: float = COMPARE_DPI) -> Any:
    """Panels side by side, each a set of lines per epoch. `runs` ((label, colour) or a
    RunKey, whose line shows its style) makes one figure legend below the panels, as many
    columns as the longest label leaves room for; lines with labels get a legend inside their
    panel."""
    width, height = size
    fig = _figure(width, height, dpi)
    last_epoch = 1
    axes = [fig.add_subplot(1, len(panels), i + 1) for i in range(len(panels))]
    for ax, panel in zip(axes, panels, strict=True):
        for series in panel.series:
            if series.drawn():
                _draw(ax, series)
                last_epoch = max(last_epoch, *series.epochs)
        ax.set(title=panel.title, xlabel="epoch", ylabel=panel.ylabel)
        ax.grid(alpha=0.3)
        if panel.twin is not None and panel.twin.drawn():
            twin = _draw_twin(ax, panel.twin, panel.twin_label)
            last_epoch = max(last_epoch, *panel.twin.epochs)
            # one legend for both axes, on the twin: it is drawn last, so no line covers it
            labelled = [line for a in (ax, twin) for line in a.get_lines()
                        if not line.get_label().startswith("_")]
            twin.legend(handles=labelled, loc="best")
        elif any(s.label and s.drawn() for s in panel.series):
            ax.legend(loc="best")
    for ax in axes:
        _epoch_ticks(ax, last_epoch)
    if title:
        fig.suptitle(title)
    if not runs:
        fig.tight_layout()
        return fig
    from matplotlib.lines import Line2D

    keys = [r if isinstance(r, RunKey) else RunKey(r[0], r[1], "") for r in runs]
    handles = [Line2D([], [], color=k.color, lw=2.5, label=k.label) if not k.style
               else Line2D([], [], color=k.color, label=k.label,
                           **{**STYLES[k.style], "lw": 2.5}) for k in keys]
    # as many legend columns as the longest name leaves room for (13 in at 110 dpi: 1350 px)
    longest = max(len(k.label) for k in keys)
    ncol = max(1, min(6, len(handles), int(width / 13 * 1350 / (longest * 6.5 + 60))))
    legend_rows = -(-len(handles) // ncol)
    fig.set_size_inches(width, height + 0.22 * legend_rows)
    fig.legend(handles=handles, loc="lower center", fontsize="small", frameon=False, ncol=ncol)
    fig.tight_layout(rect=(0, min(0.5, (0.25 * legend_rows + 0.1)
                                  / (height + 0.22 * legend_rows)), 1, 1))
    return fig


def scatter_figure(points: Sequence[Point], *, xlabel: str, ylabel: str, title: str,
                   ring_label: str = "", note: str = "", log_x: bool = True) -> Any:
    """Labelled points (x log scale by default, room for the labels either side); points at
    the same x put their labels on alternate sides. `ring_label` explains the rings in a legend
    when any point is ringed; `note` is a line of small text under the axes."""
    from matplotlib.lines import Line2D

    fig = _figure(9, 5.5, COMPARE_DPI)
    ax = fig.add_subplot(1, 1, 1)
    seen: dict[float, int] = {}
    for p in points:
        ax.scatter([p.x], [p.y], s=70, color=[p.color], zorder=3,
                   edgecolors="black" if p.ringed else "none", linewidths=2.2)
        k = seen.get(p.x, 0)
        seen[p.x] = k + 1
        ax.annotate(p.label, (p.x, p.y), xytext=(8 if k % 2 == 0 else -8, 0),
                    textcoords="offset points", ha="left" if k % 2 == 0 else "right",
                    va="center", fontsize="small")
    if log_x:
        ax.set_xscale("log")
        if points:
            ax.set_xlim(min(p.x for p in points) / 3, max(p.x for p in points) * 3)
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    ax.grid(alpha=0.3, which="both")
    if ring_label and any(p.ringed for p in points):
        ax.legend(handles=[Line2D([], [], ls="", marker="o", ms=8, color="0.75",
                                  markeredgecolor="black", markeredgewidth=2.2,
                                  label=ring_label)],
                  loc="best", fontsize="small")
    if note:
        fig.text(0.01, 0.01, note, fontsize="small", color="0.35", wrap=True)
    fig.tight_layout(rect=(0, 0.05 if note else 0, 1, 1))
    return fig


def save_png(fig: Any, path: str | os.PathLike[str], dpi: float | None = None) -> None:
    """Write the figure as a PNG atomically: a reader never sees half a file, and a failed
    write leaves the previous plot in place."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi or fig.dpi)
    records.atomic_write_bytes(path, buffer.getvalue())


LR_LABEL = "learning rate"


def learning_rates(rows: Sequence[Mapping[str, Any]]) -> tuple[float | None, ...] | None:
    """Each row's learning rate ("lr": the epoch's last step's), when it is worth drawing:
    None when no row records one (runs from before "lr" was recorded) or every recorded one
    is the same (a constant rate: a flat line would say nothing the settings do not)."""
    lrs = tuple(r.get("lr") for r in rows)
    return lrs if len({v for v in lrs if v is not None}) > 1 else None


def learning_curve_panels(rows: Sequence[Mapping[str, Any]]) -> tuple[Panel, Panel]:
    """A run's history as two panels, loss and accuracy, training and validation in each.

    A learning rate that changes from epoch to epoch (a schedule) is drawn on a second axis of
    the loss panel: the loss is what a rate change moves first, so the two read together."""
    epochs = tuple(r["epoch"] for r in rows)

    def panel(key: str) -> Panel:
        return Panel("", key, (
            Series(epochs, tuple(r.get(key) for r in rows), "training", label="train"),
            Series(epochs, tuple(r.get("val_" + key) for r in rows), "validation",
                   label="validation"),
        ))

    loss = panel("loss")
    lrs = learning_rates(rows)
    if lrs is not None:
        loss = replace(loss, twin=Series(epochs, lrs, "secondary", label=LR_LABEL),
                       twin_label=LR_LABEL)
    return loss, panel("accuracy")


def learning_curve_figure(rows: Sequence[Mapping[str, Any]], title: str = "") -> Any:
    """The Figure of a run's learning_curve.png (`write_learning_curve`), for callers and
    tests that look at what is drawn rather than at pixels."""
    return curves_figure(learning_curve_panels(rows), title=title, size=(9, 3.6),
                         dpi=CURVE_DPI)


def write_learning_curve(
    path: str | os.PathLike[str], rows: Sequence[Mapping[str, Any]], title: str = ""
) -> None:
    """A run's learning_curve.png: loss and accuracy per epoch, training and validation, and
    the learning rate when it changes."""
    save_png(learning_curve_figure(rows, title), path)
