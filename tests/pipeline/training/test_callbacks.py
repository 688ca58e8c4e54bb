"""The callbacks of a training run (`pipeline.training.callbacks`): a non-finite loss and an epoch without a
training batch stop the run with one message; each epoch's logs get its throughput and learning rate; the paper's
errors are drawn as reference lines; and the pictures: the augmented first batch (once, at the start of a fresh
run) and conv1's kernels (every few epochs), in TensorBoard, on the chief only."""


import keras
import numpy as np
import pytest

from pipeline.config import load_config
from pipeline.data.pipelines import build_datasets
from pipeline.data.splits import DataError
from pipeline.errors import RunFailed
from pipeline.evaluation import drawing
from pipeline.evaluation.images import image_grid
from pipeline.training import callbacks as training_callbacks
from pipeline.training import run as training_run
from pipeline.training.backup import RunBackup
from pipeline.training.callbacks import (
    AUGMENTED_BATCH_TAG,
    CONV1_KERNELS_TAG,
    AugmentedImageGrid,
    Conv1Kernels,
    EpochStats,
    ReferenceLines,
    StopOnEmptyEpoch,
    StopOnNaN,
    TrainingDiverged,
)
from pipeline.training.model import build_model
from tests.helpers.images import epoch_images
from tests.helpers.runs import TINY, backed_up, event_steps, image_summaries, run_callbacks, scalars

# A short run with the PCA colour noise on, as a user's run has it.
SHORT = TINY + [
    "data.augment.pca_noise=0.1",
    "train.epochs=1",
    "train.steps_per_epoch=2",
    "train.validation_steps=1",
    "export.keras=false",
    "export.saved_model=false",
]


def image_events(log_dir, tag=AUGMENTED_BATCH_TAG):
    """(decoded images, descriptions) of every summary under `tag` in the event files of `log_dir`."""
    _, images, description = image_summaries(log_dir, tag)
    return images, [description] * len(images)


def tile(grid, i, size, columns=4, border=2):
    """Image i of a grid of size x size images, `columns` to a row."""
    top = border + (i // columns) * (size + border)
    left = border + (i % columns) * (size + border)
    return grid[top : top + size, left : left + size]


def compiled_model(learning_rate):
    """A one-layer model compiled with SGD at `learning_rate`: what the callbacks read the rate from."""
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(learning_rate), loss="mse")
    return model


# ---------------------------------------------------------------- stopping, figures and reference lines


@pytest.mark.parametrize("loss", [float("nan"), float("inf")])
def test_a_non_finite_loss_stops_the_run_naming_the_epoch_the_step_and_the_rate(loss):
    callback = StopOnNaN()
    callback.set_model(compiled_model(0.05))
    callback.on_epoch_begin(2)
    callback.on_train_batch_end(0, {"loss": 1.5})  # finite: training goes on
    callback.on_train_batch_end(1, {})  # no loss reported: nothing to judge
    with pytest.raises(TrainingDiverged) as stop:
        callback.on_train_batch_end(6, {"loss": loss})
    assert isinstance(stop.value, RunFailed)  # exit status 1
    assert str(stop.value) == (
        f"the training loss became {loss} at epoch 3, step 7 (learning rate 0.05). Lower "
        "train.optimizer.learning_rate or add train.schedule.warmup_epochs and start again with --overwrite, or "
        "check the input data (the run's backup, if any, holds the last epoch that ended with a finite loss)."
    )
    assert stop.value.what == f"the training loss became {loss} at epoch 3, step 7 (learning rate 0.05)"


def test_a_non_finite_loss_at_the_end_of_an_epoch_stops_the_run_before_its_backup():
    # The update of an epoch's last step shows first in the epoch's figures (a step's loss precedes its update).
    callback = StopOnNaN()
    callback.set_model(compiled_model(0.05))
    callback.on_epoch_end(0, {"loss": 1.0, "val_loss": 2.0})
    with pytest.raises(TrainingDiverged) as stop:
        callback.on_epoch_end(1, {"loss": 1.0, "val_loss": float("nan")})
    assert stop.value.what == "the validation loss became nan at the end of epoch 2 (learning rate 0.05)"


