"""The input of a run: which images each epoch visits, in which order, as tf.data batches."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from cnnspec.training.augment import Augment, batch_transform
from cnnspec.training.data import scale_images

if TYPE_CHECKING:
    from cnnspec.training.data import Cifar10


def epoch_order(seed: int, epoch: int, n: int, shuffle: bool = True) -> np.ndarray:
    """The order in which epoch `epoch` (0-based) visits the n training images.

    A pure function of (seed, epoch): this is what makes a resumed run see the same batches as
    an uninterrupted one. numpy's PCG64 stream is stable across numpy versions.
    """
    if not shuffle:
        return np.arange(n, dtype=np.int64)
    return np.random.default_rng([seed, epoch]).permutation(n).astype(np.int64)


class Pipeline:
    """tf.data input: uint8 arrays held once as tensors, batches scaled inside the graph.

    With an augmentation, each training batch is augmented on its uint8 pixels before scaling
    (cnnspec.training.augment: exact on either side of the scaling, 4x less data to move),
    keyed by (seed, epoch, batch): a resumed run sees the augmentations the uninterrupted one
    saw. Test batches are never augmented.
    """

    def __init__(
        self, tf: Any, data: Cifar10, batch: int, classes: int, with_train: bool = True,
        augment: Augment | None = None, seed: int = 0,
    ) -> None:
        self.tf = tf
        self.batch = batch
        self.classes = classes
        self._transform = (batch_transform(augment, seed)
                           if augment is not None and augment.active else None)
        self.n_train = len(data.x_train)
        if with_train:
            self.x_train = tf.constant(data.x_train)
            self.y_train = tf.constant(data.y_train.astype(np.int32))
        self.x_test = tf.constant(data.x_test)
        self.y_test = tf.constant(data.y_test.astype(np.int32))

    def augmented(self, images: Any, epoch: Any, key: Any) -> Any:
        """A uint8 training batch as this run augments it for (epoch, key); key numbers the
        batch (or under a strategy the replica's slice of it) within the epoch."""
        return images if self._transform is None else self._transform(images, epoch, key)

    def _batches(self, x: Any, y: Any, order: np.ndarray, labels: bool = True,
                 epoch: int | None = None) -> Any:
        tf = self.tf
        classes = self.classes

        def grab(key: Any, index: Any) -> Any:
            images = tf.gather(x, index)
            if epoch is not None:
                images = self.augmented(images, epoch, key)
            images = scale_images(tf, images)
            if not labels:
                return images
            return images, tf.one_hot(tf.gather(y, index), classes, dtype=tf.float32)

        ds = tf.data.Dataset.from_tensor_slices(order).batch(self.batch).enumerate()
        ds = ds.map(grab, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        return ds.prefetch(tf.data.AUTOTUNE)

    def train(self, order: np.ndarray, epoch: int = 0) -> Any:
        """Epoch `epoch`'s batches in `order`, augmented if the run augments."""
        return self._batches(self.x_train, self.y_train, order, epoch=epoch)

    def test(self, labels: bool = True) -> Any:
        order = np.arange(int(self.x_test.shape[0]), dtype=np.int64)
        return self._batches(self.x_test, self.y_test, order, labels)
