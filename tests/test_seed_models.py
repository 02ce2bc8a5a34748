"""specs/exp1..exp7 against the notebook's seven models, rebuilt here by hand in Keras 3.

The hand-built models are line-by-line translations of the notebook cells
(/work/shared/seed/cifar10-experiments-notebook.txt): `Sequential` + `Conv2D(n, (3, 3),
padding='same')`, `Activation`, `BatchNormalization`, `MaxPool2D(p, p)`, `Dropout`, `Flatten`,
`Dense(512, kernel_regularizer=l2(0.01))`, `Dense(10)`, `Activation('softmax')`. Nothing in
them comes from cnnspec, so any drift in the checker, the layer table or the Keras backend
shows up as a difference here.
"""

from __future__ import annotations

import math

import pytest
from conftest import SPECS

import cnnspec

keras = pytest.importorskip("keras")
layers = keras.layers


def _conv(filters: int, padding: str = "same"):
    return layers.Conv2D(filters, (3, 3), padding=padding)


def _dense_head(l2: bool) -> list:
    reg = keras.regularizers.L2(0.01) if l2 else None
    return [
        layers.Flatten(),
        layers.Dense(512, kernel_regularizer=reg),
        layers.Activation("relu"),
        layers.Dropout(0.5),
        layers.Dense(10),
        layers.Activation("softmax"),
    ]


def _block(filters: int, bn: bool) -> list:
    out = [_conv(filters), layers.Activation("relu")]
    return out + [layers.BatchNormalization()] if bn else out


def _notebook(n: int):
    """Notebook Experiment n (I..VII), as written there."""
    if n in (1, 2, 3, 4, 5):
        bn = n != 1
        conv_drop = n in (1, 3, 5)
        l2 = n in (4, 5)
        body = _block(32, bn) + [layers.MaxPool2D(3, 3)]
        body += [layers.Dropout(0.25)] if conv_drop else []
        body += _block(64, bn) + _block(64, bn) + [layers.MaxPool2D(3, 3)]
        body += [layers.Dropout(0.25)] if conv_drop else []
        body += _dense_head(l2)
    elif n == 6:
        body = _block(32, True) + [layers.MaxPool2D(2, 2), layers.Dropout(0.25)]
        body += _block(64, True) + _block(64, True) + [layers.MaxPool2D(2, 2), layers.Dropout(0.25)]
        # "new conv layer addition": the second 128-filter conv has no padding argument -> valid
        body += _block(128, True)
        body += [layers.Conv2D(128, (3, 3)), layers.Activation("relu"), layers.BatchNormalization()]
        body += [layers.MaxPool2D(2, 2), layers.Dropout(0.25)]
        body += _dense_head(True)
    elif n == 7:
        body = _block(64, True) + [layers.MaxPool2D(2, 2), layers.Dropout(0.25)]
        body += _block(128, True) + _block(128, True)
        body += [layers.MaxPool2D(2, 2), layers.Dropout(0.25)]
        body += _dense_head(True)
    else:
        raise ValueError(n)
    return keras.Sequential([keras.Input((32, 32, 3)), *body])


def _count(weights) -> int:
    return sum(math.prod(w.shape) for w in weights)


def _shape(layer) -> tuple:
    return tuple(layer.output.shape)


def _l2_of(layer):
    reg = getattr(layer, "kernel_regularizer", None)
    if reg is None:
        return None
    config = reg.get_config()
    assert set(config) <= {"l1", "l2"}, config
    assert float(config.get("l1", 0.0)) == 0.0, "the notebook uses L2 only"
    return float(config["l2"])


def _config(layer) -> dict:
    config = dict(layer.get_config())
    config.pop("name")
    return config


EXPERIMENTS = range(1, 8)


@pytest.fixture(scope="module")
def models():
    out = {}
    for n in EXPERIMENTS:
        spec = cnnspec.load(SPECS / f"exp{n}.cnn")
        out[n] = (spec, cnnspec.check(spec), cnnspec.to_keras(spec), _notebook(n))
    return out


@pytest.mark.parametrize("n", EXPERIMENTS)
def test_same_layers_shapes_and_params(models, n):
    _, _, ours, theirs = models[n]
    assert [type(x) for x in ours.layers] == [type(x) for x in theirs.layers]
    for a, b in zip(ours.layers, theirs.layers, strict=True):
        where = f"exp{n} {a.name} vs {b.name}"
        assert _shape(a) == _shape(b), where
        assert _count(a.trainable_weights) == _count(b.trainable_weights), where
        assert _count(a.non_trainable_weights) == _count(b.non_trainable_weights), where
    assert ours.count_params() == theirs.count_params()
    assert _shape(ours.layers[-1]) == _shape(theirs.layers[-1]) == (None, 10)


@pytest.mark.parametrize("n", EXPERIMENTS)
def test_same_layer_settings(models, n):
    """Regularisers, rates, pools, padding, kernels, activations: all of each layer's config."""
    _, _, ours, theirs = models[n]
    for a, b in zip(ours.layers, theirs.layers, strict=True):
        where = f"exp{n} {a.name}"
        assert _l2_of(a) == pytest.approx(_l2_of(b)), where
        if isinstance(b, layers.Dropout):
            assert a.rate == b.rate, where
        if isinstance(b, layers.MaxPooling2D):
            assert tuple(a.pool_size) == tuple(b.pool_size), where
            assert tuple(a.strides) == tuple(b.strides), where
            assert a.padding == b.padding == "valid", where
        if isinstance(b, layers.Conv2D):
            assert a.padding == b.padding, where
            assert tuple(a.kernel_size) == tuple(b.kernel_size) == (3, 3), where
            assert tuple(a.strides) == tuple(b.strides) == (1, 1), where
            assert a.bias_regularizer is None and a.activity_regularizer is None, where
        # and everything else Keras records about the layer
        assert _config(a) == _config(b), where


