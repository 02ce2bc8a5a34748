"""The overfitting rule at its boundaries, against the rule as README documents it.

README: "The flag fires when the final train−val accuracy gap is above 10 points, or when
validation loss rose 3 epochs in a row while training loss fell". Every expectation below is
worked out by hand from that sentence: a gap of exactly 10 points is not above 10 points; three
rises must be consecutive epochs, each with the training loss falling over the same epoch.

Keras reports accuracies as float32, and 0.8 - 0.7 is 0.10000000000000009 in float64 and
0.10000002 from float32: the implementation used to flag those exact-10-point gaps.
"""

from __future__ import annotations

import numpy as np
import pytest

from cnnspec.experiments import compare


def _last(acc: float, val_acc: float) -> list[dict]:
    # one epoch; losses that say nothing (flat) so only the gap can fire
    return [{"epoch": 1, "loss": 1.0, "val_loss": 1.0, "accuracy": acc, "val_accuracy": val_acc}]


# (train correct, val correct) out of 500 images each, and whether the gap is above 10 points
GAPS = [
    (400, 350, False),  # 80 % vs 70 %: exactly 10 points
    (300, 250, False),  # 60 % vs 50 %
    (206, 156, False),  # 41.2 % vs 31.2 %
    (401, 350, True),   # 80.2 % vs 70 %: 10.2 points
    (399, 350, False),  # 9.8 points
    (500, 450, False),  # 100 % vs 90 %
]


@pytest.mark.parametrize(("train", "val", "fires"), GAPS)
@pytest.mark.parametrize("dtype", [float, np.float32])
def test_gap_at_the_threshold(train, val, fires, dtype):
    acc, val_acc = float(dtype(train / 500)), float(dtype(val / 500))
    flag, reason = compare.overfitting(_last(acc, val_acc))
    assert flag is fires, (acc, val_acc, acc - val_acc)
    if fires:
        assert reason == f"train−val accuracy gap {(train - val) / 5:.2f} points > 10"


def test_only_the_final_epoch_gap_counts():
    h = _last(0.9, 0.5) + [{"epoch": 2, "loss": 1.0, "val_loss": 1.0, "accuracy": 0.6,
                            "val_accuracy": 0.55}]
    assert compare.overfitting(h) == (False, "")


def _losses(train, val):
    return [{"epoch": i + 1, "loss": t, "val_loss": v, "accuracy": 0.5, "val_accuracy": 0.5}
            for i, (t, v) in enumerate(zip(train, val, strict=True))]


FALLING = [2.0, 1.9, 1.8, 1.7, 1.6, 1.5, 1.4, 1.3]


@pytest.mark.parametrize(("val", "fires", "to_epoch"), [
    # three consecutive rises (epochs 2, 3, 4): fires at epoch 4
    ([1.0, 1.1, 1.2, 1.3], True, 4),
    # two rises only
    ([1.0, 1.1, 1.2], False, None),
    # rise, rise, fall, rise, rise: never three in a row
    ([1.0, 1.1, 1.2, 1.1, 1.2, 1.3], False, None),
    # rise, rise, fall, then three rises (epochs 5, 6, 7)
    ([1.0, 1.1, 1.2, 1.1, 1.2, 1.3, 1.4], True, 7),
    # a flat epoch is not a rise: it breaks the run
    ([1.0, 1.1, 1.1, 1.2, 1.3], False, None),
    # rise, rise, fall, rise, fall, rise, rise: five rises, none three in a row
    ([1.0, 1.1, 1.2, 1.0, 1.1, 1.0, 1.1, 1.2], False, None),
])
def test_rising_validation_loss_must_be_consecutive(val, fires, to_epoch):
    flag, reason = compare.overfitting(_losses(FALLING[:len(val)], val))
    assert flag is fires
    if fires:
        assert reason == ("val loss rose 3 epochs in a row while train loss fell "
                          f"(to epoch {to_epoch})")


def test_each_rise_needs_the_training_loss_to_fall_over_the_same_epoch():
    val = [1.0, 1.1, 1.2, 1.3, 1.4, 1.5]
    # train loss flat over epoch 3: rises at 2 | 4, 5 -> no three in a row by epoch 5
    train = [2.0, 1.9, 1.9, 1.8, 1.7, 1.6]
    assert compare.overfitting(_losses(train[:5], val[:5]))[0] is False
    # epoch 6 makes 4, 5, 6
    flag, reason = compare.overfitting(_losses(train, val))
    assert flag and reason.endswith("(to epoch 6)")


def test_a_missing_validation_loss_breaks_the_run():
    h = _losses(FALLING[:5], [1.0, 1.1, 1.2, 1.3, 1.4])
    h[2]["val_loss"] = None  # epoch 3 not validated: rises 2 | 4, 5 only
    assert compare.overfitting(h) == (False, "")
