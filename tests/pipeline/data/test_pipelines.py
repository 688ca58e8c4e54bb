import pathlib

import numpy as np
import pytest
import tensorflow as tf

from pipeline.config import load_config
from pipeline.data.augment import EvalTransform
from pipeline.data.pipelines import build_datasets
from pipeline.data.sources import digits_source, load_source


def data_config(*overrides):
    return load_config([], list(overrides)).data


def test_digits_split_is_fixed_and_complete():
    config = data_config()
    source = digits_source(config)
    assert (source.train_size, source.validation_size) == (1438, 359)
    assert source.class_names == [str(d) for d in range(10)]
    train_labels = np.array([int(y) for _, y in source.train])
    val_images = np.stack([x.numpy() for x, _ in source.validation])
    assert len(train_labels) == 1438 and val_images.shape == (359, 8, 8, 3)
    assert val_images.dtype == np.uint8 and val_images.max() == 255 and val_images.min() == 0
    assert set(train_labels) == set(range(10))
    again = np.stack([x.numpy() for x, _ in digits_source(config).validation])
    np.testing.assert_array_equal(val_images, again)  # the split does not move


def test_digits_batches_are_model_ready():
    config = data_config()  # quickstart: 128x128, centre, no augmentation
    datasets = build_datasets(config, batch_size=32, seed=0)
    images, labels = next(iter(datasets.train))
    # uint8 to the model, which normalises them itself.
    assert images.shape == (32, 128, 128, 3) and images.dtype == tf.uint8
    assert labels.shape == (32,) and labels.dtype == tf.int32
    val_batches = list(datasets.validation)
    assert val_batches[0][0].dtype == tf.float32
    assert sum(int(b[1].shape[0]) for b in val_batches) == 359  # no image dropped
    # Nothing random: the training images are the evaluation view of each image, rounded to uint8.
    evaluate = EvalTransform(128, resize=128)
    views = digits_source(config).train.map(lambda x, y: tf.cast(tf.round(evaluate(x)), tf.uint8))
    expected = sorted(x.tobytes() for x in views.as_numpy_iterator())
    assert sorted(x.numpy().tobytes() for batch, _ in datasets.train for x in batch) == expected


def test_synthetic_source_is_deterministic_and_class_coloured():
    config = data_config("data.source=synthetic", "data.num_classes=4", "data.num_examples=8", "data.image_size=64", "data.resize=72")
    source = load_source(config, seed=5)
    images = [x.numpy() for x, _ in source.train]
    labels = [int(y) for _, y in source.train]
    assert labels == [0, 1, 2, 3, 0, 1, 2, 3]
    assert images[0].shape == (72, 72, 3) and images[0].dtype == np.uint8
    np.testing.assert_array_equal(images[0], next(iter(load_source(config, seed=5).train))[0].numpy())
    assert not np.array_equal(images[0], next(iter(load_source(config, seed=6).train))[0].numpy())
    # Images of one class share a mean colour that differs from the other classes' (noise mean 64).
    same = np.abs(images[0].mean((0, 1)) - images[4].mean((0, 1))).max()
    other = np.abs(images[0].mean((0, 1)) - images[1].mean((0, 1))).max()
    assert same < 2.0 < other
    assert source.validation_size == 2


def test_training_pipeline_reproducible_under_a_seed():
    config = data_config("data.source=synthetic", "data.num_examples=16", "data.image_size=64", "data.resize=80")

    def epoch(seed):
        # Order may vary (non-deterministic map for speed); the set of augmented images may not.
        return sorted(x.numpy().tobytes() for batch, _ in build_datasets(config, 8, seed=seed).train for x in batch)

    first = epoch(1)
    assert len(first) == 16
    assert first == epoch(1)
    assert first != epoch(2)


def test_missing_sources_are_reported(tmp_path):
    from pipeline.data.splits import DataError

    with pytest.raises(DataError, match="does not exist"):
        load_source(data_config(f"data.source=folder:{tmp_path / 'x'}"))
    with pytest.raises(DataError, match="pipeline.prepare"):
        load_source(data_config(f"data.source=records:{tmp_path}"))


