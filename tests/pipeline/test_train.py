"""End-to-end runs of `python -m pipeline.train` on tiny synthetic data: the run directory, TensorBoard, the
exports, refusals, divergence, the log of a redirected run. The model factory's precisions are tested in
training/test_model.py, run directories in storage/test_rundir.py."""

import csv
import json
import re
import subprocess

import keras
import numpy as np
import pytest
import tensorflow as tf
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import model_defs.layers  # noqa: F401  (registers the custom layers: the runs are trained in subprocesses)
import pipeline.evaluation.metrics  # noqa: F401  (registers the compiled metrics)
from pipeline import train
from pipeline.config import load_config
from pipeline.data.pipelines import build_datasets
from tests.helpers.processes import command, project_env
from tests.helpers.runs import args, scalars


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A tiny run of `python -m pipeline.train` as a user starts it under nohup: stdout to a file (log.txt beside it)."""
    run_dir = tmp_path_factory.mktemp("runs") / "tiny"
    log = run_dir.parent / "log.txt"
    # Six steps an epoch; progress lines every 0.05 s instead of 30 (train.log_interval), to see them in a tiny run.
    argv = command("pipeline.train", *args(run_dir, "train.verbose=auto", "train.log_interval=0.05",
                                           "data.num_examples=96", "train.profile=[2, 3]"))
    with open(log, "w") as out:
        done = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, env=project_env(), timeout=300)
    assert done.returncode == 0, log.read_text()[-3000:]
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
    # Without train.validation_crops: 10, no ten-crop figure is logged anywhere.
    tags = EventAccumulator(str(logs / "validation")).Reload().Tags()["tensors"]
    assert "epoch_top1_error" in tags and not any("10crop" in tag for tag in tags)
    assert not any("10crop" in key for key in json.loads((finished_run / "metrics.json").read_text()))


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


@pytest.mark.slow
def test_a_redirected_log_has_plain_lines_known_epoch_lengths_and_the_runs_time_left(finished_run):
    text = (finished_run.parent / "log.txt").read_text()
    assert "\r" not in text and "Traceback" not in text
    lines = text.splitlines()
    progress = [line for line in lines if re.match(r"epoch [12]/2  step \d/6  [\d,]+ images/s  loss ", line)]
    assert len(progress) >= 2
    assert progress and all(re.search(r"  epoch left [\d a-z]+  run left [\d a-z]+$", line) for line in progress)
    ends = [line for line in lines if re.match(r"epoch [12]/2 done in ", line)]
    assert len(ends) == 2 and re.search(r"; run left \d+ s$", ends[0]) and ends[1].endswith("; the last epoch")
    assert "train.precision: auto chose float32 (a CPU: mixed precision is for GPUs)" in lines


@pytest.mark.slow
# Keras warns that the input "ran out of data" whenever a dataset of unknown length ends (as in pipeline.training.core).
@pytest.mark.filterwarnings("ignore:Your input ran out of data:UserWarning")
def test_the_run_keeps_its_history_its_best_epoch_and_its_environment(finished_run):
    rows = list(csv.DictReader(open(finished_run / "history.csv")))
    assert [row["epoch"] for row in rows] == ["1", "2"]
    for key in ("loss", "val_top1_error", "learning_rate", "images_per_second", "epoch_seconds", "elapsed_seconds"):
        assert all(float(row[key]) >= 0 for row in rows), key
    assert float(rows[0]["elapsed_seconds"]) < float(rows[1]["elapsed_seconds"])
    errors = [float(row["val_top1_error"]) for row in rows]
    metrics = json.loads((finished_run / "metrics.json").read_text())
    assert metrics["best_epoch"] == 1 + errors.index(min(errors)) and metrics["best_monitor"] == "val_top1_error"
    # checkpoints/best.keras is that epoch's model: it scores what history.csv says.
    config = load_config([finished_run / "config.yaml"])
    data = build_datasets(config.data, config.train.batch_size, seed=config.seed)
    best = keras.models.load_model(finished_run / "checkpoints" / "best.keras")
    assert best.evaluate(data.validation, verbose=0, return_dict=True)["top1_error"] == pytest.approx(min(errors))
    sessions = json.loads((finished_run / "environment.json").read_text())["sessions"]
    assert len(sessions) == 1 and "pipeline.train" in sessions[0]["command"]
    assert sessions[0]["tensorflow"] == tf.__version__ and sessions[0]["devices"] == ["/cpu:0"]
    # train.profile: batches 2-3 traced for TensorBoard's Profile tab.
    assert list((finished_run / "logs" / "train" / "plugins" / "profile").glob("*/*.xplane.pb"))
