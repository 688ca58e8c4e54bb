"""Data sources -> batched tf.data pipelines.

A source yields unbatched `(image, label)` pairs, image [H, W, 3] uint8 RGB of
any size, label int32, for a training and a validation split, with the class
names. `build_datasets` turns a source into the batched training pipeline
(shuffle, per-image augmentation with stateless seeds, batch, prefetch) and
the evaluation pipeline (resize, centre or ten crops, batch).

Sources, chosen by `data.source`:
    digits     scikit-learn's bundled handwritten digits (1,797 8x8 images, 10
               classes), offline; split 80/20 with a fixed seed.
    synthetic  random images whose colour depends on the class: learnable,
               any class count, no I/O (tests, benchmarks).
"""

import dataclasses

import numpy as np
import tensorflow as tf

from pipeline.augment import EvalTransform, TrainTransform

# The validation split of in-memory sources never depends on the run's seed, so
# runs with different seeds are measured on the same images.
SPLIT_SEED = 20120101


@dataclasses.dataclass(frozen=True)
class Source:
    """Unbatched splits of one dataset, plus what the model and export need."""

    train: tf.data.Dataset
    validation: tf.data.Dataset
    class_names: list
    train_size: int
    validation_size: int

    @property
    def num_classes(self):
        return len(self.class_names)


@dataclasses.dataclass(frozen=True)
class Datasets:
    """Batched pipelines ready for `model.fit`."""

    train: tf.data.Dataset
    validation: tf.data.Dataset
    class_names: list
    train_size: int
    validation_size: int

    @property
    def num_classes(self):
        return len(self.class_names)


def _split(num_examples, fraction):
    """A fixed permutation split into (train indices, validation indices)."""
    order = np.random.default_rng(SPLIT_SEED).permutation(num_examples)
    num_val = max(1, int(round(num_examples * fraction)))
    return np.sort(order[num_val:]), np.sort(order[:num_val])


def digits_source(data_config):
    """scikit-learn's digits as 8x8 RGB uint8 images (grey replicated), labels 0-9."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    # Pixel values are 0..16 ink counts; stretch them to 0..255 grey.
    grey = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)
    images = np.repeat(grey[..., None], 3, axis=-1)
    labels = digits.target.astype(np.int32)
    train_idx, val_idx = _split(len(labels), data_config.validation_fraction)
    return Source(
        train=tf.data.Dataset.from_tensor_slices((images[train_idx], labels[train_idx])),
        validation=tf.data.Dataset.from_tensor_slices((images[val_idx], labels[val_idx])),
        class_names=[str(d) for d in range(10)],
        train_size=len(train_idx),
        validation_size=len(val_idx),
    )


def synthetic_source(data_config, seed=0):
    """Random `resize` x `resize` images whose mean colour encodes the class.

    Image i of class c is uniform noise in [0, 128) plus a per-class RGB offset
    in [0, 128), so a network can learn the classes. Images are made on the fly
    from (seed, index): nothing is held in memory.
    """
    size = data_config.resize
    num_classes = data_config.num_classes
    num_train = data_config.num_examples
    num_val = max(1, int(round(num_train * data_config.validation_fraction)))
    colours = tf.constant(np.random.default_rng(SPLIT_SEED).uniform(0, 128, (num_classes, 3)), tf.float32)

    def make(split_salt, count):
        def example(index):
            key = tf.stack([tf.constant(seed, tf.int64), index * 2 + split_salt])
            label = tf.cast(index % num_classes, tf.int32)
            noise = tf.random.stateless_uniform([size, size, 3], seed=key, maxval=128.0)
            image = tf.cast(noise + tf.gather(colours, label), tf.uint8)
            return image, label

        return tf.data.Dataset.range(count).map(example)

    return Source(
        train=make(0, num_train),
        validation=make(1, num_val),
        class_names=[f"class_{c}" for c in range(num_classes)],
        train_size=num_train,
        validation_size=num_val,
    )


def load_source(data_config, seed=0):
    """The `Source` named by `data_config.source`."""
    kind, _, _ = data_config.source.partition(":")
    if kind == "digits":
        return digits_source(data_config)
    if kind == "synthetic":
        return synthetic_source(data_config, seed)
    raise NotImplementedError(f"data.source {data_config.source!r} is not available in this version")


def train_pipeline(dataset, data_config, batch_size, seed, size=None, deterministic=False):
    """Unbatched (image, label) -> shuffled, augmented, batched, prefetched.

    Each image is paired with its own [2] seed from `Dataset.random`, drawn
    anew every epoch, before the parallel map: the augmentation of an image
    does not depend on thread scheduling.
    """
    augment = data_config.augment
    transform = TrainTransform(
        data_config.image_size,
        resize=data_config.resize,
        crop=augment.crop,
        flip=augment.flip,
        pca_noise=augment.pca_noise,
    )
    shuffle_buffer = min(size or 10_000, 10_000)
    if augment.crop == "center" and not augment.flip and augment.pca_noise == 0:
        # Nothing random: transform once, then cache the model-ready images.
        dataset = dataset.map(lambda image, label: (transform(image, tf.zeros([2], tf.int64)), label),
                              num_parallel_calls=tf.data.AUTOTUNE)
        if data_config.cache:
            dataset = dataset.cache()
        dataset = dataset.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
        return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)
    if data_config.cache:
        dataset = dataset.cache()
    dataset = dataset.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
    dataset = tf.data.Dataset.zip(dataset, seeds)
    dataset = dataset.map(
        lambda example, key: (transform(example[0], key), example[1]),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=deterministic,
    )
    return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def eval_pipeline(dataset, data_config, batch_size, crops=None, cache=None):
    """Unbatched (image, label) -> resized, centre- (or ten-) cropped, batched."""
    transform = EvalTransform(data_config.image_size, resize=data_config.resize, crops=crops or 1)
    if data_config.cache if cache is None else cache:
        dataset = dataset.cache()
    dataset = dataset.map(lambda image, label: (transform(image), label), num_parallel_calls=tf.data.AUTOTUNE)
    return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def build_datasets(data_config, batch_size, seed=0):
    """The batched training and validation pipelines for a `DataConfig`.

    Args:
        data_config: `pipeline.config.DataConfig`.
        batch_size: global batch size.
        seed: seed of the shuffle order and the augmentation.

    Returns:
        `Datasets` with float32 images in [0, 255] and int32 labels.
    """
    source = load_source(data_config, seed)
    return Datasets(
        train=train_pipeline(source.train, data_config, batch_size, seed, size=source.train_size),
        validation=eval_pipeline(source.validation, data_config, batch_size),
        class_names=source.class_names,
        train_size=source.train_size,
        validation_size=source.validation_size,
    )