def test_deterministic_mode_repeats_the_batches_in_order():
    config = data_config(
        "data.source=synthetic", "data.num_examples=32", "data.image_size=64", "data.resize=80",
        "data.deterministic=true",
    )  # fmt: skip

    def batches(seed):
        return [(x.numpy(), y.numpy()) for x, y in build_datasets(config, 8, seed=seed).train]

    first, again = batches(3), batches(3)
    assert len(first) == 4
    for (x1, y1), (x2, y2) in zip(first, again):
        np.testing.assert_array_equal(x1, x2)
        np.testing.assert_array_equal(y1, y2)


def test_large_whole_decoded_images_are_skipped_and_counted(tmp_path, capfd):
    from PIL import Image

    from tests.helpers.images import jpeg_bytes, write_tree

    def png(height, width):
        import io

        buffer = io.BytesIO()
        Image.new("RGB", (width, height), (200, 10, 10)).save(buffer, format="PNG")
        return buffer.getvalue()

    write_tree(tmp_path, {
        "a/small.png": png(20, 30),  # 600 pixels
        "a/large.png": png(40, 50),  # 2,000 pixels: over the cap of 1,000
        "b/large.jpg": jpeg_bytes(40, 50, seed=1),  # a JPEG decodes only its window: no cap
        "b/ok.jpg": jpeg_bytes(20, 30, seed=2),
    })  # fmt: skip
    config = data_config(f"data.source=folder:{tmp_path}", "data.image_size=64", "data.resize=64",
                         "data.max_pixels=1000", "data.validation_fraction=0.25")
    data = build_datasets(config, batch_size=4)
    seen = sum(int(labels.shape[0]) for _, labels in data.train) + sum(
        int(labels.shape[0]) for _, labels in data.validation)
    assert seen == 3 and int(data.skipped.numpy()) == 1
    err = capfd.readouterr().err
    assert f'warning: skipping image larger than data.max_pixels "{tmp_path / "a" / "large.png"}" - 2000 pixels, ' \
           "more than 1000\n" in err


def test_cache_auto_caches_what_fits_and_streams_the_rest():
    import dataclasses

    from pipeline.data.pipelines import cache_decision
    from pipeline.errors import ConfigError

    source = load_source(data_config(), 0)  # digits: 1,438 training images
    small = dataclasses.replace(source, train_bytes=1_000)
    large = dataclasses.replace(source, train_bytes=30 * 10**9)
    random_crops = data_config("data.augment.crop=random")
    assert cache_decision(random_crops, small, available=8 * 10**9) == (True, None)
    assert cache_decision(random_crops, large, available=8 * 10**9) == (False, (
        "data.cache: auto: not caching the training data in memory (30.0 GB, more than a quarter of the "
        "8.0 GB available); each epoch reads it again"))
    assert cache_decision(data_config("data.augment.crop=random", "data.cache=false"), small, 8e9) == (False, None)
    with pytest.raises(ConfigError, match=r"data.cache: true, but the training data takes 30.0 GB in memory and "
                                          r"8.0 GB is available: set data.cache to auto or false"):
        cache_decision(data_config("data.augment.crop=random", "data.cache=true"), large, available=8 * 10**9)
    # Nothing random (the quickstart): the cache holds model-ready uint8 images, 1438 x 128 x 128 x 3 bytes.
    assert cache_decision(data_config(), source, available=4 * 1438 * 128 * 128 * 3) == (True, None)
    assert cache_decision(data_config(), source, available=4 * 1438 * 128 * 128 * 3 - 4)[0] is False


def test_a_folder_source_knows_its_size_on_disk(tmp_path):
    from tests.helpers.images import jpeg_bytes, write_tree

    files = {f"c{i % 2}/{i}.jpg": jpeg_bytes(30 + i, 40, seed=i) for i in range(10)}
    write_tree(tmp_path, files)
    source = load_source(data_config(f"data.source=folder:{tmp_path}", "data.validation_fraction=0.2"), 0)
    paths = [p.decode() for p in source.train.map(lambda data, label, name: name).as_numpy_iterator()]
    assert source.train_bytes == sum(len(files[str(pathlib.Path(p).relative_to(tmp_path))]) for p in paths)
