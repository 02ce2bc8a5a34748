"""The two comparison plots, checked through their matplotlib objects.

compare_curves.png: one colour per run (also with more than 10 runs), markers on every point,
integer epoch ticks (a 1-epoch run used to get ticks at 0.945 … 1.050 and invisible training
curves). compare_accuracy_vs_params.png: really accuracy against parameters (x = params, log
scale; y = final validation accuracy in %), one labelled point per completed run; a failed run
is not drawn (it used to be a 0 % bar). Run folders are written by hand here: no training.
All of them, and a run's learning_curve.png, are drawn by one module (cnnspec.training.plots)
with matplotlib's object API: no pyplot, and no matplotlib at all for check and summary.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
from conftest import ROOT, SPECS, run_cli  # noqa: E402
from matplotlib.colors import to_rgba  # noqa: E402

from cnnspec.experiments import compare  # noqa: E402
from cnnspec.training import plots, records


def _history(epochs: int, acc0: float) -> list[dict]:
    return [{"epoch": e, "loss": 2.0 - 0.1 * e, "accuracy": acc0 + 0.02 * e,
             "val_loss": 2.1 - 0.05 * e, "val_accuracy": acc0 + 0.01 * e,
             "seconds": 1.0, "images_per_second": 64.0} for e in range(1, epochs + 1)]


def _run(root, folder, spec, params, epochs, status="completed", acc0=0.1):
    run = root / folder
    run.mkdir(parents=True)
    records.write_json(run / records.SETTINGS_FILE, {
        "spec": {"name": spec}, "model": {"params": params, "macs_per_image": 1000},
        "settings": {"epochs": epochs, "lr": 0.01, "batch": 32}})
    if epochs:
        records.write_json(run / records.HISTORY_JSON, _history(epochs, acc0))
    records.write_json(run / records.STATUS_FILE, {"status": status})
    return run


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _rgba(line):
    return to_rgba(line.get_color())


def test_twelve_runs_get_twelve_colours_and_markers(tmp_path):
    dirs = [_run(tmp_path, f"r{i}", f"s{i}", 1000 * (i + 1), 3, acc0=0.01 * i)
            for i in range(12)]
    rows = [compare.load_row(d) for d in dirs]
    fig = compare.curves_figure(dirs, rows)
    ax_acc, ax_loss = fig.axes
    for ax in (ax_acc, ax_loss):
        assert len(ax.lines) == 24  # validation and training per run
        val = [ln for ln in ax.lines if ln.get_linestyle() == "-"]
        train = [ln for ln in ax.lines if ln.get_linestyle() == "--"]
        assert len(val) == len(train) == 12
        assert len({_rgba(ln) for ln in val}) == 12  # no two runs share a colour
        assert [_rgba(ln) for ln in val] == [_rgba(ln) for ln in train]
        assert all(ln.get_marker() not in (None, "None", "", " ") for ln in ax.lines)
        assert [list(ln.get_xdata()) for ln in val] == [[1, 2, 3]] * 12
    legend = fig.legends[0]
    labels = [t.get_text() for t in legend.get_texts()]
    assert labels == [f"s{i}" for i in range(12)]


def test_run_colours_are_distinct_for_any_count():
    for n in (1, 2, 10, 11, 20, 21, 40):
        colours = plots.run_colors(n)
        assert len(colours) == n == len(set(colours))


def test_a_one_epoch_run_has_integer_ticks_and_visible_points(tmp_path):
    dirs = [_run(tmp_path, "one", "one", 5000, 1)]
    rows = [compare.load_row(d) for d in dirs]
    fig = compare.curves_figure(dirs, rows)
    for ax in fig.axes:
        assert list(ax.get_xticks()) == [1]
        lo, hi = ax.get_xlim()
        assert lo < 1 < hi and hi - lo >= 1
        for line in ax.lines:
            assert line.get_marker() in ("o", "^") and line.get_markersize() >= 4
            assert list(line.get_xdata()) == [1]


def test_ticks_are_whole_epochs_for_longer_runs(tmp_path):
    dirs = [_run(tmp_path, "long", "long", 5000, 37)]
    fig = compare.curves_figure(dirs, [compare.load_row(d) for d in dirs])
    fig.canvas.draw()
    for ax in fig.axes:
        ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
        assert ticks and all(float(t).is_integer() for t in ticks)


def test_accuracy_vs_params_is_a_scatter_without_failed_runs(tmp_path):
    dirs = [
        _run(tmp_path, "small", "small", 1_000, 2, acc0=0.20),      # final val 0.22
        _run(tmp_path, "big", "big", 1_000_000, 2, acc0=0.30),      # final val 0.32
        _run(tmp_path, "broken", "broken", 50_000, 1, status="failed"),
        _run(tmp_path, "never", "never", 70_000, 0, status="failed"),
        _run(tmp_path, "going", "going", 80_000, 1, status="running"),
    ]
    rows = [compare.load_row(d) for d in dirs]
    fig = compare.accuracy_params_figure(rows)
    (ax,) = fig.axes
    assert ax.get_xscale() == "log"
    assert not ax.patches  # no bars
    points = [tuple(p) for coll in ax.collections for p in coll.get_offsets()]
    assert sorted(points) == [(1_000, pytest.approx(22.0)), (1_000_000, pytest.approx(32.0))]
    labels = sorted(t.get_text() for t in ax.texts)
    assert labels == ["big  32.0%", "small  22.0%"]
    note = " ".join(t.get_text() for t in fig.texts)
    assert "broken (failed)" in note and "never (failed)" in note and "going (running)" in note
    # the points have the colours of the same runs in the curves plot
    curves = compare.curves_figure(dirs, rows)
    val_colours = [_rgba(ln) for ln in curves.axes[0].lines if ln.get_linestyle() == "-"]
    scatter_colours = [to_rgba(c.get_facecolor()[0]) for c in ax.collections]
    assert scatter_colours == val_colours[:2]


def test_repeated_spec_names_are_told_apart_in_plots(tmp_path):
    dirs = [_run(tmp_path / "a", "exp7", "exp7", 4_000_000, 2),
            _run(tmp_path / "b", "exp7", "exp7", 4_000_000, 2, acc0=0.2)]
    rows = [compare.load_row(d) for d in dirs]
    legend = compare.curves_figure(dirs, rows).legends[0]
    assert [t.get_text() for t in legend.get_texts()][:2] == ["exp7 (a/exp7)", "exp7 (b/exp7)"]
    texts = sorted(t.get_text() for t in compare.accuracy_params_figure(rows).axes[0].texts)
    assert texts == ["exp7 (a/exp7)  12.0%", "exp7 (b/exp7)  22.0%"]


def test_plot_files_are_written(tmp_path):
    dirs = [_run(tmp_path, "r1", "r1", 1000, 2), _run(tmp_path, "r2", "r2", 2000, 2)]
    rows = [compare.load_row(d) for d in dirs]
    for path in (compare.plot_curves(dirs, rows, tmp_path / "c.png"),
                 compare.plot_accuracy_vs_params(rows, tmp_path / "a.png")):
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_markdown_keeps_names_in_their_cells_and_tells_repeats_apart(tmp_path):
    dirs = [_run(tmp_path / "a", "exp7", "exp7", 4_000_000, 2),
            _run(tmp_path / "b", "exp7", "exp7", 4_000_000, 2),
            _run(tmp_path, "odd", "x|y", 10, 0, status="failed")]
    rows = [compare.load_row(d) for d in dirs]
    rows[2] = compare.RunRow(**{**rows[2].to_dict(), "params": None})
    lines = compare.to_markdown(rows).splitlines()
    assert lines[0].startswith("| spec | run | params |")
    cells = [ln.replace("\\|", "¦").split("|")[1:3] for ln in lines[2:]]
    assert [[c.strip() for c in pair] for pair in cells] == [
        ["exp7", "a/exp7"], ["exp7", "b/exp7"], ["x¦y", "odd"]]
    assert all(ln.replace("\\|", "").count("|") == lines[0].count("|") for ln in lines)
    # a failed run reads as one (no status column made it look finished); MACs as on screen
    assert lines[0].endswith("| img/s | status |") and "| params | MACs |" in lines[0]
    assert [ln.rstrip(" |").rpartition("| ")[2] for ln in lines[2:]] == [
        "completed", "completed", "failed"]


def test_the_learning_curve_draws_training_and_validation_per_panel(tmp_path):
    rows = _history(3, 0.1)
    rows[1] = {**rows[1], "val_loss": None, "val_accuracy": None}  # an epoch without validation
    fig = plots.curves_figure(plots.learning_curve_panels(rows), title="t", size=(9, 3.6))
    ax_loss, ax_acc = fig.axes
    for ax, key in ((ax_loss, "loss"), (ax_acc, "accuracy")):
        assert ax.get_ylabel() == key
        train, val = ax.lines
        assert (train.get_linestyle(), val.get_linestyle()) == ("--", "-")
        assert list(train.get_ydata()) == [r[key] for r in rows]
        y = list(val.get_ydata())
        assert y[0] == rows[0]["val_" + key] and y[2] == rows[2]["val_" + key]
        assert y[1] != y[1]  # NaN: a gap in the line, not a point at zero
        assert [t.get_text() for t in ax.get_legend().get_texts()] == ["train", "validation"]
    plots.write_learning_curve(tmp_path / "lc.png", rows, title="t")
    assert (tmp_path / "lc.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plots_use_no_pyplot_and_check_loads_no_matplotlib(tmp_path):
    """In a fresh interpreter: drawing every PNG never imports pyplot (no global figure
    registry, no backend switch), and check/summary never import matplotlib at all."""
    run = _run(tmp_path, "r1", "r1", 1000, 2)
    code = textwrap.dedent(f"""
        import contextlib, io, sys
        from pathlib import Path
        from cnnspec.cli.main import main
        with contextlib.redirect_stdout(io.StringIO()):
            assert main(["check", {str(SPECS / "exp7.cnn")!r}]) == 0
            assert main(["summary", {str(SPECS / "exp7.cnn")!r}]) == 0
        print("front", any(m.startswith("matplotlib") for m in sys.modules))
        from cnnspec.experiments import compare
        from cnnspec.training import plots, records
        run = Path({str(run)!r})
        rows = [compare.load_row(run)]
        compare.plot_curves([run], rows, run / "c.png")
        compare.plot_accuracy_vs_params(rows, run / "a.png")
        plots.write_learning_curve(run / "l.png", records.read_history(run))
        print("drawn", "matplotlib" in sys.modules, "matplotlib.pyplot" in sys.modules)
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            cwd=ROOT, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["front", "False", "drawn", "True", "False"]


