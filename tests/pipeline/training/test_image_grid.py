"""The TensorBoard picture of the augmented input: the grid, the callback, and a real run that writes it once."""

import json

import numpy as np
import pytest
import tensorflow as tf
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from pipeline.config import load_config
from pipeline.data.pipelines import build_datasets
from pipeline.training import run as training_run
from pipeline.training.backup import RunBackup
from pipeline.training.callbacks import (
    AUGMENTED_BATCH_TAG,
    AugmentedImageGrid,
    first_training_batch,
    grid_shape,
    image_grid,
)
from tests.helpers.runs import TINY, run_callbacks

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
    acc = EventAccumulator(str(log_dir), size_guidance={"tensors": 0})
    acc.Reload()
    if tag not in acc.Tags()["tensors"]:
        return [], []
    # An image summary's tensor holds [width, height, PNG of each image].
    images = [tf.image.decode_png(tf.make_ndarray(e.tensor_proto)[2]).numpy() for e in acc.Tensors(tag)]
    return images, [acc.SummaryMetadata(tag).summary_description] * len(images)


def tile(grid, i, size, columns=4, border=2):
    """Image i of a grid of size x size images, `columns` to a row."""
    top = border + (i // columns) * (size + border)
    left = border + (i % columns) * (size + border)
    return grid[top : top + size, left : left + size]


def epoch_images(dataset):
    """The images of one pass over a batched dataset, each as uint8 bytes (as the grid shows them).

    Which images an epoch holds is fixed by the seed; their order is not
    (parallel augmentation hands images on as they are finished, so one can
    move to a neighbouring batch), hence a set.
    """
    images = np.concatenate([batch[0].numpy() for batch in dataset])
    return {image.tobytes() for image in np.clip(np.rint(images), 0, 255).astype(np.uint8)}


def test_grid_of_five_images_is_two_rows_of_three_clipped_to_uint8():
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (5, 32, 32, 3)).astype(np.float32)
    images[0, 0, 0, 0] = 300.0
    images[1, 0, 0, 0] = -5.0
    grid = image_grid(images)
    assert grid_shape(5) == (2, 3)
    assert grid.shape == (2 * 32 + 3 * 2, 3 * 32 + 4 * 2, 3)
    assert grid.dtype == np.uint8
    expected = np.clip(np.rint(images), 0, 255).astype(np.uint8)
    for i in range(5):
        row, column = divmod(i, 3)
        top, left = 2 + row * 34, 2 + column * 34
        np.testing.assert_array_equal(grid[top : top + 32, left : left + 32], expected[i], err_msg=f"image {i}")
    assert grid[2, 2, 0] == 255  # 300 clipped
    assert grid[2, 36, 0] == 0  # -5 clipped
    assert (grid[:2] == 255).all() and (grid[:, :2] == 255).all()  # the outer border
    assert (grid[34:36] == 255).all() and (grid[:, 34:36] == 255).all()  # between tiles
    assert (grid[36:68, 70:102] == 255).all()  # the empty sixth cell


def test_grid_shows_at_most_sixteen_images_in_four_rows_of_four():
    images = np.arange(20, dtype=np.float32)[:, None, None, None] * np.ones((20, 8, 8, 1), np.float32)
    grid = image_grid(images)
    assert grid.shape == (4 * 8 + 5 * 2, 4 * 8 + 5 * 2, 1)
    for i in range(16):
        assert (tile(grid, i, 8) == i).all(), i
    assert grid_shape(1) == (1, 1) and grid_shape(16) == (4, 4) and grid_shape(17) == (4, 5)


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


def test_first_training_batch_leaves_the_trainers_data_as_it_was():
    config = load_config([], SHORT)
    untouched = build_datasets(config.data, 16, seed=config.seed)
    expected = [epoch_images(untouched.train) for _ in range(2)]
    data = build_datasets(config.data, 16, seed=config.seed)
    images, labels = first_training_batch(config.data, 16, config.seed)
    assert images.shape == (16, 64, 64, 3) and images.dtype == np.uint8 and labels.shape == (16,)
    # Training then sees the epochs it sees without the picture, the first of them holding the pictured images.
    seen = [epoch_images(data.train) for _ in range(2)]
    assert seen == expected and expected[0] != expected[1]
    pictured = {image.tobytes() for image in np.clip(np.rint(images), 0, 255).astype(np.uint8)}
    assert pictured <= seen[0]


def test_no_grid_for_other_workers_or_a_resumed_run(tmp_path):
    config = load_config([], SHORT)
    batch = (np.zeros((2, 64, 64, 3), np.float32), np.zeros(2, np.int32))

    def pictures(backup, first_batch):
        callbacks = run_callbacks(config, tmp_path / "logs", 32, 2, 0.01, backup, 0, first_batch=first_batch)
        return [c for c in callbacks if isinstance(c, AugmentedImageGrid)]

    assert len(pictures(RunBackup(tmp_path / "fresh"), batch)) == 1
    assert pictures(RunBackup(tmp_path / "fresh"), None) == []
    resumed = tmp_path / "resumed"
    resumed.mkdir()
    (resumed / RunBackup.STATE_FILE).write_text(json.dumps({"epoch": 1}))
    assert pictures(RunBackup(resumed), batch) == []


@pytest.mark.slow
@pytest.mark.parametrize("loop", ["fit", "custom"])
def test_training_run_writes_the_first_batch_once(tmp_path, loop):
    config = load_config([], SHORT)
    training_run.train(config, tmp_path / "run", loop=loop)
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
