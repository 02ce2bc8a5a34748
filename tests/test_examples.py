"""The published networks in examples/, against Keras models built here by hand.

Each reference is written from the paper's description (and the issue's summary of it), with
plain Keras layers; nothing in it comes from cnnspec. Layer kinds, output shapes, trainable and
non-trainable parameters must agree layer for layer, and the totals with the published ones.
"""

from __future__ import annotations

import math

import pytest
from conftest import EXAMPLES

import cnnspec

keras = pytest.importorskip("keras")
L = keras.layers


def _count(weights) -> int:
    return sum(math.prod(w.shape) for w in weights)


def _config(layer) -> dict:
    config = dict(layer.get_config())
    config.pop("name")
    return config


def allcnn_c():
    """All-CNN-C (Springenberg et al. 2015, table 2): dropout 20 % on the input, 3×3 convs
    with ReLU, strided 3×3 convs instead of pooling, dropout 50 % after each of them, a 3×3
    valid conv, two 1×1 convs, global averaging over 6×6, softmax."""
    def conv(filters, kernel=3, strides=1, padding="same"):
        return [L.Conv2D(filters, kernel, strides=strides, padding=padding),
                L.Activation("relu")]

    body = [L.Dropout(0.2)]
    body += conv(96) + conv(96) + conv(96, strides=2) + [L.Dropout(0.5)]
    body += conv(192) + conv(192) + conv(192, strides=2) + [L.Dropout(0.5)]
    body += conv(192, padding="valid") + conv(192, 1) + conv(10, 1)
    body += [L.GlobalAveragePooling2D(), L.Activation("softmax")]
    return keras.Sequential([keras.Input((32, 32, 3)), *body])


def resnet20():
    """ResNet-20 v1 as `resnet_v1` in the Keras example cifar10_resnet.py builds it (depth 20:
    3 stages × 3 blocks), with Dense(10) and its softmax as two layers."""
    reg = keras.regularizers.L2(1e-4)

    def resnet_layer(x, filters, kernel_size=3, strides=1, activation=True, bn=True):
        x = L.Conv2D(filters, kernel_size, strides=strides, padding="same",
                     kernel_regularizer=reg)(x)
        if bn:
            x = L.BatchNormalization()(x)
        if activation:
            x = L.Activation("relu")(x)
        return x

    inputs = keras.Input((32, 32, 3))
    x = resnet_layer(inputs, 16)
    filters = 16
    for stack in range(3):
        for block in range(3):
            strides = 2 if stack > 0 and block == 0 else 1
            y = resnet_layer(x, filters, strides=strides)
            y = resnet_layer(y, filters, activation=False)
            if stack > 0 and block == 0:  # linear projection shortcut
                x = resnet_layer(x, filters, kernel_size=1, strides=strides, activation=False,
                                 bn=False)
            x = L.Activation("relu")(L.Add()([x, y]))
        filters *= 2
    x = L.Flatten()(L.AveragePooling2D(pool_size=8)(x))
    outputs = L.Activation("softmax")(L.Dense(10)(x))
    return keras.Model(inputs, outputs)


def resnet9():
    """David Page's DAWNBench ResNet-9: bias-free conv-BN-ReLU units, two residuals of two
    units (no ReLU after the sum), max-pool 4, bias-free Dense(10) scaled by 0.125."""
    def unit(x, filters):
        x = L.Conv2D(filters, 3, padding="same", use_bias=False)(x)
        return L.Activation("relu")(L.BatchNormalization()(x))

    def residual(x, filters):
        return L.Add()([x, unit(unit(x, filters), filters)])

    inputs = keras.Input((32, 32, 3))
    x = unit(inputs, 64)
    x = residual(L.MaxPooling2D(2)(unit(x, 128)), 128)
    x = L.MaxPooling2D(2)(unit(x, 256))
    x = residual(L.MaxPooling2D(2)(unit(x, 512)), 512)
    x = L.Flatten()(L.MaxPooling2D(4)(x))
    x = L.Rescaling(0.125)(L.Dense(10, use_bias=False)(x))
    return keras.Model(inputs, L.Activation("softmax")(x))


