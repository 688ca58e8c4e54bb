"""Batched tf.data pipelines: a source's splits -> training and evaluation batches.

`build_datasets` turns a source (`pipeline.data.sources`) into the batched
training pipeline (bad files skipped, cache, shuffle, per-image augmentation
with stateless seeds, batch, prefetch) and the evaluation pipeline (resize,
centre or ten crops, batch).

Undecodable files (empty, not an image, a JPEG cut short) and PNG, GIF or BMP
files above data.max_pixels are skipped, each with a warning naming it, and
counted in `Datasets.skipped`.
"""

import dataclasses
import pathlib

import tensorflow as tf

from pipeline.data.augment import EvalTransform, TrainTransform
from pipeline.data.decode import skip_undecodable
from pipeline.data.sources import load_source
from pipeline.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class Datasets:
    """Batched pipelines ready for `model.fit`."""

    train: tf.data.Dataset
    validation: tf.data.Dataset
    class_names: list
    train_size: int
    validation_size: int
    skipped: tf.Variable = None  # undecodable files met so far (int64 counter)
    train_sharded: bool = False  # train holds this worker's share only: tf.data must not shard it again
    # The training data comes from record files tf.data can split between workers (records:, tfds:);
    # otherwise (in memory, a list of image files) workers split the batches.
    split_by_files: bool = False

    @property
    def num_classes(self):
        return len(self.class_names)


# The shuffle buffer of the training pipeline: up to this many examples, and at most
# about this many bytes (raw 256x256 records are 196 KB each: 10,000 of them would
# take 2 GB).
SHUFFLE_EXAMPLES = 10_000
SHUFFLE_BYTES = 2**30


