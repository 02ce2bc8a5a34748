"""A run folder written before the training loops were merged (issue 11) still resumes and compares.

tests/fixtures/run-before-issue-11 was written by cnnspec at commit e849d22 (before the refactor):
its spec.cnn trained on the bundled sample's first 64 images, float32, seed 7, stopped by Ctrl-C
during epoch 2 of 2 (a Keras callback raising KeyboardInterrupt). Today's code must resume it to
the same two epochs as an uninterrupted run made now, and `compare` must read it.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from conftest import ROOT

from cnnspec.experiments import compare
from cnnspec.language.parse import load
from cnnspec.language.settings import resolve_settings
from cnnspec.training import records
from cnnspec.training.data import load_cifar10

FIXTURE = ROOT / "tests" / "fixtures" / "run-before-issue-11"
SCORES = ("epoch", "loss", "accuracy", "val_loss", "val_accuracy")

# Keras's own model.save trips numpy 2's __array__(copy=...) deprecation; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


@pytest.fixture
def data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # no Keras cache from the machine
    monkeypatch.delenv("KERAS_HOME", raising=False)
    monkeypatch.delenv("CNNSPEC_DATA", raising=False)
    data = load_cifar10(env={}, limit=64)
    assert data.origin == "bundled sample"
    return data


def scores(history) -> list[tuple]:
    return [tuple(row[k] for k in SCORES) for row in history]


def test_the_fixture_is_an_interrupted_run_of_one_epoch() -> None:
    status = records.read_status(FIXTURE)
    assert status["status"] == "interrupted" and status["epochs_completed"] == 1
    assert records.read_json(FIXTURE / records.SETTINGS_FILE)["versions"]["cnnspec"] == "0.1.0"


def test_old_run_folder_resumes_to_an_uninterrupted_run(data, tmp_path: Path) -> None:
    from cnnspec.training.train import resume_run, train

    run = tmp_path / "old"
    shutil.copytree(FIXTURE, run)
    resumed = resume_run(run, data, progress="none")
    assert resumed.status == "completed" and resumed.epochs_completed == 2

    spec = load(run / records.SPEC_FILE)
    settings = resolve_settings({s.key: s.value for s in spec.settings})
    fresh = train(spec, settings, data, tmp_path / "fresh", progress="none")
    assert scores(resumed.history) == scores(fresh.history)

    row = compare.load_row(run)
    assert (row.status, row.epochs, row.epochs_planned) == ("completed", 2, 2)
    assert row.test_accuracy == resumed.metrics["test_accuracy"]


def test_old_run_folder_compares_as_it_is() -> None:
    row = compare.load_row(FIXTURE)
    assert (row.spec, row.status, row.epochs, row.params) == ("tiny", "interrupted", 1, 4394)
