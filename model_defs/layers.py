"""Layers AlexNet needs that Keras does not ship in the paper's form.

They are registered for serialization, so a saved `model.keras` reloads with
`keras.models.load_model` once this module has been imported (the `alexnet`
package name keeps them apart from user layers of the same class name).
Importing it also registers the paper's optimizer (`model_defs.optimizers`),
which a compiled `model.keras` names.
"""

import keras
import tensorflow as tf
from keras import ops

from model_defs import optimizers as _optimizers  # noqa: F401  registers PaperSGD for load_model


@keras.saving.register_keras_serializable(package="alexnet")
class LocalResponseNormalization(keras.layers.Layer):
    """Cross-channel local response normalisation (paper, section 3.3).

    b[c] = a[c] / (k + alpha * sum_{c' = c - n/2}^{c + n/2} a[c']^2) ** beta

    The arguments carry the paper's symbols; TensorFlow's op takes a radius and
    calls k the bias, which is converted here and nowhere else. alpha is NOT
    divided by n (that is Caffe's convention, a different layer).

    Where the layer runs on a CPU the windowed sum is a matmul with a band
    matrix and the gradient is written out (`_banded_lrn`); on a GPU it is
    cuDNN's LRN. Both compute the same function. The choice follows the device
    the op is placed on (`lrn_implementation`), not whether the host has a GPU.

    Half-precision inputs are normalised in float32: squares of activations in
    the hundreds overflow float16, and bfloat16 loses the small alpha term.

    Args:
        k: additive constant (paper: 2).
        n: number of adjacent channels summed, odd (paper: 5).
        alpha: scale of the sum of squares (paper: 1e-4).
        beta: exponent (paper: 0.75).
    """

    def __init__(self, k=2.0, n=5, alpha=1e-4, beta=0.75, **kwargs):
        super().__init__(**kwargs)
        if n < 1 or n % 2 != 1:
            raise ValueError(f"LRN size n must be a positive odd integer, got {n}")
        self.k = float(k)
        self.n = int(n)
        self.alpha = float(alpha)
        self.beta = float(beta)

    def call(self, inputs):
        x = ops.cast(inputs, "float32")
        if lrn_implementation(_placed_device(x)) == "cudnn":
            # cuDNN's fused LRN and its gradient.
            y = tf.nn.local_response_normalization(
                x, depth_radius=self.n // 2, bias=self.k, alpha=self.alpha, beta=self.beta
            )
        else:
            y = _banded_lrn(x, self.k, self.n, self.alpha, self.beta)
        return ops.cast(y, self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(k=self.k, n=self.n, alpha=self.alpha, beta=self.beta)
        return config


def _placed_device(x):
    """The device an op taking `x` runs on: the tensor's own in eager mode, the device scope in a graph.

    In a graph the string is what the enclosing `tf.device` scope (a strategy's
    replica, `one_device` on "/cpu:0") requests, and "" without one.
    """
    if tf.executing_eagerly():
        return x.device
    return tf.identity(x).device


def lrn_implementation(device, gpu_visible=None):
    """"cudnn" for an LRN placed on a GPU, else "banded".

    Args:
        device: the placement string ("" when no device scope says).
        gpu_visible: whether TensorFlow sees a GPU (None: ask it); an op with
            no requested device goes to the first GPU when there is one.
    """
    kind = tf.DeviceSpec.from_string(device).device_type if device else None
    if kind:
        return "cudnn" if kind.upper() == "GPU" else "banded"
    if gpu_visible is None:
        gpu_visible = bool(tf.config.list_logical_devices("GPU"))
    return "cudnn" if gpu_visible else "banded"


def _band_matrix(channels, n, scale):
    """[channels, channels] matrix with `scale` where |i - j| <= n // 2, zero elsewhere."""
    index = tf.range(channels)
    near = tf.abs(index[:, None] - index[None, :]) <= n // 2
    return tf.cast(near, tf.float32) * scale


def _banded_lrn(x, k, n, alpha, beta):
    """LRN over the last axis of float32 `x`, with its gradient written out.

    The windowed sum of squares is one matmul with a band matrix, and the
    backward pass is one more (the band is symmetric), with a handful of
    elementwise passes around them. On CPU this runs the forward and backward
    pass of norm1 two to three times faster than `tf.nn.local_response_normalization`,
    whose gradient kernel is a per-element loop.
    """

    @tf.custom_gradient
    def lrn(x):
        channels = x.shape[-1]
        shape = tf.shape(x)
        band = _band_matrix(channels, n, alpha)
        window = tf.reshape(tf.matmul(tf.reshape(tf.square(x), [-1, channels]), band), shape)
        denominator = k + window  # d = k + alpha * sum of squares
        if beta == 0.75:  # the paper's beta: d ** -0.75 without pow
            root = tf.math.rsqrt(denominator)
            scale = root * tf.sqrt(root)
        else:
            scale = tf.pow(denominator, -beta)
        y = x * scale

        def grad(upstream):
            # dy_c/dx_j = d_c^-beta [c == j] - 2 alpha beta x_c d_c^(-beta-1) x_j [|c - j| <= n/2]
            spread = tf.reshape(
                tf.matmul(tf.reshape(upstream * y / denominator, [-1, channels]), band), shape
            )
            return upstream * scale - (2.0 * beta) * x * spread

        return y, grad

    return lrn(x)


@keras.saving.register_keras_serializable(package="alexnet")
class GroupedConv2D(keras.layers.Conv2D):
    """`Conv2D` whose `groups > 1` runs as separate convolutions, one per group.

    The weights are exactly those of `keras.layers.Conv2D(groups=g)` (kernel
    shape `(h, w, in/g, filters)`), so checkpoints are interchangeable. Only the
    computation differs: the input and kernel are split into g towers and the
    results concatenated, as the paper's two GPUs did (section 3.2). TensorFlow's
    native grouped convolution has a slow CPU path; the towers run at the speed
    of ordinary convolutions everywhere.
    """

    def convolution_op(self, inputs, kernel):
        if self.groups == 1:
            return super().convolution_op(inputs, kernel)
        axis = -1 if self.data_format == "channels_last" else 1
        towers = zip(
            ops.split(inputs, self.groups, axis=axis),
            ops.split(kernel, self.groups, axis=-1),
        )
        outputs = [
            ops.conv(
                x,
                w,
                strides=list(self.strides),
                padding=self.padding,
                dilation_rate=self.dilation_rate,
                data_format=self.data_format,
            )
            for x, w in towers
        ]
        return ops.concatenate(outputs, axis=axis)


@keras.saving.register_keras_serializable(package="alexnet")
class ChannelNormalization(keras.layers.Layer):
    """Subtracts a per-channel mean and divides by a per-channel scale.

    The paper subtracts the mean activity over the training set from each pixel
    (section 2); the values live in the config, not in weights, so they do not
    count as parameters and travel with the saved model.

    Args:
        mean: one value per channel, in input pixel units.
        std: one value per channel; ones reproduce the paper (mean only).
    """

    def __init__(self, mean, std, **kwargs):
        super().__init__(**kwargs)
        self.mean = [float(m) for m in mean]
        self.std = [float(s) for s in std]

    def call(self, inputs):
        mean = ops.convert_to_tensor(self.mean, dtype=self.compute_dtype)
        centred = ops.cast(inputs, self.compute_dtype) - mean
        if all(s == 1.0 for s in self.std):  # the paper's: no pass over the images for a division by one
            return centred
        return centred / ops.convert_to_tensor(self.std, dtype=self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(mean=self.mean, std=self.std)
        return config
