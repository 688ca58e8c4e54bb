"""AlexNet's shapes and constants, importable without TensorFlow (the config uses them)."""

# Filters of conv1..conv5. "paper" is section 3.5; "torchvision" is the
# one-GPU variant of Krizhevsky's "One weird trick" (2014) that torchvision ships.
WIDTHS = {
    "paper": (96, 256, 384, 384, 256),
    "torchvision": (64, 192, 384, 256, 256),
}

# The paper's two-GPU split: conv2, conv4 and conv5 see only the kernel maps of
# their own GPU; conv3 and the fully-connected layers see both (section 3.5).
GROUPED_LAYERS = ("conv2", "conv4", "conv5")

# Layers whose biases the paper initialises to 1 "to accelerate the early stages
# of learning by providing the ReLUs with positive inputs" (section 5).
UNIT_BIAS_LAYERS = ("conv2", "conv4", "conv5", "fc6", "fc7")

# Per-channel RGB mean of the ILSVRC-2012 training set, in pixel units.
IMAGENET_MEAN = (123.68, 116.78, 103.94)

# conv1 is 11x11 stride 4. The paper's 55x55 output needs 227 input pixels, so a
# 224 input is zero-padded by 1 on the top/left and 2 on the bottom/right.
CONV1_PADDING = ((1, 2), (1, 2))


def feature_map_sizes(input_size):
    """Spatial size after conv1, pool1, pool2 and pool5 for a square input.

    Args:
        input_size: height (= width) of the input image in pixels.

    Returns:
        A dict {"conv1": s1, "pool1": s2, "pool2": s3, "pool5": s4}; 224 gives
        55, 27, 13, 6 (the paper's sizes). conv2..conv5 keep their input size.
    """
    conv1 = (input_size + sum(CONV1_PADDING[0]) - 11) // 4 + 1
    pool1 = (conv1 - 3) // 2 + 1
    pool2 = (pool1 - 3) // 2 + 1
    pool5 = (pool2 - 3) // 2 + 1
    return {"conv1": conv1, "pool1": pool1, "pool2": pool2, "pool5": pool5}


MIN_INPUT_SIZE = 64  # smallest square input whose pool5 output is at least 1x1
assert feature_map_sizes(MIN_INPUT_SIZE)["pool5"] == 1
assert feature_map_sizes(MIN_INPUT_SIZE - 1)["pool5"] < 1