PUBLISHED = {"allcnn_c": (allcnn_c, 1_369_738), "resnet20": (resnet20, 274_442),
             "resnet9": (resnet9, 6_577_600)}
GRAPHS = ("resnet20", "resnet9")


@pytest.fixture(scope="module")
def models():
    out = {}
    for name, (reference, _) in PUBLISHED.items():
        spec = cnnspec.load(EXAMPLES / f"{name}.cnn")
        report = cnnspec.check(spec)
        out[name] = (report, cnnspec.to_keras(spec), reference())
    return out


def _signature(layer) -> tuple:
    """What a layer is, without its name or place: class, output shape, counts, config."""
    return (type(layer).__name__, str(layer.output.shape), _count(layer.trainable_weights),
            _count(layer.non_trainable_weights), repr(sorted(_config(layer).items())))


@pytest.mark.parametrize("name", GRAPHS)
def test_graph_example_equals_the_published_network(models, name):
    """Functional models list their layers in an order of Keras's choosing, so the layers are
    compared as a multiset (kind, shape, parameters, config), the wiring through the merges'
    input shapes, and the checker's rows with our model's layers by name."""
    report, ours, theirs = models[name]
    assert report.is_graph and not isinstance(ours, keras.Sequential)
    layers_ours = [x for x in ours.layers if not isinstance(x, L.InputLayer)]
    layers_theirs = [x for x in theirs.layers if not isinstance(x, L.InputLayer)]
    assert sorted(map(_signature, layers_ours)) == sorted(map(_signature, layers_theirs))
    merges = sorted(str([tuple(t.shape) for t in x.input]) for x in layers_ours
                    if isinstance(x, L.Add))
    assert merges == sorted(str([tuple(t.shape) for t in x.input]) for x in layers_theirs
                            if isinstance(x, L.Add))
    assert len(report.rows) == len(layers_ours)
    for row in report.rows:
        layer = ours.get_layer(row.keras_name)
        assert type(layer).__name__ == row.keras_class, row.keras_name
        assert tuple(layer.output.shape) == (None, *row.output_shape), row.keras_name
        assert _count(layer.trainable_weights) == row.trainable, row.keras_name
        assert _count(layer.non_trainable_weights) == row.non_trainable, row.keras_name
    assert ours.count_params() == theirs.count_params() == report.params == PUBLISHED[name][1]
    assert tuple(ours.output.shape) == tuple(theirs.output.shape) == (None, 10)


def test_resnet_structure(models):
    report20, _, _ = models["resnet20"]
    adds = [r for r in report20.rows if r.keras_class == "Add"]
    assert len(adds) == 9
    assert [r.output_shape for r in adds] == [(32, 32, 16)] * 3 + [(16, 16, 32)] * 3 + [
        (8, 8, 64)] * 3
    shortcuts = [r for r in report20.rows if r.text == "conv32(k=1,s=2) l2(.0001)"]
    assert len(shortcuts) == 1 and shortcuts[0].params == 16 * 32 + 32
    report9, _, _ = models["resnet9"]
    assert report9.own_head and report9.non_trainable == 4_480
    assert [r.output_shape for r in report9.rows if r.keras_class == "Add"] == [
        (16, 16, 128), (4, 4, 512)]


def test_graph_model_saves_and_loads_in_safe_mode(models, tmp_path):
    _, ours, _ = models["resnet9"]
    path = tmp_path / "resnet9.keras"
    ours.save(path)
    again = keras.models.load_model(path, safe_mode=True)
    assert again.count_params() == ours.count_params()
    assert [x.name for x in again.layers] == [x.name for x in ours.layers]


@pytest.mark.parametrize("name", ["allcnn_c"])
def test_example_equals_the_published_network(models, name):
    report, ours, theirs = models[name]
    assert [type(x) for x in ours.layers] == [type(x) for x in theirs.layers]
    for row, a, b in zip(report.rows, ours.layers, theirs.layers, strict=True):
        where = f"{name} {a.name}"
        assert tuple(a.output.shape) == tuple(b.output.shape) == (None, *row.output_shape), where
        assert _count(a.trainable_weights) == _count(b.trainable_weights) == row.trainable, where
        assert _count(a.non_trainable_weights) == _count(b.non_trainable_weights) == (
            row.non_trainable), where
        assert _config(a) == _config(b), where
    assert ours.count_params() == theirs.count_params() == report.params == PUBLISHED[name][1]


