"""Layers AlexNet needs that Keras does not ship in the paper's form, for every Keras 3 backend.

They are written with `keras.ops`, so the model runs on TensorFlow, JAX and
PyTorch alike; where the backend is TensorFlow they keep its fast paths
(cuDNN's LRN on a GPU). This module imports TensorFlow only when it is the
Keras backend (and Keras has loaded it already).

They are registered for serialization, so a saved `model.keras` reloads with
`keras.models.load_model` once this module has been imported (the `alexnet`
package name keeps them apart from user layers of the same class name), on
any backend. Importing it also registers the paper's optimizer
(`model_defs.optimizers`), which a compiled `model.keras` names.
"""

import keras
import numpy as np
from keras import ops

from model_defs import optimizers as _optimizers  # noqa: F401  registers PaperSGD for load_model

if keras.backend.backend() == "tensorflow":
    import tensorflow as tf  # loaded by Keras already
else:
    tf = None

# The LRN computation a device gets when the layer's `implementation` is "auto", by (backend, device kind):
# "cudnn" (TensorFlow's fused LRN, GPU only), "banded" (the windowed sum as a matmul with a band matrix) or
# "windowed" (the windowed sum as n shifted slices, elementwise work a compiler fuses). Both of the last two
# have their gradient written out; TensorFlow's own LRN gradient on a CPU is a per-element loop. On an H200 with
# JAX the windowed form is the faster (bfloat16, batch 512: 30,844 images/s, banded 29,981).
LRN_DEFAULTS = {
    ("tensorflow", "gpu"): "cudnn",
    ("tensorflow", "cpu"): "banded",
    ("jax", "cpu"): "windowed",
    ("jax", "gpu"): "windowed",
    ("torch", "cpu"): "banded",
    ("torch", "gpu"): "windowed",
}
LRN_IMPLEMENTATIONS = ("auto", "cudnn", "banded", "windowed")

# The grouped convolution's form when `grouped_conv` is "auto", by (backend, device kind): "towers" (split the
# input and kernel, one convolution per group, concatenate: the paper's two GPUs, section 3.2) or "native"
# (one convolution with `groups`, `feature_group_count` in XLA). The table follows what
# `python -m pipeline.benchmark --backend B --grouped-conv towers native` measured on each (README, "The model on
# any Keras backend"); on a CPU the native form is the slower of the two on both backends, and on an H200 with
# JAX too (bfloat16, batch 512: towers 30,844 images/s, native 25,080; benchmarks/gpu/results/h200-2026-11-30).
GROUPED_CONV_DEFAULTS = {
    ("tensorflow", "cpu"): "towers",
    ("jax", "cpu"): "towers",
    ("jax", "gpu"): "towers",
}
GROUPED_CONV_FORMS = ("auto", "towers", "native")


