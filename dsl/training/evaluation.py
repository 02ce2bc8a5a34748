"""Scoring a model on the test split: the one evaluation of every path.

Validation after each epoch, the final metrics.json and `evaluate` of a saved run all call
`evaluate`, with or without a tf.distribute strategy. It runs Keras's own test-step maths -
`model.compute_loss` (the compiled loss plus the layers' regularization losses) and a
`keras.metrics.Mean` weighted by the batch size, `CategoricalAccuracy` for the accuracy - in a
plain `tf.function` outside any strategy, so its numbers are `model.evaluate`'s to the last bit
(tests/test_train_old_runs.py compares them with a run folder written by `evaluate`), it needs
no collective (under a strategy every worker scores the full test split locally with the same
weights and gets the same numbers), and one pass yields the predicted classes too.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from cnnspec.training.recipe import flip_probabilities


@dataclass(frozen=True)
class Scores:
    """Mean loss (as Keras's val_loss), accuracy (as val_accuracy), the argmax per image."""

    loss: float
    accuracy: float
    predicted: np.ndarray


class Evaluator:
    """`evaluate` with its traced step kept, so each epoch's validation reuses one graph."""

    def __init__(self, tf: Any, keras: Any, model: Any) -> None:
        self.tf, self.keras, self.model = tf, keras, model
        self._step: Any = None
        self._metrics: tuple[Any, Any] = ()
        self._flip: Any = None

    def _make_step(self) -> Any:
        tf, model = self.tf, self.model

        @tf.function
        def step(images: Any, labels: Any, loss_mean: Any, hits: Any) -> Any:
            probs = model(images, training=False)
            loss = model.compute_loss(x=images, y=labels, y_pred=probs, training=False)
            loss_mean.update_state(loss, sample_weight=tf.shape(images)[0])
            hits.update_state(labels, probs)
            return tf.argmax(probs, axis=1)

        return step

    def __call__(self, batches: Any) -> Scores:
        """Scores over `batches` (images, one-hot labels), e.g. the pipeline's test split."""
        if self._step is None:
            self._step = self._make_step()
            # made once and reset per call: new metric objects each call would retrace the
            # step every epoch (tf.function keys its cache on the objects passed in)
            self._metrics = (self.keras.metrics.Mean(), self.keras.metrics.CategoricalAccuracy())
        loss_mean, hits = self._metrics
        loss_mean.reset_state()
        hits.reset_state()
        predicted = [self._step(images, labels, loss_mean, hits).numpy()
                     for images, labels in batches]
        return Scores(
            float(loss_mean.result()),
            float(hits.result()),
            np.concatenate(predicted) if predicted else np.zeros(0, np.int64),
        )

    def flip_accuracy(self, batches: Any) -> float:
        """Accuracy with test-time flip over `batches` (images, one-hot labels): the mean of
        the softmax of each image and of its mirror image. Like `__call__`, a plain
        tf.function outside any strategy (Keras's `predict` would gather across workers)."""
        if self._flip is None:
            self._flip = _flip_step(self.tf, self.model)
        hits = seen = 0
        for images, labels in batches:
            hits += int(self._flip(images, labels))
            seen += int(images.shape[0])
        return hits / seen if seen else float("nan")


def _flip_step(tf: Any, model: Any) -> Any:
    @tf.function
    def step(images: Any, labels: Any) -> Any:
        _, averaged = flip_probabilities(tf, model, images)
        hits = tf.equal(tf.argmax(averaged, axis=1), tf.argmax(labels, axis=1))
        return tf.reduce_sum(tf.cast(hits, tf.int64))

    return step


def metrics(
    scores: Scores, y_test: np.ndarray, classes: int, label_names: Sequence[str]
) -> dict[str, Any]:
    """metrics.json's content (without "epochs"): test loss/accuracy and per-class accuracy."""
    truth = np.asarray(y_test)
    per_class = []
    for k in range(classes):
        mask = truth == k
        count = int(mask.sum())
        correct = int((scores.predicted[mask] == k).sum())
        per_class.append({
            "class": k,
            "label": label_names[k] if k < len(label_names) else str(k),
            "images": count,
            "correct": correct,
            "accuracy": correct / count if count else None,
        })
    return {
        "test_loss": scores.loss,
        "test_accuracy": scores.accuracy,
        "test_images": int(len(truth)),
        "per_class": per_class,
    }