def test_allcnn_c_writes_its_own_head(models):
    report, ours, _ = models["allcnn_c"]
    assert report.own_head and report.to_dict()["head"] == "own"
    assert not any(isinstance(x, L.Dense) for x in ours.layers)
    assert [r.output_shape for r in report.rows if r.keras_class == "Conv2D"][-3:] == [
        (6, 6, 192), (6, 6, 192), (6, 6, 10)]


# -- examples/cifar10-fast.cnn and the seed study's eighth experiment (issue 12) ---------------


def cifar10_fast():
    """The fast recipe's network as its comments describe it, by hand: three airbench-style
    blocks (bias-free conv, max-pool 2, BN with momentum .9, ReLU, bias-free conv, BN, ReLU)
    of 32, 64 and 128 filters, global max pooling, a bias-free Dense(10) scaled by 1/8."""
    def block(filters):
        return [L.Conv2D(filters, 3, padding="same", use_bias=False), L.MaxPooling2D(2),
                L.BatchNormalization(momentum=0.9), L.Activation("relu"),
                L.Conv2D(filters, 3, padding="same", use_bias=False),
                L.BatchNormalization(momentum=0.9), L.Activation("relu")]

    head = [L.GlobalMaxPooling2D(), L.Flatten(), L.Dense(10, use_bias=False),
            L.Rescaling(0.125), L.Activation("softmax")]
    return keras.Sequential([keras.Input((32, 32, 3)), *block(32), *block(64), *block(128),
                             *head])


def test_cifar10_fast_equals_its_hand_built_network():
    spec = cnnspec.load(EXAMPLES / "cifar10-fast.cnn")
    report = cnnspec.check(spec)
    ours, theirs = cnnspec.to_keras(spec), cifar10_fast()
    assert isinstance(ours, keras.Sequential) and report.own_head
    assert [type(x) for x in ours.layers] == [type(x) for x in theirs.layers]
    for row, a, b in zip(report.rows, ours.layers, theirs.layers, strict=True):
        assert tuple(a.output.shape) == tuple(b.output.shape) == (None, *row.output_shape), a.name
        assert _count(a.trainable_weights) == _count(b.trainable_weights) == row.trainable
        assert _count(a.non_trainable_weights) == _count(b.non_trainable_weights) == (
            row.non_trainable)
        assert _config(a) == _config(b), a.name
    widths = [(3, 32), (32, 32), (32, 64), (64, 64), (64, 128), (128, 128)]
    convs = sum(9 * cin * cout for cin, cout in widths)
    bns = 4 * (32 + 32 + 64 + 64 + 128 + 128)  # gamma, beta, moving mean and variance
    assert ours.count_params() == theirs.count_params() == report.params == (
        convs + bns + 128 * 10) == 289_632


def test_cifar10_fast_writes_the_recipe_in_its_train_lines():
    spec = cnnspec.load(EXAMPLES / "cifar10-fast.cnn")
    keys = {s.key for s in spec.settings}
    assert {"lr", "augment", "nesterov", "weight_decay", "label_smoothing", "batch",
            "epochs", "seed"} <= keys


def test_seed_study_exp8_is_exp7_with_augmentation_and_a_schedule():
    """The eighth experiment changes exactly two settings of exp7 and no layer."""
    from conftest import SPECS

    exp7 = cnnspec.load(SPECS / "exp7.cnn")
    exp8 = cnnspec.load(EXAMPLES / "seed-study" / "exp8.cnn")
    r7, r8 = cnnspec.check(exp7), cnnspec.check(exp8)
    assert [(r.keras_class, r.output_shape, r.params) for r in r8.rows] == [
        (r.keras_class, r.output_shape, r.params) for r in r7.rows]
    s7 = {s.key: s.value for s in exp7.settings}
    s8 = {s.key: s.value for s in exp8.settings}
    changed = {k for k in s7.keys() | s8.keys() if s7.get(k) != s8.get(k)}
    assert changed == {"lr", "augment"}
