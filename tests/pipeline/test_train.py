"""End-to-end runs of `python -m pipeline.train` on tiny synthetic data."""

import fcntl
import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf
import yaml

from pipeline import train
from pipeline.config import load_config
from pipeline.storage.files import DirectoryError
from pipeline.storage.rundir import RunDir
from pipeline.training import run as training_run
from pipeline.training.model import build_model, compile_model, precision_note
from tests.helpers.runs import TINY, args, scalars


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("runs") / "tiny"
    assert train.main(args(run_dir)) == 0
    return run_dir


@pytest.mark.slow
def test_run_directory_is_complete(finished_run):
    for name in ("config.yaml", "labels.txt", "metrics.json", "model.keras", "saved_model/saved_model.pb", "logs"):
        assert (finished_run / name).exists(), name
    assert not (finished_run / "backup").exists()  # removed once training finished
    assert (finished_run / "labels.txt").read_text().splitlines() == [f"class_{c}" for c in range(8)]
    saved = yaml.safe_load((finished_run / "config.yaml").read_text())
    assert saved["data"]["source"] == "synthetic" and saved["train"]["epochs"] == 2
    metrics = json.loads((finished_run / "metrics.json").read_text())
    assert metrics["epochs"] == 2
    for key in ("val_top1_error", "val_top5_error", "top1_error", "loss", "images_per_second"):
        assert key in metrics
    assert 0.0 <= metrics["val_top1_error"] <= 1.0


@pytest.mark.slow
def test_tensorboard_has_errors_learning_rate_throughput_and_reference_lines(finished_run):
    logs = finished_run / "logs"
    assert len(scalars(logs / "validation", "epoch_top5_error")) == 2
    assert len(scalars(logs / "train", "epoch_top1_error")) == 2
    np.testing.assert_allclose(scalars(logs / "train", "epoch_learning_rate"), [0.01, 0.01])
    assert all(v > 0 for v in scalars(logs / "train", "epoch_images_per_second"))
    np.testing.assert_allclose(scalars(logs / "reference_ensemble_15.3pct", "epoch_top5_error"), [0.153] * 2)
    np.testing.assert_allclose(scalars(logs / "reference_one_cnn_18.2pct", "epoch_top5_error"), [0.182] * 2)


@pytest.mark.slow
def test_saved_model_matches_keras_model(finished_run):
    model = keras.models.load_model(finished_run / "model.keras")
    served = tf.saved_model.load(str(finished_run / "saved_model"))
    x = np.random.default_rng(0).uniform(0, 255, (3, 64, 64, 3)).astype(np.float32)
    expected = tf.nn.softmax(model(x, training=False)).numpy()
    got = served.signatures["serve_preprocessed"](image=tf.constant(x))["probabilities"].numpy()
    np.testing.assert_allclose(got, expected, atol=1e-5)


@pytest.mark.slow
def test_finished_run_is_not_overwritten(finished_run, capsys):
    before = (finished_run / "metrics.json").read_text()
    assert train.main(args(finished_run)) == 2
    assert "finished run" in capsys.readouterr().err
    assert (finished_run / "metrics.json").read_text() == before


@pytest.mark.slow
def test_overwrite_retrains(tmp_path):
    run_dir = tmp_path / "again"
    assert train.main(args(run_dir, "train.epochs=1")) == 0
    # An evaluation of the old model: a file the run directory holds, gone with the old run.
    (run_dir / "eval_validation_1.json").write_text("old")
    assert train.main(args(run_dir, "train.epochs=1") + ["--overwrite"]) == 0
    assert not (run_dir / "eval_validation_1.json").exists()
    assert json.loads((run_dir / "metrics.json").read_text())["epochs"] == 1


def test_bad_config_exits_2_and_writes_nothing(tmp_path, capsys):
    run_dir = tmp_path / "bad"
    assert train.main(args(run_dir, "train.batch_size=-4")) == 2
    assert "train.batch_size" in capsys.readouterr().err
    assert train.main(args(run_dir, "model.dropuot=0.1")) == 2
    assert "model.dropuot: unknown key" in capsys.readouterr().err
    assert not run_dir.exists()


def test_unfinished_run_with_another_config_is_refused(tmp_path):
    config = load_config([], TINY)
    run_dir = tmp_path / "r"
    with RunDir(run_dir, config):
        pass  # writes config.yaml, no metrics: an unfinished run
    other = load_config([], TINY + ["train.epochs=3"])
    with pytest.raises(DirectoryError, match="train.epochs"):
        with RunDir(run_dir, other):
            pass
    with RunDir(run_dir, config) as run:
        assert run.resumed


def test_second_process_on_the_same_run_is_refused_under_any_name(tmp_path):
    config = load_config([], TINY)
    run_dir = tmp_path / "busy"
    run_dir.mkdir()
    (tmp_path / "link").symlink_to(run_dir)
    # Another process holds the lock (flock locks are per open file description).
    handle = os.open(run_dir, os.O_RDONLY)
    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    try:
        for path in (run_dir, tmp_path / "link", run_dir / ".." / "busy"):
            with pytest.raises(DirectoryError, match="in use by another process"):
                with RunDir(path, config):
                    pass
    finally:
        os.close(handle)
    assert list(run_dir.iterdir()) == []  # nothing written, no lock file


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


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["float32", "mixed_float16", "mixed_bfloat16"])
def test_each_precision_trains_and_exports_float32_probabilities(tmp_path, precision):
    config = load_config([], TINY + [
        f"train.precision={precision}", "train.epochs=1", "train.steps_per_epoch=2", "train.validation_steps=1",
        "export.keras=false",
    ])
    figures = training_run.train(config, tmp_path / precision)
    assert np.isfinite(figures["loss"]) and np.isfinite(figures["val_loss"])
    served = tf.saved_model.load(str(tmp_path / precision / "saved_model"))
    x = np.random.default_rng(0).uniform(0, 255, (2, 64, 64, 3)).astype(np.float32)
    probabilities = served.signatures["serve_preprocessed"](image=tf.constant(x))["probabilities"]
    assert probabilities.dtype == tf.float32
    np.testing.assert_allclose(probabilities.numpy().sum(axis=1), 1.0, rtol=1e-5)


@pytest.mark.slow
def test_divergence_stops_with_a_clear_message_and_no_bad_backup(tmp_path, capsys):
    run_dir = tmp_path / "diverged"
    assert train.main(args(run_dir, "train.optimizer.learning_rate=1000000.0", "train.epochs=3")) == 1
    err = capsys.readouterr().err
    assert "the training loss became nan" in err and "Lower train.optimizer.learning_rate" in err
    assert not (run_dir / "metrics.json").exists()
    state = run_dir / "backup" / "state.json"
    if state.exists():  # an epoch that ended before the divergence may be backed up, never a diverged one
        assert all(np.isfinite(e["loss"]) for e in json.loads(state.read_text())["history"])


def test_half_precision_on_a_cpu_without_support_is_flagged(monkeypatch):
    monkeypatch.setattr(train.pathlib.Path, "read_text", lambda self: "flags : fpu sse2 avx2 fma f16c")
    assert "slower than float32" in precision_note("mixed_bfloat16", has_gpu=False)
    assert "avx512_fp16" in precision_note("mixed_float16", has_gpu=False)
    assert precision_note("mixed_bfloat16", has_gpu=True) is None
    assert precision_note("float32", has_gpu=False) is None
    monkeypatch.setattr(train.pathlib.Path, "read_text", lambda self: "flags : avx512f avx512_bf16 amx_bf16")
    assert precision_note("mixed_bfloat16", has_gpu=False) is None
