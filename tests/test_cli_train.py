"""`cnnspec train` and `cnnspec evaluate` as a user runs them: exit codes, messages, run folder."""

from __future__ import annotations

import json
import shutil

import pytest
from conftest import ROOT, SPECS

BUNDLED = ROOT / "dsl" / "sample_data" / "cifar-10-batches-py"  # the sample the repo carries

RECORDS = ("spec.cnn", "settings.json", "history.csv", "history.json", "metrics.json",
           "model.keras", "learning_curve.png", "status.json")


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    return {"HOME": str(tmp_path_factory.mktemp("home")), "CNNSPEC_DATA": ""}


@pytest.fixture(scope="module")
def trained(tmp_path_factory, home):
    from conftest import run_cli

    out = tmp_path_factory.mktemp("t") / "exp1-run"
    result = run_cli("train", str(SPECS / "exp1.cnn"), "--epochs", "1", "--limit", "64",
                     "--out", str(out), "--progress", "plain", env=home)
    return out, result


def test_train_writes_a_complete_run_folder(trained):
    out, result = trained
    assert result.returncode == 0, result.stderr[-2000:]
    assert "bundled sample" in result.stderr
    assert "epoch 1/1" in result.stdout and f"run folder {out}" in result.stdout
    for name in RECORDS:
        assert (out / name).is_file(), name
    assert json.loads((out / "status.json").read_text())["status"] == "completed"
    settings = json.loads((out / "settings.json").read_text())
    assert settings["settings"]["epochs"] == 1 and settings["data"]["train_images"] == 64


def test_evaluate_rescores_the_saved_model(trained, cli, home):
    out, _ = trained
    result = cli("evaluate", str(out), env=home)
    assert result.returncode == 0, result.stderr[-2000:]
    recorded = json.loads((out / "metrics.json").read_text())["test_accuracy"]
    assert f"test accuracy {recorded:.4f}" in result.stdout
    assert "airplane" in result.stdout
    # the data line says how the run found its data (the bundled sample), not `--data`
    assert "test images from " in result.stderr and "(bundled sample)" in result.stderr
    assert "(--data)" not in result.stderr


def test_evaluate_on_a_folder_of_test_images_alone(trained, cli, home, tmp_path):
    out, _ = trained
    # the sample's test batch and label names, without any training batch
    alone = tmp_path / "test-only"
    alone.mkdir()
    for name in ("test_batch", "batches.meta"):
        shutil.copy(BUNDLED / name, alone / name)
    result = cli("evaluate", str(out), "--data", str(alone), env=home)
    assert result.returncode == 0, result.stderr[-2000:]
    recorded = json.loads((out / "metrics.json").read_text())["test_accuracy"]
    assert f"test accuracy {recorded:.4f}" in result.stdout  # the same test images
    assert f"data: 500 test images from {alone} (--data)" in result.stderr
    assert "Traceback" not in result.stderr


def test_resume_of_a_completed_run_changes_nothing(trained, cli, home):
    out, _ = trained
    before = (out / "history.json").read_text()
    result = cli("train", "--resume", str(out), env=home)
    assert result.returncode == 0, result.stderr[-2000:]
    assert (out / "history.json").read_text() == before


def test_diverging_run_fails_cleanly(cli, tmp_path, home):
    out = tmp_path / "nan"
    result = cli("train", str(SPECS / "exp1.cnn"), "--epochs", "2", "--limit", "64",
                 "--lr", "1e6", "--out", str(out), "--progress", "none", env=home)
    assert result.returncode == 1
    assert "training diverged" in result.stderr and "Traceback" not in result.stderr
    assert json.loads((out / "status.json").read_text())["status"] == "failed"


def test_train_usage_and_input_errors(cli, tmp_path):
    assert cli("train").returncode == 2
    both = cli("train", str(SPECS / "exp1.cnn"), "--resume", str(tmp_path))
    assert both.returncode == 2 and "not both" in both.stderr
    assert cli("train", str(SPECS / "exp1.cnn"), "--epochs", "0").returncode == 2
    missing = cli("train", str(SPECS / "exp1.cnn"), "--data", str(tmp_path / "nowhere"))
    assert missing.returncode == 1 and "nowhere" in missing.stderr
    assert "Traceback" not in missing.stderr
    bad = tmp_path / "bad.cnn"
    bad.write_text("conv32 pool3 pool3 pool3 pool3 | dense10\n")
    refused = cli("train", str(bad))
    assert refused.returncode == 1 and f"{bad}:1:" in refused.stderr
