"""Tests for training.schedules: each schedule's rate at chosen steps equals the closed form worked
out here by arithmetic; the Keras schedule equals it, is saved and loaded with the model, and
follows optimizer.iterations, so a resumed run continues it."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cnnspec.training.schedules import (
    Constant,
    Cosine,
    Horizon,
    OneCycle,
    Step,
    keras_learning_rate,
    keras_schedule,
    make_schedule,
    register_keras_objects,
)

H = Horizon(steps_per_epoch=10, epochs=5)  # 50 steps

# (schedule, {step: rate worked out by hand})
CASES = [
    (Constant(0.1), {0: 0.1, 17: 0.1, 49: 0.1}),
    # warm .2 of 50 = 10 steps from 0 up to .1
    (Constant(0.1, warm=0.2), {0: 0.0, 5: 0.05, 9: 0.09, 10: 0.1, 49: 0.1}),
    # halved every 2 epochs = every 20 steps
    (Step(0.1, every=2, factor=0.5), {0: 0.1, 19: 0.1, 20: 0.05, 39: 0.05, 40: 0.025}),
    # warm-up to the value at step 10 (still .1), then the epoch-counted drops
    (Step(0.1, every=2, factor=0.5, warm=0.2), {5: 0.05, 10: 0.1, 20: 0.05}),
    # half a cosine from .1 to .01 over 50 steps: at 25, cos(pi/2) = 0 -> the middle, .055;
    # at 10, (1 + cos(pi/5)) / 2 = .9045085
    (Cosine(0.1, final=0.01), {0: 0.1, 25: 0.055, 10: 0.01 + 0.09 * 0.9045084971874737,
                               50: 0.01}),
    # warm 10 steps, then the cosine over the remaining 40: the middle is step 30
    (Cosine(0.1, final=0.01, warm=0.2), {5: 0.05, 10: 0.1, 30: 0.055, 50: 0.01}),
    # 0 -> .4 over 10 steps, then .4 -> 0 over 40: step 30 is half-way down
    (OneCycle(0.4, warm=0.2), {0: 0.0, 5: 0.2, 10: 0.4, 30: 0.2, 40: 0.1, 50: 0.0}),
    (OneCycle(0.4, warm=0.2, final=0.04, start=0.08),
     {0: 0.08, 5: 0.24, 10: 0.4, 30: 0.22, 50: 0.04}),
]


@pytest.mark.parametrize("schedule, expected", CASES)
def test_rate_at_chosen_steps_equals_the_closed_form(schedule, expected):
    for step, rate in expected.items():
        assert schedule.lr_at(step, H) == pytest.approx(rate, rel=1e-12, abs=1e-15), step


def test_onecycle_is_pages_piecewise_linear_dawnbench_schedule():
    """Page's `PiecewiseLinear([0, 5, 24], [0, .4, 0])` by epoch, here one step per epoch."""
    schedule, horizon = OneCycle(0.4, warm=5 / 24, final=0.0), Horizon(1, 24)
    for t in range(25):
        assert schedule.lr_at(t, horizon) == pytest.approx(np.interp(t, [0, 5, 24], [0, .4, 0]))


def test_cosine_matches_the_textbook_formula_at_every_step():
    schedule, horizon = Cosine(0.2, final=0.0), Horizon(7, 3)
    for t in range(22):
        assert schedule.lr_at(t, horizon) == pytest.approx(0.1 * (1 + math.cos(math.pi * t / 21)))


@pytest.mark.parametrize("kind, values, words", [
    ("cyclic", {"lr": 0.1}, "unknown schedule 'cyclic'"),
    ("cosine", {"lr": 0.1, "peak": 0.2}, "cosine has no setting 'peak'"),
    ("cosine", {"lr": -0.1}, "cosine: lr must be a number >= 0"),
    ("onecycle", {"peak": 0.4, "warm": 1.0}, r"warm must be a fraction in \[0, 1\)"),
    ("step", {"lr": 0.1, "every": 0}, "every must be a whole number of epochs >= 1"),
    ("step", {"every": 2}, "step needs lr"),
    ("constant", {"lr": float("nan")}, "lr must be a number >= 0"),
])
def test_bad_schedules_are_refused_with_a_message(kind, values, words):
    with pytest.raises(ValueError, match=words):
        make_schedule(kind, **values)


def test_make_schedule_builds_each_kind_from_plain_values():
    assert make_schedule("onecycle", peak=0.4, warm=0.2) == OneCycle(0.4, warm=0.2)
    assert make_schedule("step", lr=0.1, every=3) == Step(0.1, 3, 0.1)
    assert OneCycle(0.4).params() == {"peak": 0.4, "warm": 0.3, "final": 0.0, "start": 0.0}
    with pytest.raises(ValueError, match="steps_per_epoch must be"):
        Horizon(0, 3)


def test_importing_the_module_does_not_import_tensorflow():
    code = "import sys, cnnspec.training.schedules; print('tensorflow' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# -- Keras -------------------------------------------------------------------------------------


@pytest.mark.parametrize("schedule, expected", CASES)
def test_the_keras_schedule_equals_the_closed_form(schedule, expected):
    keras_lr = keras_schedule(schedule, H)
    for step in [*expected, 3, 33, 47]:
        got = float(keras_lr(np.int64(step)))
        assert got == pytest.approx(schedule.lr_at(step, H), rel=1e-6, abs=1e-8), step