def train_pipeline(dataset, data_config, batch_size, seed, size=None, shuffled=False, cache=False,
                   example_bytes=None):
    """Unbatched (image, label) -> shuffled, augmented, batched, prefetched.

    Each image is paired with its own [2] seed from `Dataset.random`, drawn
    anew every epoch, before the parallel map: the augmentation of an image
    does not depend on thread scheduling. Unless `data.deterministic`, images
    leave the parallel map as they are finished, so the batches of two runs
    with one seed hold the same augmented images in a slightly different order.

    Args:
        dataset: unbatched (image or encoded bytes, label).
        data_config: `DataConfig`.
        batch_size: global batch size.
        seed: shuffle and augmentation seed.
        size: examples per epoch (sizes the shuffle buffer).
        shuffled: the source already reshuffles all of its examples every
            epoch (file names), so no shuffle buffer of images is needed
            unless the cache would freeze the order.
        cache: keep the examples in memory after the first epoch (see
            `cache_decision` for data.cache).
        example_bytes: the mean size of one example as stored, to bound the
            shuffle buffer's memory (None: unknown).
    """
    augment = data_config.augment
    transform = TrainTransform(
        data_config.image_size,
        resize=data_config.resize,
        crop=augment.crop,
        flip=augment.flip,
        pca_noise=augment.pca_noise,
        min_area=augment.min_area,
    )

    def cache_and_shuffle(dataset):
        # A cache replays its first epoch's order, so a shuffle must follow it
        # even for a source that reshuffles itself.
        if cache:
            dataset = dataset.cache()
        if cache or not shuffled:
            buffer = min(size or SHUFFLE_EXAMPLES, SHUFFLE_EXAMPLES)
            if example_bytes:
                buffer = max(1, min(buffer, SHUFFLE_BYTES // max(1, int(example_bytes))))
            dataset = dataset.shuffle(buffer, seed=seed, reshuffle_each_iteration=True)
        return dataset

    if augment.crop == "center" and not augment.flip and augment.pca_noise == 0:
        # Nothing random: transform once, then cache the model-ready images.
        # In order: nothing else would vary between two runs with one seed.
        dataset = dataset.map(lambda image, label: (transform(image, tf.zeros([2], tf.int64)), label),
                              num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        dataset = dataset.ignore_errors(log_warning=True)  # see below
        return cache_and_shuffle(dataset).batch(batch_size).prefetch(tf.data.AUTOTUNE)
    dataset = cache_and_shuffle(dataset)
    seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
    dataset = tf.data.Dataset.zip(dataset, seeds)
    dataset = dataset.map(
        lambda example, key: (transform(example[0], key), example[1]),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=data_config.deterministic,
    )
    # Backstop for a file that passes the cheap guard yet fails to decode (a
    # corrupt body): TensorFlow logs the error and the image is dropped.
    dataset = dataset.ignore_errors(log_warning=True)
    return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def eval_pipeline(dataset, data_config, batch_size, crops=None, cache=False):
    """Unbatched (image, label) -> resized, centre- (or ten-) cropped, batched.

    Not cached by default: 50,000 ImageNet validation photos do not fit in memory.
    """
    transform = EvalTransform(data_config.image_size, resize=data_config.resize, crops=crops or 1)
    if cache:
        dataset = dataset.cache()
    dataset = dataset.map(lambda image, label: (transform(image), label), num_parallel_calls=tf.data.AUTOTUNE)
    dataset = dataset.ignore_errors(log_warning=True)
    return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)


# data.cache: auto keeps the training data in memory when it takes at most this share
# of the available memory (the model, its optimizer state and the input pipeline's
# buffers need the rest); an explicit `true` is refused above CACHE_REFUSE_SHARE.
CACHE_AUTO_SHARE = 0.25
CACHE_REFUSE_SHARE = 0.8


def available_memory():
    """Bytes this process can still allocate: Linux's MemAvailable, capped by a cgroup limit; None if unknown."""
    figures = []
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    figures.append(int(line.split()[1]) * 1024)
    except (OSError, ValueError):
        pass
    try:
        limit = pathlib.Path("/sys/fs/cgroup/memory.max").read_text().strip()
        used = int(pathlib.Path("/sys/fs/cgroup/memory.current").read_text())
        if limit != "max":
            figures.append(int(limit) - used)
    except (OSError, ValueError):
        pass
    return min(figures) if figures else None


def cached_bytes(data_config, source):
    """What the training cache would hold, in bytes (None when the source does not tell its size)."""
    augment = data_config.augment
    if augment.crop == "center" and not augment.flip and augment.pca_noise == 0:
        # Nothing random: the cache holds model-ready float32 images (`train_pipeline`).
        return source.train_size * data_config.image_size**2 * 3 * 4
    return source.train_bytes


def _gb(count):
    return f"{count / 1e9:.1f} GB"


def cache_decision(data_config, source, available=None):
    """Whether the training pipeline caches its data in memory, and a line to print about it.

    Args:
        data_config: `DataConfig`; `cache` is "auto", true or false.
        source: the `Source` (its `train_bytes`).
        available: bytes of free memory (None: `available_memory()`).

    Returns:
        (cache, note): note is None, or one line saying that auto streams.

    Raises:
        ConfigError: data.cache is true and the data takes more than
            CACHE_REFUSE_SHARE of the available memory.
    """
    if data_config.cache is False:
        return False, None
    needed = cached_bytes(data_config, source)
    available = available_memory() if available is None else available
    if data_config.cache is True:
        if needed is not None and available is not None and needed > CACHE_REFUSE_SHARE * available:
            raise ConfigError(
                f"data.cache: true, but the training data takes {_gb(needed)} in memory and "
                f"{_gb(available)} is available: set data.cache to auto or false (each epoch then reads the data again)"
            )
        return True, None
    if needed is None or available is None:
        return False, "data.cache: auto: the size of the training data is unknown, so it is not cached in memory"
    if needed <= CACHE_AUTO_SHARE * available:
        return True, None
    return False, (
        f"data.cache: auto: not caching the training data in memory ({_gb(needed)}, more than a quarter of the "
        f"{_gb(available)} available); each epoch reads it again"
    )


def build_datasets(data_config, batch_size, seed=0, shard=None):
    """The batched training and validation pipelines for a `DataConfig`.

    Args:
        data_config: `pipeline.config.DataConfig`.
        batch_size: global batch size.
        seed: seed of the shuffle order and the augmentation.
        shard: (workers, index) under multi-worker training: a folder source
            gives this worker its share of the training files (`folder_source`).

    Returns:
        `Datasets` with float32 images in [0, 255] and int32 labels.
    """
    source = load_source(data_config, seed, shard)
    cache, note = cache_decision(data_config, source)
    if note:
        print(note)
    skipped = tf.Variable(0, dtype=tf.int64, trainable=False, name="skipped_images")
    train, validation = source.train, source.validation
    if source.encoded:
        cap = data_config.max_pixels
        train = skip_undecodable(train, skipped, max_pixels=cap)
        validation = skip_undecodable(validation, skipped, max_pixels=cap)
    if source.sharded:
        # Every worker must run the same number of steps: an epoch is exactly
        # its share of images, topped up from the next pass over its files
        # where undecodable ones were dropped.
        train = train.repeat().take(source.train_size // shard[0])
    return Datasets(
        train=train_pipeline(
            train, data_config, batch_size, seed, size=source.train_size, shuffled=source.shuffled, cache=cache,
            example_bytes=source.train_bytes / source.train_size if source.train_bytes and source.train_size else None,
        ),
        validation=eval_pipeline(validation, data_config, batch_size),
        class_names=source.class_names,
        train_size=source.train_size,
        validation_size=source.validation_size,
        skipped=skipped,
        train_sharded=source.sharded,
        split_by_files=data_config.source_kind in ("records", "tfds"),
    )
