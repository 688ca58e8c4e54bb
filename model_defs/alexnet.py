"""AlexNet (Krizhevsky, Sutskever & Hinton, NIPS 2012) as a Keras functional model.

`build_alexnet()` with no arguments is the paper's network: 224x224x3 input,
five convolutional and three fully-connected layers, ReLU, local response
normalisation after conv1 and conv2, overlapping 3x3/2 max-pooling, conv2/4/5
split in two groups as on the paper's two GPUs, dropout 0.5 in fc6 and fc7.
Layer names follow the paper and Caffe (conv1 ... fc8, norm1, pool5, drop6).
Every departure from the paper is an argument.
"""

import keras

from model_defs.geometry import (
    CONV1_PADDING,
    GROUPED_LAYERS,
    IMAGENET_MEAN,
    MIN_INPUT_SIZE,
    UNIT_BIAS_LAYERS,
    WIDTHS,
    feature_map_sizes,
)
from model_defs.layers import ChannelNormalization, GroupedConv2D, LocalResponseNormalization

__all__ = ["build_alexnet", "feature_map_sizes", "MIN_INPUT_SIZE", "IMAGENET_MEAN", "WIDTHS"]

def _initializers(init, name, seed):
    """Kernel and bias initialisers for one layer under the chosen scheme."""
    if init == "paper":
        # Section 5: weights from N(0, 0.01), biases 1 or 0.
        kernel = keras.initializers.RandomNormal(mean=0.0, stddev=0.01, seed=seed)
        bias = keras.initializers.Constant(1.0 if name in UNIT_BIAS_LAYERS else 0.0)
    elif init == "caffe":
        # Caffe's reference AlexNet (bvlc_alexnet): the paper's N(0, 0.01) but N(0, 0.005) in fc6/fc7,
        # and biases 0.1 where the paper has 1 (README, "The paper's initialisation on real photos").
        std = 0.005 if name in ("fc6", "fc7") else 0.01
        kernel = keras.initializers.RandomNormal(mean=0.0, stddev=std, seed=seed)
        bias = keras.initializers.Constant(0.1 if name in UNIT_BIAS_LAYERS else 0.0)
    elif init in ("glorot_uniform", "he_normal"):
        kernel = keras.initializers.get({"class_name": init, "config": {"seed": seed}})
        bias = keras.initializers.Zeros()
    else:
        raise ValueError(f"unknown init {init!r}: use 'paper', 'caffe', 'glorot_uniform' or 'he_normal'")
    return kernel, bias


