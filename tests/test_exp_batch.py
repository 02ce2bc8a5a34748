"""`cnnspec run` / `sweep` / `compare` / `evaluate` end to end on the bundled sample.

- One spec that checks but fails in training does not end the batch: the others train and are
  compared, the failure is listed at the end (and a spec that did not check is named by its
  file), exit 1.
- Names holding rich markup (`[/]`, `[red]x[/red]`) in spec names, `--out`, label names from
  `batches.meta` and study names are printed verbatim, with no MarkupError.
- Sweep progress headers name the variant: `[1/2] s[drop=.25]`.
- Comparison tables show names whole, and tell apart rows whose spec names repeat.
"""

from __future__ import annotations

import argparse
import pickle
import re
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
from conftest import ROOT, run_cli

import cnnspec
from cnnspec.training import records

SAMPLE = ROOT / "dsl" / "sample_data" / "cifar-10-batches-py"
LABELS = ["[/]", "[red]cat[/red]", "bird", "[bold]", "deer", "dog", "frog", "horse", "ship",
          "truck"]
TINY = "conv4 relu pool2 | dense8\n"
FLAGS = ("--epochs", "1", "--limit", "64", "--progress", "plain")


def _clean(result):
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    assert "MarkupError" not in result.stderr


@pytest.fixture(scope="module")
def markup_data(tmp_path_factory):
    """The bundled sample with label names that hold rich markup."""
    data = tmp_path_factory.mktemp("data") / "cifar-10-batches-py"
    shutil.copytree(SAMPLE, data)
    with (data / "batches.meta").open("wb") as f:
        pickle.dump({b"label_names": [n.encode() for n in LABELS]}, f)
    return data


@pytest.fixture(scope="module")
def batch(tmp_path_factory, markup_data):
    """`cnnspec run` on four specs: `]a` (path .../m[/]a.cnn) trains, b checks but fails in
    training (it declares 5 classes, the labels go to 9), d does not check, `[red]y` trains.
    Run folders go under an `--out` whose path holds `[/]` and `[red]z[/red]`."""
    tmp = tmp_path_factory.mktemp("batch")
    (tmp / "m[").mkdir()
    a = tmp / "m[" / "]a.cnn"
    a.write_text(TINY)
    b = tmp / "b.cnn"
    b.write_text("classes 5\n" + TINY)
    d = tmp / "d.cnn"
    d.write_text("conv4 relu pool2 pool99 | dense8\n")
    y = tmp / "[red]y.cnn"
    y.write_text(TINY)
    assert cnnspec.check(cnnspec.load(b)).params > 0  # b checks: it fails only in training
    out = tmp / "o[" / "]ut[red]z[" / "red]"
    assert str(out).endswith("o[/]ut[red]z[/red]")
    result = run_cli("run", str(a), str(b), str(d), str(y), *FLAGS, "--out", str(out),
                     "--data", str(markup_data))
    return SimpleNamespace(out=out, result=result, a=a, b=b, d=d, y=y, tmp=tmp)


def test_a_failing_spec_does_not_stop_the_batch(batch):
    result = batch.result
    _clean(result)
    assert result.returncode == 1
    # the two good specs trained to completion, after the failing one
    for name in ("]a", "[red]y"):
        status = records.read_json(batch.out / name / records.STATUS_FILE)
        assert status["status"] == "completed"
    headers = re.findall(r"\[(\d)/(\d)\] (\S+)", result.stderr)
    assert headers == [("1", "3", "]a"), ("2", "3", "b"), ("3", "3", "[red]y")]
    assert "b failed: " in result.stderr
    # the end-of-run summary lists both failures: the file that did not check, by name
    tail = result.stderr[result.stderr.rindex("2 failed:"):]
    assert f"  {batch.d}: did not check: line 1: pool99" in tail
    assert "\n  b: " in tail
    # and the comparison of the others is printed, with names as written
    rows = [ln.split("│")[1].strip() for ln in result.stdout.splitlines()
            if ln.startswith("│")]
    assert rows == ["]a", "[red]y"]


def test_batch_output_names_folders_verbatim(batch):
    assert f"plots: {batch.out}/compare_curves.png" in batch.result.stderr


def test_compare_of_the_batch_prints_names_verbatim(batch):
    result = run_cli("compare", str(batch.out), "--no-plots")
    _clean(result)
    assert result.returncode == 0
    assert "[red]y" in result.stdout and "│ ]a " in result.stdout


def test_evaluate_prints_label_names_verbatim(batch, markup_data):
    result = run_cli("evaluate", str(batch.out / "[red]y"), "--data", str(markup_data))
    _clean(result)
    assert result.returncode == 0, result.stderr[-2000:]
    labels = [ln.split()[0] for ln in result.stdout.splitlines() if ln.startswith("  ")]
    assert labels == LABELS


