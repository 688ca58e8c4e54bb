"""The paper's optimizer: SGD with momentum and weight decay inside the momentum.

Section 5 of the paper updates every weight w with

    v <- 0.9 v - 0.0005 e w - e dL/dw
    w <- w + v

(e the learning rate): the decay is added to the gradient and goes through the
momentum ("coupled" decay, the gradient of an L2 penalty of wd/2 * ||w||^2).
Keras' own `weight_decay` argument is the decoupled form, `w <- w - e wd w`
outside the momentum, which is a different optimizer.

`PaperSGD` adds `wd * w` to the gradient of each kernel inside the update, in
place of an L2 term in the loss: the same update without the penalty's
forward and backward passes over all 61 M weights, and on TensorFlow the
momentum update is one fused kernel (`ResourceApplyKerasMomentum`). On the
other backends (JAX, PyTorch) the update is Keras' SGD on the decayed
gradient, written with `keras.ops`. This module imports TensorFlow only when
it is the Keras backend.
"""

import keras
from keras import ops

from model_defs.keras_private import optimizer_variable_index, optimizer_variable_key

if keras.backend.backend() == "tensorflow":
    import tensorflow as tf  # loaded by Keras already
else:
    tf = None

__all__ = ["PaperSGD"]


@keras.saving.register_keras_serializable(package="alexnet")
class PaperSGD(keras.optimizers.SGD):
    """SGD with momentum and coupled weight decay on kernels (paper, section 5).

    Args:
        learning_rate: a float or a `keras.optimizers.schedules` schedule.
        momentum: the paper's 0.9.
        nesterov: Nesterov momentum (not the paper's).
        coupled_weight_decay: wd in `v <- momentum v - lr (g + wd w)`; the
            paper's 0.0005. Applied to variables named "kernel" only.
        **kwargs: the other `keras.optimizers.Optimizer` arguments.
    """

    def __init__(
        self,
        learning_rate=0.01,
        momentum=0.9,
        nesterov=False,
        coupled_weight_decay=0.0,
        name="paper_sgd",
        **kwargs,
    ):
        super().__init__(learning_rate=learning_rate, momentum=momentum, nesterov=nesterov, name=name, **kwargs)
        if coupled_weight_decay < 0:
            raise ValueError(f"coupled_weight_decay must be >= 0, got {coupled_weight_decay}")
        self.coupled_weight_decay = float(coupled_weight_decay)

    def build(self, variables):
        super().build(variables)
        # Decided on the Keras variables: update_step sees the backend's
        # tf.Variable (or one replica's copy), whose name differs.
        self._decayed = {optimizer_variable_key(self, v) for v in variables if v.name == "kernel"}

    def update_step(self, gradient, variable, learning_rate):
        gradient = ops.cast(gradient, variable.dtype)
        if self.coupled_weight_decay and optimizer_variable_key(self, variable) in self._decayed:
            gradient = ops.add(gradient, ops.multiply(ops.cast(self.coupled_weight_decay, variable.dtype), variable))
        if self.momentum == 0 or self.nesterov or tf is None:
            return super().update_step(gradient, variable, learning_rate)
        accumulator = self.momentums[optimizer_variable_index(self, variable)]
        # accumulator <- momentum * accumulator - lr * gradient; variable += accumulator
        tf.raw_ops.ResourceApplyKerasMomentum(
            var=variable.handle,
            accum=accumulator.handle,
            lr=tf.cast(learning_rate, variable.dtype),
            grad=gradient,
            momentum=tf.cast(self.momentum, variable.dtype),
            use_locking=False,
            use_nesterov=False,
        )

    def get_config(self):
        config = super().get_config()
        config["coupled_weight_decay"] = self.coupled_weight_decay
        return config
