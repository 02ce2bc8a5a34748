"""`compare` shows the training settings that differ between the runs (the recipe columns),
each as a spec writes it, in the table and in the exports; settings equal in all runs, and
`epochs`/`seed` (shown otherwise, or different in every run), are not shown.

Run folders are written by hand (test_exp_plots._run), their settings records by the settings
table itself (`settings_of(...).to_dict()`, as training records them): no training.
"""

from __future__ import annotations

import csv
import io
import json

from conftest import run_cli
from test_exp_plots import _run

from cnnspec.experiments import compare
from cnnspec.language.parse import parse
from cnnspec.language.settings import settings_of
from cnnspec.training import records

SCHEDULE = "onecycle(.4,warm=.2)"


def _recorded(train: str) -> dict:
    """The settings.json "settings" object of a spec with this `train` line."""
    return settings_of(parse(f"train {train}\n|\n", filename="r.cnn")).to_dict()


def _with_settings(run, settings: dict):
    whole = records.read_json(run / records.SETTINGS_FILE)
    records.write_json(run / records.SETTINGS_FILE, {**whole, "settings": settings})
    return run


def _three_runs(root):
    """A run recorded before the recipe settings existed (lr a float, no augment key), one
    with a schedule and augmentation, one with another rate; batch is 32 in all three, seeds
    and epochs differ."""
    old = _with_settings(_run(root, "a_old", "a_old", 1000, 2),
                         {"epochs": 2, "lr": 0.01, "batch": 32, "seed": 1})
    sched = _with_settings(_run(root, "b_sched", "b_sched", 1000, 3),
                           _recorded(f"lr={SCHEDULE} augment=flip+crop4 batch=32 seed=2"))
    assert isinstance(records.read_json(sched / records.SETTINGS_FILE)["settings"]["lr"], dict)
    flip = _with_settings(_run(root, "c_flip", "c_flip", 1000, 2),
                          _recorded("lr=.05 augment=flip batch=32 epochs=2 seed=3"))
    return [old, sched, flip]


EXPECTED = {"a_old": {"lr": ".01", "augment": "none"},
            "b_sched": {"lr": SCHEDULE, "augment": "flip+crop4"},
            "c_flip": {"lr": ".05", "augment": "flip"}}


def _table(stdout: str) -> list[dict[str, str]]:
    """The printed table as one dict per row, header -> cell."""
    (head,) = [ln for ln in stdout.splitlines() if ln.startswith("┃")]
    names = [c.strip() for c in head.strip("┃").split("┃")]
    return [dict(zip(names, (c.strip() for c in ln.strip("│").split("│")), strict=True))
            for ln in stdout.splitlines() if ln.startswith("│")]


def test_the_table_shows_the_settings_that_differ(tmp_path):
    runs = tmp_path / "runs"
    _three_runs(runs)
    result = run_cli("compare", str(runs), "--no-plots", env={"COLUMNS": "220"})
    assert result.returncode == 0, result.stderr[-3000:]
    table = _table(result.stdout)
    assert list(table[0])[:3] == ["spec", "lr", "augment"]  # the recipe, right after the name
    for name in ("batch", "seed", "optimizer", "momentum", "tta", "shuffle"):
        assert name not in table[0]
    assert list(table[0]).count("epochs") == 1  # the epochs trained, not a recipe column
    assert {row["spec"]: {k: row[k] for k in ("lr", "augment")} for row in table} == EXPECTED


def test_the_exports_carry_the_settings_that_differ(tmp_path):
    runs = tmp_path / "runs"
    _three_runs(runs)
    as_json = json.loads(run_cli("compare", str(runs), "--json", "--no-plots").stdout)
    assert {r["spec"]: r["settings"] for r in as_json} == EXPECTED
    assert {r["spec"]: r["lr"] for r in as_json} == {  # the numeric column is unchanged
        "a_old": 0.01, "b_sched": None, "c_flip": 0.05}
    as_csv = list(csv.DictReader(io.StringIO(
        run_cli("compare", str(runs), "--csv", "--no-plots").stdout)))
    assert list(as_csv[0]) == [*compare.EXPORT_FIELDS, "settings.lr", "settings.augment"]
    assert {r["spec"]: {"lr": r["settings.lr"], "augment": r["settings.augment"]}
            for r in as_csv} == EXPECTED
    md = run_cli("compare", str(runs), "--markdown", "--no-plots").stdout
    assert md.splitlines()[0].startswith("| spec | lr | augment | params |")
    assert f"| b_sched | {SCHEDULE} | flip+crop4 |" in md


def test_runs_with_the_same_recipe_show_no_recipe_columns(tmp_path):
    runs = tmp_path / "runs"
    same = _recorded("lr=.05 augment=flip batch=64")
    dirs = [_with_settings(_run(runs, n, n, 1000, 2), {**same, "seed": i})
            for i, n in enumerate(("x", "y"))]
    rows = [compare.load_row(d) for d in dirs]
    assert rows[0].settings["batch"] == "64" and rows[0].settings["augment"] == "flip"
    assert compare.recipe_columns(rows) == []  # seeds differ, but are never a column
    assert all("settings" not in r for r in json.loads(compare.to_json(rows)))
    assert compare.to_csv(rows).splitlines()[0] == ",".join(compare.EXPORT_FIELDS)
    assert compare.to_markdown(rows).startswith("| spec | params |")


def test_a_setting_that_does_not_read_back_is_shown_as_unreadable(tmp_path):
    run = _with_settings(_run(tmp_path, "r", "r", 1000, 1),
                         {"lr": "fast", "augment": {"bogus": 1}, "batch": 32})
    row = compare.load_row(run)
    assert (row.lr, row.batch) == (None, 32)
    assert (row.settings["lr"], row.settings["augment"], row.settings["batch"]) == (
        compare.UNREADABLE, compare.UNREADABLE, "32")
    other = compare.load_row(_with_settings(_run(tmp_path, "s", "s", 1000, 1),
                                            {"lr": 0.01, "batch": 32}))
    assert compare.recipe_columns([row, other]) == ["lr", "augment"]
