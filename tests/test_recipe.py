"""Tests for training.recipe: optimizer updates (Nesterov, decoupled weight decay, EMA) against
numpy replicas of the maths, label smoothing, test-time flip and early stopping."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest

from cnnspec.training.recipe import (
    EarlyStopping,
    OptimizerChoice,
    early_stopping,
    ema_callback,
    ema_weights,
    flip_tta,
    make_loss,
)
from cnnspec.training.schedules import Cosine, Horizon, keras_learning_rate

D, K, B = 5, 3, 4  # inputs, classes, batch


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _grads(w: np.ndarray, b: np.ndarray, x: np.ndarray, y: np.ndarray):
    """Gradients of the mean categorical cross-entropy of softmax(x w + b), worked by hand."""
    delta = (_softmax(x @ w + b) - y) / len(x)
    return x.T @ delta, delta.sum(axis=0)


def _data(batches: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(batches * B, D)).astype(np.float32)
    y = np.eye(K, dtype=np.float32)[rng.integers(0, K, batches * B)]
    return x, y


def _model(keras, optimizer, loss="categorical_crossentropy"):
    keras.utils.set_random_seed(1)
    model = keras.Sequential([keras.Input((D,)), keras.layers.Dense(K, activation="softmax")])
    model.compile(optimizer=optimizer, loss=loss)
    return model


def _fit(model, x, y, **kwargs):
    return model.fit(x, y, batch_size=B, epochs=1, shuffle=False, verbose=0, **kwargs)


def _close(got, want):
    np.testing.assert_allclose(got, want, rtol=2e-5, atol=1e-6)


# -- settings ----------------------------------------------------------------------------------


@pytest.mark.parametrize("kwargs, words", [
    ({"name": "lbfgs"}, "unknown optimizer 'lbfgs'"),
    ({"name": "adam", "momentum": 0.9}, "momentum applies to sgd and rmsprop, not adam"),
    ({"nesterov": True}, "nesterov applies to sgd with momentum > 0"),
    ({"name": "rmsprop", "momentum": 0.9, "nesterov": True}, "nesterov applies to sgd"),
    ({"momentum": 1.0}, "momentum must be a number >= 0 and < 1"),
    ({"weight_decay": -1e-4}, "weight_decay must be a number >= 0"),
    ({"ema": 1.5}, "ema must be a number >= 0 and < 1"),
])
def test_bad_optimizer_options_are_refused_with_a_message(kwargs, words):
    with pytest.raises(ValueError, match=words):
        OptimizerChoice(**kwargs)


def test_importing_the_module_does_not_import_tensorflow():
    code = "import sys, cnnspec.training.recipe; print('tensorflow' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_the_options_reach_the_keras_optimizer():
    import keras

    sgd = OptimizerChoice("sgd", momentum=0.9, nesterov=True, weight_decay=5e-4,
                          ema=0.99).build(keras, 0.1)
    assert isinstance(sgd, keras.optimizers.SGD)
    assert (sgd.momentum, sgd.nesterov, sgd.weight_decay, sgd.use_ema, sgd.ema_momentum) == (
        0.9, True, 5e-4, True, 0.99)
    plain = OptimizerChoice().build(keras, 0.01)
    assert (plain.momentum, plain.nesterov, plain.weight_decay, plain.use_ema) == (
        0.0, False, None, False)
    # AdamW keeps Keras's own default decay, as train.py's optimizer always had
    assert OptimizerChoice("adamw").build(keras, 0.001).weight_decay == 0.004


# -- weight decay and Nesterov -----------------------------------------------------------------


def test_sgd_nesterov_weight_decay_is_decoupled_and_uses_the_scheduled_rate():
    """Two steps of SGD (momentum .9, Nesterov, wd .5) under a cosine schedule (.1, then
    .075), against the rule read in Keras's source: w <- w (1 - lr wd), then the momentum step
    with the gradient taken before the decay. The coupled L2 rule gives other weights."""
    import keras

    mu, wd, horizon = 0.9, 0.5, Horizon(2, 1)
    schedule = Cosine(0.1, final=0.05)
    rates = [0.1, 0.05 + 0.05 * (1 + math.cos(math.pi / 2)) / 2]  # .1 and .075
    optimizer = OptimizerChoice("sgd", momentum=mu, nesterov=True, weight_decay=wd).build(
        keras, keras_learning_rate(schedule, horizon))
    model = _model(keras, optimizer)
    w0, b0 = (v.astype(np.float64) for v in model.get_weights())
    x, y = _data(2)
    _fit(model, x, y)

    def replay(coupled: bool):
        w, b = w0.copy(), b0.copy()
        mw, mb = np.zeros_like(w), np.zeros_like(b)
        for step, lr in enumerate(rates):
            gw, gb = _grads(w, b, x[step * B:(step + 1) * B], y[step * B:(step + 1) * B])
            if coupled:
                gw, gb = gw + wd * w, gb + wd * b
            else:
                w, b = w * (1 - lr * wd), b * (1 - lr * wd)
            mw, mb = mu * mw - lr * gw, mu * mb - lr * gb
            w, b = w + mu * mw - lr * gw, b + mu * mb - lr * gb
        return w, b

    got_w, got_b = model.get_weights()
    want_w, want_b = replay(coupled=False)
    _close(got_w, want_w)
    _close(got_b, want_b)
    other_w, _ = replay(coupled=True)
    assert np.abs(other_w - want_w).max() > 1e-3


def test_adam_weight_decay_is_decoupled_and_adamw_is_the_same_optimizer():
    import keras

    lr, wd = 0.01, 0.1
    x, y = _data(1)
    results = []
    for name in ("adam", "adamw"):
        model = _model(keras, OptimizerChoice(name, weight_decay=wd).build(keras, lr))
        w0, b0 = (v.astype(np.float64) for v in model.get_weights())
        _fit(model, x, y)
        results.append(model.get_weights())
    gw, gb = _grads(w0, b0, x, y)
    alpha = lr * math.sqrt(1 - 0.999) / (1 - 0.9)
    for (got, start, g) in ((results[0][0], w0, gw), (results[0][1], b0, gb)):
        m, v = 0.1 * g, 0.001 * g * g
        _close(got, start * (1 - lr * wd) - alpha * m / (np.sqrt(v) + 1e-7))
    for a, b in zip(*results, strict=True):
        np.testing.assert_array_equal(a, b)


# -- label smoothing ---------------------------------------------------------------------------


def test_without_smoothing_the_loss_is_the_notebooks_string():
    import keras

    assert make_loss(keras) == "categorical_crossentropy"
    assert make_loss(keras, 0.0) == "categorical_crossentropy"
    with pytest.raises(ValueError, match="label_smoothing must be a number >= 0 and < 1"):
        make_loss(keras, 1.0)


def test_label_smoothing_mixes_the_one_hot_targets_with_the_uniform_distribution():
    import keras

    eps = 0.2
    x, y = _data(2)
    model = _model(keras, "sgd", loss=make_loss(keras, eps))
    w, b = (v.astype(np.float64) for v in model.get_weights())
    smoothed = y * (1 - eps) + eps / K
    want = np.mean(-np.sum(smoothed * np.log(_softmax(x @ w + b)), axis=1))
    got = model.evaluate(x, y, batch_size=len(x), verbose=0)
    assert got == pytest.approx(want, rel=1e-5)
    plain = np.mean(-np.sum(y * np.log(_softmax(x @ w + b)), axis=1))
    assert abs(got - plain) > 1e-3


# -- EMA ---------------------------------------------------------------------------------------


def _ema_run(keras, mu, lr, x, y, callbacks, validation=None):
    model = _model(keras, OptimizerChoice("sgd", ema=mu).build(keras, lr))
    w0, b0 = (v.astype(np.float64) for v in model.get_weights())
    fitted = _fit(model, x, y, callbacks=callbacks, validation_data=validation)
    # numpy replay: plain SGD; the average starts as the weights after the first step
    w, b, avg = w0, b0, None
    for step in range(len(x) // B):
        gw, gb = _grads(w, b, x[step * B:(step + 1) * B], y[step * B:(step + 1) * B])
        w, b = w - lr * gw, b - lr * gb
        avg = (w, b) if avg is None else (mu * avg[0] + (1 - mu) * w, mu * avg[1] + (1 - mu) * b)
    return model, fitted, (w, b), avg


def test_keras_fit_alone_ends_with_the_average_in_the_model():
    """Why ema_callback exists: fit's finalize_variable_values overwrites the trained weights."""
    import keras

    x, y = _data(4)
    model, _, trained, average = _ema_run(keras, 0.5, 0.5, x, y, callbacks=[])
    for got, want in zip(model.get_weights(), average, strict=True):
        _close(got, want)
    assert np.abs(model.get_weights()[0] - trained[0]).max() > 1e-3


