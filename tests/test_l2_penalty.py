"""The bf16 path's L2 penalty (cnnspec.backend.l2_penalty) against Keras's own L2 regularizer."""

from __future__ import annotations

import numpy as np
import pytest

from cnnspec.backend.keras_model import import_keras

keras = import_keras()
import tensorflow as tf  # noqa: E402  (after import_keras, which silences TensorFlow's start-up)

from cnnspec.backend.l2_penalty import FastL2, speed_up_l2_penalties  # noqa: E402


@pytest.mark.parametrize("l2", [0.01, 0.3, 1e-5])
def test_the_penalty_and_its_gradient_are_keras_l2(l2: float) -> None:
    rng = np.random.default_rng(4)
    w = tf.Variable(rng.normal(0, 0.05, (300, 70)).astype("float32"))
    values, grads = [], []
    for penalty in (keras.regularizers.L2(l2), FastL2(l2)):
        with tf.GradientTape() as tape:
            value = penalty(w)
        values.append(float(value))
        grads.append(tape.gradient(value, w).numpy())
    # by arithmetic too: l2 * sum(w^2) and its derivative 2 * l2 * w
    expected = l2 * float(np.sum(np.square(w.numpy(), dtype=np.float64)))
    np.testing.assert_allclose(values, [expected, expected], rtol=1e-5)
    np.testing.assert_allclose(grads[1], grads[0], rtol=1e-6, atol=1e-12)
    np.testing.assert_allclose(grads[1], 2 * l2 * w.numpy(), rtol=1e-6, atol=1e-12)


def _dense_model(policy: str, regularizer: object) -> object:
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)
    try:
        inputs = keras.Input((6,))
        outputs = keras.layers.Dense(3, kernel_regularizer=regularizer)(inputs)
        return keras.Model(inputs, outputs)
    finally:
        keras.config.set_dtype_policy(previous)


def test_only_bf16_layers_with_plain_l2_are_swapped_and_the_config_keeps_keras_l2() -> None:
    model = _dense_model("mixed_bfloat16", keras.regularizers.L2(0.02))
    config = model.get_config()
    assert speed_up_l2_penalties(model) == 1
    dense = model.layers[-1]
    assert isinstance(dense.kernel.regularizer, FastL2)
    assert type(dense.kernel_regularizer) is keras.regularizers.L2  # what is saved
    assert model.get_config() == config
    assert speed_up_l2_penalties(model) == 0  # not swapped twice
    np.testing.assert_allclose(float(model.losses[0]),
                               0.02 * float(np.sum(np.square(dense.kernel.numpy()))), rtol=1e-5)
    # float32 layers, and other regularizers, keep Keras's
    assert speed_up_l2_penalties(_dense_model("float32", keras.regularizers.L2(0.02))) == 0
    assert speed_up_l2_penalties(
        _dense_model("mixed_bfloat16", keras.regularizers.L1L2(l1=0.1, l2=0.02))) == 0