def test_a_pruned_run_is_drawn_shorter_dotted_and_faded_with_its_own_legend_entry(tmp_path):
    done = _run(tmp_path, "done", "a", 1000, 4)
    pruned = _run(tmp_path, "cut", "b", 1000, 2, status="pruned", acc0=0.05)
    rows = [compare.load_row(d) for d in (done, pruned)]
    fig = compare.curves_figure([done, pruned], rows)
    colors = plots.run_colors(2)
    for ax in fig.axes:
        lines = ax.get_lines()
        # the completed run: solid validation, dashed training, 4 epochs
        assert sorted(ln.get_linestyle() for ln in lines if len(ln.get_xdata()) == 4) == [
            "-", "--"]
        # the pruned run: both of its lines dotted, 2 epochs, faded, in its colour
        short = [ln for ln in lines if len(ln.get_xdata()) == 2]
        assert len(short) == 2
        assert all(line.get_linestyle() == ":" for line in short)
        assert all((line.get_alpha() or 1.0) < 1.0 for line in short)
        assert all(_rgba(line)[:3] == colors[1][:3] for line in short)
        assert "pruned runs (stopped early): dotted" in ax.get_title()
    legend = fig.legends[0]
    labels = [t.get_text() for t in legend.get_texts()]
    assert labels == ["a", "b (pruned at epoch 2)"]
    handles = legend.legend_handles
    assert handles[0].get_linestyle() == "-" and handles[1].get_linestyle() == ":"