def test_ema_callback_keeps_the_trained_weights_and_validates_on_the_average(tmp_path):
    import keras

    x, y = _data(4)
    xv, yv = _data(2, seed=9)
    model, fitted, trained, average = _ema_run(
        keras, 0.5, 0.5, x, y, callbacks=[ema_callback(keras)], validation=(xv, yv))
    for got, want in zip(model.get_weights(), trained, strict=True):
        _close(got, want)  # training goes on from the trained weights
    before = [v.copy() for v in model.get_weights()]
    with ema_weights(model):
        for got, want in zip(model.get_weights(), average, strict=True):
            _close(got, want)
        model.save(tmp_path / "model.keras")  # what the final model.keras holds
    for a, b in zip(before, model.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)  # put back bit for bit
    val_loss = np.mean(-np.sum(yv * np.log(_softmax(xv @ average[0] + average[1])), axis=1))
    assert fitted.history["val_loss"][0] == pytest.approx(val_loss, rel=1e-5)
    saved = keras.saving.load_model(tmp_path / "model.keras")
    for got, want in zip(saved.get_weights(), average, strict=True):
        _close(got, want)
    # the averages are optimizer variables: the file keeps them for a resume
    kept = saved.optimizer._model_variables_moving_average
    for got, want in zip(kept, average, strict=True):
        _close(np.asarray(got), want)


