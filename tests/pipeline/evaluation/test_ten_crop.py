"""train.validation_crops: the paper's ten-crop test as a validation metric during training."""

import json
import types
import warnings

import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from pipeline.config import Config, load_config
from pipeline.data.pipelines import eval_pipeline
from pipeline.data.sources import load_source
from pipeline.errors import ConfigError
from pipeline.evaluation import evaluator
from pipeline.evaluation.ten_crop import TenCropValidation
from pipeline.training import run as training_run
from pipeline.training.backup import RunBackup
from pipeline.training.callbacks import EpochStats, RunTensorBoard
from pipeline.training.schedules import PlateauSchedule
from tests.helpers.runs import TINY, run_callbacks, scalars

# 48 synthetic training and 10 validation images, 8 classes (top-5 is logged); resize 72 > image_size 64,
# so the four corner crops differ from the centre one.
TEN = TINY + ["data.resize=72", "train.validation_crops=10", "export.saved_model=false"]
TAGS = ("epoch_10crop_top1_error", "epoch_10crop_top5_error")


def scalar_tags(log_dir):
    """Every scalar tag written in `log_dir` (Keras' TensorBoard writes scalars as tensor summaries)."""
    acc = EventAccumulator(str(log_dir), size_guidance={"tensors": 0})
    acc.Reload()
    return set(acc.Tags()["tensors"])


def test_config_accepts_1_and_10_and_rejects_other_counts():
    assert Config().train.validation_crops == 1
    assert load_config([], ["train.validation_crops=1"]).train.validation_crops == 1
    assert load_config([], ["train.validation_crops=10"]).train.validation_crops == 10
    for bad in ("3", "5", "0", "'10'"):
        with pytest.raises(ConfigError, match=r"train\.validation_crops: Input should be 1 or 10"):
            load_config([], [f"train.validation_crops={bad}"])


def test_callback_order_puts_ten_crops_before_logging_and_plateau(tmp_path):
    config = load_config([], TEN + ["train.schedule.name=plateau", "train.schedule.monitor=val_10crop_top1_error"])
    backup = RunBackup(tmp_path / "backup")
    callbacks = run_callbacks(config, tmp_path / "logs", 48, 3, 0.01, backup, 0)
    kinds = [type(c) for c in callbacks]
    position = {kind: kinds.index(kind) for kind in (TenCropValidation, EpochStats, RunTensorBoard, PlateauSchedule)}
    assert position[TenCropValidation] < position[EpochStats] < position[RunTensorBoard] < position[PlateauSchedule]
    assert callbacks[-1] is backup
    # Without the key, nothing changes.
    plain = run_callbacks(load_config([], TINY), tmp_path / "logs", 48, 3, 0.01, RunBackup(tmp_path / "b2"), 0)
    assert not any(isinstance(c, TenCropValidation) for c in plain)


def test_refusals_name_the_key():
    ten = load_config([], TEN)
    multi_worker = types.SimpleNamespace(multi_worker=True)
    with pytest.raises(ConfigError, match=r"train\.validation_crops: 10 is not supported with multi-worker"):
        training_run._check_validation_crops(ten, multi_worker)
    training_run._check_validation_crops(ten, types.SimpleNamespace(multi_worker=False))
    training_run._check_validation_crops(load_config([], TINY), multi_worker)
    plateau = TINY + ["train.schedule.name=plateau", "train.schedule.monitor=val_10crop_top1_error"]
    with pytest.raises(ConfigError, match=r"train\.schedule\.monitor: .*train\.validation_crops: 10"):
        training_run._check_validation_crops(load_config([], plateau), types.SimpleNamespace(multi_worker=False))


def test_validation_steps_limits_the_ten_crop_images():
    config = load_config([], TEN)
    whole = TenCropValidation(config.data, 16, seed=config.seed).dataset()
    images, _ = next(iter(whole))
    assert images.shape == (1, 10, 64, 64, 3)  # 16 // 10 images a step, ten views each
    assert sum(int(labels.shape[0]) for _, labels in whole) == 10  # the whole validation split
    first = TenCropValidation(config.data, 4, seed=config.seed, validation_steps=2).dataset()
    assert sum(int(labels.shape[0]) for _, labels in first) == 8  # Keras' two validation batches of 4
    # The same images, in the same order, as the evaluate command's pipeline.
    source = load_source(config.data, config.seed)
    expected = np.concatenate([im.numpy() for im, _ in eval_pipeline(source.validation.take(8), config.data, 1, crops=10)])
    np.testing.assert_array_equal(np.concatenate([im.numpy() for im, _ in first]), expected)


@pytest.mark.slow
def test_training_logs_ten_crop_errors_equal_to_the_evaluate_command(tmp_path):
    run_dir = tmp_path / "ten"
    config = load_config([], TEN + ["train.schedule.name=plateau", "train.schedule.monitor=val_10crop_top1_error"])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        figures = training_run.train(config, run_dir)
    # The plateau schedule found the figure it monitors in every epoch's logs.
    assert not [w for w in caught if "val_10crop_top1_error" in str(w.message)]

    validation = run_dir / "logs" / "validation"
    logged = {tag: scalars(validation, tag) for tag in TAGS}
    assert all(len(values) == 2 for values in logged.values())  # one per epoch
    assert all(0.0 <= v <= 1.0 for values in logged.values() for v in values)
    assert len(scalars(validation, "epoch_top1_error")) == 2  # Keras' centre-crop figures stay
    metrics = json.loads((run_dir / "metrics.json").read_text())
    for key in ("val_top1_error", "val_top5_error", "val_10crop_top1_error", "val_10crop_top5_error"):
        assert key in metrics and key in figures

    # The evaluate command's ten-crop test of the saved model gives the last epoch's figures.
    result = evaluator.evaluate_run(run_dir, crops=10, verbose=0)
    assert result["images"] == 10
    assert logged["epoch_10crop_top1_error"][-1] == pytest.approx(result["top1_error"], abs=1e-6)
    assert logged["epoch_10crop_top5_error"][-1] == pytest.approx(result["top5_error"], abs=1e-6)
    assert metrics["val_10crop_top1_error"] == pytest.approx(result["top1_error"], abs=1e-6)
    assert metrics["val_10crop_top5_error"] == pytest.approx(result["top5_error"], abs=1e-6)


@pytest.mark.slow
def test_a_folder_is_listed_once_for_the_trainer_the_picture_and_ten_crops(tmp_path, monkeypatch):
    from pipeline.data import listing, sources
    from tests.helpers.images import jpeg_bytes, write_tree

    root = tmp_path / "images"
    write_tree(root, {f"train/c{i % 2}/{i}.jpg": jpeg_bytes(seed=i) for i in range(12)})
    write_tree(root, {f"val/c{i % 2}/{i}.jpg": jpeg_bytes(seed=20 + i) for i in range(4)})
    walked = []
    walk = listing._walk_images
    monkeypatch.setattr(listing, "_walk_images", lambda folder, classes: walked.append(str(folder)) or walk(folder, classes))
    config = load_config([], TEN + [f"data.source=folder:{root}", "train.epochs=1", "train.batch_size=4",
                                    "export.keras=false"])
    figures = training_run.train(config, tmp_path / "run")
    assert "val_10crop_top1_error" in figures
    assert sorted(walked) == [str(root / "train"), str(root / "val")]
    assert listing._listings is None  # nothing held after start-up
    # Outside a run nothing is shared: each source lists its folder again.
    sources.load_source(config.data)
    assert len(walked) == 4
