"""The model factory (`pipeline.training.model`): each precision policy applied to the model alone (fc8 and the
variables in float32, loss scaling under float16), finite steps in each precision with float32 probabilities
exported, and the warning for half precision on a CPU without support for it."""

import pathlib

import keras
import numpy as np
import pytest
import tensorflow as tf

from pipeline.config import load_config
from pipeline.training.model import build_model, compile_model, precision_note
from tests.helpers.runs import TINY


@pytest.mark.parametrize("precision", ["float32", "mixed_float16", "mixed_bfloat16"])
def test_precision_policy_is_applied_to_the_model_only(precision):
    config = load_config([], TINY + [f"train.precision={precision}"])
    model = compile_model(build_model(config, 8), config, 8)
    assert keras.mixed_precision.global_policy().name == "float32"  # not leaked
    compute = {"float32": "float32", "mixed_float16": "float16", "mixed_bfloat16": "bfloat16"}[precision]
    assert model.get_layer("conv1").compute_dtype == compute
    assert model.get_layer("conv1").kernel.dtype == "float32"  # variables stay float32
    assert model.get_layer("fc8").compute_dtype == "float32"  # logits, softmax and loss in float32
    # Keras scales the loss itself where float16 needs it.
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer) == (precision == "mixed_float16")


@pytest.mark.parametrize("precision", ["float32", "mixed_float16", "mixed_bfloat16"])
def test_each_precision_takes_finite_steps_and_exports_float32_probabilities(tmp_path, precision):
    from pipeline.serving.saved_model import export_saved_model

    config = load_config([], TINY + [f"train.precision={precision}"])
    model = compile_model(build_model(config, 8), config, 8)
    x = np.random.default_rng(0).uniform(0, 255, (4, 64, 64, 3)).astype(np.float32)
    losses = [float(model.train_on_batch(x, np.arange(4) % 8)[0]) for _ in range(2)]
    assert all(np.isfinite(losses)), losses
    export_saved_model(model, tmp_path / "saved_model", [f"class_{c}" for c in range(8)], 64, 64)
    served = tf.saved_model.load(str(tmp_path / "saved_model"))
    probabilities = served.signatures["serve_preprocessed"](image=tf.constant(x))["probabilities"]
    assert probabilities.dtype == tf.float32
    np.testing.assert_allclose(probabilities.numpy().sum(axis=1), 1.0, rtol=1e-5)


def test_half_precision_on_a_cpu_without_support_is_flagged(monkeypatch):
    monkeypatch.setattr(pathlib.Path, "read_text", lambda self: "flags : fpu sse2 avx2 fma f16c")
    assert "slower than float32" in precision_note("mixed_bfloat16", has_gpu=False)
    assert "avx512_fp16" in precision_note("mixed_float16", has_gpu=False)
    assert precision_note("mixed_bfloat16", has_gpu=True) is None
    assert precision_note("float32", has_gpu=False) is None
    monkeypatch.setattr(pathlib.Path, "read_text", lambda self: "flags : avx512f avx512_bf16 amx_bf16")
    assert precision_note("mixed_bfloat16", has_gpu=False) is None