def test_an_epoch_without_a_training_batch_stops_the_run():
    callback = StopOnEmptyEpoch()
    callback.on_epoch_begin(0)
    callback.on_train_batch_end(0)
    callback.on_epoch_end(0)  # one batch: the epoch counts
    callback.on_epoch_begin(1)
    with pytest.raises(DataError) as stop:
        callback.on_epoch_end(1)
    assert str(stop.value) == (
        "epoch 2 had no training batch: no training image could be decoded (the files are named in the warnings "
        "above), or the training split is empty; check data.source"
    )


def test_each_epoch_logs_its_training_throughput_and_learning_rate(monkeypatch):
    callback = EpochStats(images_per_epoch=64)
    callback.set_model(compiled_model(0.05))
    clock = iter([10.0, 12.0, 20.0, 24.0])  # perf_counter's readings, in turn
    monkeypatch.setattr(training_callbacks.time, "perf_counter", lambda: next(clock))
    callback.on_epoch_begin(0)  # 10.0
    callback.on_test_begin()  # 12.0: validation starts after 2 s of training
    callback.on_test_begin()  # a second validation pass does not move the end of training
    logs = {"loss": 0.5}
    callback.on_epoch_end(0, logs)
    assert logs == {"loss": 0.5, "images_per_second": 32.0, "learning_rate": float(np.float32(0.05))}
    callback.on_epoch_begin(1)  # 20.0
    logs = {}
    callback.on_epoch_end(1, logs)  # 24.0, no validation: the whole epoch trained
    assert logs["images_per_second"] == 16.0
    callback.on_epoch_end(2, None)  # Keras may pass no logs: nothing to add to


def test_the_papers_errors_are_drawn_as_runs_of_their_own_at_every_epoch(tmp_path):
    callback = ReferenceLines(str(tmp_path))
    callback.on_train_begin()
    for epoch in range(3):
        callback.on_epoch_end(epoch)
    callback.on_train_end()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["reference_ensemble_15.3pct", "reference_one_cnn_18.2pct"]
    for run, value in (("reference_ensemble_15.3pct", 0.153), ("reference_one_cnn_18.2pct", 0.182)):
        assert scalars(tmp_path / run, "epoch_top5_error") == [float(np.float32(value))] * 3
        assert event_steps(tmp_path / run, "epoch_top5_error") == [0, 1, 2]


# ---------------------------------------------------------------- the augmented first batch


def test_callback_writes_one_grid_with_the_class_names(tmp_path):
    rng = np.random.default_rng(1)
    images = rng.uniform(-20, 275, (20, 16, 16, 3)).astype(np.float32)
    labels = np.arange(20) % 3
    callback = AugmentedImageGrid(str(tmp_path), lambda: (images, labels), class_names=["cat", "dog", "owl"])
    callback.on_train_begin()
    grids, descriptions = image_events(tmp_path / "train")
    assert len(grids) == 1
    np.testing.assert_array_equal(grids[0], image_grid(images))
    names = ", ".join(["cat", "dog", "owl"][label] for label in labels[:16])
    assert descriptions[0].endswith(f"16 of its 20 images, row by row: {names}.")


def test_no_grid_for_other_workers_or_a_resumed_run(tmp_path):
    config = load_config([], SHORT)
    batch = (np.zeros((2, 64, 64, 3), np.float32), np.zeros(2, np.int32))

    def pictures(backup, first_batch):
        callbacks = run_callbacks(config, tmp_path / "logs", 32, 2, 0.01, backup, 0, first_batch=first_batch)
        return [c for c in callbacks if isinstance(c, AugmentedImageGrid)]

    assert len(pictures(RunBackup(tmp_path / "fresh"), batch)) == 1
    assert pictures(RunBackup(tmp_path / "fresh"), None) == []
    assert pictures(backed_up(tmp_path / "resumed"), batch) == []


