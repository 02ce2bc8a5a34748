"""The one table of training settings: every reader of a setting follows it.

A setting added to a COPY of the table (the global one is never touched) shows up in the spec
parser, `check`'s ranges, the command-line flags and the run record; the README's table is the
table's rendering.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import fields
from types import SimpleNamespace

import pytest
from conftest import ROOT

from cnnspec.cli.train import add_train_flags, resolved_settings
from cnnspec.language.checker import check
from cnnspec.language.errors import SpecError
from cnnspec.language.parse import parse
from cnnspec.language.settings import (
    SETTINGS,
    STUDY_FLAGS,
    Setting,
    TrainSettings,
    settings_of,
)

WARMUP = Setting("warmup_epochs", "int", 0, "epochs of linear learning-rate warm-up",
                 aliases=("warmup",), low=0, high=100, flag="--warmup-epochs")


@pytest.fixture
def table():
    return SETTINGS.with_setting(WARMUP)


def _readme_table() -> str:
    text = (ROOT / "README.md").read_text("utf-8")
    start = text.index("### Training settings\n\n") + len("### Training settings\n\n")
    return text[start:text.index("\n\n", start) + 1]


def test_readme_table_is_the_tables_rendering():
    assert _readme_table() == SETTINGS.render_markdown()


def test_rendering_has_one_row_per_setting_and_a_new_one_adds_a_row(table):
    rows = SETTINGS.render_markdown().splitlines()[2:]
    assert len(rows) == len(SETTINGS.entries)
    new_rows = table.render_markdown().splitlines()[2:]
    assert new_rows[:-1] == rows
    assert new_rows[-1] == ("| `warmup_epochs` / `warmup` | `0` | [0, 100] | `--warmup-epochs` "
                            "| epochs of linear learning-rate warm-up |")


def test_copy_leaves_the_global_table_alone(table):
    assert "warmup_epochs" in table.by_key and "warmup" in table.by_key
    assert "warmup_epochs" not in SETTINGS.by_key
    assert "warmup_epochs" not in {f.name for f in fields(TrainSettings)}
    assert "warmup_epochs" in {f.name for f in fields(table.settings_class)}
    assert table.settings_class().warmup_epochs == 0


def test_new_setting_in_the_parser(table):
    spec = parse("train warmup=3 lr=.1\n|", settings=table)
    assert [(s.key, s.value) for s in spec.settings] == [("warmup_epochs", 3), ("lr", 0.1)]
    settings = settings_of(spec, table)
    assert (settings.warmup_epochs, settings.lr) == (3, 0.1)
    # the global table does not know it
    with pytest.raises(SpecError) as err:
        parse("train warmup=3\n|")
    assert "unknown training setting `warmup`" in str(err.value)


def test_new_setting_refused_out_of_range_with_its_position(table):
    with pytest.raises(SpecError) as err:
        parse("train lr=.1 warmup_epochs=101\n|", filename="w.cnn", settings=table)
    text = str(err.value)
    # 101 starts at column 27: `train lr=.1 warmup_epochs=` is 26 characters
    assert "w.cnn:1:27: error: warmup_epochs must be in [0, 100], got 101" in text
    assert "\n" + " " * 4 + "train lr=.1 warmup_epochs=101\n" + " " * (4 + 26) + "^^^" in text
    with pytest.raises(SpecError) as err:
        parse("train warmup_epochs=2.5\n|", settings=table)
    assert "warmup_epochs must be a whole number, not 2.5" in str(err.value)


def _flags(table, *argv: str) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="t", exit_on_error=False)
    add_train_flags(p, table)
    return p.parse_args(list(argv))


def test_new_setting_in_the_command_line_flags(table):
    spec = parse("train warmup=3 lr=.1\n|", settings=table)
    kept = _flags(table)
    assert kept.warmup_epochs is None  # not given: the spec's value stays
    assert resolved_settings(spec, kept, table).warmup_epochs == 3
    given = _flags(table, "--warmup-epochs", "7", "--lr", ".5")
    settings = resolved_settings(spec, given, table)
    assert (settings.warmup_epochs, settings.lr) == (7, 0.5)
    # the global table's flags do not have it
    with pytest.raises(SystemExit):
        _flags(SETTINGS, "--warmup-epochs", "7")


def test_flag_choices_come_from_the_table():
    p = argparse.ArgumentParser()
    add_train_flags(p)
    actions = {a.dest: a for a in p._actions}
    for entry in SETTINGS.flag_entries:
        action = actions[entry.name]
        assert entry.flag in action.option_strings
        if entry.values:
            assert tuple(action.choices) == entry.values
    assert actions["precision"].choices == ("auto", "float32", "bf16")
    assert actions["optimizer"].choices == ("sgd", "adam", "adamw", "rmsprop", "nadam",
                                            "adagrad")


def test_new_setting_in_the_run_record(table):
    from cnnspec.training.train import _settings_record

    spec = parse("train warmup=3\n|", settings=table)
    settings = settings_of(spec, table)
    data = SimpleNamespace(source="here", origin="test", x_train=[0] * 4, x_test=[0] * 2,
                           label_names=["a"])
    versions = SimpleNamespace(__version__="0")
    report = check(parse("|"))
    record = _settings_record(spec, report, settings, data, "float32", 1, 5, "f", versions,
                              versions)
    record = json.loads(json.dumps(record))  # as settings.json holds it
    assert record["settings"]["warmup_epochs"] == 3
    assert table.from_record(record["settings"]) == settings
    # a record written before the setting existed reads as its default
    old = {k: v for k, v in record["settings"].items() if k != "warmup_epochs"}
    assert table.from_record(old).warmup_epochs == 0


def test_spec_settings_round_trip_through_the_record():
    settings = TrainSettings().override(optimizer="rmsprop", lr=0.5, seed=7, shuffle=False)
    recorded = json.loads(json.dumps(SETTINGS.record(settings)))
    assert SETTINGS.from_record(recorded) == settings
    assert SETTINGS.from_record({"epochs": 3}) == TrainSettings(epochs=3)


def test_study_same_flags_are_the_settings_with_a_flag():
    assert STUDY_FLAGS == ("optimizer", "lr", "momentum", "batch", "epochs", "seed", "augment",
                           "nesterov", "weight_decay", "label_smoothing", "tta", "patience",
                           "monitor", "ema", "limit", "precision")
    assert set(STUDY_FLAGS) == {e.name for e in SETTINGS.entries if e.flag}


def test_a_table_entry_must_be_consistent():
    with pytest.raises(ValueError):
        Setting("x", "complex", 0, "no such kind")
    with pytest.raises(ValueError):
        Setting("x", "int", 0, "run-only without a flag", scope="run")
