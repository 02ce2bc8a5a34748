"""Tests for training.augment: flip, crop and cutout each do what they say (checked against numpy
on hand-made images), and the draws are a pure function of (seed, epoch, batch)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from cnnspec.training.augment import Augment, augment_batch, batch_transform


def _images(n: int, height: int = 8, width: int = 8, channels: int = 3) -> np.ndarray:
    """float32 images whose pixels are all different and all >= 1 (so no image is its own mirror,
    no two windows of a padded image coincide, and a zeroed pixel is visible)."""
    return (np.arange(n * height * width * channels, dtype=np.float32)
            .reshape(n, height, width, channels) + 1)


def _run(images: np.ndarray, augment: Augment, seed: int = 7, epoch: int = 0,
         batch: int = 0) -> np.ndarray:
    return np.asarray(augment_batch(images, augment, seed, epoch, batch))


# -- settings ----------------------------------------------------------------------------------


def test_settings_from_plain_values_and_defaults():
    a = Augment.from_values(flip=True, crop=4, crop_mode="zero", cutout=8)
    assert (a.flip, a.crop, a.crop_mode, a.cutout) == (True, 4, "zero", 8)
    assert a.active
    assert not Augment().active
    assert Augment() == Augment(flip=False, crop=0, crop_mode="reflect", cutout=0)


@pytest.mark.parametrize("kwargs, words", [
    ({"crop": -1}, "crop must be a whole number"),
    ({"crop": 2.5}, "crop must be a whole number"),
    ({"cutout": True}, "cutout must be a whole number"),
    ({"crop_mode": "wrap"}, "crop_mode must be one of reflect, zero"),
    ({"flip": 1}, "flip must be true or false"),
])
def test_bad_settings_are_refused_with_a_message(kwargs, words):
    with pytest.raises(ValueError, match=words):
        Augment.from_values(**kwargs)


def test_sizes_that_do_not_fit_the_image_are_refused():
    with pytest.raises(ValueError, match="reflect padding of 8 needs images larger than 8 pixels"):
        Augment(crop=8).check_image(8, 8)
    Augment(crop=8, crop_mode="zero").check_image(8, 8)  # zero padding has no such limit
    with pytest.raises(ValueError, match="cutout9 is larger than the 8x8 images"):
        Augment(cutout=9).check_image(8, 8)


def test_importing_the_module_does_not_import_tensorflow():
    code = "import sys, cnnspec.training.augment; print('tensorflow' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# -- what each operation does ------------------------------------------------------------------


def test_flip_mirrors_exactly_the_columns_of_about_half_the_images():
    x = _images(2000, 4, 4, 1)
    out = _run(x, Augment(flip=True))
    mirrored = np.all(out == x[:, :, ::-1, :], axis=(1, 2, 3))
    kept = np.all(out == x, axis=(1, 2, 3))
    assert np.all(mirrored ^ kept)  # every image is exactly one of the two
    assert 0.45 < mirrored.mean() < 0.55


@pytest.mark.parametrize("mode, numpy_mode", [("reflect", "reflect"), ("zero", "constant")])
def test_crop_cuts_a_window_of_the_padded_image_at_a_random_offset(mode, numpy_mode):
    pad, n = 3, 400
    x = _images(n)
    out = _run(x, Augment(crop=pad, crop_mode=mode))
    padded = np.pad(x, [(0, 0), (pad, pad), (pad, pad), (0, 0)], mode=numpy_mode)
    offsets = []
    for i in range(n):
        matches = [(dy, dx) for dy in range(2 * pad + 1) for dx in range(2 * pad + 1)
                   if np.array_equal(out[i], padded[i, dy:dy + 8, dx:dx + 8])]
        assert len(matches) == 1, f"image {i}: {matches}"
        offsets.append(matches[0])
    # every one of the 7 x 7 offsets is drawn (400 draws: missing one has odds ~1e-3)
    assert set(offsets) == {(dy, dx) for dy in range(7) for dx in range(7)}


def test_cutout_zeroes_exactly_one_square_clipped_at_the_border():
    size, n, side = 4, 500, 8
    x = _images(n, side, side, 3)
    out = _run(x, Augment(cutout=size))
    zero = out == 0
    clipped = 0
    for i in range(n):
        assert np.all(zero[i] == zero[i, :, :, :1]), "all channels of a pixel go together"
        rows = np.flatnonzero(zero[i, :, :, 0].any(axis=1))
        cols = np.flatnonzero(zero[i, :, :, 0].any(axis=0))
        r0, r1, c0, c1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
        expected = np.zeros((side, side), bool)
        expected[r0:r1, c0:c1] = True
        assert np.array_equal(zero[i, :, :, 0], expected), "the zeroed pixels form a rectangle"
        for lo, hi in ((r0, r1), (c0, c1)):
            # a full square side, or a shorter one only where it meets the border
            assert hi - lo == size or (hi - lo < size and (lo == 0 or hi == side))
        clipped += (r1 - r0, c1 - c0) != (size, size)
        assert np.array_equal(out[i][~zero[i]], x[i][~zero[i]]), "nothing else changes"
    # centres are uniform over the 8 x 8 pixels: a square is clipped when a centre coordinate is
    # in the first 2 or the last 1 of 8 (rows [c-2, c+2)), so 1 - (5/8)^2 = 61% are clipped
    assert 0.5 < clipped / n < 0.7


def test_flip_crop_and_cutout_together_keep_each_draw():
    """Each operation has its own random stream: turning flip on changes no crop offset or
    cutout square, it only mirrors some of the cropped images before the cutout."""
    x = _images(300)
    cropped = _run(x, Augment(crop=2))
    both = _run(x, Augment(flip=True, crop=2))
    same = np.all(both == cropped, axis=(1, 2, 3))
    mirrored = np.all(both == cropped[:, :, ::-1, :], axis=(1, 2, 3))
    assert np.all(same ^ mirrored) and 0.35 < mirrored.mean() < 0.65
    cut = _run(x, Augment(cutout=4))
    everything = _run(x, Augment(flip=True, crop=2, cutout=4))
    assert np.array_equal(everything == 0, cut == 0), "the same squares, after crop and flip"
    assert np.array_equal(everything[cut != 0], both[cut != 0])


def test_uint8_and_float_images_give_the_same_pixels():
    """Only selection and zeroing: augmenting uint8 before scaling equals augmenting floats."""
    rng = np.random.default_rng(0)
    x8 = rng.integers(0, 256, size=(64, 8, 8, 3), dtype=np.uint8)
    a = Augment(flip=True, crop=3, cutout=4)
    out8 = _run(x8, a)
    assert out8.dtype == np.uint8
    assert np.array_equal(out8.astype(np.float32), _run(x8.astype(np.float32), a))


# -- seeding -----------------------------------------------------------------------------------


def test_the_draws_are_a_pure_function_of_seed_epoch_and_batch():
    x = _images(64)
    a = Augment(flip=True, crop=3, cutout=4)
    base = _run(x, a, seed=7, epoch=2, batch=5)
    assert np.array_equal(base, _run(x, a, seed=7, epoch=2, batch=5))
    assert np.array_equal(base, np.asarray(batch_transform(a, 7)(x, 2, 5)))  # a fresh transform
    for other in ({"seed": 8, "epoch": 2, "batch": 5}, {"seed": 7, "epoch": 3, "batch": 5},
                  {"seed": 7, "epoch": 2, "batch": 6}):
        assert not np.array_equal(base, _run(x, a, **other)), other


def test_inside_a_tf_data_pipeline_each_batch_matches_the_eager_call():
    """The way the training pipeline uses it: batches of an index order, `enumerate` for b."""
    import tensorflow as tf

    x = _images(40)
    a = Augment(flip=True, crop=2, cutout=3)
    transform = batch_transform(a, 11)
    epoch = 4
    order = np.random.default_rng(1).permutation(40)
    images = tf.constant(x)
    ds = tf.data.Dataset.from_tensor_slices(order).batch(16).enumerate()
    ds = ds.map(lambda b, index: transform(tf.gather(images, index), epoch, b),
                num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    got = [np.asarray(batch) for batch in ds]
    assert len(got) == 3
    for b, batch in enumerate(got):
        index = order[16 * b:16 * (b + 1)]
        assert np.array_equal(batch, _run(x[index], a, seed=11, epoch=epoch, batch=b))
