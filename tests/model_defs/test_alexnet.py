import keras
import numpy as np
import pytest
import tensorflow as tf

from model_defs.alexnet import build_alexnet, feature_map_sizes
from model_defs.geometry import MIN_INPUT_SIZE
from model_defs.layers import (
    ChannelNormalization,
    GroupedConv2D,
    LocalResponseNormalization,
)


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


def test_lrn_matches_the_papers_formula():
    rng = np.random.default_rng(0)
    a = rng.normal(0, 30, (2, 3, 3, 12)).astype(np.float32)
    k, n, alpha, beta = 2.0, 5, 1e-4, 0.75
    expected = np.empty_like(a)
    channels = a.shape[-1]
    for i in range(channels):
        lo, hi = max(0, i - n // 2), min(channels - 1, i + n // 2)
        expected[..., i] = a[..., i] / (k + alpha * np.sum(a[..., lo : hi + 1] ** 2, axis=-1)) ** beta
    got = LocalResponseNormalization(k=k, n=n, alpha=alpha, beta=beta)(a)
    np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("beta", [0.75, 0.6])
def test_banded_lrn_and_its_gradient_equal_tensorflows_lrn(beta):
    import tensorflow as tf

    from model_defs.layers import _banded_lrn

    # A large alpha, so that the windowed sum dominates k and every term shows.
    k, n, alpha = 2.0, 5, 0.01
    x = tf.constant(np.random.default_rng(1).normal(0, 10, (2, 4, 4, 16)), tf.float32)
    upstream = tf.constant(np.random.default_rng(2).normal(size=(2, 4, 4, 16)), tf.float32)
    results = []
    for lrn in (
        lambda x: _banded_lrn(x, k, n, alpha, beta),
        lambda x: tf.nn.local_response_normalization(x, depth_radius=n // 2, bias=k, alpha=alpha, beta=beta),
    ):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = lrn(x)
        results.append((y.numpy(), tape.gradient(y, x, output_gradients=upstream).numpy()))
    (y, grad), (expected_y, expected_grad) = results
    np.testing.assert_allclose(y, expected_y, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(grad, expected_grad, rtol=1e-4, atol=1e-6)
    assert np.abs(expected_grad - upstream.numpy() * expected_y / x.numpy()).max() > 1e-3  # the window term counts


def test_lrn_in_half_precision_stays_finite():
    a = np.full((1, 2, 2, 8), 300.0, np.float32)  # squares overflow float16 (max 65504)
    layer = LocalResponseNormalization(dtype="mixed_float16")
    got = layer(a)
    assert got.dtype == "float16"
    expected = LocalResponseNormalization()(a)
    np.testing.assert_allclose(np.asarray(got, np.float32), np.asarray(expected), rtol=1e-3)


def test_grouped_towers_equal_native_grouped_convolution():
    x = np.random.default_rng(0).normal(size=(2, 9, 9, 8)).astype(np.float32)
    towers = GroupedConv2D(6, 3, padding="same", groups=2)
    native = keras.layers.Conv2D(6, 3, padding="same", groups=2)
    towers.build(x.shape)
    native.build(x.shape)
    assert towers.kernel.shape == native.kernel.shape == (3, 3, 4, 6)
    native.set_weights(towers.get_weights())
    np.testing.assert_allclose(np.asarray(towers(x)), np.asarray(native(x)), rtol=1e-5, atol=1e-5)


def test_keras_save_and_reload_gives_identical_outputs(tmp_path):
    model = build_alexnet(num_classes=5, input_size=64, fc_units=16, seed=3)
    x = np.random.default_rng(0).uniform(0, 255, (2, 64, 64, 3)).astype(np.float32)
    model.save(tmp_path / "m.keras")
    reloaded = keras.models.load_model(tmp_path / "m.keras")
    np.testing.assert_array_equal(np.asarray(model(x)), np.asarray(reloaded(x)))
    assert reloaded.get_layer("norm1").get_config()["alpha"] == 1e-4
    assert reloaded.count_params() == model.count_params()


def test_channel_normalization_subtracts_the_mean_and_divides_by_std():
    x = np.random.default_rng(0).uniform(0, 255, (2, 4, 4, 3)).astype(np.float32)
    mean = (120.0, 110.0, 100.0)
    np.testing.assert_array_equal(np.asarray(ChannelNormalization(mean, (1.0, 1.0, 1.0))(x)), x - np.float32(mean))
    std = (58.0, 57.0, 56.0)
    np.testing.assert_allclose(np.asarray(ChannelNormalization(mean, std)(x)), (x - np.float32(mean)) / np.float32(std),
                               rtol=1e-6)


def test_lrn_follows_the_device_it_is_placed_on(monkeypatch):
    import tensorflow as tf

    from model_defs import layers
    from model_defs.layers import LocalResponseNormalization, lrn_implementation

    assert lrn_implementation("/job:localhost/replica:0/task:0/device:GPU:0") == "cudnn"
    assert lrn_implementation("/job:localhost/replica:0/task:0/device:CPU:0", gpu_visible=True) == "banded"
    assert lrn_implementation("/cpu:0", gpu_visible=True) == "banded"
    assert lrn_implementation("", gpu_visible=True) == "cudnn"  # TensorFlow places it on the first GPU
    assert lrn_implementation("", gpu_visible=False) == "banded"

    # A host that shows a GPU: an LRN in a /cpu:0 scope (one_device on the CPU) is the banded one.
    monkeypatch.setattr(layers.tf.config, "list_logical_devices", lambda kind=None: ["fake GPU"])
    layer = LocalResponseNormalization()

    def ops_of(device):
        @tf.function
        def f(x):
            if device is None:
                return layer(x)
            with tf.device(device):
                return layer(x)

        graph = f.get_concrete_function(tf.TensorSpec([1, 3, 3, 8], tf.float32)).graph
        return {op.type for op in graph.get_operations()}

    assert "LRN" in ops_of(None)
    assert "LRN" not in ops_of("/cpu:0") and "MatMul" in ops_of("/cpu:0")