def test_no_pruned_note_without_a_pruned_run(tmp_path):
    dirs = [_run(tmp_path, "done", "a", 1000, 2), _run(tmp_path, "bad", "b", 1000, 1, "failed")]
    fig = compare.curves_figure(dirs, [compare.load_row(d) for d in dirs])
    assert all("pruned" not in ax.get_title() for ax in fig.axes)
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["a", "b (failed)"]


@pytest.mark.parametrize(("sort", "column"), [
    ("images_per_second", "img/s"), ("params", "params"), ("macs", "MACs"),
    ("seconds_per_epoch", "s/epoch"), ("best", "best val"), ("epochs", "epochs"),
])
def test_a_narrow_table_keeps_the_column_it_is_sorted_by(tmp_path, sort, column):
    """At 60 columns `compare --sort images_per_second` hid img/s (a narrow table drops
    the speed columns first): the rows came out in an order no column explained."""
    from cnnspec.cli.experiments import _compare_table

    runs = tmp_path / "runs"
    rows = [compare.load_row(_run(runs, f"r{i}", f"r{i}", 1000 * (i + 1), 2)) for i in range(3)]
    _, hidden = _compare_table(rows, 40)
    assert column in hidden  # what the test is about: this width drops it unless sorted by it
    _, hidden = _compare_table(rows, 40, sort)
    assert column not in hidden and hidden