@keras.saving.register_keras_serializable(package="alexnet")
class LocalResponseNormalization(keras.layers.Layer):
    """Cross-channel local response normalisation (paper, section 3.3).

    b[c] = a[c] / (k + alpha * sum_{c' = c - n/2}^{c + n/2} a[c']^2) ** beta

    The arguments carry the paper's symbols; TensorFlow's op takes a radius and
    calls k the bias, which is converted here and nowhere else. alpha is NOT
    divided by n (that is Caffe's convention, a different layer).

    Every implementation computes the same function. With TensorFlow on a GPU
    it is cuDNN's LRN; elsewhere the windowed sum of squares is a matmul with a
    band matrix ("banded") or n shifted slices ("windowed"), with the gradient
    written out (`keras.ops.custom_gradient`). "auto" picks by backend and by
    the device the op runs on (`LRN_DEFAULTS`, `device_kind`), not by whether
    the host has a GPU.

    Half-precision inputs are normalised in float32: squares of activations in
    the hundreds overflow float16, and bfloat16 loses the small alpha term.

    Args:
        k: additive constant (paper: 2).
        n: number of adjacent channels summed, odd (paper: 5).
        alpha: scale of the sum of squares (paper: 1e-4).
        beta: exponent (paper: 0.75).
        implementation: "auto", "cudnn" (TensorFlow only), "banded" or "windowed".
    """

    def __init__(self, k=2.0, n=5, alpha=1e-4, beta=0.75, implementation="auto", **kwargs):
        super().__init__(**kwargs)
        if n < 1 or n % 2 != 1:
            raise ValueError(f"LRN size n must be a positive odd integer, got {n}")
        if implementation not in LRN_IMPLEMENTATIONS:
            raise ValueError(f"unknown LRN implementation {implementation!r}: use one of {LRN_IMPLEMENTATIONS}")
        self.k = float(k)
        self.n = int(n)
        self.alpha = float(alpha)
        self.beta = float(beta)
        self.implementation = implementation

    def call(self, inputs):
        x = ops.cast(inputs, "float32")
        how = self.implementation
        if how == "auto":
            how = LRN_DEFAULTS.get((keras.backend.backend(), device_kind(x)), "banded")
        if how == "cudnn":
            if tf is None:
                raise ValueError("the 'cudnn' LRN is TensorFlow's: use 'banded' or 'windowed' on this backend")
            # cuDNN's fused LRN and its gradient.
            y = tf.nn.local_response_normalization(
                x, depth_radius=self.n // 2, bias=self.k, alpha=self.alpha, beta=self.beta
            )
        elif how == "windowed":
            y = _windowed_lrn(x, self.k, self.n, self.alpha, self.beta)
        else:
            y = _banded_lrn(x, self.k, self.n, self.alpha, self.beta)
        return ops.cast(y, self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(k=self.k, n=self.n, alpha=self.alpha, beta=self.beta, implementation=self.implementation)
        return config


def device_kind(x):
    """"gpu" or "cpu" (or "tpu"): the kind of device an op taking the backend tensor `x` runs on.

    TensorFlow: the placement (`_placed_device`), and an op that no device
    scope places goes to the first GPU when there is one. JAX: the default
    backend, where a jitted step runs. PyTorch: the tensor's device.
    """
    backend = keras.backend.backend()
    if backend == "tensorflow":
        return _tf_device_kind(_placed_device(x))
    if backend == "jax":
        import jax  # only on the JAX backend (JAX is not a dependency of the others)

        platform = jax.default_backend()
        return "gpu" if platform in ("gpu", "cuda", "rocm") else platform
    if backend == "torch":
        return "gpu" if x.device.type == "cuda" else "cpu"
    return "cpu"


def _placed_device(x):
    """The device an op taking `x` runs on: the tensor's own in eager mode, the device scope in a graph (TensorFlow).

    In a graph the string is what the enclosing `tf.device` scope (a strategy's
    replica, `one_device` on "/cpu:0") requests, and "" without one.
    """
    if tf.executing_eagerly():
        return x.device
    return tf.identity(x).device


def _tf_device_kind(device, gpu_visible=None):
    kind = tf.DeviceSpec.from_string(device).device_type if device else None
    if kind:
        return "gpu" if kind.upper() == "GPU" else "cpu"
    if gpu_visible is None:
        gpu_visible = bool(tf.config.list_logical_devices("GPU"))
    return "gpu" if gpu_visible else "cpu"


def lrn_implementation(device, gpu_visible=None):
    """"cudnn" for a TensorFlow LRN placed on a GPU, else "banded".

    Args:
        device: the placement string ("" when no device scope says).
        gpu_visible: whether TensorFlow sees a GPU (None: ask it); an op with
            no requested device goes to the first GPU when there is one.
    """
    return LRN_DEFAULTS[("tensorflow", _tf_device_kind(device, gpu_visible))]


def _band_matrix(channels, n, scale):
    """[channels, channels] float32 matrix with `scale` where |i - j| <= n // 2, zero elsewhere."""
    index = np.arange(channels)
    near = np.abs(index[:, None] - index[None, :]) <= n // 2
    return ops.convert_to_tensor(near.astype(np.float32) * np.float32(scale))


def _banded_lrn(x, k, n, alpha, beta):
    """LRN over the last axis of float32 `x`, the windowed sum as a matmul with a band matrix.

    The windowed sum of squares is one matmul, and the backward pass is one
    more (the band is symmetric), with a handful of elementwise passes around
    them. On CPU this runs the forward and backward pass of norm1 two to three
    times faster than `tf.nn.local_response_normalization`, whose gradient
    kernel is a per-element loop.
    """
    channels = x.shape[-1]
    band = _band_matrix(channels, n, alpha)

    def window(t):  # alpha * the sum over the n channels around each one
        return ops.reshape(ops.matmul(ops.reshape(t, (-1, channels)), band), ops.shape(t))

    return _lrn_with_gradient(x, k, beta, window)


def _windowed_lrn(x, k, n, alpha, beta):
    """LRN over the last axis of float32 `x`, the windowed sum as n shifted slices.

    Elementwise work only (a pad, n slices and adds), which an XLA or Inductor
    compiler fuses with the rest of the layer into a pass or two over memory.
    """
    channels, radius = x.shape[-1], n // 2
    pad = [(0, 0)] * (len(x.shape) - 1) + [(radius, radius)]

    def window(t):
        padded = ops.pad(t, pad)
        total = padded[..., 0:channels]
        for shift in range(1, n):
            total = total + padded[..., shift : shift + channels]
        return total * alpha

    return _lrn_with_gradient(x, k, beta, window)


def _lrn_with_gradient(x, k, beta, window):
    """y = x * (k + window(x^2)) ** -beta, its gradient written out; `window` is linear and symmetric."""

    def forward(x):
        denominator = k + window(ops.square(x))  # d = k + alpha * sum of squares
        if beta == 0.75:  # the paper's beta: d ** -0.75 without pow
            root = ops.rsqrt(denominator)
            scale = root * ops.sqrt(root)
        else:
            scale = ops.power(denominator, -beta)
        return x * scale, denominator, scale

    if keras.backend.backend() == "numpy":  # no gradients there, and its custom_gradient warns on every call
        return forward(x)[0]

    @ops.custom_gradient
    def lrn(x):
        y, denominator, scale = forward(x)

        def grad(*args, upstream=None):
            if upstream is None:  # TensorFlow and JAX pass it positionally, PyTorch by name
                (upstream,) = args
            # dy_c/dx_j = d_c^-beta [c == j] - 2 alpha beta x_c d_c^(-beta-1) x_j [|c - j| <= n/2]
            return upstream * scale - (2.0 * beta) * x * window(upstream * y / denominator)

        return y, grad

    return lrn(x)


@keras.saving.register_keras_serializable(package="alexnet")
class GroupedConv2D(keras.layers.Conv2D):
    """`Conv2D` whose `groups > 1` runs either as separate convolutions, one per group, or as Keras' own.

    The weights are exactly those of `keras.layers.Conv2D(groups=g)` (kernel
    shape `(h, w, in/g, filters)`), so checkpoints are interchangeable and the
    form can change without touching them. Only the computation differs: the
    "towers" split the input and kernel into g convolutions and concatenate
    the results, as the paper's two GPUs did (section 3.2); "native" is one
    grouped convolution. TensorFlow's native grouped convolution has a slow
    CPU path, where the towers run at the speed of ordinary convolutions.

    Args:
        grouped_conv: "towers", "native", or "auto" (`GROUPED_CONV_DEFAULTS`
            by backend and device, the towers where the table has no entry),
            decided when the layer runs, so a saved model takes the form of
            the machine it is loaded on.
        *args, **kwargs: those of `keras.layers.Conv2D`.
    """

    def __init__(self, *args, grouped_conv="auto", **kwargs):
        super().__init__(*args, **kwargs)
        if grouped_conv not in GROUPED_CONV_FORMS:
            raise ValueError(f"unknown grouped_conv {grouped_conv!r}: use one of {GROUPED_CONV_FORMS}")
        self.grouped_conv = grouped_conv

    def convolution_op(self, inputs, kernel):
        if self.groups == 1 or grouped_conv_form(self.grouped_conv, inputs) == "native":
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

    def get_config(self):
        config = super().get_config()
        config["grouped_conv"] = self.grouped_conv
        return config


def grouped_conv_form(grouped_conv, x):
    """"towers" or "native": the form a grouped convolution of the backend tensor `x` takes.

    Args:
        grouped_conv: "towers", "native" (returned as they are) or "auto"
            (`GROUPED_CONV_DEFAULTS` for this backend and `device_kind(x)`,
            the towers where the table has no entry).
    """
    if grouped_conv != "auto":
        return grouped_conv
    return GROUPED_CONV_DEFAULTS.get((keras.backend.backend(), device_kind(x)), "towers")


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
