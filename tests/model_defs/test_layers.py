"""The project's layers (model_defs/layers.py).

One harness, as keras-hub tests its layers, for LRN, the grouped convolution in both forms and the channel
normalisation: the config round trip gives an equal layer with equal outputs, a `.keras` file of a model holding
the layer reloads with identical outputs, and each dtype policy gives the output and variable dtypes it should
(LRN computes in float32 whatever the policy). Then what each layer computes: LRN against the paper's formula
and TensorFlow's op, the towers against Keras' grouped convolution, the channel normalisation's arithmetic, and
the LRN a device gets.
"""

import dataclasses

import keras
import numpy as np
import pytest
import tensorflow as tf

from model_defs.layers import (
    ChannelNormalization,
    GroupedConv2D,
    LocalResponseNormalization,
)


@dataclasses.dataclass(frozen=True)
class Case:
    """A layer of the harness: its class and arguments, its input, its output shape and its variables' shapes."""

    layer_class: type
    arguments: dict  # each appears in the layer's config as given
    inputs: np.ndarray
    output_shape: tuple
    variable_shapes: list


RNG = np.random.default_rng(0)
CONV_INPUTS = RNG.normal(0, 1, (2, 7, 7, 4)).astype(np.float32)
CONV = {"filters": 6, "kernel_size": (3, 3), "padding": "same", "groups": 2}
CASES = {
    # Every argument away from its default, so that a config that drops one fails the round trip; activations
    # in the tens, so that the alpha term moves the output.
    "lrn": Case(LocalResponseNormalization,
                {"k": 1.5, "n": 3, "alpha": 1e-3, "beta": 0.6, "implementation": "banded"},
                RNG.normal(0, 30, (2, 5, 5, 8)).astype(np.float32), (2, 5, 5, 8), []),
    "grouped_conv_towers": Case(GroupedConv2D, {**CONV, "grouped_conv": "towers"},
                                CONV_INPUTS, (2, 7, 7, 6), [(3, 3, 2, 6), (6,)]),
    "grouped_conv_native": Case(GroupedConv2D, {**CONV, "grouped_conv": "native"},
                                CONV_INPUTS, (2, 7, 7, 6), [(3, 3, 2, 6), (6,)]),
    "channel_normalization": Case(ChannelNormalization, {"mean": [120.0, 110.0, 100.0], "std": [58.0, 57.0, 56.0]},
                                  RNG.uniform(0, 255, (2, 4, 4, 3)).astype(np.float32), (2, 4, 4, 3), []),
}
COMPUTE_DTYPES = {"float32": "float32", "mixed_float16": "float16", "mixed_bfloat16": "bfloat16"}
# How far a half-precision result may stray from float32 on the same (rounded) input where the layer's arithmetic
# runs in the compute dtype, as a fraction of the largest output: two units in the last place of float16
# (2 ** -11 each) or bfloat16 (2 ** -8).
HALF_TOLERANCE = {"float32": 0.0, "mixed_float16": 2 * 2**-11, "mixed_bfloat16": 2 * 2**-8}


def made(name, **kwargs):
    """(layer, inputs) of a case, the layer built and run once on its inputs."""
    case = CASES[name]
    layer = case.layer_class(**case.arguments, **kwargs)
    layer(case.inputs)
    return layer, case.inputs


def copy_of(layer, inputs, **kwargs):
    """A new layer from `layer`'s config (with `kwargs` changed), built, holding `layer`'s weights."""
    clone = type(layer).from_config({**layer.get_config(), **kwargs})
    clone.build(inputs.shape)
    clone.set_weights(layer.get_weights())
    return clone


@pytest.mark.parametrize("name", sorted(CASES))
def test_config_round_trip_gives_an_equal_layer_with_equal_outputs(name):
    layer, x = made(name)
    y = np.asarray(layer(x))
    assert y.shape == CASES[name].output_shape and y.dtype == np.float32
    assert [tuple(v.shape) for v in layer.weights] == CASES[name].variable_shapes
    config = layer.get_config()
    assert {key: config[key] for key in CASES[name].arguments} == CASES[name].arguments
    clone = copy_of(layer, x)
    assert type(clone) is type(layer)
    assert clone.get_config() == layer.get_config()
    np.testing.assert_array_equal(np.asarray(clone(x)), y)


@pytest.mark.parametrize("name", sorted(CASES))
def test_keras_file_of_a_model_holding_the_layer_reloads_with_identical_outputs(name, tmp_path):
    layer, x = made(name)
    # Registered under the project's package: load_model finds the class by this name once model_defs.layers
    # is imported.
    assert keras.saving.get_registered_name(type(layer)) == f"alexnet>{type(layer).__name__}"
    inputs = keras.Input(x.shape[1:])
    model = keras.Model(inputs, layer(inputs))
    model.save(tmp_path / "layer.keras")
    reloaded = keras.models.load_model(tmp_path / "layer.keras")
    assert type(reloaded.layers[-1]) is type(layer)
    assert reloaded.layers[-1].get_config() == layer.get_config()
    np.testing.assert_array_equal(np.asarray(reloaded(x)), np.asarray(model(x)))


@pytest.mark.parametrize("policy", sorted(COMPUTE_DTYPES))
@pytest.mark.parametrize("name", sorted(CASES))
def test_each_dtype_policy_gives_its_output_dtype_and_float32_variables(name, policy):
    layer, x = made(name, dtype=policy)
    compute = COMPUTE_DTYPES[policy]
    assert (layer.compute_dtype, layer.variable_dtype) == (compute, "float32")
    assert [v.dtype for v in layer.weights] == ["float32"] * len(CASES[name].variable_shapes)
    y = layer(x)
    assert y.dtype == compute and tuple(y.shape) == CASES[name].output_shape
    # The same layer in float32, on the input as the policy rounds it.
    rounded = np.asarray(tf.cast(tf.cast(x, compute), tf.float32))
    expected = copy_of(layer, x, dtype="float32")(rounded)
    got = np.asarray(tf.cast(y, tf.float32))
    if name == "lrn":  # computed in float32, rounded once at the end
        np.testing.assert_array_equal(got, np.asarray(tf.cast(tf.cast(expected, compute), tf.float32)))
    else:
        scale = np.abs(np.asarray(expected)).max()
        np.testing.assert_allclose(got, np.asarray(expected), rtol=0, atol=HALF_TOLERANCE[policy] * scale)


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


def test_channel_normalization_subtracts_the_mean_and_divides_by_std():
    x = np.random.default_rng(0).uniform(0, 255, (2, 4, 4, 3)).astype(np.float32)
    mean = (120.0, 110.0, 100.0)
    np.testing.assert_array_equal(np.asarray(ChannelNormalization(mean, (1.0, 1.0, 1.0))(x)), x - np.float32(mean))
    std = (58.0, 57.0, 56.0)
    np.testing.assert_allclose(np.asarray(ChannelNormalization(mean, std)(x)), (x - np.float32(mean)) / np.float32(std),
                               rtol=1e-6)


def test_lrn_follows_the_device_it_is_placed_on(monkeypatch):
    from model_defs import layers
    from model_defs.layers import lrn_implementation

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
