"""Hardening of the language front end (issue 9): settings that check must train, bounded
sweeps, bounded input, linear checking, every error listed, suggestions, block rows.

Expected values are derived in the tests (arithmetic, itertools, numpy), never copied from the
implementation's output.
"""

from __future__ import annotations

import types

import numpy as np
import pytest

import cnnspec
from cnnspec import settings as settings_mod
from cnnspec.settings import MAX_SEED, OPTIMIZERS, TrainSettings, setting_problems, validate


def error(text: str, **check_kwargs) -> cnnspec.SpecError:
    with pytest.raises(cnnspec.SpecError) as info:
        cnnspec.check(cnnspec.parse(text, filename="t.cnn"), **check_kwargs)
    return info.value


# -- 8. whatever check accepts must train ------------------------------------------------------


def test_momentum_with_adam_is_refused_at_the_momentum_setting():
    text = "input 32x32x3\ntrain optimizer=adam lr=.001 momentum=.9\nconv8 relu |\n"
    err = error(text)
    (d,) = err.diagnostics
    line2 = text.split("\n")[1]
    assert d.span.line == 2
    assert d.span.column == line2.index("momentum") + 1
    assert d.span.end_column == len(line2) + 1  # `momentum=.9` is the last thing on the line
    assert "momentum" in d.message and "adam" in d.message
    assert d.hint and "sgd" in d.hint
    assert "t.cnn:2:" in str(err)


class _Recorder:
    """Stands in for a keras.optimizers class: keeps the arguments it was built with."""

    def __init__(self, **kwargs):
        self.kwargs = kwargs


def _fake_keras():
    names = ("SGD", "RMSprop", "Adam", "AdamW", "Nadam", "Adagrad")
    return types.SimpleNamespace(optimizers=types.SimpleNamespace(
        **{n: type(n, (_Recorder,), {}) for n in names}))


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
@pytest.mark.parametrize("momentum", ["0", ".9"])
def test_every_optimizer_and_momentum_that_checks_builds(optimizer, momentum):
    """check accepts a combination exactly when the trainer's optimizer factory builds it."""
    from cnnspec.train import _make_optimizer

    spec = cnnspec.parse(f"train optimizer={optimizer} momentum={momentum}\n|")
    try:
        cnnspec.check(spec)
        accepted = True
    except cnnspec.SpecError:
        accepted = False
    settings = settings_mod.settings_of(spec)
    try:
        _make_optimizer(_fake_keras(), settings)
        builds = True
    except ValueError:
        builds = False
    assert accepted == builds
    # and the pure validator (for command-line overrides) agrees with both
    assert (validate(settings) is None) == builds


def test_validate_for_command_line_overrides():
    assert validate(TrainSettings()) is None
    bad = TrainSettings().override(optimizer="adam", momentum=0.9)
    message = validate(bad)
    assert message is not None and "momentum" in message and "adam" in message
    assert [p.key for p in setting_problems(bad)] == ["momentum"]
    # values no spec could hold but a command line can
    for field, value in (("momentum", 1.5), ("lr", 0.0), ("batch", 0), ("epochs", 0),
                         ("seed", MAX_SEED + 1), ("lr", float("inf")), ("batch", 2.5)):
        problems = setting_problems(TrainSettings().override(**{field: value}))
        assert [p.key for p in problems] == [field], (field, value)
    assert validate(TrainSettings().override(optimizer="rmsprop", momentum=0.9)) is None


def test_seed_range_is_what_numpy_accepts():
    # numpy (under keras.utils.set_random_seed) takes 0 .. 2**32-1; derive the edge from numpy
    np.random.seed(2**32 - 1)
    with pytest.raises(ValueError):
        np.random.seed(2**32)
    assert MAX_SEED == 2**32 - 1
    cnnspec.check(cnnspec.parse(f"train seed={2**32 - 1}\n|"))
    err = error("train seed=99999999999\n|")
    assert err.line == 1 and err.column == len("train seed=") + 1
    assert "seed" in str(err)


def test_a_spec_settings_problem_and_a_shape_problem_are_both_listed():
    text = "train optimizer=nadam momentum=.5\ndense10 conv8\n"
    lines = sorted(d.span.line for d in error(text).diagnostics)
    assert lines == [1, 2]
