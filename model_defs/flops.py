"""The work of one image through the network, from the layer shapes: the figure beside the parameter count.

The paper's network (two groups, 224x224) costs 4.136 GFLOP a training image;
the single tower 6.601. `python -m pipeline.benchmark` divides the measured
step rate by the device's matmul rate with these counts.
"""

import keras


def layer_forward_flops(layer):
    """2 x multiply-adds of one layer's forward pass for one image (0 for other layers)."""
    kernel = getattr(layer, "kernel", None)
    if kernel is None:
        return 0
    weights = 1
    for size in kernel.shape:
        weights *= int(size)
    if isinstance(layer, keras.layers.Conv2D):
        # Each output position applies the whole kernel: (kh*kw*cin/groups) x cout
        # multiply-adds (a grouped kernel is stored as (kh, kw, cin/groups, cout)).
        height, width = layer.output.shape[1:3]
        return 2 * int(height) * int(width) * weights
    if isinstance(layer, keras.layers.Dense):
        return 2 * weights
    return 0


def forward_flops(model):
    """Forward FLOPs of one image: 2 x multiply-adds of every convolution and dense layer.

    Args:
        model: a built functional model (channels-last convolutions).

    Returns:
        The count as an int. Biases, ReLU, LRN, pooling and the loss are left
        out (well under 1 % for AlexNet).
    """
    return sum(layer_forward_flops(layer) for layer in model.layers)


def training_flops(model):
    """Training FLOPs of one image: forward, gradient of the activations, gradient of the weights.

    Each of the three costs about one forward pass per layer, except that no
    gradient flows into the first weighted layer's input (the images), so
    conv1 costs two forward passes, not three.

    Args:
        model: a built functional model (channels-last convolutions).

    Returns:
        The count as an int.
    """
    total, first = 0, True
    for layer in model.layers:
        flops = layer_forward_flops(layer)
        if flops:
            total += (2 if first else 3) * flops
            first = False
    return total
