"""bf16 dropout from 8 (or 16) random bits per value, in plain Keras Dropout layers.

Why: Keras's dropout (TensorFlow's stateless_dropout) draws one uniform number per value in the
tensor's own dtype (a Philox draw and a float conversion per value), then multiplies by
1 / (1 - rate) and selects, and its gradient selects and multiplies again. After the
convolutions and batch norm it was the largest cost of an exp7 bf16 step at batch 128. Here one
32-bit Philox draw serves four values (its bytes), the keep test is an integer compare, and the
kept scale is applied as one multiply by a mask each way.

What changes: only the random stream of bf16 dropout (which values are dropped), never its law.
A rate that is a whole number of 256ths (.25, .5: every rate in the notebook) is drawn from 8
bits per value and is exact; any other rate from 16 bits, rounded to a multiple of 1/65,536 (off
by at most 7.7e-6; Keras's own bf16 uniform is coarser, 1/128). Kept values are multiplied by
1 / (1 - rate) in the tensor's dtype, as Keras does, so they and the gradient are Keras's bit for
bit. The seed comes from the layer's own SeedGenerator, advanced exactly as Keras advances it, so
seeded runs repeat and checkpoints (which save that state) resume exactly. float32 layers,
noise_shape and inference stay Keras's own; the layer stays a plain `keras.layers.Dropout` (its
config and saved file are untouched), as in cnnspec.backend.fused_bn.
"""

from __future__ import annotations

from typing import Any

from cnnspec.backend.keras_model import BF16_DTYPES, all_layers


class FastDropoutCall:
    """A Dropout layer's `call` that draws 8 or 16 bits per value in bf16 training."""

    def __init__(self, layer: Any, plain_call: Any) -> None:
        self.layer = layer
        self.plain_call = plain_call

    def __call__(self, inputs: Any, training: Any = False) -> Any:
        layer = self.layer
        if (not (training and layer.rate > 0) or layer.noise_shape is not None
                or str(getattr(inputs.dtype, "name", inputs.dtype)) not in BF16_DTYPES):
            return self.plain_call(inputs, training=training)
        return dropout_from_bits(inputs, layer.rate, layer.seed_generator)


def bits_for(rate: float) -> int:
    """Random bits per value: 8 when the rate is a whole number of 256ths (exact), else 16."""
    return 8 if (rate * 256).is_integer() else 16


def threshold(rate: float, bits: int) -> int:
    """Values whose random bits are below this are dropped: round(rate * 2**bits)."""
    return round(rate * 2**bits)


def dropout_from_bits(inputs: Any, rate: float, seed_generator: Any) -> Any:
    """`inputs` with each value dropped when its random bits fall below threshold(rate), the
    rest multiplied by 1 / (1 - rate)."""
    import tensorflow as tf

    bits = bits_for(rate)
    per_word = 32 // bits
    seed = seed_generator.next()  # Keras's draw_seed: the state advances by [0, 1]
    # Keras's TensorFlow backend hands stateless ops an int32 seed the same way (_cast_seed)
    seed = tf.cast(tf.math.floormod(seed, tf.int32.max - 1), tf.int32)
    n = tf.size(inputs)
    words = tf.random.stateless_uniform([(n + per_word - 1) // per_word], seed=seed,
                                        minval=None, maxval=None, dtype=tf.uint32)
    values = tf.reshape(tf.bitcast(words, tf.uint8 if bits == 8 else tf.uint16), [-1])[:n]
    keep = tf.reshape(values >= threshold(rate, bits), tf.shape(inputs))
    scale = tf.constant(1.0 / (1.0 - rate), inputs.dtype)
    # one multiply each way (the mask holds no gradient path: it is made of constants)
    return inputs * tf.where(keep, scale, tf.zeros_like(scale))


def speed_up_dropouts(model: Any) -> int:
    """Give every bf16-computing Dropout layer of `model` the fast call; returns how many."""
    from keras import layers as keras_layers

    count = 0
    for layer in all_layers(model):
        if (type(layer) is keras_layers.Dropout and layer.compute_dtype in BF16_DTYPES
                and not isinstance(layer.call, FastDropoutCall)):
            layer.call = FastDropoutCall(layer, layer.call)
            count += 1
    return count
