"""bf16 batch norm through TensorFlow's fused kernel (cnnspec.backend.fused_bn).

The reference is always Keras's own BatchNormalization, built by hand beside the fused one with
the same weights and fed the same data: outputs, gradients and moving statistics must agree
within bf16 rounding (the moving statistics, kept in float32, within float32 rounding). The
saved file must stay plain Keras: it loads in a process that never imports cnnspec.
"""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from cnnspec.backend.keras_model import build_model, import_keras, prepare_training

keras = import_keras()
import tensorflow as tf  # noqa: E402  (after import_keras, which silences TensorFlow's start-up)

from cnnspec.backend.fused_bn import fuse_batch_norms, is_fused  # noqa: E402
from cnnspec.language.checker import check  # noqa: E402
from cnnspec.language.parse import parse  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

SPEC = ("input 8x8x3\nclasses 4\n"
        "conv8 relu bn(m=.8) pool2 drop.25 | dense6 l2(.01) bn(eps=.0001) relu drop.5\n")


def _bn_model(shape: tuple[int, ...], policy: str, **options) -> tuple[object, object]:
    """A one-layer model around a hand-built keras.layers.BatchNormalization under `policy`."""
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)
    try:
        inputs = keras.Input(shape[1:])
        layer = keras.layers.BatchNormalization(**options)
        model = keras.Model(inputs, layer(inputs))
    finally:
        keras.config.set_dtype_policy(previous)
    return model, layer


def _f32(t) -> np.ndarray:
    return np.asarray(tf.cast(t, tf.float32))


