"""The learning rate on a run's learning curve: a second y axis of the loss panel, drawn only
when the recorded rate changes (a schedule); runs with a constant rate, or recorded before
history rows had "lr", keep the plot as it was. Rows are written by hand: no training."""

from __future__ import annotations

import pytest

from cnnspec.training import plots


def _rows(lrs: list[float | None] | None) -> list[dict]:
    rows = [{"epoch": e, "loss": 2.0 - 0.1 * e, "accuracy": 0.1 + 0.02 * e,
             "val_loss": 2.1 - 0.05 * e, "val_accuracy": 0.1 + 0.01 * e,
             "seconds": 1.0, "images_per_second": 64.0} for e in range(1, 6)]
    if lrs is not None:
        rows = [{**r, "lr": lr} for r, lr in zip(rows, lrs, strict=True)]
    return rows


def _twins(fig) -> list:
    return [ax for ax in fig.axes if ax.get_ylabel() == plots.LR_LABEL]


def test_a_changing_rate_is_drawn_on_a_twin_axis_of_the_loss_panel():
    lrs = [0.08, 0.4, 0.3, 0.1, 0.004]
    fig = plots.learning_curve_figure(_rows(lrs), title="t")
    assert len(fig.axes) == 3  # loss, accuracy, and the loss panel's twin
    ax_loss, ax_acc = fig.axes[:2]
    (twin,) = _twins(fig)
    assert twin.get_shared_x_axes().joined(twin, ax_loss)
    assert not twin.get_shared_x_axes().joined(twin, ax_acc)
    (line,) = twin.lines
    assert list(line.get_ydata()) == lrs
    assert list(line.get_xdata()) == [1, 2, 3, 4, 5]
    assert line.get_linestyle() == "--" and line.get_marker() in ("None", "", None)
    assert twin.get_ylim()[0] == 0
    # one legend names the metrics and the rate; the metrics' lines are unchanged
    assert [t.get_text() for t in twin.get_legend().get_texts()] == [
        "train", "validation", plots.LR_LABEL]
    assert ax_loss.get_legend() is None
    assert [t.get_text() for t in ax_acc.get_legend().get_texts()] == ["train", "validation"]
    assert [len(ax.lines) for ax in (ax_loss, ax_acc)] == [2, 2]


def test_the_panels_carry_the_rate_as_the_loss_panels_twin():
    lrs = [0.1, 0.1, 0.05, 0.05, 0.01]
    loss, acc = plots.learning_curve_panels(_rows(lrs))
    assert loss.twin is not None and loss.twin.values == tuple(lrs)
    assert loss.twin_label == plots.LR_LABEL and acc.twin is None


def test_epochs_without_a_rate_are_gaps():
    lrs = [None, None, 0.2, 0.1, 0.05]  # resumed from a run recorded before "lr" existed
    (twin,) = _twins(plots.learning_curve_figure(_rows(lrs)))
    y = list(twin.lines[0].get_ydata())
    assert y[0] != y[0] and y[1] != y[1] and y[2:] == [0.2, 0.1, 0.05]


@pytest.mark.parametrize("lrs", [None, [None] * 5, [0.01] * 5, [None, None, 0.01, 0.01, 0.01]],
                         ids=["no-lr-key", "all-none", "constant", "constant-after-none"])
def test_no_rate_or_a_constant_rate_draws_the_plot_as_before(lrs):
    rows = _rows(lrs)
    assert plots.learning_rates(rows) is None
    fig = plots.learning_curve_figure(rows, title="t")
    assert len(fig.axes) == 2 and not _twins(fig)
    loss, acc = plots.learning_curve_panels(rows)
    assert loss.twin is None and acc.twin is None
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == [
        "train", "validation"]


def test_the_png_is_written_with_the_rate(tmp_path):
    path = tmp_path / "learning_curve.png"
    plots.write_learning_curve(path, _rows([0.1, 0.4, 0.3, 0.2, 0.1]), title="t")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
