"""The network of model_defs/alexnet.py: the paper's parameter counts, feature-map sizes and layer names, its
switches, its initialisations and weight decay, and a `.keras` round trip of the whole model.

The layers it is made of have their own tests (test_layers.py).
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

from model_defs.alexnet import build_alexnet, feature_map_sizes
from model_defs.geometry import MIN_INPUT_SIZE


@pytest.mark.parametrize(
    "kwargs, expected",
    [
        ({}, 60_965_224),  # the paper: two groups
        ({"groups": 1}, 62_378_344),  # one tower
        ({"groups": 1, "widths": "torchvision"}, 61_100_840),  # torchvision's AlexNet
    ],
)
def test_parameter_counts_for_1000_classes(kwargs, expected):
    assert build_alexnet(num_classes=1000, **kwargs).count_params() == expected


def test_feature_map_sizes_are_the_papers():
    model = build_alexnet()
    shapes = {layer.name: tuple(layer.output.shape[1:]) for layer in model.layers}
    assert shapes["conv1"] == (55, 55, 96)
    assert shapes["norm1"] == (55, 55, 96)
    assert shapes["pool1"] == (27, 27, 96)
    assert shapes["conv2"] == (27, 27, 256)
    assert shapes["pool2"] == (13, 13, 256)
    assert shapes["conv3"] == (13, 13, 384)
    assert shapes["conv4"] == (13, 13, 384)
    assert shapes["conv5"] == (13, 13, 256)
    assert shapes["pool5"] == (6, 6, 256)
    assert shapes["flatten"] == (9216,)
    assert shapes["fc6"] == (4096,)
    assert shapes["fc7"] == (4096,)
    assert shapes["fc8"] == (1000,)
    assert feature_map_sizes(224) == {"conv1": 55, "pool1": 27, "pool2": 13, "pool5": 6}


def test_layer_names_follow_the_paper():
    names = [layer.name for layer in build_alexnet().layers]
    assert names == [
        "image", "normalize", "pad1", "conv1", "norm1", "pool1", "conv2", "norm2", "pool2",
        "conv3", "conv4", "conv5", "pool5", "flatten", "fc6", "drop6", "fc7", "drop7", "fc8",
    ]  # fmt: skip


def test_switches():
    no_lrn = build_alexnet(lrn=False, num_classes=10, input_size=64, fc_units=8)
    assert "norm1" not in [layer.name for layer in no_lrn.layers]
    model = build_alexnet(num_classes=10, dropout=0.3, fc_units=8, input_size=64)
    assert model.get_layer("drop6").rate == 0.3
    assert model.get_layer("conv2").groups == 2 and model.get_layer("conv3").groups == 1
    assert model.output.shape[1:] == (10,)
    assert model.get_layer("fc8").dtype_policy.compute_dtype == "float32"


def test_minimum_input_size():
    model = build_alexnet(input_size=MIN_INPUT_SIZE, num_classes=3, fc_units=8)
    assert tuple(model.get_layer("pool5").output.shape[1:3]) == (1, 1)
    with pytest.raises(ValueError, match="at least 64"):
        build_alexnet(input_size=MIN_INPUT_SIZE - 1)


def test_paper_initialisation():
    model = build_alexnet(num_classes=1000, seed=1)
    for name in ("conv2", "conv4", "conv5", "fc6", "fc7"):
        np.testing.assert_array_equal(model.get_layer(name).bias.numpy(), 1.0)
    for name in ("conv1", "conv3", "fc8"):
        np.testing.assert_array_equal(model.get_layer(name).bias.numpy(), 0.0)
    weights = model.get_layer("fc6").kernel.numpy()
    assert abs(weights.mean()) < 1e-4
    assert weights.std() == pytest.approx(0.01, rel=0.01)


def test_caffe_initialisation():
    model = build_alexnet(num_classes=1000, seed=1, init="caffe")
    for name in ("conv2", "conv4", "conv5", "fc6", "fc7"):
        np.testing.assert_array_equal(model.get_layer(name).bias.numpy(), np.float32(0.1))
    for name in ("conv1", "conv3", "fc8"):
        np.testing.assert_array_equal(model.get_layer(name).bias.numpy(), 0.0)
    for name, std in (("fc6", 0.005), ("fc7", 0.005), ("fc8", 0.01), ("conv3", 0.01)):
        assert model.get_layer(name).kernel.numpy().std() == pytest.approx(std, rel=0.02), name


def test_weight_decay_is_half_wd_l2_on_kernels_only():
    model = build_alexnet(num_classes=4, input_size=64, fc_units=8, weight_decay=5e-4)
    assert model.get_layer("conv1").kernel_regularizer.l2 == pytest.approx(2.5e-4)
    assert model.get_layer("conv1").bias_regularizer is None
    # The penalty's gradient is exactly wd * w: the paper's update term.
    layer = model.get_layer("fc6")
    with tf.GradientTape() as tape:
        penalty = layer.kernel_regularizer(layer.kernel)
    np.testing.assert_allclose(tape.gradient(penalty, layer.kernel).numpy(), 5e-4 * layer.kernel.numpy(), rtol=1e-5)


def test_keras_save_and_reload_gives_identical_outputs(tmp_path):
    model = build_alexnet(num_classes=5, input_size=64, fc_units=16, seed=3)
    x = np.random.default_rng(0).uniform(0, 255, (2, 64, 64, 3)).astype(np.float32)
    model.save(tmp_path / "m.keras")
    reloaded = keras.models.load_model(tmp_path / "m.keras")
    np.testing.assert_array_equal(np.asarray(model(x)), np.asarray(reloaded(x)))
    assert reloaded.get_layer("norm1").get_config()["alpha"] == 1e-4
    assert reloaded.count_params() == model.count_params()