@pytest.mark.parametrize(("shape", "options"), [
    ((4, 4, 4, 6), {"momentum": 0.9}),  # 64 values per channel: Bessel's n/(n-1) is 1.6 %
    ((16, 5), {"momentum": 0.7}),  # 16 per channel: 6.7 %
    ((4, 4, 4, 3), {"momentum": 0.9, "epsilon": 1e-6}),  # below TF's wrapper minimum 1.001e-5
    ((8, 3, 3, 4), {"center": False, "scale": False}),
])
def test_fused_training_matches_keras_batch_norm(shape, options) -> None:
    rng = np.random.default_rng(7)
    _, plain = _bn_model(shape, "mixed_bfloat16", **options)
    model, fused = _bn_model(shape, "mixed_bfloat16", **options)
    assert fuse_batch_norms(model) == 1 and is_fused(fused) and not is_fused(plain)
    channels = shape[-1]
    if fused.scale:
        gamma = rng.uniform(0.5, 2, channels).astype("float32")
        plain.gamma.assign(gamma)
        fused.gamma.assign(gamma)
    if fused.center:
        beta = rng.normal(size=channels).astype("float32")
        plain.beta.assign(beta)
        fused.beta.assign(beta)
    # a small spread where epsilon=1e-6 is tested, so clamping it to 1e-5 would show
    spread = 1e-3 if options.get("epsilon") == 1e-6 else 3.0
    for _ in range(4):
        x = tf.cast(rng.normal(1.0, spread, size=shape).astype("float32"), tf.bfloat16)
        weight = tf.constant(rng.normal(size=shape).astype("float32"))
        outs, grads = [], []
        for layer in (plain, fused):
            with tf.GradientTape() as tape:
                tape.watch(x)
                y = layer(x, training=True)
                loss = tf.reduce_sum(tf.cast(y, tf.float32) * weight)
            outs.append(y)
            grads.append(tape.gradient(loss, [x, *layer.trainable_variables]))
        assert outs[1].dtype == tf.bfloat16
        np.testing.assert_allclose(_f32(outs[1]), _f32(outs[0]), rtol=2e-2, atol=2e-2)
        for g_plain, g_fused in zip(grads[0], grads[1], strict=True):
            scale = float(np.abs(_f32(g_plain)).max()) + 1e-12
            np.testing.assert_allclose(_f32(g_fused) / scale, _f32(g_plain) / scale, atol=2e-2)
        # Keras's update with the biased batch variance: float32 rounding only
        np.testing.assert_allclose(fused.moving_mean.numpy(), plain.moving_mean.numpy(),
                                   rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(fused.moving_variance.numpy(),
                                   plain.moving_variance.numpy(), rtol=1e-4, atol=1e-9)


def test_the_moving_variance_is_the_biased_one_by_arithmetic() -> None:
    """One step from moving_variance 1 with momentum .5: .5 + .5 * population variance."""
    x = np.array([[1.0], [2.0], [4.0], [9.0]], dtype="float32")  # mean 4, variance 9.5
    model, layer = _bn_model(x.shape, "mixed_bfloat16", momentum=0.5)
    fuse_batch_norms(model)
    layer(tf.cast(x, tf.bfloat16), training=True)
    np.testing.assert_allclose(layer.moving_mean.numpy(), [0.5 * 0 + 0.5 * 4.0], rtol=1e-6)
    np.testing.assert_allclose(layer.moving_variance.numpy(), [0.5 + 0.5 * 9.5], rtol=1e-6)


def test_the_fused_kernel_replaces_keras_element_wise_ops_in_the_traced_step() -> None:
    model, _ = _bn_model((4, 4, 4, 6), "mixed_bfloat16")
    fuse_batch_norms(model)
    spec = tf.TensorSpec((4, 4, 4, 6), tf.bfloat16)
    ops = {op.type for op in tf.function(lambda x: model(x, training=True))
           .get_concrete_function(spec).graph.get_operations()}
    assert "FusedBatchNormV3" in ops
    assert "SquaredDifference" not in ops  # Keras's moments


def test_float32_layers_and_inference_stay_keras_own() -> None:
    rng = np.random.default_rng(3)
    model32, layer32 = _bn_model((4, 2, 2, 3), "float32")
    assert fuse_batch_norms(model32) == 0 and not is_fused(layer32)
    # a bf16 layer in inference: Keras's own call (moving statistics), bit for bit
    _, plain = _bn_model((4, 2, 2, 3), "mixed_bfloat16")
    model, fused = _bn_model((4, 2, 2, 3), "mixed_bfloat16")
    fuse_batch_norms(model)
    for layer in (plain, fused):
        layer.moving_mean.assign([0.5, -1.0, 2.0])
        layer.moving_variance.assign([4.0, 0.25, 1.0])
    x = tf.cast(rng.normal(size=(4, 2, 2, 3)).astype("float32"), tf.bfloat16)
    np.testing.assert_array_equal(_f32(fused(x, training=False)), _f32(plain(x, training=False)))
    assert fuse_batch_norms(model) == 0  # already fused: not wrapped twice


def _spec_model(precision: str) -> object:
    report = check(parse(SPEC, "tiny.cnn"))
    if precision == "float32":
        return prepare_training(build_model(report, keras))
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        model = build_model(report, keras)
    finally:
        keras.config.set_dtype_policy(previous)
    return prepare_training(model)


def _data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(11)
    x = rng.uniform(0, 1, size=(48, 8, 8, 3)).astype("float32")
    y = np.eye(4, dtype="float32")[rng.integers(0, 4, 48)]
    return x, y


def test_prepare_training_fuses_only_bf16_batch_norms() -> None:
    bn_layers = [layer for layer in _spec_model("bf16").layers
                 if isinstance(layer, keras.layers.BatchNormalization)]
    assert len(bn_layers) == 2 and all(is_fused(layer) for layer in bn_layers)
    assert not any(is_fused(layer) for layer in _spec_model("float32").layers)


LOAD_WITHOUT_CNNSPEC = """
import json, sys
import numpy as np
import keras
model = keras.models.load_model(sys.argv[1])
x = np.load(sys.argv[2])
bn = [type(l) is keras.layers.BatchNormalization for l in model.layers
      if "BatchNormalization" in type(l).__name__]
loss = model.fit(x, np.load(sys.argv[3]), epochs=1, batch_size=16, verbose=0)
print(json.dumps({"cnnspec": any(m.startswith("cnnspec") for m in sys.modules), "bn": bn,
                  "trained": bool(np.isfinite(loss.history["loss"][0]))}))
np.save(sys.argv[4], np.asarray(model.predict(x, verbose=0)))
"""


def test_a_saved_bf16_model_is_plain_keras_that_loads_without_cnnspec(tmp_path: Path) -> None:
    keras.utils.set_random_seed(2)
    model = _spec_model("bf16")
    model.compile(optimizer="sgd", loss="categorical_crossentropy")
    x, y = _data()
    model.fit(x, y, epochs=1, batch_size=16, verbose=0)
    path = tmp_path / "model.keras"
    model.save(path)
    with zipfile.ZipFile(path) as archive:
        config = json.loads(archive.read("config.json"))
    layers = [layer for layer in config["config"]["layers"]
              if layer["class_name"] == "BatchNormalization"]
    assert len(layers) == 2
    assert all(layer["module"] == "keras.layers" and layer["registered_name"] is None
               for layer in layers)
    dense = next(layer for layer in config["config"]["layers"] if layer["class_name"] == "Dense")
    assert dense["config"]["kernel_regularizer"]["class_name"] == "L2"
    assert dense["config"]["kernel_regularizer"]["module"] == "keras.regularizers"
    expected = np.asarray(model.predict(x, verbose=0))
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    script = tmp_path / "load.py"
    script.write_text(LOAD_WITHOUT_CNNSPEC)
    # from tmp_path with a clean path: cnnspec is importable only through the editable install,
    # and nothing here imports it
    result = subprocess.run(
        [sys.executable, str(script), str(path), str(tmp_path / "x.npy"), str(tmp_path / "y.npy"),
         str(tmp_path / "after.npy")],
        capture_output=True, text=True, cwd=tmp_path, timeout=300,
        env={"TF_CPP_MIN_LOG_LEVEL": "3", "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr[-3000:]
    said = json.loads(result.stdout.strip().splitlines()[-1])
    assert said == {"cnnspec": False, "bn": [True, True], "trained": True}
    # what was loaded is the model that was saved: before that one fit step, same predictions
    reloaded = keras.models.load_model(path)
    np.testing.assert_allclose(np.asarray(reloaded.predict(x, verbose=0)), expected, rtol=1e-6)


def test_training_resumed_from_a_saved_bf16_model_is_identical(tmp_path: Path) -> None:
    """2 epochs straight == 1 epoch, save, load, prepare_training, 1 more (same machine).

    With dropout (fast bf16 masks), the fused batch norm and the one-pass L2 all in the model."""
    x, y = _data()

    def start() -> object:
        keras.utils.set_random_seed(5)
        model = _spec_model("bf16")
        model.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9),
                      loss="categorical_crossentropy")
        return model

    straight = start()
    straight.fit(x, y, epochs=2, batch_size=16, shuffle=False, verbose=0)
    first = start()
    first.fit(x, y, epochs=1, batch_size=16, shuffle=False, verbose=0)
    first.save(tmp_path / "epoch1.keras")
    resumed = prepare_training(keras.models.load_model(tmp_path / "epoch1.keras"))
    # .keras files do not hold the dropout RNG states; the trainer's checkpoint keeps them
    for source, target in zip(first.non_trainable_variables, resumed.non_trainable_variables,
                              strict=True):
        if source.path.endswith("seed_generator_state"):
            target.assign(source.value)
    assert all(is_fused(layer) for layer in resumed.layers
               if isinstance(layer, keras.layers.BatchNormalization))
    resumed.fit(x, y, epochs=2, initial_epoch=1, batch_size=16, shuffle=False, verbose=0)
    for a, b in zip(straight.variables, resumed.variables, strict=True):
        np.testing.assert_array_equal(np.asarray(a.numpy()), np.asarray(b.numpy()), a.path)


def test_the_trainer_prepares_new_and_resumed_bf16_models(tmp_path: Path) -> None:
    """The training loop's two ways to get a model both carry the speed-ups, or neither would
    match the other on resume: build_training_model (new) and load_checkpoint (resumed)."""
    from cnnspec.training.checkpoint import load_checkpoint
    from cnnspec.training.model import build_training_model
    from cnnspec.training.records import checkpoint_dir

    def fused(model: object) -> list[bool]:
        return [is_fused(layer) for layer in model.layers
                if isinstance(layer, keras.layers.BatchNormalization)]

    report = check(parse(SPEC, "tiny.cnn"))
    new = build_training_model(report, keras, "bf16")
    assert fused(new) == [True, True]
    assert fused(build_training_model(report, keras, "float32")) == [False, False]
    new.compile(optimizer="sgd", loss="categorical_crossentropy")
    checkpoint_dir(tmp_path).mkdir(parents=True)
    new.save(checkpoint_dir(tmp_path) / "model.keras")
    seeds = [[int(v) for v in np.asarray(var.value).ravel()] for var in new.non_trainable_variables
             if var.path.endswith("seed_generator_state")]
    state = {"model": "model.keras", "seed_states": seeds}
    assert fused(load_checkpoint(keras, tmp_path, state)) == [True, True]
