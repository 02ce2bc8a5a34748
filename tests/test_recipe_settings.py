"""The recipe settings in the language (issue 12, item 1): augmentation, learning-rate
schedules, Nesterov, decoupled weight decay, label smoothing, test-time flip, early stopping
and EMA. Each parses to a typed value, round-trips through `fmt` and JSON, is refused with its
position when out of range, sweeps, shows in `diff`, takes a command-line override and is
recorded; the seed specs keep their old settings exactly.

Expected values are written out by hand here (the documented defaults and notation), never
read back from the implementation.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import ROOT, SPECS

from cnnspec.language import ir
from cnnspec.language.checker import check
from cnnspec.language.diff import diff_reports
from cnnspec.language.errors import SpecError
from cnnspec.language.format import format_spec
from cnnspec.language.parse import load, parse
from cnnspec.language.setting_values import Augment, Schedule
from cnnspec.language.settings import SETTINGS, TrainSettings, settings_of
from cnnspec.language.sweep import expand

HEAD = "\n|\n"  # the smallest network: flatten, then the implicit classifier


def _spec(train: str) -> ir.Spec:
    return parse(f"train {train}{HEAD}", filename="r.cnn")


def _one(train: str):
    (setting,) = _spec(train).settings
    return setting.value


# written -> (setting, value it means), the value spelled out from the README's table
MEANINGS = [
    ("lr=.05", "lr", 0.05),
    ("lr=constant(.01)", "lr", 0.01),  # a constant without warm-up is the plain rate
    ("lr=constant(.01,warm=.1)", "lr",
     Schedule("constant", (("lr", 0.01), ("warm", 0.1)))),
    ("lr=step(.1, every=10, factor=.5)", "lr",
     Schedule("step", (("lr", 0.1), ("every", 10), ("factor", 0.5), ("warm", 0.0)))),
    ("lr=step(.1,every=3)", "lr",
     Schedule("step", (("lr", 0.1), ("every", 3), ("factor", 0.1), ("warm", 0.0)))),
    ("lr=cosine(.1, warm=.05)", "lr",
     Schedule("cosine", (("lr", 0.1), ("final", 0.0), ("warm", 0.05)))),
    ("lr=onecycle(.4, warm=.2)", "lr",
     Schedule("onecycle", (("peak", 0.4), ("warm", 0.2), ("final", 0.0), ("start", 0.0)))),
    ("lr=onecycle(.4)", "lr",
     Schedule("onecycle", (("peak", 0.4), ("warm", 0.3), ("final", 0.0), ("start", 0.0)))),
    ("learning_rate=onecycle(peak=.1,final=.001,start=.01)", "lr",
     Schedule("onecycle", (("peak", 0.1), ("warm", 0.3), ("final", 0.001), ("start", 0.01)))),
    ("augment=none", "augment", Augment()),
    ("augment=flip", "augment", Augment(flip=True)),
    ("augment=flip+crop4+cutout8", "augment", Augment(True, 4, "reflect", 8)),
    ("augment=cutout8+crop4+flip", "augment", Augment(True, 4, "reflect", 8)),
    ("augment=crop(4, mode=zero)", "augment", Augment(False, 4, "zero", 0)),
    ("augment=crop2(mode=reflect)+cutout(size=6)", "augment", Augment(False, 2, "reflect", 6)),
    ("nesterov=true momentum=.9", "nesterov", "true"),
    ("weight_decay=5e-4", "weight_decay", 0.0005),
    ("label_smoothing=.1", "label_smoothing", 0.1),
    ("tta=flip", "tta", "flip"),
    ("patience=5", "patience", 5),
    ("patience=3 monitor=val_accuracy", "monitor", "val_accuracy"),
    ("ema=.999", "ema", 0.999),
]


@pytest.mark.parametrize("written,key,value", MEANINGS, ids=[m[0] for m in MEANINGS])
def test_each_setting_reads_as_documented(written, key, value):
    spec = _spec(written)
    (setting,) = [s for s in spec.settings if s.key == key]
    assert setting.value == value
    check(spec)  # and it trains: the checker accepts it


# written -> the canonical text `fmt` writes
CANONICAL = [
    ("lr=onecycle(.4, warm=.2)", "lr=onecycle(.4,warm=.2)"),
    ("lr=onecycle(.4, warm=.3)", "lr=onecycle(.4)"),  # the default is left out
    ("lr=onecycle(peak=.4)", "lr=onecycle(.4)"),
    ("lr=constant(.01)", "lr=.01"),
    ("lr=step(.1, every=10, factor=.1)", "lr=step(.1,every=10)"),
    ("lr=cosine(.1,final=.001,warm=.05)", "lr=cosine(.1,final=.001,warm=.05)"),
    ("augment=cutout8+crop4+flip", "augment=flip+crop4+cutout8"),
    ("augment=crop(4, mode=zero)", "augment=crop4(mode=zero)"),
    ("augment=crop(4,mode=reflect)", "augment=crop4"),
    ("augment=none", "augment=none"),
    ("nesterov=true momentum=.9", "nesterov=true momentum=.9"),
    ("weight_decay=5e-4", "weight_decay=.0005"),
    ("label_smoothing=.1 tta=flip", "label_smoothing=.1 tta=flip"),
    ("patience=3 monitor=val_accuracy", "patience=3 monitor=val_accuracy"),
    ("ema=.999", "ema=.999"),
    ("lr=onecycle({.2,.4})", "lr={onecycle(.2),onecycle(.4)}"),
    ("augment={none, flip+crop4}", "augment={none,flip+crop4}"),
]


@pytest.mark.parametrize("written,canonical", CANONICAL, ids=[c[0] for c in CANONICAL])
def test_fmt_and_json_round_trip(written, canonical):
    spec = _spec(written)
    text = format_spec(spec)
    assert text == f"train {canonical}{HEAD}"
    assert parse(text) == spec
    assert format_spec(parse(text)) == text  # fmt is idempotent
    assert ir.from_json(ir.to_json(spec)) == spec


def test_json_round_trip_in_a_fresh_process():
    """from_json knows the schedule and augmentation nodes without anything imported first."""
    import subprocess
    import sys

    spec = _spec("lr=onecycle(.4,warm=.2) augment=flip+crop4")
    code = ("import sys; from cnnspec.language import ir; s = ir.from_json(sys.stdin.read()); "
            "print(repr([x.value for x in s.settings]))")
    out = subprocess.run([sys.executable, "-c", code], input=ir.to_json(spec),
                         capture_output=True, text=True, check=True).stdout
    assert "Schedule(name='onecycle'" in out and "Augment(flip=True, crop=4" in out


# written -> (the message, the text the caret is under, a piece of the hint or None)
REFUSED = [
    ("lr=onecycle(.4, warm=1.5)", "onecycle's warm must be in [0, 1), got 1.5", "1.5", None),
    ("lr=onecycle(0)", "onecycle's peak must be greater than 0, got 0.0", "0", None),
    ("lr=step(.1, every=0)", "step's every must be in [1, 2147483647], got 0", "0", None),
    ("lr=step(.1)", "step needs its `every`", "step(.1)", "step(.1,every=10"),
    ("lr=step(.1,factor=2,every=1)", "step's factor must be in (0, 1], got 2.0", "2", None),
    ("lr=cosine(.1, final=.01, wram=.1)", "cosine has no argument `wram`", "wram",
     "did you mean `warm`?"),
    ("lr=onecycl(.4)", "lr must be a number or a schedule", "onecycl(.4)",
     "did you mean `onecycle`?"),
    ("lr=cosine", "cosine needs its arguments", "cosine", "cosine(.1,warm=.05)"),
    # a rate above the schedule's top one is a slip (final read as a fraction of lr)
    ("lr=cosine(.1,final=.5)", "cosine's final (0.5) is above its lr (0.1): a cosine decays "
     "from lr to final", ".5", "final=0.001"),
    ("lr=onecycle(.4,.2,.41)", "onecycle's final (0.41) is above its peak (0.4)", ".41",
     "not a fraction of peak"),
    ("lr=onecycle(.4,start=.5)", "onecycle's start (0.5) is above its peak (0.4): the peak is "
     "the cycle's highest rate", ".5", "start=0.004"),
    ("lr=cosine({.1,.01},final=.05)", "cosine's final (0.05) is above its lr (0.01)", ".05",
     None),
    ("lr=onecycle(.4,.2,.1,.1,.1)", "onecycle takes 4 argument(s) in order (peak, warm, "
     "final, start), not 5", ".1", "remove the values after the last one"),
    ("lr=onecycle(warm=.2,.4)", "onecycle: a value without a name after a named one", ".4",
     "name it"),
    # monitor only picks what patience watches: alone it would do nothing
    ("monitor=val_accuracy", "monitor chooses what early stopping watches, and there is no "
     "patience", "monitor=val_accuracy", "add patience=N"),
    # the argument as written (`mode`), never the settings field behind it (`crop_mode`)
    ("augment=crop(4,mode=zero,mode=zero)", "crop's `mode` is given twice", "mode=zero",
     "keep one"),
    ("lr=onecycle(.4,peak=.3)", "onecycle's `peak` is given twice", "peak", "keep one"),
    ("augment=crop100", "crop must be in [1, 64], got 100", "crop100", None),
    ("augment=cutout0", "cutout must be in [1, 256], got 0", "cutout0", None),
    ("augment=crop(4,mode=wrap)", "crop's mode must be one of reflect, zero, not wrap", "wrap",
     None),
    ("augment=flip+flip", "`flip` is written twice in augment", "flip", "keep one"),
    ("augment=flop", "unknown augmentation `flop`", "flop", "did you mean `flip`?"),
    ("augment=flip2", "flip takes no size, not flip2", "flip2", None),
    ("augment=crop", "crop needs its `crop`", "crop", "crop4"),
    ("augment=none+flip", "`none` cannot be joined", "none", "augment=none alone"),
    ("augment=4", "augment terms are flip, crop and cutout, not 4", "4", None),
    ("nesterov=yes", "nesterov must be one of true, false, not yes", "yes", None),
    ("nesterov=true", "nesterov needs a momentum above 0", "nesterov=true", "momentum=.9"),
    ("optimizer=adam nesterov=true", "nesterov applies to sgd, not adam", "nesterov=true",
     "optimizer=sgd"),
    ("weight_decay=1e999", "weight_decay is too large: 1e999", "1e999", None),
    ("label_smoothing=1", "label_smoothing must be in [0, 1), got 1", "1", None),
    ("tta=mirror", "tta must be one of none, flip, not mirror", "mirror", None),
    ("patience=0", "patience must be in [1, 2147483647], got 0", "0", None),
    ("patience=2.5", "patience must be a whole number, not 2.5", "2.5", None),
    ("validation=none patience=3", "patience needs validation to watch", "patience=3",
     "validation=test"),
    ("monitor=accuracy", "monitor must be one of val_loss, val_accuracy, not accuracy",
     "accuracy", "val_accuracy"),
    ("ema=1", "ema must be in (0, 1), got 1", "1", None),
    ("ema=0", "ema must be in (0, 1), got 0", "0", None),
    ("epochs=onecycle(1)", "epochs must be a single value, not onecycle(1)", "onecycle(1)",
     None),
    ("lr={.1,onecycle(.1)} augment={flip,flip}", "`augment` lists the same value twice",
     "augment", "write each value once"),
]


@pytest.mark.parametrize("written,message,under,hint", REFUSED, ids=[r[0] for r in REFUSED])
def test_refused_with_position_caret_and_hint(written, message, under, hint):
    line = f"train {written}"
    with pytest.raises(SpecError) as err:
        check(parse(line + HEAD, filename="r.cnn"))
    diagnostics = [d for d in err.value.diagnostics if message in d.message]
    assert diagnostics, str(err.value)
    d = diagnostics[0]
    # the caret is under the last place `under` is written (the value, not the key)
    col = line.rindex(under) + 1 if under != "augment" else line.index(under) + 1
    if under in ("nesterov=true", "patience=3"):
        col = line.index(under) + 1
    assert (d.span.line, d.span.column) == (1, col), (d.span, col)
    text = str(err.value)
    assert f"r.cnn:1:{col}: error: " in text
    assert "\n    " + line + "\n" + " " * (4 + col - 1) + "^" in text
    if hint is not None:
        assert d.hint is not None and hint in d.hint


def test_refused_by_the_cli_check_command(cli, tmp_path: Path):
    bad = tmp_path / "bad.cnn"
    bad.write_text("train lr=onecycle(.4, warm=1.5) augment=flip+crop4\n|\n")
    result = cli("check", str(bad))
    assert result.returncode == 1
    assert f"{bad}:1:28: error: onecycle's warm must be in [0, 1), got 1.5" in result.stderr
    assert "Traceback" not in result.stderr


def test_sweeps_expand_schedules_and_augmentations():
    spec = parse("train lr=onecycle({.2,.4}) augment={none,flip+crop4}" + HEAD, name="s")
    variants = expand(spec)
    assert [v.name for v in variants] == [
        "s[lr=onecycle(.2),augment=none]", "s[lr=onecycle(.2),augment=flip+crop4]",
        "s[lr=onecycle(.4),augment=none]", "s[lr=onecycle(.4),augment=flip+crop4]"]
    got = [(settings_of(v.spec).lr.get("peak"), settings_of(v.spec).augment)
           for v in variants]
    assert got == [(0.2, Augment()), (0.2, Augment(True, 4)), (0.4, Augment()),
                   (0.4, Augment(True, 4))]
    # every variant is a plain spec whose text parses back to the same settings
    for v in variants:
        assert not v.spec.has_sweep()
        assert settings_of(parse(format_spec(v.spec))) == settings_of(v.spec)


def test_sweep_over_two_arguments_of_one_call_is_their_product():
    (setting,) = _spec("lr=cosine({.1,.2},warm={0,.1})").settings
    assert [(s.get("lr"), s.get("warm")) for s in setting.choices] == [
        (0.1, 0.0), (0.1, 0.1), (0.2, 0.0), (0.2, 0.1)]


@pytest.mark.parametrize("train", ["nesterov={true,false} momentum=.9", "tta={none,flip}",
                                   "patience={3,5}", "ema={.99,.999}",
                                   "label_smoothing={0,.1}", "weight_decay={5e-4,1e-3}"])
def test_every_new_setting_sweeps(train):
    assert len(expand(parse(f"train {train}{HEAD}"))) == 2


def test_diff_shows_recipe_settings_as_the_spec_writes_them():
    a = parse("train lr=.01" + HEAD)
    b = parse("train lr=onecycle(.4,warm=.2) augment=flip+crop4 nesterov=true momentum=.9"
              + HEAD)
    d = diff_reports(check(a), check(b), settings_of(a), settings_of(b))
    assert list(d.settings) == [("lr", 0.01, "onecycle(.4,warm=.2)"), ("momentum", 0.0, 0.9),
                                ("augment", "none", "flip+crop4"), ("nesterov", False, True)]
    json.dumps(d.to_dict())  # the JSON form holds only JSON values


def test_cli_diff_names_the_changed_recipe_settings(cli, tmp_path: Path):
    a, b = tmp_path / "a.cnn", tmp_path / "b.cnn"
    a.write_text("train lr=.01\n|\n")
    b.write_text("train lr=cosine(.1) augment=crop4(mode=zero) ema=.99\n|\n")
    result = cli("diff", str(a), str(b))
    assert result.returncode == 0, result.stderr
    for line in ("setting lr: 0.01 → cosine(.1)", "setting augment: none → crop4(mode=zero)",
                 "setting ema: none → 0.99"):
        assert line in result.stdout


def test_record_round_trip_of_every_new_setting():
    settings = settings_of(_spec(
        "lr=onecycle(.4,warm=.2) augment=flip+crop4(mode=zero)+cutout8 momentum=.9 "
        "nesterov=true weight_decay=5e-4 label_smoothing=.1 tta=flip patience=4 "
        "monitor=val_accuracy ema=.999"))
    recorded = json.loads(json.dumps(settings.to_dict()))  # as settings.json holds it
    assert recorded["lr"] == {"kind": "onecycle", "peak": 0.4, "warm": 0.2, "final": 0.0,
                              "start": 0.0}
    assert recorded["augment"] == {"flip": True, "crop": 4, "crop_mode": "zero", "cutout": 8}
    assert (recorded["nesterov"], recorded["weight_decay"], recorded["label_smoothing"],
            recorded["tta"], recorded["patience"], recorded["monitor"], recorded["ema"]) == (
        True, 0.0005, 0.1, "flip", 4, "val_accuracy", 0.999)
    assert SETTINGS.from_record(recorded) == settings


def test_a_run_recorded_before_the_recipe_settings_reads_as_the_defaults():
    fixture = ROOT / "tests" / "fixtures" / "run-before-issue-11" / "settings.json"
    old = json.loads(fixture.read_text())["settings"]
    assert "augment" not in old and "nesterov" not in old
    settings = SETTINGS.from_record(old)
    assert (settings.lr, settings.augment, settings.nesterov, settings.weight_decay,
            settings.label_smoothing, settings.tta, settings.patience, settings.monitor,
            settings.ema) == (old["lr"], Augment(False, 0, "reflect", 0), False, None, 0.0,
                              "none", None, "val_loss", None)


@pytest.mark.parametrize("n", range(1, 8))
def test_seed_specs_keep_the_notebooks_recipe(n):
    settings = settings_of(load(SPECS / f"exp{n}.cnn"))
    assert isinstance(settings.lr, float)  # a constant rate, as before schedules
    assert settings.augment == Augment() and not settings.augment.active
    assert (settings.nesterov, settings.weight_decay, settings.label_smoothing, settings.tta,
            settings.patience, settings.ema) == (False, None, 0.0, "none", None, None)
    # the recorded form of the old settings is what it was: the lr a plain number
    assert settings.to_dict()["lr"] == settings.lr


def test_values_fit_the_training_side():
    """The language's values build the TensorFlow side's dataclasses field for field
    (cnnspec.training.schedules / .augment import no TensorFlow at module level)."""
    from cnnspec.training import augment as aug
    from cnnspec.training import schedules

    for text in ("onecycle(.4,warm=.2)", "step(.1,every=10,factor=.5)", "cosine(.1,warm=.05)",
                 "constant(.01,warm=.1)"):
        s = _one(f"lr={text}")
        built = schedules.make_schedule(s.kind, **s.params())
        assert built.kind == s.name
        horizon = schedules.Horizon(steps_per_epoch=10, epochs=10)
        assert built.lr_at(0, horizon) >= 0
    a = _one("augment=flip+crop4(mode=zero)+cutout8")
    assert aug.Augment(**a.params()) == aug.Augment(flip=True, crop=4, crop_mode="zero",
                                                     cutout=8)
    assert set(SETTINGS.by_name["augment"].default.params()) == {
        f for f in aug.Augment.__dataclass_fields__}


def test_command_line_overrides(tmp_path: Path):
    import argparse

    from cnnspec.cli.train import add_train_flags, resolved_settings

    p = argparse.ArgumentParser()
    add_train_flags(p)
    spec = parse("train lr=.01 momentum=.9" + HEAD)
    args = p.parse_args(["--lr", "onecycle(.4, warm=.2)", "--augment", "flip+crop4",
                         "--nesterov", "true", "--weight-decay", "5e-4", "--label-smoothing",
                         ".1", "--tta", "flip", "--patience", "3", "--monitor", "val_accuracy",
                         "--ema", ".99"])
    s = resolved_settings(spec, args)
    assert s == TrainSettings(
        lr=Schedule("onecycle", (("peak", 0.4), ("warm", 0.2), ("final", 0.0), ("start", 0.0))),
        momentum=0.9, augment=Augment(True, 4), nesterov=True, weight_decay=0.0005,
        label_smoothing=0.1, tta="flip", patience=3, monitor="val_accuracy", ema=0.99)
    assert resolved_settings(spec, p.parse_args(["--lr", ".5"])).lr == 0.5


@pytest.mark.parametrize("flags,message", [
    (["--lr", "onecycle(.4,wram=.2)"],
     "argument --lr: onecycle has no argument `wram` (did you mean `warm`?)"),
    (["--lr", "inf"], "argument --lr: must be a positive finite number: inf"),
    (["--augment", "flip+crop99"], "argument --augment: crop must be in [1, 64], got 99"),
    (["--augment", "{none,flip}"], "argument --augment: one value"),
    (["--nesterov", "yes"], "argument --nesterov: invalid choice: 'yes'"),
    (["--ema", "1.5"], "ema must be in (0, 1), got 1.5"),
    (["--optimizer", "adam", "--nesterov", "true", "--momentum", ".9"],
     "nesterov applies to sgd, not adam"),
])
def test_command_line_refusals(cli, tmp_path: Path, flags, message):
    spec = tmp_path / "t.cnn"
    spec.write_text("|\n")
    result = cli("train", str(spec), "--runs-dir", str(tmp_path / "runs"), *flags)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "runs").exists()  # refused before any run folder


def test_readme_recipe_line_checks():
    readme = (ROOT / "README.md").read_text("utf-8")
    (line,) = [ln for ln in readme.splitlines() if ln.startswith("train optimizer=sgd momentum")]
    settings = settings_of(check(parse(line + HEAD)) and parse(line + HEAD))
    assert settings.lr == Schedule("onecycle", (("peak", 0.4), ("warm", 0.2), ("final", 0.0),
                                                ("start", 0.0)))
    assert settings.augment == Augment(True, 4, "reflect", 8)


def test_run_records_as_text_and_the_settings_that_differ():
    fixture = ROOT / "tests" / "fixtures" / "run-before-issue-11" / "settings.json"
    old = json.loads(fixture.read_text())["settings"]
    new = settings_of(_spec("lr=onecycle(.4,warm=.2) augment=flip+crop4 batch=32")).to_dict()
    texts = SETTINGS.texts(new)
    assert (texts["lr"], texts["augment"], texts["tta"]) == ("onecycle(.4,warm=.2)",
                                                             "flip+crop4", "none")
    assert SETTINGS.texts(old)["augment"] == "none"
    differ = SETTINGS.differing([old, new])
    assert "lr" in differ and "augment" in differ
    assert "tta" not in differ and "nesterov" not in differ


def test_a_study_records_recipe_flags_as_json():
    """A study stores its workers' flags (the same-flags check) as JSON: a schedule or an
    augmentation given on the command line is stored as its record."""
    from cnnspec.experiments.definition import SweepOptions

    lr = _one("lr=onecycle(.4,warm=.2)")
    config = SweepOptions(train={"lr": lr, "augment": Augment(True, 4), "epochs": 3}).config()
    stored = json.loads(json.dumps(config))
    assert stored["lr"] == {"kind": "onecycle", "peak": 0.4, "warm": 0.2, "final": 0.0,
                            "start": 0.0}
    assert stored["augment"] == {"flip": True, "crop": 4, "crop_mode": "reflect", "cutout": 0}
    assert stored["epochs"] == 3 and stored["ema"] is None


def test_cli_expand_lists_the_recipe_variants(cli, tmp_path: Path):
    spec = tmp_path / "s.cnn"
    spec.write_text("train lr=onecycle({.2,.4}) augment={none,flip+crop4}\n|\n")
    result = cli("expand", str(spec), "--json")
    assert result.returncode == 0, result.stderr
    names = [v["name"] for v in json.loads(result.stdout)]
    assert names == ["s[lr=onecycle(.2),augment=none]", "s[lr=onecycle(.2),augment=flip+crop4]",
                     "s[lr=onecycle(.4),augment=none]", "s[lr=onecycle(.4),augment=flip+crop4]"]


def test_schedule_arguments_by_position_are_the_named_ones_in_order():
    """README: arguments by position in the table's order, then by name; fmt names all but
    the first."""
    assert _one("lr=onecycle(.4,.2,.01)") == _one("lr=onecycle(.4,warm=.2,final=.01)")
    assert "train lr=onecycle(.4,warm=.2,final=.01)\n" in \
        format_spec(_spec("lr=onecycle(.4,.2,.01)"))
    with pytest.raises(SpecError, match="onecycle: a value without a name after a named one"):
        _spec("lr=onecycle(.4,warm=.2,.01)")


def test_a_rising_schedule_recorded_before_it_was_refused_is_still_read():
    """The text refuses `cosine(.1,final=.5)`; a run folder that recorded one (written before
    the rule) still reads, so compare and continue keep working on it."""
    from cnnspec.language.setting_values import schedule_from_record

    read = schedule_from_record({"kind": "cosine", "lr": 0.1, "final": 0.5, "warm": 0.0})
    assert read.params() == {"lr": 0.1, "final": 0.5, "warm": 0.0}