@pytest.mark.slow
def test_training_run_writes_the_first_batch_once(tmp_path):
    config = load_config([], SHORT)
    training_run.train(config, tmp_path / "run")
    grids, descriptions = image_events(tmp_path / "run" / "logs" / "train")
    assert len(grids) == 1
    assert grids[0].shape == (4 * 64 + 5 * 2, 4 * 64 + 5 * 2, 3)
    # 16 augmented images (PCA noise included) of the first epoch, as the model gets them.
    first_epoch = epoch_images(build_datasets(config.data, 16, seed=config.seed).train)
    shown = {tile(grids[0], i, 64).tobytes() for i in range(16)}
    assert len(shown) == 16 and shown <= first_epoch
    assert descriptions[0].count("class_") == 16
    for other in ("validation", "reference_one_cnn_18.2pct"):
        assert image_events(tmp_path / "run" / "logs" / other) == ([], [])


# ---------------------------------------------------------------- conv1 kernels during training


def test_training_callback_draws_the_kernels_at_step_0_and_every_few_epochs(tmp_path):
    config = load_config([], TINY)
    model = build_model(config, 8)
    model.compile(optimizer=keras.optimizers.SGD(0.05),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    initial = model.get_layer("conv1").get_weights()[0]
    rng = np.random.default_rng(4)
    images = rng.uniform(0, 255, (8, 64, 64, 3)).astype(np.float32)
    labels = np.arange(8) % 8
    callback = Conv1Kernels(str(tmp_path), every=2, epochs=3, groups=2)
    model.fit(images, labels, batch_size=8, epochs=3, callbacks=[callback], verbose=0)
    final = model.get_layer("conv1").get_weights()[0]
    assert np.abs(final - initial).max() > 0  # training moved the kernels

    steps, pictures, description = image_summaries(tmp_path / "train", CONV1_KERNELS_TAG)
    assert steps == [0, 2, 3]  # the start, every 2nd epoch, the last
    expected_first = drawing.rgb_array(drawing.render_kernels(initial, 2, title="conv1 kernels after 0 epochs"))
    expected_last = drawing.rgb_array(drawing.render_kernels(final, 2, title="conv1 kernels after 3 epochs"))
    np.testing.assert_array_equal(pictures[0], expected_first)
    np.testing.assert_array_equal(pictures[2], expected_last)
    assert not np.array_equal(pictures[0], pictures[2])
    assert "one block per tower" in description

    resumed = tmp_path / "resumed"
    callback = Conv1Kernels(str(resumed), every=2, epochs=3, groups=2, at_start=False)
    model.fit(images, labels, batch_size=8, epochs=3, initial_epoch=1, callbacks=[callback], verbose=0)
    assert image_summaries(resumed / "train", CONV1_KERNELS_TAG)[0] == [2, 3]


def test_only_the_chief_draws_the_kernels_and_a_resumed_run_skips_step_0(tmp_path):
    config = load_config([], TINY + ["model.groups=1", "train.epochs=7"])
    batch = (np.zeros((2, 64, 64, 3), np.float32), np.zeros(2, np.int32))

    def kernels(backup, first_batch):
        callbacks = run_callbacks(config, tmp_path / "logs", 32, 2, 0.01, backup, 0, first_batch=first_batch)
        assert isinstance(callbacks[-1], RunBackup)
        return [c for c in callbacks if isinstance(c, Conv1Kernels)]

    (chief,) = kernels(RunBackup(tmp_path / "fresh"), batch)
    assert (chief.every, chief.epochs, chief.groups, chief.at_start) == (5, 7, 1, True)
    assert kernels(RunBackup(tmp_path / "fresh"), None) == []
    (again,) = kernels(backed_up(tmp_path / "resumed"), batch)
    assert again.at_start is False
