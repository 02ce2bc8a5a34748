"""A cheaper L2 weight penalty for bf16 training: the same loss, one pass each way.

Why: Keras's `L2(l2)` is `l2 * sum(square(w))`. Its gradient, as TensorFlow differentiates it,
broadcasts the upstream scalar to w's shape (Tile), then multiplies twice: three passes over w
on top of the forward Square and Sum. On exp7's 8192×512 dense kernel (4.2 M floats) that was
~10 CPU-ms of a ~60 ms bf16 step. TensorFlow's `L2Loss` op computes sum(w²)/2 in one pass and
its gradient is one multiply, so `2·l2 · l2_loss(w)` is the same penalty (2·l2 and the halving
are exact in binary floating point; only the summation order differs) at ~40 % of the cost.

Only the *variable's* regularizer is swapped, at run time: Keras calls `variable.regularizer`
for the penalty, while the layer's `kernel_regularizer` (what its config and the saved file
hold) stays `keras.regularizers.L2`. It is applied to bf16-computing layers only, so float32
runs keep Keras's exact arithmetic.
"""

from __future__ import annotations

from typing import Any

from cnnspec.backend.keras_model import BF16_DTYPES, all_layers


class FastL2:
    """`l2 * sum(square(w))` as `(2 * l2) * tf.nn.l2_loss(w)`; a plain callable, never saved."""

    def __init__(self, l2: float) -> None:
        self.l2 = float(l2)

    def __call__(self, x: Any) -> Any:
        import tensorflow as tf
        from keras import ops

        x = ops.convert_to_tensor(x)
        return tf.cast(2.0 * self.l2, x.dtype) * tf.nn.l2_loss(x)


def speed_up_l2_penalties(model: Any) -> int:
    """Swap Keras's L2 for FastL2 on the weights of `model`'s bf16 layers; returns how many.

    Only exact `keras.regularizers.L2` instances are swapped (L1, L1L2 and custom regularizers
    keep theirs); layers computing in float32 are left alone.
    """
    from keras import regularizers

    count = 0
    for layer in all_layers(model):
        if getattr(layer, "compute_dtype", None) not in BF16_DTYPES:
            continue
        for variable in layer.trainable_weights:
            if type(variable.regularizer) is regularizers.L2:
                variable.regularizer = FastL2(variable.regularizer.l2)
                count += 1
    return count


class PenaltyValue(FastL2):
    """FastL2's value only: the loss reports it, its gradient `2·l2·w` is applied by the
    optimizer (fold_l2_into_sgd). A plain callable, never saved."""

    def __call__(self, x: Any) -> Any:
        import tensorflow as tf
        from keras import ops

        return super().__call__(tf.stop_gradient(ops.convert_to_tensor(x)))


class DecayingSGDStep:
    """Plain SGD's `update_step`, with the L2 gradient of the variables in `decays` folded in.

    Why: for plain SGD, `w -= lr * (g + c·w)` (c = 2·l2) is `w -= (lr·c) * w` then
    `w -= lr * g`, two passes of TensorFlow's fused ResourceApplyGradientDescent. Through the
    tape and Keras's update the same step was five passes over the weight (the L2 gradient's
    multiply, the AddN with the data gradient, the learning-rate multiply, the subtraction):
    on exp7's 4.2 M-float dense kernel, 4–8 % of a bf16 step at batch 32. The decay uses the
    weight before this step's update, so the step is the same arithmetic up to rounding.
    Variables not in `decays` take Keras's own step.
    """

    def __init__(self, decays: dict[int, float], plain_step: Any) -> None:
        self.decays = decays  # id of the tf.Variable the optimizer updates -> 2·l2
        self.plain_step = plain_step

    def __call__(self, gradient: Any, variable: Any, learning_rate: Any) -> Any:
        decay = self.decays.get(id(variable))
        if decay is None:
            return self.plain_step(gradient, variable, learning_rate)
        import tensorflow as tf

        lr = tf.cast(learning_rate, variable.dtype)
        apply = tf.raw_ops.ResourceApplyGradientDescent
        apply(var=variable.handle, alpha=lr * decay, delta=variable.read_value())
        apply(var=variable.handle, alpha=lr, delta=tf.cast(gradient, variable.dtype))
        return None


def foldable(optimizer: Any) -> bool:
    """Whether the optimizer's step is plain SGD on the whole gradient: no momentum, no
    clipping, accumulation or loss scaling (each would see the L2 gradient), no tf.distribute
    strategy (its update hands each replica's own variable to the step)."""
    import tensorflow as tf
    from keras import optimizers

    return (type(optimizer) is optimizers.SGD and float(optimizer.momentum) == 0.0
            and optimizer.clipnorm is None and optimizer.clipvalue is None
            and optimizer.global_clipnorm is None
            and not optimizer.gradient_accumulation_steps
            and optimizer.loss_scale_factor is None
            and not tf.distribute.has_strategy())


def fold_l2_into_sgd(model: Any) -> int:
    """Apply the FastL2 penalties of a compiled `model` as decay inside its plain-SGD step
    (DecayingSGDStep); returns how many. For other optimizers, an uncompiled model, or under a
    strategy, the penalties keep (or get back) FastL2's gradient, so a model compiled again
    with another optimizer never loses its L2 gradient."""
    optimizer = getattr(model, "optimizer", None)
    step = None
    if optimizer is not None and foldable(optimizer):
        step = optimizer.update_step
        if not isinstance(step, DecayingSGDStep):
            step = optimizer.update_step = DecayingSGDStep({}, step)
    count = 0
    for layer in all_layers(model):
        for variable in layer.trainable_weights:
            penalty = variable.regularizer
            if not isinstance(penalty, FastL2):  # PenaltyValue included
                continue
            if step is None:
                variable.regularizer = FastL2(penalty.l2)
                continue
            step.decays[id(variable.value)] = 2.0 * penalty.l2
            variable.regularizer = PenaltyValue(penalty.l2)
            count += 1
    return count
