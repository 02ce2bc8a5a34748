"""The bf16 path's L2 penalty (cnnspec.backend.l2_penalty) against Keras's own L2 regularizer."""

from __future__ import annotations

import numpy as np
import pytest

from cnnspec.backend.keras_model import import_keras

keras = import_keras()
import tensorflow as tf  # noqa: E402  (after import_keras, which silences TensorFlow's start-up)

from cnnspec.backend.l2_penalty import (  # noqa: E402
    DecayingSGDStep,
    FastL2,
    PenaltyValue,
    fold_l2_into_sgd,
    speed_up_l2_penalties,
)


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
    assert type(dense.kernel.regularizer) is FastL2
    assert type(dense.kernel_regularizer) is keras.regularizers.L2  # what is saved
    assert model.get_config() == config
    assert speed_up_l2_penalties(model) == 0  # not swapped twice
    np.testing.assert_allclose(float(model.losses[0]),
                               0.02 * float(np.sum(np.square(dense.kernel.numpy()))), rtol=1e-5)
    # float32 layers, and other regularizers, keep Keras's
    assert speed_up_l2_penalties(_dense_model("float32", keras.regularizers.L2(0.02))) == 0
    assert speed_up_l2_penalties(
        _dense_model("mixed_bfloat16", keras.regularizers.L1L2(l1=0.1, l2=0.02))) == 0


def _folded_pair(l2: float = 0.02, lr: float = 0.1) -> tuple:
    """Two copies of one bf16 Dense(3) with L2 under plain SGD: one folded, one not."""
    models = []
    for fold in (True, False):
        keras.utils.set_random_seed(7)
        model = _dense_model("mixed_bfloat16", keras.regularizers.L2(l2))
        speed_up_l2_penalties(model)
        model.compile(optimizer=keras.optimizers.SGD(lr), loss="mse")
        if fold:  # else the same model through the tape and Keras's own step
            assert fold_l2_into_sgd(model) == 1
        models.append(model)
    return models


def test_folded_sgd_takes_the_l2_step_by_arithmetic_and_reports_the_same_loss() -> None:
    l2, lr = 0.02, 0.1
    folded, plain = _folded_pair(l2, lr)
    kernel = folded.layers[-1].kernel
    assert isinstance(kernel.regularizer, PenaltyValue)
    assert isinstance(folded.optimizer.update_step, DecayingSGDStep)
    assert type(plain.layers[-1].kernel.regularizer) is FastL2
    rng = np.random.default_rng(3)
    x = rng.normal(size=(8, 6)).astype("float32")
    y = rng.normal(size=(8, 3)).astype("float32")
    w0 = kernel.numpy().copy()
    # the data gradient alone, from the same weights (the penalty's value has no gradient here)
    with tf.GradientTape() as tape:
        data_loss = keras.losses.MeanSquaredError()(y, tf.cast(folded(x, training=True),
                                                               tf.float32))
    g = tape.gradient(data_loss, kernel.value)
    losses = [m.train_on_batch(x, y) for m in (folded, plain)]
    # w1 = w0 - lr * (g + 2 * l2 * w0), computed here in float64
    expected = w0 - lr * (np.asarray(g, np.float64) + 2 * l2 * w0.astype(np.float64))
    np.testing.assert_allclose(kernel.numpy(), expected, rtol=1e-6, atol=1e-7)
    # Keras's own step through the tape lands on the same weights, up to rounding
    np.testing.assert_allclose(kernel.numpy(), plain.layers[-1].kernel.numpy(),
                               rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(losses[0], losses[1], rtol=1e-6)  # the penalty is still reported


def test_the_penalty_value_has_no_gradient_of_its_own() -> None:
    w = tf.Variable(np.ones((4, 5), "float32"))
    with tf.GradientTape() as tape:
        value = PenaltyValue(0.5)(w)
    assert float(value) == pytest.approx(0.5 * 20)
    assert tape.gradient(value, w) is None


@pytest.mark.parametrize("optimizer", [
    lambda: keras.optimizers.SGD(0.1, momentum=0.9),
    lambda: keras.optimizers.SGD(0.1, clipnorm=1.0),
    lambda: keras.optimizers.Adam(0.01),
])
def test_other_optimizers_keep_the_penalty_gradient(optimizer) -> None:
    model = _dense_model("mixed_bfloat16", keras.regularizers.L2(0.02))
    speed_up_l2_penalties(model)
    model.compile(optimizer=optimizer(), loss="mse")
    assert fold_l2_into_sgd(model) == 0
    assert type(model.layers[-1].kernel.regularizer) is FastL2
    assert not isinstance(model.optimizer.update_step, DecayingSGDStep)


def test_an_uncompiled_model_or_one_under_a_strategy_is_not_folded() -> None:
    model = _dense_model("mixed_bfloat16", keras.regularizers.L2(0.02))
    speed_up_l2_penalties(model)
    assert fold_l2_into_sgd(model) == 0
    with tf.distribute.MirroredStrategy(["/cpu:0"]).scope():
        mirrored = _dense_model("mixed_bfloat16", keras.regularizers.L2(0.02))
        speed_up_l2_penalties(mirrored)
        mirrored.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
        assert fold_l2_into_sgd(mirrored) == 0
    assert type(mirrored.layers[-1].kernel.regularizer) is FastL2


def test_compiled_again_with_another_optimizer_the_penalty_gets_its_gradient_back() -> None:
    model = _dense_model("mixed_bfloat16", keras.regularizers.L2(0.02))
    speed_up_l2_penalties(model)
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    assert fold_l2_into_sgd(model) == 1
    assert fold_l2_into_sgd(model) == 1  # again: the same one decay, not wrapped twice
    assert not isinstance(model.optimizer.update_step.plain_step, DecayingSGDStep)
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="mse")
    assert fold_l2_into_sgd(model) == 0
    kernel = model.layers[-1].kernel
    assert type(kernel.regularizer) is FastL2
    with tf.GradientTape() as tape:
        value = model.losses[0]
    np.testing.assert_allclose(tape.gradient(value, kernel.value).numpy(),
                               2 * 0.02 * kernel.numpy(), rtol=1e-6)