@pytest.mark.parametrize("key", ["val_loss", "final_val_loss", "test_accuracy", "lr", "batch"])
def test_every_field_compare_sorts_by_is_exported(tmp_path, key):
    """`--sort val_loss` ordered the rows by a field neither --json nor --csv carried."""
    import csv
    import io
    import json

    rows = [compare.load_row(_run(tmp_path, f"r{i}", f"r{i}", 1000, 2)) for i in range(2)]
    field = compare.SORT_ALIASES.get(key, key)
    assert field in json.loads(compare.to_json(rows))[0]
    assert field in next(csv.DictReader(io.StringIO(compare.to_csv(rows))))


def _with_data(run, test_images, classes, fingerprint):
    settings = records.read_json(run / records.SETTINGS_FILE)
    settings["data"] = {"test_images": test_images, "fingerprint": fingerprint,
                        "label_names": [f"c{i}" for i in range(classes)]}
    records.write_json(run / records.SETTINGS_FILE, settings)
    return run


def test_runs_scored_on_different_test_sets_are_told_apart(tmp_path):
    """A 3-class run's accuracy beside 10-class runs', or one scored on 500 test images
    beside one on 10,000, was one ranking without a word; --json had nothing to tell them
    apart by."""
    import json

    runs = tmp_path / "runs"
    _with_data(_run(runs, "a", "a", 1000, 2), 500, 10, "f1")
    _with_data(_run(runs, "b", "b", 1000, 2), 500, 10, "f2")  # --limit: other training data
    same = run_cli("compare", str(runs), "--no-plots")
    assert same.returncode == 0 and "note:" not in same.stdout  # same test set: comparable
    _with_data(_run(runs, "c", "c", 1000, 2), 10_000, 3, "f3")
    other = run_cli("compare", str(runs), "--no-plots", env={"COLUMNS": "300"})
    assert other.returncode == 0
    assert ("note: these runs were scored on 2 different test sets, so their accuracies do "
            "not compare across them: a, b (500 test images, 10 classes); c (10,000 test "
            "images, 3 classes)") in other.stdout
    exported = {r["spec"]: r for r in json.loads(run_cli("compare", str(runs), "--json",
                                                         "--no-plots").stdout)}
    assert (exported["c"]["test_images"], exported["c"]["classes"]) == (10_000, 3)
    assert exported["b"]["data_fingerprint"] == "f2"
