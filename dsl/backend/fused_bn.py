"""bf16 batch norm through TensorFlow's fused kernel, inside plain Keras BatchNormalization layers.

Why: Keras 3's BatchNormalization casts a bf16 input to float32 and normalises it with ~10
separate element-wise ops (moments, squared difference, rsqrt, multiplies, and as many again for
the gradient), then casts back. On an AMX CPU that made batch norm and its casts cost more than
the bf16 convolutions themselves. TensorFlow's FusedBatchNormV3 (and its gradient op) takes the
bf16 tensor directly, keeps its statistics in float32, and oneDNN runs it as one kernel each way.

Why the layers stay plain `keras.layers.BatchNormalization`: the saved `model.keras` must load
with `keras.models.load_model` where cnnspec is not installed. A subclass would be saved under
its own class name; instead each bf16 layer gets an instance-level `call` (not part of its
config, weights or saved file) that routes the training-mode call through the fused op and
everything else (inference, masks, renorm, synchronized, float32 layers) to Keras's own call.

Semantics are Keras's exactly, up to float rounding:
* output: (x - mean) / sqrt(var + epsilon) * gamma + beta with the batch's biased variance;
* moving statistics: moving = moving * momentum + batch * (1 - momentum), assigned in the call
  as Keras does, with the *biased* batch variance. The fused op returns the Bessel-corrected
  variance (n / (n - 1), n = elements per channel, n - 1 floored at 1), so it is undone here;
  `exponential_avg_factor` is left at 1 so the op's own running-average update is not used.
float32 layers are never touched: float32 training is byte-for-byte Keras's.
"""

from __future__ import annotations

from typing import Any

from cnnspec.backend.keras_model import BF16_DTYPES, all_layers


class FusedTrainingCall:
    """A BatchNormalization layer's `call` that trains through FusedBatchNormV3.

    Holds the layer and Keras's own bound `call` to fall back on. Not a Keras object, so
    nothing of it is saved with the model.
    """

    def __init__(self, layer: Any, plain_call: Any) -> None:
        self.layer = layer
        self.plain_call = plain_call

    def __call__(self, inputs: Any, training: Any = None, mask: Any = None) -> Any:
        layer = self.layer
        if not (training and layer.trainable) or mask is not None or not fusable(layer, inputs):
            return self.plain_call(inputs, training=training, mask=mask)
        return fused_training_step(layer, inputs)


def fusable(layer: Any, inputs: Any) -> bool:
    """Whether FusedBatchNormV3 computes exactly what Keras's training call would.

    The op normalises the last axis of a 4-D NHWC tensor (2-D inputs are viewed as N×1×1×C);
    renorm, cross-replica (synchronized) statistics and other ranks or axes stay with Keras.
    """
    rank = len(inputs.shape)
    return (
        str(getattr(inputs.dtype, "name", inputs.dtype)) in BF16_DTYPES
        and rank in (2, 4)
        and layer.axis % rank == rank - 1
        and inputs.shape[-1] is not None
        and not layer.renorm
        and not layer.synchronized
    )


def fused_training_step(layer: Any, inputs: Any) -> Any:
    """Normalise `inputs` with the batch's statistics and update the layer's moving ones."""
    import tensorflow as tf
    from keras import ops

    channels = int(inputs.shape[-1])
    x = tf.reshape(inputs, [-1, 1, 1, channels]) if len(inputs.shape) == 2 else inputs
    scale = (ops.cast(layer.gamma, "float32") if layer.scale
             else tf.ones([channels], tf.float32))
    offset = (ops.cast(layer.beta, "float32") if layer.center
              else tf.zeros([channels], tf.float32))
    empty = tf.constant([], tf.float32)
    # the raw op, not tf.compat.v1.nn.fused_batch_norm: that wrapper raises epsilon to at least
    # 1.001e-5 (a cuDNN limit), which would change a bn eps=1e-6
    y, mean, unbiased_var, _, _, _ = tf.raw_ops.FusedBatchNormV3(
        x=x, scale=scale, offset=offset, mean=empty, variance=empty,
        epsilon=layer.epsilon, exponential_avg_factor=1.0, data_format="NHWC",
        is_training=True)
    n = tf.cast(tf.size(x) // channels, tf.float32)
    variance = unbiased_var * (tf.maximum(n - 1.0, 1.0) / n)
    momentum = layer.momentum
    moving_mean = ops.cast(layer.moving_mean, "float32")
    moving_variance = ops.cast(layer.moving_variance, "float32")
    layer.moving_mean.assign(moving_mean * momentum + mean * (1.0 - momentum))
    layer.moving_variance.assign(moving_variance * momentum + variance * (1.0 - momentum))
    y = tf.reshape(y, tf.shape(inputs)) if len(inputs.shape) == 2 else y
    return ops.cast(y, layer.compute_dtype)


def fuse_batch_norms(model: Any) -> int:
    """Give every bf16-computing BatchNormalization layer of `model` the fused training call.

    Layers computing in float32 are left alone (float32 runs stay exactly Keras's), as are
    layers already fused. Call it on a freshly built model and on one loaded from a checkpoint
    (a saved model is plain Keras and loads unfused). Returns how many layers were fused.
    """
    from keras import layers as keras_layers

    count = 0
    for layer in all_layers(model):
        if (isinstance(layer, keras_layers.BatchNormalization)
                and layer.compute_dtype in BF16_DTYPES
                and not isinstance(layer.call, FusedTrainingCall)):
            layer.call = FusedTrainingCall(layer, layer.call)
            count += 1
    return count


def is_fused(layer: Any) -> bool:
    """Whether `layer` trains through the fused kernel (for tests and benches)."""
    return isinstance(getattr(layer, "call", None), FusedTrainingCall)
