"""bf16 dropout from 8 or 16 random bits per value (cnnspec.backend.fast_dropout) vs Keras."""

from __future__ import annotations

import numpy as np
import pytest

from cnnspec.backend.keras_model import import_keras

keras = import_keras()
import tensorflow as tf  # noqa: E402  (after import_keras, which silences TensorFlow's start-up)

from cnnspec.backend.fast_dropout import (  # noqa: E402
    bits_for,
    speed_up_dropouts,
    threshold,
)

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


def _dropout_model(policy: str, rate: float, seed: int = 3, **options) -> tuple:
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)
    try:
        inputs = keras.Input((40, 50))
        layer = keras.layers.Dropout(rate, seed=seed, **options)
        return keras.Model(inputs, layer(inputs)), layer
    finally:
        keras.config.set_dtype_policy(previous)


@pytest.mark.parametrize("rate", [0.25, 0.5, 0.1])
def test_drops_the_rate_and_scales_the_kept_values_like_keras(rate: float) -> None:
    model, layer = _dropout_model("mixed_bfloat16", rate)
    assert speed_up_dropouts(model) == 1
    x = tf.cast(tf.random.stateless_uniform((100, 40, 50), seed=[1, 2]) + 0.5, tf.bfloat16)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(x, training=True)
        loss = tf.reduce_sum(tf.cast(y, tf.float32))
    grad = np.asarray(tf.cast(tape.gradient(loss, x), tf.float32))
    y, x = np.asarray(tf.cast(y, tf.float32)), np.asarray(tf.cast(x, tf.float32))
    kept = y != 0
    # 200,000 values: the dropped fraction is the rate within 5 standard deviations
    sd = (rate * (1 - rate) / kept.size) ** 0.5
    assert abs((1 - kept.mean()) - rate) < 5 * sd
    # kept values are Keras's kept values, bit for bit (where Keras's own mask kept them too)
    _, plain = _dropout_model("mixed_bfloat16", rate)
    reference = np.asarray(tf.cast(plain(tf.cast(x, tf.bfloat16), training=True), tf.float32))
    both = kept & (reference != 0)
    assert both.sum() > 0.5 * (1 - rate) ** 2 * both.size  # independent masks: (1-rate)²
    np.testing.assert_array_equal(y[both], reference[both])
    # and by arithmetic: x / (1 - rate), within bf16's rounding; the gradient is 1 / (1 - rate)
    # rounded to bf16 (8 significant bits) where kept, 0 where dropped
    np.testing.assert_allclose(y[kept], x[kept] / (1 - rate), rtol=2**-7)
    np.testing.assert_allclose(grad[kept], 1 / (1 - rate), rtol=2**-8)
    assert (grad[~kept] == 0).all()


def test_whole_256ths_take_8_exact_bits_other_rates_16() -> None:
    assert [bits_for(r) for r in (0.25, 0.5, 0.0, 3 / 256, 0.1, 0.3)] == [8, 8, 8, 8, 16, 16]
    assert (threshold(0.25, 8), threshold(0.5, 8), threshold(0.0, 8)) == (64, 128, 0)
    assert threshold(0.1, 16) == 6554  # round(6553.6)
    assert abs(threshold(0.3, 16) / 65536 - 0.3) <= 0.5 / 65536


@pytest.mark.parametrize("rate", [0.5, 0.1])
def test_neighbouring_values_are_dropped_independently(rate: float) -> None:
    """Four values share a 32-bit draw (two at 16 bits): each pair of neighbours, and each
    value and the one a word away, is dropped together with probability rate², not rate."""
    model, layer = _dropout_model("mixed_bfloat16", rate)
    speed_up_dropouts(model)
    dropped = np.asarray(tf.cast(layer(tf.ones((100, 40, 50), tf.bfloat16), training=True),
                                 tf.float32)).reshape(-1) == 0
    for gap in (1, 2, 3, 4):
        both = (dropped[:-gap] & dropped[gap:]).mean()
        sd = (rate**2 * (1 - rate**2) / dropped.size) ** 0.5
        assert abs(both - rate**2) < 5 * sd, (gap, both)


def test_seeded_masks_repeat_and_the_seed_state_advances_as_keras_does() -> None:
    x = tf.ones((8, 40, 50), tf.bfloat16)
    masks, states = [], []
    for _ in range(2):
        model, layer = _dropout_model("mixed_bfloat16", 0.5, seed=9)
        speed_up_dropouts(model)
        masks.append([np.asarray(tf.cast(layer(x, training=True), tf.float32)) != 0
                      for _ in range(3)])
        states.append(layer.seed_generator.state.numpy())
    for a, b in zip(*masks, strict=True):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(masks[0][0], masks[0][1])  # a new mask each call
    _, plain = _dropout_model("mixed_bfloat16", 0.5, seed=9)
    for _ in range(3):
        plain(x, training=True)
    np.testing.assert_array_equal(states[0], plain.seed_generator.state.numpy())


def test_float32_inference_and_noise_shape_stay_keras_own() -> None:
    assert speed_up_dropouts(_dropout_model("float32", 0.5)[0]) == 0
    model, layer = _dropout_model("mixed_bfloat16", 0.5, noise_shape=(None, 1, 50))
    assert speed_up_dropouts(model) == 1
    x = tf.ones((4, 40, 50), tf.bfloat16)
    y = np.asarray(tf.cast(layer(x, training=True), tf.float32))
    assert (y == y[:, :1, :]).all()  # Keras's call: one mask value per noise_shape cell
    np.testing.assert_array_equal(np.asarray(tf.cast(layer(x, training=False), tf.float32)), 1.0)
    assert speed_up_dropouts(model) == 0  # not wrapped twice


def test_a_value_is_dropped_exactly_when_its_bits_are_below_the_threshold() -> None:
    """rate 1/256 drops the values whose byte is 0 (threshold 1): one in 256. Keeping values
    whose bits equal the threshold out (`>` for `>=`) would drop two in 256."""
    model, layer = _dropout_model("mixed_bfloat16", 1 / 256)
    speed_up_dropouts(model)
    y = layer(tf.ones((400, 40, 50), tf.bfloat16), training=True)
    dropped = float(np.mean(np.asarray(tf.cast(y, tf.float32)) == 0))
    sd = (1 / 256 * 255 / 256 / 800_000) ** 0.5  # ~7e-5
    assert abs(dropped - 1 / 256) < 5 * sd
