"""Experiments across specs: run + compare end to end, the overfitting rule, expand, diff."""

from __future__ import annotations

import csv
import io
import json
import struct

import pytest
from conftest import SPECS

import cnnspec
from cnnspec.experiments import compare
from cnnspec.language.checker import check
from cnnspec.language.diff import diff_reports
from cnnspec.language.format import format_spec
from cnnspec.language.sweep import expand, sweep_points
from cnnspec.training import records

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _png_size(path):
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC, f"{path} is not a PNG"
    width, height = struct.unpack(">II", data[16:24])
    return width, height, len(data)


# -- run + compare, end to end on the bundled sample ------------------------------------------


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    from conftest import run_cli

    out = tmp_path_factory.mktemp("runs")
    home = tmp_path_factory.mktemp("home")  # no Keras cache: the bundled sample is used
    result = run_cli(
        "run", str(SPECS / "exp2.cnn"), str(SPECS / "exp3.cnn"),
        "--epochs", "2", "--limit", "128", "--out", str(out), "--progress", "plain",
        env={"HOME": str(home), "CNNSPEC_DATA": ""},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return out, result


def test_run_trains_each_spec_and_shows_the_comparison(two_runs):
    out, result = two_runs
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["exp2", "exp3"]
    assert "[1/2] exp2" in result.stderr and "[2/2] exp3" in result.stderr
    table_rows = [ln for ln in result.stdout.splitlines() if ln.startswith("│ exp")]
    assert [r.split("│")[1].strip() for r in table_rows] == ["exp2", "exp3"]
    for name in ("compare_curves.png", "compare_accuracy_vs_params.png"):
        width, height, size = _png_size(out / name)
        assert width >= 500 and height >= 300 and size > 10_000


def test_compare_exports_equal_the_run_records(two_runs, cli):
    out, _ = two_runs
    as_json = json.loads(cli("compare", str(out), "--json", "--no-plots").stdout)
    as_csv = list(csv.DictReader(io.StringIO(cli("compare", str(out), "--csv",
                                                 "--no-plots").stdout)))
    assert [r["spec"] for r in as_json] == ["exp2", "exp3"] == [r["spec"] for r in as_csv]
    for row, crow in zip(as_json, as_csv, strict=True):
        run = out / row["spec"]
        history = json.loads((run / records.HISTORY_JSON).read_text())
        settings = json.loads((run / records.SETTINGS_FILE).read_text())
        assert row["epochs"] == len(history) == 2
        assert row["final_val_accuracy"] == history[-1]["val_accuracy"]
        assert row["final_train_accuracy"] == history[-1]["accuracy"]
        assert row["best_val_accuracy"] == max(h["val_accuracy"] for h in history)
        assert row["params"] == settings["model"]["params"] == check(
            cnnspec.load(SPECS / f"{row['spec']}.cnn")).params
        assert float(crow["final_val_accuracy"]) == row["final_val_accuracy"]
        assert int(crow["params"]) == row["params"]
        assert crow["overfitting"] == str(row["overfitting"])


def test_compare_sorts_and_renders_markdown(two_runs, cli):
    out, _ = two_runs
    rows = json.loads(cli("compare", str(out / "exp2"), str(out / "exp3"), "--json",
                          "--sort", "val_accuracy", "--no-plots").stdout)
    accs = [r["final_val_accuracy"] for r in rows]
    assert accs == sorted(accs, reverse=True)
    md = cli("compare", str(out), "--markdown", "--no-plots").stdout
    assert md.splitlines()[0].startswith("| spec | params |")
    assert len(md.splitlines()) == 4
    bad = cli("compare", str(out), "--sort", "nonsense", "--no-plots")
    assert bad.returncode == 2 and "cannot sort by" in bad.stderr


def test_compare_refuses_a_folder_without_runs(cli, tmp_path):
    result = cli("compare", str(tmp_path))
    assert result.returncode == 1
    assert "holds none" in result.stderr and "Traceback" not in result.stderr


# -- the overfitting rule on synthetic histories -----------------------------------------------


def _history(losses, val_losses, accs, val_accs):
    return [
        {"epoch": i + 1, "loss": lo, "val_loss": vl, "accuracy": a, "val_accuracy": va}
        for i, (lo, vl, a, va) in enumerate(zip(losses, val_losses, accs, val_accs, strict=True))
    ]


def test_overfitting_fires_on_rising_val_loss():
    h = _history([2.0, 1.6, 1.3, 1.0, 0.8], [1.9, 1.7, 1.8, 1.9, 2.1],
                 [.3, .4, .45, .5, .52], [.32, .4, .44, .46, .47])
    flag, reason = compare.overfitting(h)
    assert flag and "val loss rose 3 epochs" in reason


def test_overfitting_fires_on_a_large_gap():
    h = _history([1.0, 0.5], [1.1, 1.0], [.6, .9], [.58, .62])
    flag, reason = compare.overfitting(h)
    assert flag and "gap" in reason


def test_overfitting_silent_on_a_healthy_run():
    h = _history([2.0, 1.6, 1.3, 1.1, 1.0], [1.9, 1.6, 1.4, 1.3, 1.25],
                 [.3, .4, .5, .55, .58], [.31, .42, .5, .53, .55])
    assert compare.overfitting(h) == (False, "")


def test_overfitting_needs_the_train_loss_to_fall():
    # val loss rising while train loss also rises is divergence, not overfitting
    h = _history([1.0, 1.1, 1.2, 1.3], [1.0, 1.1, 1.2, 1.3], [.5] * 4, [.5] * 4)
    assert compare.overfitting(h)[0] is False


# -- expand ------------------------------------------------------------------------------------

SWEEP = """\
input 32x32x3
train lr={.01,.05} epochs=1
conv{16,32} relu bn? pool2 drop{.25,.5}
| dense64 relu
"""


def test_expand_counts_names_and_checks_every_variant():
    spec = cnnspec.parse(SWEEP, name="s")
    variants = expand(spec)
    assert len(variants) == 2 * 2 * 2 * 2
    names = [v.name for v in variants]
    assert len(set(names)) == len(names)
    assert names[0] == "s[lr=.01,conv=16,+bn,drop=.25]"
    assert "s[lr=.05,conv=32,-bn,drop=.5]" in names
    assert names == [v.name for v in expand(cnnspec.parse(SWEEP, name="s"))]  # stable
    for v in variants:
        again = cnnspec.parse(format_spec(v.spec))
        assert not again.has_sweep()
        check(again)
    picked = {v.name: v for v in variants}["s[lr=.05,conv=32,-bn,drop=.5]"]
    layers = picked.spec.layers()
    assert [type(x).__name__ for x in layers[:4]] == ["Conv", "Activation", "MaxPool", "Dropout"]
    assert layers[0].filters == 32 and layers[3].rate == 0.5
    assert dict(picked.choices)["lr"] == ".05"


def test_expand_keys_written_twice_get_their_line():
    spec = cnnspec.parse("conv8 drop{.1,.2}\nconv8 drop{.3,.4} | dense8\n")
    assert [p.key for p in sweep_points(spec)] == ["drop@1", "drop@2"]


def test_expand_sample_and_limit():
    spec = cnnspec.parse(SWEEP, name="s")
    sample = expand(spec, sample=5, seed=3)
    assert len(sample) == 5 and sample == expand(spec, sample=5, seed=3)
    with pytest.raises(cnnspec.SpecError, match="16 variants, over the limit of 8"):
        expand(spec, max_variants=8)


def test_sweep_with_one_bad_variant_is_refused_before_training(cli, tmp_path):
    bad = tmp_path / "bad.cnn"
    bad.write_text("conv8 pool{2,64} | dense8\n")
    out = tmp_path / "out"
    result = cli("sweep", str(bad), "--epochs", "1", "--limit", "32", "--out", str(out))
    assert result.returncode == 1
    assert "in variant bad[pool=64]" in result.stderr
    assert "bad.cnn:1:7" in result.stderr
    assert not out.exists()


def test_check_and_expand_commands_on_a_sweep(cli, tmp_path):
    f = tmp_path / "s.cnn"
    f.write_text(SWEEP)
    assert "16 variants, all check" in cli("check", str(f)).stdout
    listed = json.loads(cli("expand", str(f), "--json").stdout)
    assert len(listed) == 16 and listed[0]["name"] == "s[lr=.01,conv=16,+bn,drop=.25]"
    assert cli("expand", str(f), "--max-variants", "4").returncode == 1


# -- diff --------------------------------------------------------------------------------------


def test_diff_exp2_exp3_is_exactly_the_two_conv_dropouts():
    a, b = cnnspec.load(SPECS / "exp2.cnn"), cnnspec.load(SPECS / "exp3.cnn")
    d = diff_reports(check(a), check(b))
    assert [(c.op, c.b.text) for c in d.edits] == [("added", "drop.25"), ("added", "drop.25")]
    assert [c.b.output_shape for c in d.edits] == [(10, 10, 32), (3, 3, 64)]
    assert d.a.params == d.b.params


def test_diff_command_json(cli):
    result = cli("diff", str(SPECS / "exp5.cnn"), str(SPECS / "exp6.cnn"), "--json")
    data = json.loads(result.stdout)
    assert data["params"] == {"a": 357_514, "b": 874_890, "delta": 517_376}
    added = [c["b"]["text"] for c in data["changes"] if c["op"] == "added"]
    assert "conv128(valid)" in added and added.count("conv128") == 1


def test_diff_names_a_changed_input_or_classes_line(cli, tmp_path):
    """Every row changes when the input does; the diff says why, in the text and the JSON."""
    a, b = tmp_path / "a.cnn", tmp_path / "b.cnn"
    a.write_text("input 32x32x3\nconv8 relu gap\n")
    b.write_text("input 64x64x1\nclasses 100\nconv8 relu gap\n")
    result = cli("diff", str(a), str(b))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "input: 32×32×3 → 64×64×1" in lines and "classes: 10 → 100" in lines
    data = json.loads(cli("diff", str(a), str(b), "--json").stdout)
    assert data["header"] == [{"key": "input", "a": [32, 32, 3], "b": [64, 64, 1]},
                              {"key": "classes", "a": 10, "b": 100}]
    same = cli("diff", str(a), str(a), "--json")
    assert json.loads(same.stdout)["header"] == []
