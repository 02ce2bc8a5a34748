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


PUBLISHED = {"allcnn_c": (allcnn_c, 1_369_738)}


@pytest.fixture(scope="module")
def models():
    out = {}
    for name, (reference, _) in PUBLISHED.items():
        spec = cnnspec.load(EXAMPLES / f"{name}.cnn")
        report = cnnspec.check(spec)
        out[name] = (report, cnnspec.to_keras(spec), reference())
    return out


@pytest.mark.parametrize("name", sorted(PUBLISHED))
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
