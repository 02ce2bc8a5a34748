"""`compare` with a damaged run folder among good ones: the good ones are compared, the damaged
one is named (file and what is wrong), exit 1, no traceback, nothing written into the folders.

Run folders are written by hand (test_exp_plots._run): no training.
"""

from __future__ import annotations

import json

import pytest
from conftest import run_cli, snapshot
from test_exp_plots import _run

from cnnspec.experiments import compare
from cnnspec.training import records

DAMAGE = {
    # file, bytes written, what the message says
    "history_not_json": ("history.json", b'[{"epoch": 1, "loss": ', "not valid JSON"),
    "history_an_object": ("history.json", b'{"epoch": 1}', "expected a JSON list"),
    "history_epoch_text": ("history.json", b'[{"epoch": "one"}]', "whole epoch number"),
    "history_not_objects": ("history.json", b"[1, 2]", "whole epoch number"),
    "history_loss_text": ("history.json", b'[{"epoch": 1, "loss": "low"}]',
                          "epoch 1: loss is not a number"),
    "settings_a_list": ("settings.json", b"[]", "expected a JSON object"),
    "settings_not_utf8": ("settings.json", b"\xff\xfe{}", "not valid JSON"),
    "settings_model_text": ("settings.json", b'{"model": "big"}', "model is not an object"),
    "status_not_json": ("status.json", b"not json", "not valid JSON"),
    "metrics_a_list": ("metrics.json", b"[0.5]", "expected a JSON object"),
}



@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_compare_shows_the_good_runs_and_names_the_damaged_one(tmp_path, damage):
    name, data, what = DAMAGE[damage]
    runs = tmp_path / "runs"
    _run(runs, "good", "good", 1000, 2)
    bad = _run(runs, "bad", "bad", 2000, 2)
    (bad / name).write_bytes(data)
    before = snapshot(runs)
    result = run_cli("compare", str(runs), "--no-plots")
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    assert result.returncode == 1
    rows = [ln.split("│")[1].strip() for ln in result.stdout.splitlines() if ln.startswith("│")]
    assert rows == ["good"]
    assert result.stderr.startswith("cnnspec: error: 1 of 2 run folder(s) not compared:")
    assert f"  {bad / name}: " in result.stderr and what in result.stderr
    assert snapshot(runs) == before


@pytest.mark.parametrize("lost", ["settings", "history"])
def test_a_run_that_lost_a_record_is_named_not_left_out_or_shown_empty(tmp_path, lost):
    """A run folder without settings.json was skipped without a word (exit 0) when its parent
    was compared, and named alone it was "not a run folder"; one without its history, though
    its status counts trained epochs, was listed as a completed run of 0 epochs."""
    runs = tmp_path / "runs"
    _run(runs, "good", "good", 1000, 2)
    bad = _run(runs, "bad", "bad", 2000, 2)
    if lost == "settings":
        (bad / records.SETTINGS_FILE).unlink()
        gone = bad / records.SETTINGS_FILE
    else:
        records.write_json(bad / records.STATUS_FILE, {"status": "completed",
                                                       "epochs_completed": 2})
        (bad / records.HISTORY_JSON).unlink()
        gone = bad / records.HISTORY_JSON
    for target in (runs, bad):
        result = run_cli("compare", str(target), "--no-plots")
        assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
        assert f"  {gone}: " in result.stderr, result.stderr
        rows = [ln.split("│")[1].strip() for ln in result.stdout.splitlines()
                if ln.startswith("│")]
        assert rows == (["good"] if target == runs else [])


def test_the_exports_and_plots_leave_a_damaged_run_out(tmp_path):
    runs = tmp_path / "runs"
    _run(runs, "good", "good", 1000, 2)
    bad = _run(runs, "bad", "bad", 2000, 2)
    (bad / "history.json").write_text("{")
    result = run_cli("compare", str(runs), "--json")
    assert "Traceback" not in result.stderr and result.returncode == 1
    assert [r["spec"] for r in json.loads(result.stdout)] == ["good"]
    assert (runs / "compare_curves.png").is_file()
    assert (runs / "compare_accuracy_vs_params.png").is_file()


def test_load_row_names_the_damaged_file(tmp_path):
    run = _run(tmp_path, "r", "r", 1000, 1)
    (run / "history.json").write_text('[{"epoch": 1, "val_accuracy": [0.5]}]')
    with pytest.raises(records.RunFolderError, match=r"history\.json: damaged record: "
                                                      r"epoch 1: val_accuracy is not a number"):
        compare.load_row(run)


def test_odd_field_types_in_settings_are_shown_as_unknown(tmp_path):
    run = _run(tmp_path, "r", "r", 1000, 1)
    records.write_json(run / records.SETTINGS_FILE, {
        "spec": {"name": 7}, "model": {"params": "many", "macs_per_image": True},
        "settings": {"epochs": "ten", "lr": "fast", "batch": 32}})
    row = compare.load_row(run)
    assert (row.spec, row.params, row.macs, row.epochs_planned, row.lr, row.batch) == (
        "r", None, None, None, None, 32)


def test_nan_in_a_foreign_history_is_no_value_and_the_json_stays_json(tmp_path):
    """This package writes a value that is not a number as null; a hand-edited or foreign
    history.json with `NaN`/`Infinity` printed "nan%" and made `compare --json` invalid JSON."""
    runs = tmp_path / "runs"
    _run(runs, "good", "good", 1000, 2)
    odd = _run(runs, "odd", "odd", 2000, 2)
    (odd / "history.json").write_text(
        '[{"epoch": 1, "loss": NaN, "accuracy": 0.1, "val_loss": Infinity, "val_accuracy": 0.2},'
        ' {"epoch": 2, "loss": 1.0, "accuracy": 0.3, "val_loss": 2.0, "val_accuracy": NaN}]')

    def strict(text):  # json.loads would accept NaN; a browser or jq would not
        return json.loads(text, parse_constant=lambda c: pytest.fail(f"{c} in the JSON"))

    result = run_cli("compare", str(runs), "--json")
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr[-2000:]
    rows = {r["spec"]: r for r in strict(result.stdout)}
    assert rows["odd"]["final_val_accuracy"] is None
    table = run_cli("compare", str(runs), "--no-plots")
    assert "nan" not in table.stdout.lower(), table.stdout


def test_the_run_records_reader_takes_nan_as_no_value_too(tmp_path):
    run = _run(tmp_path, "r", "r", 1000, 1)
    (run / "history.json").write_text('[{"epoch": 1, "loss": NaN, "val_loss": -Infinity}]')
    assert records.read_history(run) == [{"epoch": 1, "loss": None, "val_loss": None}]


def test_a_folder_holding_a_spec_named_spec_cnn_is_no_run(tmp_path):
    """Any folder with a spec.cnn was taken for a (damaged) run: a project folder holding its
    spec under that name, with its runs below, failed to compare them."""
    project = tmp_path / "proj"
    _run(project / "runs", "good", "good", 1000, 2)
    (project / "spec.cnn").write_text("conv8 relu |\n")
    result = run_cli("compare", str(project), "--no-plots")
    assert result.returncode == 0, result.stderr
    rows = [ln.split("│")[1].strip() for ln in result.stdout.splitlines() if ln.startswith("│")]
    assert rows == ["good"]