def test_a_constant_rate_without_warm_up_stays_a_plain_float():
    assert keras_learning_rate(Constant(0.01), H) == 0.01
    assert not isinstance(keras_learning_rate(Constant(0.01, warm=0.1), H), float)


def test_the_keras_schedule_survives_keras_serialisation():
    import keras

    original = keras_schedule(OneCycle(0.4, warm=0.2, final=0.01), H)
    data = keras.saving.serialize_keras_object(original)
    assert data["registered_name"] == "cnnspec>LearningRate"
    again = keras.saving.deserialize_keras_object(data)
    assert again.get_config() == original.get_config()
    for step in (0, 7, 31):
        assert float(again(np.int64(step))) == float(original(np.int64(step)))


def _tiny_model(keras, schedule):
    keras.utils.set_random_seed(3)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="softmax")])
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=keras_schedule(schedule, H),
                                                 momentum=0.9),
                  loss="categorical_crossentropy")
    return model


def _batches(n):
    rng = np.random.default_rng(5)
    x = rng.normal(size=(n * 4, 4)).astype(np.float32)
    y = np.eye(3, dtype=np.float32)[rng.integers(0, 3, n * 4)]
    return x, y


def test_a_saved_and_loaded_model_continues_the_schedule_where_it_stopped(tmp_path: Path):
    """What --resume does: the checkpoint restores optimizer.iterations, so the rate is the
    one of the next step, and training on gives the same weights as never stopping."""
    import keras

    schedule = OneCycle(0.4, warm=0.2)
    x, y = _batches(10)
    model = _tiny_model(keras, schedule)
    model.fit(x[:28], y[:28], batch_size=4, epochs=1, shuffle=False, verbose=0)  # 7 steps
    assert int(model.optimizer.iterations) == 7
    assert float(model.optimizer.learning_rate) == pytest.approx(schedule.lr_at(7, H), rel=1e-6)
    model.save(tmp_path / "checkpoint.keras")
    loaded = keras.saving.load_model(tmp_path / "checkpoint.keras")
    assert int(loaded.optimizer.iterations) == 7
    assert float(loaded.optimizer.learning_rate) == float(model.optimizer.learning_rate)
    for m in (model, loaded):
        m.fit(x[28:], y[28:], batch_size=4, epochs=1, shuffle=False, verbose=0)  # 3 more steps
    assert float(loaded.optimizer.learning_rate) == pytest.approx(schedule.lr_at(10, H), rel=1e-6)
    for a, b in zip(model.get_weights(), loaded.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


def test_loading_in_a_fresh_process_needs_register_keras_objects(tmp_path: Path):
    import keras

    register_keras_objects()
    path = tmp_path / "model.keras"
    _tiny_model(keras, Cosine(0.1)).save(path)
    code = (
        "import sys, keras\n"
        f"path = {str(path)!r}\n"
        "try:\n"
        "    keras.saving.load_model(path)\n"
        "    print('loaded without registering')\n"
        "except Exception as exc:\n"
        "    print('refused:', type(exc).__name__)\n"
        "from cnnspec.training.schedules import register_keras_objects\n"
        "register_keras_objects()\n"
        "m = keras.saving.load_model(path)\n"
        "print(type(m.optimizer.learning_rate).__name__, float(m.optimizer.learning_rate))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={"TF_CPP_MIN_LOG_LEVEL": "3", "PATH": "/usr/bin:/bin"})
    lines = out.stdout.strip().splitlines()
    assert lines[0].startswith("refused:"), out.stdout + out.stderr
    assert float(lines[1].split()[-1]) == pytest.approx(0.1, rel=1e-6)


@pytest.mark.parametrize(("schedule", "horizon", "rates"), [
    # one step, warm .6: round(.6) = 1 warm-up step was the whole run, at start = 0: the run
    # trained at lr 0. The warm-up keeps the last step, which runs at the schedule's rate.
    (Cosine(0.1, warm=0.6), Horizon(1, 1), [0.1]),
    (Constant(0.1, warm=0.9), Horizon(1, 1), [0.1]),
    # two steps, warm .9: round(1.8) = 2 -> 1; step 0 from start, step 1 at the peak
    (OneCycle(0.4, warm=0.9), Horizon(2, 1), [0.0, 0.4]),
    # ten steps, warm .96: round(9.6) = 10 -> 9 warm-up steps (0, .4/9, ...), then the peak
    (OneCycle(0.4, warm=0.96), Horizon(5, 2), [0.4 * t / 9 for t in range(9)] + [0.4]),
])
def test_a_warm_up_never_takes_every_step(schedule, horizon, rates):
    assert [schedule.lr_at(t, horizon) for t in range(horizon.total_steps)] == pytest.approx(
        rates, rel=1e-12, abs=1e-15)


def test_a_warm_up_short_of_the_whole_run_is_as_written():
    """The cap only touches a warm-up that would take every step: round(.5 · 4) = 2 stays."""
    assert OneCycle(0.4, warm=0.5).warm_steps(Horizon(2, 2)) == 2
    assert Cosine(0.1, warm=0.6).warm_steps(Horizon(1, 1)) == 0