@pytest.mark.parametrize("n", EXPERIMENTS)
def test_only_the_notebooks_layers_are_regularised(models, n):
    _, _, ours, _ = models[n]
    regularised = [x for x in ours.layers if _l2_of(x) is not None]
    if n in (4, 5, 6, 7):
        assert len(regularised) == 1
        (dense,) = regularised
        assert isinstance(dense, layers.Dense) and dense.units == 512
        assert _l2_of(dense) == pytest.approx(0.01)
    else:
        assert regularised == []


@pytest.mark.parametrize("n", EXPERIMENTS)
def test_checker_matches_the_hand_built_model(models, n):
    """The pure-Python report predicts every layer of the notebook's model."""
    _, report, _, theirs = models[n]
    assert len(report.rows) == len(theirs.layers)
    for row, layer in zip(report.rows, theirs.layers, strict=True):
        where = f"exp{n} {row.text}"
        assert row.keras_class == type(layer).__name__ or (
            getattr(layers, row.keras_class) is type(layer)
        ), where
        assert (None, *row.output_shape) == _shape(layer), where
        assert row.trainable == _count(layer.trainable_weights), where
        assert row.non_trainable == _count(layer.non_trainable_weights), where
    assert report.params == theirs.count_params()
    assert report.trainable == _count(theirs.trainable_weights)
    assert report.non_trainable == _count(theirs.non_trainable_weights)
    assert report.output_shape == (10,)


# Numbers printed in the notebook's own `model.summary()` output: independent constants.
NOTEBOOK_ROWS = {
    1: [("Conv2D", (32, 32, 32), 896), ("Activation", (32, 32, 32), 0),
        ("MaxPooling2D", (10, 10, 32), 0), ("Dropout", (10, 10, 32), 0),
        ("Conv2D", (10, 10, 64), 18496), ("Activation", (10, 10, 64), 0)],
    2: [("Conv2D", (32, 32, 32), 896), ("Activation", (32, 32, 32), 0),
        ("BatchNormalization", (32, 32, 32), 128), ("MaxPooling2D", (10, 10, 32), 0),
        ("Conv2D", (10, 10, 64), 18496), ("Activation", (10, 10, 64), 0)],
    3: [("Conv2D", (32, 32, 32), 896), ("Activation", (32, 32, 32), 0),
        ("BatchNormalization", (32, 32, 32), 128), ("MaxPooling2D", (10, 10, 32), 0),
        ("Dropout", (10, 10, 32), 0), ("Conv2D", (10, 10, 64), 18496)],
    4: [("Conv2D", (32, 32, 32), 896), ("Activation", (32, 32, 32), 0),
        ("BatchNormalization", (32, 32, 32), 128), ("MaxPooling2D", (10, 10, 32), 0),
        ("Conv2D", (10, 10, 64), 18496), ("Activation", (10, 10, 64), 0)],
    5: [("Conv2D", (32, 32, 32), 896), ("Activation", (32, 32, 32), 0),
        ("BatchNormalization", (32, 32, 32), 128), ("MaxPooling2D", (10, 10, 32), 0),
        ("Dropout", (10, 10, 32), 0), ("Conv2D", (10, 10, 64), 18496)],
    6: [("Conv2D", (32, 32, 32), 896), ("Activation", (32, 32, 32), 0),
        ("BatchNormalization", (32, 32, 32), 128), ("MaxPooling2D", (16, 16, 32), 0),
        ("Dropout", (16, 16, 32), 0), ("Conv2D", (16, 16, 64), 18496)],
    7: [("Conv2D", (32, 32, 64), 1792), ("Activation", (32, 32, 64), 0),
        ("BatchNormalization", (32, 32, 64), 256), ("MaxPooling2D", (16, 16, 64), 0),
        ("Dropout", (16, 16, 64), 0), ("Conv2D", (16, 16, 128), 73856)],
}


@pytest.mark.parametrize("n", EXPERIMENTS)
def test_notebook_summary_numbers(models, n):
    """The first rows of each notebook summary, as printed there (the rest was cut off)."""
    _, report, ours, _ = models[n]
    for (cls, shape, params), row, layer in zip(
        NOTEBOOK_ROWS[n], report.rows, ours.layers, strict=False
    ):
        assert row.keras_class == cls
        assert row.output_shape == shape
        assert row.params == params
        assert _shape(layer) == (None, *shape)
        assert layer.count_params() == params


def test_exp6_third_unit_and_exp7_widths(models):
    """The two experiments whose structure differs: read the shapes off the notebook's code."""
    _, report6, _, _ = models[6]
    convs6 = [r for r in report6.rows if r.keras_class == "Conv2D"]
    assert [r.output_shape for r in convs6] == [
        (32, 32, 32), (16, 16, 64), (16, 16, 64), (8, 8, 128), (6, 6, 128)]
    assert [r.layer.padding for r in convs6] == ["same"] * 4 + ["valid"]
    flat6 = next(r for r in report6.rows if r.keras_class == "Flatten")
    assert flat6.output_shape == (3 * 3 * 128,)
    _, report7, _, _ = models[7]
    flat7 = next(r for r in report7.rows if r.keras_class == "Flatten")
    assert flat7.output_shape == (8 * 8 * 128,)
    assert [r.layer.size for r in report7.rows if r.keras_class == "MaxPooling2D"] == [2, 2]
    # Dense(512) on 8192 inputs: 8192 * 512 + 512 weights
    dense7 = next(r for r in report7.rows if r.keras_class == "Dense")
    assert dense7.params == 8192 * 512 + 512