def test_compare_shows_whole_names_and_tells_repeated_names_apart(batch, tmp_path):
    """The same run copied into two more folders: three rows whose spec is `[red]y`."""
    again = tmp_path / "again"
    shutil.copytree(batch.out / "[red]y", again / "[red]y")
    shutil.copytree(batch.out / "[red]y", again / "copy2")
    dirs = [str(batch.out / "[red]y"), str(again / "[red]y"), str(again / "copy2")]
    for columns in ("60", "80", "200"):
        result = run_cli("compare", *dirs, "--no-plots", env={"COLUMNS": columns})
        _clean(result)
        lines = result.stdout.splitlines()
        assert all(len(ln) <= int(columns) for ln in lines)
        header = next(ln for ln in lines if ln.startswith("┃"))
        assert [c.strip() for c in header.split("┃")[1:3]] == ["spec", "run"]
        rows = [[c.strip() for c in ln.split("│")[1:-1]] for ln in lines
                if ln.startswith("│")]
        assert [r[:2] for r in rows] == [
            ["[red]y", "red]/[red]y"], ["[red]y", "again/[red]y"], ["[red]y", "copy2"]]
        assert "…" not in result.stdout


def test_a_long_variant_name_is_never_cut(tmp_path, batch):
    """At 80 and 120 columns every row read `mini[lr=.0…`: names are shown whole."""
    runs = tmp_path / "runs"
    names = ["mini[lr=.01,conv=16,+bn,drop=.25]", "mini[lr=.05,conv=32,-bn,drop=.5]"]
    for name in names:
        shutil.copytree(batch.out / "]a", runs / name)
        settings = records.read_json(runs / name / records.SETTINGS_FILE)
        settings["spec"]["name"] = name
        records.write_json(runs / name / records.SETTINGS_FILE, settings)
    for columns in ("80", "120"):
        result = run_cli("compare", str(runs), "--no-plots", env={"COLUMNS": columns})
        _clean(result)
        rows = [ln.split("│")[1].strip() for ln in result.stdout.splitlines()
                if ln.startswith("│")]
        assert rows == names
        assert "run" not in result.stdout.splitlines()[2]  # names differ: no run column
        assert f"not shown at {columns} columns: MACs" in " ".join(result.stdout.split())


def test_sweep_headers_name_the_variant(tmp_path, markup_data):
    spec = tmp_path / "s.cnn"
    spec.write_text("conv4 relu pool2 drop{.25,.5} | dense8\n")
    out = tmp_path / "sw[" / "]eep"
    result = run_cli("sweep", str(spec), *FLAGS, "--out", str(out), "--no-plots")
    _clean(result)
    assert result.returncode == 0, result.stderr[-2000:]
    assert re.findall(r"\[\d/\d\] \S+", result.stderr) == ["[1/2] s[drop=.25]",
                                                           "[2/2] s[drop=.5]"]
    assert sorted(p.name for p in out.iterdir()) == [".lock", "s[drop=.25]", "s[drop=.5]",
                                                     "sweep.json"]


def test_a_variant_of_an_interrupted_sweep_resumes_as_that_variant(tmp_path):
    """A variant's spec.cnn is the sweep file (its positions name the Keras layers), so
    `train --resume` refused every variant as a sweep: a Ctrl-C'd sweep could not be
    continued. It now takes the variant settings.json names out of the sweep
    (`sweep.variant_named`, tested against `expand` in test_lang_hardening.py)."""
    import json

    from cnnspec.training import records

    text = "conv{4,8} relu pool2 | dense8\n"
    spec = tmp_path / "s.cnn"
    spec.write_text(text)
    out = tmp_path / "sweep"
    result = run_cli("sweep", str(spec), *FLAGS, "--out", str(out), "--no-plots")
    assert result.returncode == 0, result.stderr[-2000:]
    for name in ("s[conv=4]", "s[conv=8]"):
        run = out / name
        assert (run / "spec.cnn").read_text() == text
        history = records.read_history(run)
        status = records.read_status(run)
        status["status"] = "interrupted"  # stopped while writing its final records
        (run / records.STATUS_FILE).write_text(json.dumps(status))
        resumed = run_cli("train", "--resume", str(run), "--progress", "plain")
        said = resumed.stdout + resumed.stderr
        assert resumed.returncode == 0 and "Traceback" not in said, said[-2000:]
        assert f"finishing {name}: its 1 epoch is trained" in said
        assert records.read_status(run)["status"] == "completed"
        assert records.read_history(run) == history


