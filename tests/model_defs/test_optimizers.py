import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from model_defs.alexnet import build_alexnet
from model_defs.optimizers import PaperSGD
from tests.helpers.runs import project_env

ENV = project_env()


def _step(optimizer, variables, gradients):
    optimizer.apply([tf.constant(g) for g in gradients], variables)


@pytest.mark.parametrize("nesterov", [False, True])
def test_update_is_the_papers_rule(nesterov):
    # v <- m v - lr (g + wd w) on kernels, v <- m v - lr g on biases; w <- w + v (Nesterov: w + m v - lr g').
    rng = np.random.default_rng(0)
    kernel0 = rng.normal(size=(3, 4)).astype(np.float32)
    bias0 = rng.normal(size=(4,)).astype(np.float32)
    kernel = keras.Variable(kernel0, name="kernel")
    bias = keras.Variable(bias0, name="bias")
    lr, m, wd = 0.1, 0.9, 0.05
    optimizer = PaperSGD(learning_rate=lr, momentum=m, nesterov=nesterov, coupled_weight_decay=wd)
    w = {"kernel": kernel0.astype(np.float64), "bias": bias0.astype(np.float64)}
    v = {"kernel": 0.0, "bias": 0.0}
    for _ in range(3):
        grads = {"kernel": rng.normal(size=(3, 4)).astype(np.float32), "bias": rng.normal(size=(4,)).astype(np.float32)}
        _step(optimizer, [kernel, bias], [grads["kernel"], grads["bias"]])
        for name in w:
            g = grads[name] + (wd * w[name] if name == "kernel" else 0.0)
            v[name] = m * v[name] - lr * g
            w[name] = w[name] + (m * v[name] - lr * g if nesterov else v[name])
    np.testing.assert_allclose(kernel.numpy(), w["kernel"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(bias.numpy(), w["bias"], rtol=1e-5, atol=1e-6)


def test_without_momentum_decay_still_applies():
    kernel = keras.Variable(np.ones((2, 2), np.float32), name="kernel")
    _step(PaperSGD(learning_rate=0.5, momentum=0.0, coupled_weight_decay=0.1), [kernel], [np.zeros((2, 2), np.float32)])
    np.testing.assert_allclose(kernel.numpy(), 1.0 - 0.5 * 0.1, rtol=1e-6)


def test_same_training_as_sgd_with_an_l2_penalty_in_the_model():
    # The optimizer's decay replaces the model's L2(wd / 2) penalty: same weights after training.
    wd = 5e-3
    rng = np.random.default_rng(1)
    x = rng.uniform(0, 255, (8, 64, 64, 3)).astype(np.float32)
    y = rng.integers(0, 4, 8)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    penalised = build_alexnet(num_classes=4, input_size=64, fc_units=8, dropout=0.0, weight_decay=wd, seed=3)
    penalised.compile(keras.optimizers.SGD(0.01, momentum=0.9), loss)
    decayed = build_alexnet(num_classes=4, input_size=64, fc_units=8, dropout=0.0, seed=3)
    decayed.compile(PaperSGD(0.01, momentum=0.9, coupled_weight_decay=wd), loss)
    for a, b in zip(penalised.weights, decayed.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    for _ in range(3):
        penalised.train_on_batch(x, y)
        decayed.train_on_batch(x, y)
    start = build_alexnet(num_classes=4, input_size=64, fc_units=8, seed=3).weights
    kernels_moved = 0
    for a, b, w0 in zip(penalised.weights, decayed.weights, start):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-4, atol=1e-6)
        kernels_moved += a.name == "kernel" and not np.allclose(b.numpy(), w0.numpy())
    assert kernels_moved == 8  # conv1-5, fc6-8 all trained


def test_config_round_trip():
    optimizer = PaperSGD(learning_rate=0.02, momentum=0.8, coupled_weight_decay=5e-4)
    again = keras.optimizers.deserialize(keras.optimizers.serialize(optimizer))
    assert isinstance(again, PaperSGD)
    assert (again.coupled_weight_decay, again.momentum) == (5e-4, 0.8)
    assert float(again.learning_rate) == pytest.approx(0.02)
    with pytest.raises(ValueError, match="coupled_weight_decay"):
        PaperSGD(coupled_weight_decay=-1.0)


def test_compiled_model_reloads_after_importing_the_layers_only(tmp_path):
    model = build_alexnet(num_classes=4, input_size=64, fc_units=8, seed=0)
    model.compile(PaperSGD(0.01, coupled_weight_decay=5e-4), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.train_on_batch(np.zeros((2, 64, 64, 3), np.float32), np.zeros(2))
    model.save(tmp_path / "m.keras")
    code = (
        "import model_defs.layers, keras\n"
        f"m = keras.models.load_model({str(tmp_path / 'm.keras')!r})\n"
        "print(type(m.optimizer).__name__, m.optimizer.coupled_weight_decay)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=ENV)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split()[-2:] == ["PaperSGD", "0.0005"]


MIRRORED_SCRIPT = r"""
import tensorflow as tf

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

import keras
from model_defs.optimizers import PaperSGD

strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
with strategy.scope():
    kernel = keras.Variable(tf.ones((2, 2)), name="kernel")
    bias = keras.Variable(tf.ones((2,)), name="bias")
    optimizer = PaperSGD(learning_rate=0.5, momentum=0.9, coupled_weight_decay=0.1)
    optimizer.build([kernel, bias])

@tf.function
def step():
    def replica_fn():
        optimizer.apply([tf.zeros((2, 2)), tf.zeros((2,))], [kernel, bias])
    strategy.run(replica_fn)

step()
for replica in kernel.value.values:
    print("KERNEL", float(replica[0, 0]))
print("BIAS", float(bias.numpy()[0]))
"""


def test_decay_applies_on_every_replica_under_mirrored_strategy(tmp_path):
    out = subprocess.run([sys.executable, "-c", MIRRORED_SCRIPT], capture_output=True, text=True, timeout=120, cwd=tmp_path, env=ENV)
    assert out.returncode == 0, out.stderr[-2000:]
    kernels = [float(line.split()[1]) for line in out.stdout.splitlines() if line.startswith("KERNEL")]
    assert kernels == [pytest.approx(1.0 - 0.5 * 0.1)] * 2
    assert [line for line in out.stdout.splitlines() if line.startswith("BIAS")] == ["BIAS 1.0"]


def test_same_update_under_xla():
    rng = np.random.default_rng(2)
    x = rng.uniform(0, 255, (4, 64, 64, 3)).astype(np.float32)
    y = rng.integers(0, 4, 4)
    models = []
    for jit in (False, True):
        model = build_alexnet(num_classes=4, input_size=64, fc_units=8, dropout=0.0, seed=5)
        model.compile(PaperSGD(0.01, coupled_weight_decay=5e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                      jit_compile=jit)
        for _ in range(2):
            model.train_on_batch(x, y)
        models.append(model)
    assert models[1].jit_compile is True
    for a, b in zip(*(m.weights for m in models)):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-4, atol=1e-6)