def test_ema_weights_is_a_no_op_without_ema():
    import keras

    model = _model(keras, "sgd")
    before = model.get_weights()
    with ema_weights(model):
        for a, b in zip(before, model.get_weights(), strict=True):
            np.testing.assert_array_equal(a, b)


# -- test-time flip ----------------------------------------------------------------------------


def test_flip_tta_averages_the_softmax_of_the_image_and_its_mirror():
    import keras
    import tensorflow as tf

    rng = np.random.default_rng(4)
    keras.utils.set_random_seed(2)
    model = keras.Sequential([keras.Input((4, 4, 1)), keras.layers.Flatten(),
                              keras.layers.Dense(K, activation="softmax")])
    w = rng.normal(size=(16, K)).astype(np.float32)
    b = rng.normal(size=K).astype(np.float32)
    model.set_weights([w, b])
    x = rng.normal(size=(200, 4, 4, 1)).astype(np.float32)
    labels = rng.integers(0, K, 200)

    plain = _softmax(x.reshape(200, 16).astype(np.float64) @ w + b)
    mirrored = _softmax(x[:, :, ::-1, :].reshape(200, 16).astype(np.float64) @ w + b)
    want_plain = np.mean(plain.argmax(1) == labels)
    want_flip = np.mean(((plain + mirrored) / 2).argmax(1) == labels)
    assert want_plain != want_flip  # the example tells them apart

    one_hot = np.eye(K, dtype=np.float32)[labels]
    for images in (x, tf.data.Dataset.from_tensor_slices(x).batch(32),
                   tf.data.Dataset.from_tensor_slices((x, one_hot)).batch(32)):
        got = flip_tta(model, images, labels)
        assert got.accuracy == pytest.approx(want_plain)
        assert got.flip_accuracy == pytest.approx(want_flip)
        _close(got.flip_probabilities, (plain + mirrored) / 2)


# -- early stopping ----------------------------------------------------------------------------


def _rows(key, values):
    return [{"epoch": i + 1, key: v} for i, v in enumerate(values)]


def test_early_stopping_on_val_loss_waits_patience_epochs_after_the_best():
    history = _rows("val_loss", [1.0, 0.8, 0.85, 0.9])
    rule = EarlyStopping(patience=2)
    decision = early_stopping(history, rule)
    assert (decision.stop, decision.best_epoch, decision.best_value,
            decision.epochs_since_best) == (True, 2, 0.8, 2)
    assert not early_stopping(history[:3], rule).stop
    assert not early_stopping(history, EarlyStopping(patience=3)).stop


def test_early_stopping_on_accuracy_maximises_and_ties_keep_the_first_best():
    history = _rows("val_accuracy", [0.3, 0.5, 0.5, 0.45])
    decision = early_stopping(history, EarlyStopping(patience=2, monitor="val_accuracy"))
    assert (decision.stop, decision.best_epoch, decision.best_value) == (True, 2, 0.5)
    minimised = early_stopping(history, EarlyStopping(1, monitor="val_accuracy", mode="min"))
    assert (minimised.best_epoch, minimised.stop) == (1, True)