def test_study_names_with_markup(tmp_path):
    spec = tmp_path / "s.cnn"
    spec.write_text("conv4 relu pool2 drop{.25,.5} | dense8\n")
    name = "st[/]u[red]v[/red]"
    runs = tmp_path / "runs"
    result = run_cli("sweep", str(spec), "--study", name, *FLAGS, "--runs-dir", str(runs),
                     "--no-plots")
    _clean(result)
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"study {name} in " in result.stderr
    assert f"study {name}: 2 runs" in result.stdout
    again = run_cli("compare", "--study", name, "--runs-dir", str(runs), "--no-plots")
    _clean(again)
    assert again.returncode == 0
    assert f"study {name}: 2 runs" in again.stdout
    rows = [ln.split("│")[1].strip() for ln in again.stdout.splitlines() if ln.startswith("│")]
    assert rows == ["s[drop=.25]", "s[drop=.5]"]


# -- in process: any exception from one spec's training fails that spec only ------------------


def test_train_many_records_any_exception_and_goes_on(monkeypatch, tmp_path):
    from cnnspec.cli import experiments as cli_experiments
    from cnnspec.cli import train as cli_train

    specs = [cnnspec.parse(TINY, name=n) for n in ("one", "two", "three")]
    trained = []

    def fake_train_one(spec, args, data, run_dir, report=None, **kwargs):
        trained.append(spec.name)
        if spec.name == "two":
            raise RuntimeError("boom\nsecond line")
        return SimpleNamespace(run_dir=run_dir, status="completed")

    data = SimpleNamespace(x_train=[0] * 8, describe=lambda: "8 fake images")
    monkeypatch.setattr(cli_train, "train_one", fake_train_one)
    monkeypatch.setattr(cli_train, "load_data", lambda args: data)
    args = argparse.Namespace(max_params=10**9, epochs=1, batch=None, lr=None, momentum=None,
                              optimizer=None, seed=None, runs_dir=str(tmp_path))
    checked = [(s, cnnspec.check(s)) for s in specs]
    done, failed, stopped = cli_experiments._train_many(checked, args, tmp_path / "out")
    assert trained == ["one", "two", "three"]
    assert done == [tmp_path / "out" / "one", tmp_path / "out" / "three"]
    assert failed == [("two", "RuntimeError: boom")] and stopped is None


def test_train_many_stops_after_an_interrupted_run(monkeypatch, tmp_path):
    from cnnspec.cli import experiments as cli_experiments
    from cnnspec.cli import train as cli_train

    specs = [cnnspec.parse(TINY, name=n) for n in ("one", "two")]
    monkeypatch.setattr(cli_train, "train_one", lambda spec, args, data, run_dir, report=None, **kw:
                        SimpleNamespace(run_dir=run_dir, status="interrupted"))
    monkeypatch.setattr(cli_train, "load_data", lambda args: SimpleNamespace(
        x_train=[0], describe=lambda: "1 image"))
    args = argparse.Namespace(max_params=10**9, epochs=1, batch=None, lr=None, momentum=None,
                              optimizer=None, seed=None, runs_dir=str(tmp_path))
    checked = [(s, cnnspec.check(s)) for s in specs]
    done, failed, stopped = cli_experiments._train_many(checked, args, Path(tmp_path))
    assert done == [tmp_path / "one"] and failed == [("one", "interrupted")]
    assert stopped == (tmp_path / "one", [specs[1].name])  # the specs have no file


@pytest.mark.parametrize("width", [30, 60, 200])
def test_progress_headers_are_never_cut(width):
    from rich.console import Console

    from cnnspec.cli.experiments import progress_header

    console = Console(width=width, record=True, markup=False)
    text = "[3/8] mini[lr=.01,conv=16,+bn,drop=.25]  (elapsed 1m02s, ETA 3m10s)"
    progress_header(console, text)
    out = console.export_text()
    assert text in out  # whole, on one line (soft-wrapped by the terminal, not by rich)


# -- each spec is checked once: `run` and `sweep` hand the report on to training ---------------

_COUNT_CHECKS = """
import collections, json, sys
import cnnspec.cli.experiments, cnnspec.cli.main, cnnspec.cli.train, cnnspec.training.train
from cnnspec.language import checker
calls = collections.Counter()
original = checker.check
def counting(spec, *args, **kwargs):
    calls[spec.name] += 1
    return original(spec, *args, **kwargs)
for module in list(sys.modules.values()):  # every module that imported the checker's check
    if getattr(module, "check", None) is original:
        module.check = counting
code = cnnspec.cli.main.main(sys.argv[1:])
print(json.dumps({"code": code, "calls": calls}), file=sys.__stdout__)
"""