def build_alexnet(
    num_classes=1000,
    input_size=224,
    dropout=0.5,
    lrn=True,
    lrn_k=2.0,
    lrn_n=5,
    lrn_alpha=1e-4,
    lrn_beta=0.75,
    groups=2,
    widths="paper",
    fc_units=4096,
    init="paper",
    weight_decay=0.0,
    mean=IMAGENET_MEAN,
    std=(1.0, 1.0, 1.0),
    seed=None,
    name="alexnet",
    grouped_conv="auto",
):
    """Builds AlexNet as an uncompiled functional `keras.Model` with logits out.

    The model takes RGB pixel values in [0, 255] (float) and subtracts the
    training mean itself, so a saved model needs no outside preprocessing
    beyond resizing and cropping.

    Args:
        num_classes: size of fc8.
        input_size: height and width of the square input (at least 64).
        dropout: drop rate of drop6 and drop7 (paper: 0.5).
        lrn: whether norm1 and norm2 are present (paper: True).
        lrn_k, lrn_n, lrn_alpha, lrn_beta: the paper's LRN constants (section 3.3).
        groups: 2 splits conv2/conv4/conv5 into the paper's two GPU towers; 1 is
            a single tower (more parameters and FLOPs).
        widths: "paper" (96-256-384-384-256) or "torchvision" (64-192-384-256-256).
        fc_units: width of fc6 and fc7 (paper: 4096).
        init: "paper" (N(0, 0.01), unit biases, section 5), "caffe" (Caffe's reference
            AlexNet: N(0, 0.005) in fc6/fc7, biases 0.1 instead of 1), "glorot_uniform"
            or "he_normal" (zero biases).
        weight_decay: the paper's weight decay (section 5: 0.0005). It enters the
            momentum update as `- wd * lr * w`, i.e. the gradient of (wd / 2) * ||w||^2,
            so it is applied as an L2 penalty of wd / 2 on every kernel (not biases).
            `pipeline.train` leaves this at 0 and applies the same decay inside
            its optimizer (`model_defs.optimizers.PaperSGD`), which is faster.
        mean, std: per-channel input normalisation, in pixel units.
        seed: seed for the initialisers (None: random).
        name: model name.
        grouped_conv: how conv2/4/5 compute their groups, the weights being the
            same: "towers" (one convolution per group, concatenated, as on the
            paper's two GPUs), "native" (Keras' `Conv2D(groups=...)`), or "auto"
            (chosen by backend and device where the layer runs, from
            measurements: `model_defs.layers.GROUPED_CONV_DEFAULTS`).

    Returns:
        A `keras.Model` mapping [batch, input_size, input_size, 3] images to
        [batch, num_classes] logits (float32 under any precision policy).
    """
    if input_size < MIN_INPUT_SIZE:
        raise ValueError(f"input_size must be at least {MIN_INPUT_SIZE} for AlexNet, got {input_size}")
    if widths not in WIDTHS:
        raise ValueError(f"unknown widths {widths!r}: use one of {sorted(WIDTHS)}")
    filters = dict(zip(("conv1", "conv2", "conv3", "conv4", "conv5"), WIDTHS[widths]))
    regularizer = keras.regularizers.L2(weight_decay / 2.0) if weight_decay else None
    seeds = iter(range(seed, seed + 100)) if seed is not None else iter(lambda: None, 0)

    def conv(x, layer_name, kernel_size, strides=1, padding="same"):
        kernel_init, bias_init = _initializers(init, layer_name, next(seeds))
        return GroupedConv2D(
            filters[layer_name],
            kernel_size,
            strides=strides,
            padding=padding,
            groups=groups if layer_name in GROUPED_LAYERS else 1,
            grouped_conv=grouped_conv,
            activation="relu",
            kernel_initializer=kernel_init,
            bias_initializer=bias_init,
            kernel_regularizer=regularizer,
            name=layer_name,
        )(x)

    def dense(x, layer_name, units, activation, dtype=None):
        kernel_init, bias_init = _initializers(init, layer_name, next(seeds))
        return keras.layers.Dense(
            units,
            activation=activation,
            kernel_initializer=kernel_init,
            bias_initializer=bias_init,
            kernel_regularizer=regularizer,
            dtype=dtype,
            name=layer_name,
        )(x)

    def norm(x, layer_name):
        if not lrn:
            return x
        return LocalResponseNormalization(k=lrn_k, n=lrn_n, alpha=lrn_alpha, beta=lrn_beta, name=layer_name)(x)

    def pool(x, layer_name):
        # Overlapping pooling, s=2 < z=3 (section 3.4).
        return keras.layers.MaxPooling2D(pool_size=3, strides=2, name=layer_name)(x)

    inputs = keras.Input(shape=(input_size, input_size, 3), name="image")
    x = ChannelNormalization(mean, std, name="normalize")(inputs)
    x = keras.layers.ZeroPadding2D(CONV1_PADDING, name="pad1")(x)
    x = conv(x, "conv1", 11, strides=4, padding="valid")
    x = pool(norm(x, "norm1"), "pool1")
    x = conv(x, "conv2", 5)
    x = pool(norm(x, "norm2"), "pool2")
    x = conv(x, "conv3", 3)
    x = conv(x, "conv4", 3)
    x = conv(x, "conv5", 3)
    x = pool(x, "pool5")
    x = keras.layers.Flatten(name="flatten")(x)
    x = dense(x, "fc6", fc_units, "relu")
    x = keras.layers.Dropout(dropout, name="drop6")(x)
    x = dense(x, "fc7", fc_units, "relu")
    x = keras.layers.Dropout(dropout, name="drop7")(x)
    # Logits in float32 even under a mixed-precision policy: softmax and loss
    # need the range.
    logits = dense(x, "fc8", num_classes, None, dtype="float32")
    return keras.Model(inputs, logits, name=name)