def test_early_stopping_min_delta_nan_and_missing_values():
    # .95 beats 1.0 by .05, not by more than min_delta .1: no improvement
    assert early_stopping(_rows("val_loss", [1.0, 0.95]),
                          EarlyStopping(1, min_delta=0.1)).best_epoch == 1
    history = _rows("val_loss", [float("nan"), 2.0, float("nan"), None])
    decision = early_stopping(history, EarlyStopping(patience=3))
    assert (decision.best_epoch, decision.epochs_since_best, decision.stop) == (2, 2, False)
    assert early_stopping([], EarlyStopping(1)) == early_stopping([], EarlyStopping(1))
    assert not early_stopping([], EarlyStopping(1)).stop
    with pytest.raises(ValueError, match="monitors 'val_loss', which the history"):
        early_stopping([{"epoch": 1, "loss": 1.0}], EarlyStopping(1))


@pytest.mark.parametrize("kwargs, words", [
    ({"patience": 0}, "patience must be a whole number"),
    ({"patience": 2, "mode": "up"}, "mode must be auto, min or max"),
    ({"patience": 2, "monitor": "lr"}, "say mode min or max for 'lr'"),
    ({"patience": 2, "min_delta": -1}, "min_delta must be a number >= 0"),
])
def test_bad_early_stopping_rules_are_refused(kwargs, words):
    with pytest.raises(ValueError, match=words):
        EarlyStopping(**kwargs)


# -- all together: the way the training loop will use them -------------------------------------


def _recipe_run(tmp_path, stop_after: int | None, epochs: int = 3):
    """A miniature of train.py's loop with every option on: uint8 images gathered by a seeded
    order, augmented by (seed, epoch, batch), scaled, one `fit` per epoch, a checkpoint file
    after each epoch. stop_after=k: the process "dies" after epoch k's checkpoint and a new
    model is loaded from it, as --resume does."""
    import keras
    import tensorflow as tf

    from cnnspec.training.augment import Augment, batch_transform
    from cnnspec.training.data import scale_images
    from cnnspec.training.schedules import OneCycle, register_keras_objects

    tmp_path.mkdir()
    seed, batch, n = 5, 16, 64
    rng = np.random.default_rng(0)
    images = tf.constant(rng.integers(0, 256, size=(n, 8, 8, 3), dtype=np.uint8))
    labels = tf.constant(rng.integers(0, K, n).astype(np.int32))
    val = (rng.random((32, 8, 8, 3), dtype=np.float32), np.eye(K, dtype=np.float32)[
        rng.integers(0, K, 32)])
    transform = batch_transform(Augment(flip=True, crop=2, cutout=3), seed)
    horizon = Horizon(n // batch, epochs)

    def pipeline(epoch):
        order = np.random.default_rng([seed, epoch]).permutation(n)

        def grab(b, index):
            x = scale_images(tf, transform(tf.gather(images, index), epoch, b))
            return x, tf.one_hot(tf.gather(labels, index), K, dtype=tf.float32)

        ds = tf.data.Dataset.from_tensor_slices(order).batch(batch).enumerate()
        return ds.map(grab, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)

    keras.utils.set_random_seed(seed)
    model = keras.Sequential([
        keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3, activation="relu"),
        keras.layers.BatchNormalization(momentum=0.9), keras.layers.Flatten(),
        keras.layers.Dense(K, activation="softmax")])
    choice = OptimizerChoice("sgd", momentum=0.9, nesterov=True, weight_decay=5e-3, ema=0.9)
    model.compile(optimizer=choice.build(keras, keras_learning_rate(
        OneCycle(0.2, warm=0.25), horizon)), loss=make_loss(keras, 0.1), metrics=["accuracy"])
    history = []
    for epoch in range(epochs):
        fitted = model.fit(pipeline(epoch), epochs=epoch + 1, initial_epoch=epoch,
                           validation_data=val, verbose=0, shuffle=False,
                           callbacks=[ema_callback(keras)])
        history.append({k: v[-1] for k, v in fitted.history.items()})
        model.save(tmp_path / f"epoch{epoch + 1}.keras")
        if stop_after == epoch + 1:
            register_keras_objects()
            model = keras.saving.load_model(tmp_path / f"epoch{epoch + 1}.keras")
    with ema_weights(model):
        final = [w.copy() for w in model.get_weights()]
    return history, final


def test_a_run_resumed_from_its_checkpoint_gives_the_same_history_to_the_last_digit(tmp_path):
    whole, whole_weights = _recipe_run(tmp_path / "a", stop_after=None)
    resumed, resumed_weights = _recipe_run(tmp_path / "b", stop_after=1)
    assert whole == resumed
    for a, b in zip(whole_weights, resumed_weights, strict=True):
        np.testing.assert_array_equal(a, b)
    assert len({row["loss"] for row in whole}) == 3  # it did train