def _count_checks(*argv: str) -> dict:
    """Run the CLI in a fresh interpreter whose every binding of `checker.check` counts calls
    per spec name; the last stdout line is the exit code and the counts."""
    import json
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-c", _COUNT_CHECKS, *argv], capture_output=True,
                            text=True, cwd=ROOT, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_run_checks_each_spec_once(tmp_path):
    for name in ("one", "two"):
        (tmp_path / f"{name}.cnn").write_text(TINY)
    counted = _count_checks("run", str(tmp_path / "one.cnn"), str(tmp_path / "two.cnn"), *FLAGS,
                            "--data", str(SAMPLE), "--out", str(tmp_path / "out"), "--no-plots")
    assert counted == {"code": 0, "calls": {"one": 1, "two": 1}}


def test_sweep_checks_each_variant_once(tmp_path):
    (tmp_path / "s.cnn").write_text("conv4 relu pool2 drop{.25,.5} | dense8\n")
    counted = _count_checks("sweep", str(tmp_path / "s.cnn"), *FLAGS, "--data", str(SAMPLE),
                            "--out", str(tmp_path / "out"), "--no-plots")
    assert counted == {"code": 0, "calls": {"s[drop=.25]": 1, "s[drop=.5]": 1}}


def _batch_with(monkeypatch, tmp_path, specs, fake_train_one):
    """`_train_many` of specs into tmp_path/out, each trained by fake_train_one, on fake data."""
    from cnnspec.cli import experiments as cli_experiments
    from cnnspec.cli import train as cli_train

    monkeypatch.setattr(cli_train, "train_one", fake_train_one)
    monkeypatch.setattr(cli_train, "load_data", lambda args: SimpleNamespace(
        x_train=[0], describe=lambda: "1 image"))
    args = argparse.Namespace(max_params=10**9, epochs=1, batch=None, lr=None, momentum=None,
                              optimizer=None, seed=None, runs_dir=str(tmp_path))
    checked = [(s, cnnspec.check(s)) for s in specs]
    return cli_experiments._train_many(checked, args, tmp_path / "out")


def test_ctrl_c_while_a_run_starts_stops_the_batch_with_a_way_on(monkeypatch, tmp_path):
    """Ctrl-C before the training loop catches it (TensorFlow's import, the model's build)
    stops the batch as an interrupted run does: the runs before it are compared, and the
    command to go on is printed."""
    specs = [cnnspec.parse(TINY, name=n, filename=f"{n}.cnn") for n in ("one", "two", "three")]

    def fake_train_one(spec, args, data, run_dir, report=None, **kw):
        if spec.name == "two":
            raise KeyboardInterrupt
        return SimpleNamespace(run_dir=run_dir, status="completed")

    batch = _batch_with(monkeypatch, tmp_path, specs, fake_train_one)
    assert batch.done == [tmp_path / "out" / "one"]
    assert batch.failed == [("two", "interrupted")]
    assert batch.stopped == (None, ["three.cnn"])  # "two" holds no run yet


@pytest.mark.parametrize(("argv", "out", "expected"), [
    (["sweep", "--epochs", "2", "--", "s.cnn"], None,
     "cnnspec sweep --out 'runs/s-sweep-1' --epochs 2 -- s.cnn"),
    (["sweep", "s.cnn", "--out=o"], "o", "cnnspec sweep s.cnn --out=o"),
])
def test_the_continue_command_is_the_same_command_with_its_out(argv, out, expected):
    from cnnspec.cli.experiments import continue_command

    args = argparse.Namespace(argv=argv, out=out, command="sweep")
    assert continue_command(args, Path(out or "runs/s-sweep-1")) == expected.replace("'", "")


def test_a_run_without_out_says_how_to_resume_and_what_did_not_start():
    from cnnspec.cli.experiments import _continue_hint

    args = argparse.Namespace(argv=["run", "a.cnn", "b c.cnn"], out=None, command="run")
    assert _continue_hint(args, None, Path("runs/a-1"), ["b c.cnn"]) == (
        "continue the stopped run with: cnnspec train --resume runs/a-1; not started: "
        "'b c.cnn' (`run` with --out DIR continues a whole batch when run again)")


def test_ctrl_c_after_a_run_wrote_its_settings_names_that_run(monkeypatch, tmp_path):
    """Ctrl-C once the run's folder holds settings.json (its start is recorded): the folder
    is compared and named as the stopped run, which `train --resume` continues."""
    specs = [cnnspec.parse(TINY, name=n, filename=f"{n}.cnn") for n in ("one", "two")]

    def fake_train_one(spec, args, data, run_dir, report=None, **kw):
        run_dir.mkdir(parents=True)
        (run_dir / records.SETTINGS_FILE).write_text("{}")
        raise KeyboardInterrupt

    batch = _batch_with(monkeypatch, tmp_path, specs, fake_train_one)
    assert batch.done == [tmp_path / "out" / "one"]
    assert batch.stopped == (tmp_path / "out" / "one", ["two.cnn"])
