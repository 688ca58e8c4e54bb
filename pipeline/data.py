"""Data sources -> batched tf.data pipelines.

A source yields unbatched examples for a training and a validation split,
with the class names: in-memory sources `(image, label)` with image
[H, W, 3] uint8 RGB of any size; file sources `(encoded bytes, label, name)`,
decoded later by the transforms, only the crop window of a JPEG. `build_datasets` turns a source into the batched training pipeline
(shuffle, per-image augmentation with stateless seeds, batch, prefetch) and
the evaluation pipeline (resize, centre or ten crops, batch).

Sources, chosen by `data.source`:
    digits     scikit-learn's bundled handwritten digits (1,797 8x8 images, 10
               classes), offline; split 80/20 with a fixed seed.
    synthetic  random images whose colour depends on the class: learnable,
               any class count, no I/O (tests, benchmarks).
    folder:P   image folders: P/<train_split>/<class>/* and P/<validation_split>/<class>/*
               (or P/val/<class>/*), or P/<class>/* with validation_fraction held out.
               Class indices follow the sorted class folder names, so ImageNet synset
               folders get TFDS imagenet2012's indices.
    tfds:NAME  a TensorFlow Datasets image-classification dataset (imagenet2012 from
               the two ILSVRC tars in data.manual_dir, imagenette, ...).
    records:D  TFRecords written once by `python -m pipeline.prepare` (JPEGs at
               shorter side 256, as the paper stored ImageNet).

Undecodable files (empty, not an image, a JPEG cut short) are skipped, each
with a warning naming it, and counted in `Datasets.skipped`.
"""

import contextlib
import dataclasses
import os
import pathlib
import sys
from typing import Optional

import numpy as np
import tensorflow as tf

from pipeline.augment import EvalTransform, TrainTransform
from pipeline.config import ConfigError
from pipeline.decode import is_decodable, whole_decode_pixels

# Files a folder source reads; the content decides the format, not the name.
IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".gif", ".bmp"}


class DataError(ConfigError):
    """The configured data cannot be found or read; the message says what to do."""

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
    encoded: bool = False  # elements are (bytes, label, name) rather than (image, label)
    shuffled: bool = False  # train comes in a new full random order every epoch already
    sharded: bool = False  # train holds this worker's share only (multi-worker, see folder_source)
    # Bytes the training split takes as its elements are stored (encoded files, or uint8 arrays);
    # None when unknown. Decides data.cache: auto.
    train_bytes: Optional[int] = None

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
    skipped: tf.Variable = None  # undecodable files met so far (int64 counter)
    train_sharded: bool = False  # train holds this worker's share only: tf.data must not shard it again

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
        train_bytes=int(images[train_idx].nbytes),
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
        train_bytes=num_train * size * size * 3,
    )


def _list_class_folders(root):
    classes = sorted(e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith("."))
    if not classes:
        raise DataError(f"{root} has no class sub-folders; expected {root}/<class>/<image files>")
    return classes


_listings = None  # {(root, classes): (paths, labels)} inside `shared_listings()`


@contextlib.contextmanager
def shared_listings():
    """Inside the block, each image folder is listed once.

    A training run opens its source up to three times at start-up (the
    trainer's pipelines, the TensorBoard picture of the first batch, ten-crop
    validation); on ImageNet each listing walks 1.28 M files. Inside this
    block the later ones reuse the first listing. The lists are dropped when
    the block ends, so a folder changed afterwards is listed anew.
    """
    global _listings
    outer = _listings
    _listings = {} if outer is None else outer
    try:
        yield
    finally:
        _listings = outer


def _list_images(root, classes):
    """(paths, labels) of the image files under root/<class>/, in a fixed order."""
    key = (str(root), tuple(classes))
    if _listings is not None and key in _listings:
        paths, labels = _listings[key]
        return list(paths), labels.copy()
    paths, labels = _walk_images(root, classes)
    if _listings is not None:
        _listings[key] = (paths, labels)
    return list(paths), labels.copy()


def _walk_images(root, classes):
    from pipeline.progress import Progress

    paths, labels = [], []
    progress = Progress(f"listing {root}", unit="files")  # 1.28 M ImageNet files take a while
    for label, name in enumerate(classes):
        folder = pathlib.Path(root) / name
        if not folder.is_dir():
            continue
        for dirpath, dirnames, filenames in os.walk(folder):
            dirnames.sort()
            before = len(paths)
            for filename in sorted(filenames):
                if pathlib.Path(filename).suffix.lower() in IMAGE_EXTENSIONS and not filename.startswith("."):
                    paths.append(os.path.join(dirpath, filename))
                    labels.append(label)
            progress.update(len(paths) - before)
    progress.done()
    return paths, np.array(labels, np.int32)


def _files_dataset(paths, labels, shuffle_seed=None):
    """Reads files as (bytes, label, path); with a seed, in a new random order every epoch."""

    def read(path, label):
        return tf.io.read_file(path), label, path

    dataset = tf.data.Dataset.from_tensor_slices((paths, labels))
    if shuffle_seed is not None:
        # Shuffling names, not images: the whole list, at no memory cost.
        dataset = dataset.shuffle(len(paths), seed=shuffle_seed, reshuffle_each_iteration=True)
    return dataset.map(read, num_parallel_calls=tf.data.AUTOTUNE)


def folder_source(data_config, seed=0, shard=None):
    """Images in class folders (see the module docstring for the layouts).

    Args:
        data_config: `DataConfig` with source folder:PATH.
        seed: shuffle seed of the training files.
        shard: (workers, index) for multi-worker training: this worker reads
            every workers-th training file from the index-th, all workers the
            same number (len // workers; up to workers - 1 files are left out),
            so that each worker decodes only its share and all run the same
            number of steps. `train_size` stays the size of all shares.
    """
    root = pathlib.Path(data_config.source.partition(":")[2]).expanduser()
    if not root.is_dir():
        raise DataError(f"data.source: folder {root} does not exist")
    train_root = root / data_config.train_split
    val_root = None
    if train_root.is_dir():
        for name in (data_config.validation_split, "val"):
            if name and (root / name).is_dir():
                val_root = root / name
                break
    else:
        train_root = root
    classes = _list_class_folders(train_root)
    paths, labels = _list_images(train_root, classes)
    if not paths:
        raise DataError(f"no image files ({', '.join(sorted(IMAGE_EXTENSIONS))}) under {train_root}/<class>/")
    if val_root is not None:
        unknown = sorted(set(_list_class_folders(val_root)) - set(classes))
        if unknown:
            raise DataError(f"{val_root} has classes that {train_root} lacks: {', '.join(unknown[:5])}")
        val_paths, val_labels = _list_images(val_root, classes)
    else:
        train_idx, val_idx = _split(len(paths), data_config.validation_fraction)
        paths, val_paths = [paths[i] for i in train_idx], [paths[i] for i in val_idx]
        labels, val_labels = labels[train_idx], labels[val_idx]
    train_size = len(paths)
    if shard is not None:
        workers, index = shard
        share = len(paths) // workers
        if share == 0:
            raise DataError(f"{train_root} has {len(paths)} training images, fewer than the {workers} workers")
        paths, labels = paths[index::workers][:share], labels[index::workers][:share]
        train_size = share * workers
    return Source(
        train=_files_dataset(paths, labels, shuffle_seed=seed),
        validation=_files_dataset(val_paths, val_labels),
        class_names=classes,
        train_size=train_size,
        validation_size=len(val_paths),
        encoded=True,
        shuffled=True,
        sharded=shard is not None,
        train_bytes=_estimated_bytes(paths),
    )


def _estimated_bytes(paths, sample=2000):
    """The total size of the files, from the sizes of up to `sample` of them spread over the list."""
    if not paths:
        return 0
    step = max(1, len(paths) // sample)
    sizes = []
    for path in paths[::step][:sample]:
        try:
            sizes.append(os.stat(path).st_size)
        except OSError:
            pass  # gone since the listing: the reader reports it
    return int(round(sum(sizes) / max(1, len(sizes)) * len(paths)))


def tfds_source(data_config, seed=0):
    """A TFDS image-classification dataset, its images kept encoded until the crop."""
    import tensorflow_datasets as tfds

    name = data_config.source.partition(":")[2]
    try:
        builder = tfds.builder(name, data_dir=data_config.data_dir)
    except Exception as exc:  # unknown name, bad version: TFDS raises many kinds
        raise DataError(f"data.source: TFDS has no dataset {name!r} ({exc})") from None
    if not builder.is_prepared():
        if not (data_config.download or data_config.manual_dir):
            hint = (
                " For imagenet2012, put ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar in a folder, "
                "set data.manual_dir to it and data.download to true (no internet needed)."
                if name.startswith("imagenet2012")
                else " Set data.download: true to download and prepare it (needs internet)."
            )
            raise DataError(f"TFDS dataset {name!r} is not prepared in {builder.data_dir}.{hint}")
        config = tfds.download.DownloadConfig(manual_dir=data_config.manual_dir)
        try:
            builder.download_and_prepare(download_config=config)
        except Exception as exc:
            raise DataError(
                f"could not prepare TFDS dataset {name!r}: {exc}. A download needs internet; "
                "manual archives go in data.manual_dir."
            ) from None
    info = builder.info
    splits = info.splits
    train_split, val_split = data_config.train_split, data_config.validation_split
    if train_split not in splits:
        raise DataError(f"data.train_split: {name} has no split {train_split!r} (it has {', '.join(splits)})")
    if not val_split or val_split not in splits:
        percent = max(1, int(round(100 * data_config.validation_fraction)))
        train_split, val_split = f"{train_split}[{percent}%:]", f"{train_split}[:{percent}%]"
    decoders = {"image": tfds.decode.SkipDecoding()}
    has_names = "file_name" in info.features

    def as_triples(split, shuffle):
        read_config = tfds.ReadConfig(shuffle_seed=seed)
        dataset = builder.as_dataset(split=split, decoders=decoders, shuffle_files=shuffle, read_config=read_config)
        return dataset.map(
            lambda ex: (ex["image"], tf.cast(ex["label"], tf.int32), ex["file_name"] if has_names else split),
            num_parallel_calls=tf.data.AUTOTUNE,
        )

    train_size = splits[train_split].num_examples
    whole = splits[data_config.train_split]
    return Source(
        train=as_triples(train_split, True),
        validation=as_triples(val_split, False),
        class_names=list(info.features["label"].names),
        train_size=train_size,
        validation_size=splits[val_split].num_examples,
        encoded=True,
        train_bytes=int(whole.num_bytes * train_size / max(1, whole.num_examples)) if whole.num_bytes else None,
    )


def records_source(data_config, seed=0):
    """TFRecords written by `python -m pipeline.prepare` (JPEGs at shorter side 256, or raw squares).

    JPEG records give (bytes, label, name) triples like the other file
    sources; raw records (prepared.json's "format": "raw") give decoded
    (uint8 image, label) pairs, which no decoder needs to see.
    """
    import json

    root = pathlib.Path(data_config.source.partition(":")[2]).expanduser()
    summary_path = root / "prepared.json"
    if not summary_path.is_file():
        raise DataError(f"{root} holds no prepared dataset (prepared.json); write one with python -m pipeline.prepare")
    summary = json.loads(summary_path.read_text())
    features = {
        "image": tf.io.FixedLenFeature([], tf.string),
        "label": tf.io.FixedLenFeature([], tf.int64),
        "name": tf.io.FixedLenFeature([], tf.string),
    }

    def split(name, shuffle):
        files = sorted(str(p) for p in root.glob(f"{name}-*.tfrecord"))
        dataset = tf.data.Dataset.from_tensor_slices(files)
        if shuffle:
            dataset = dataset.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
        dataset = dataset.interleave(
            tf.data.TFRecordDataset,
            cycle_length=min(len(files), 16),
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=not shuffle or data_config.deterministic,
        )

        def parse(record):
            ex = tf.io.parse_single_example(record, features)
            return ex["image"], tf.cast(ex["label"], tf.int32), ex["name"]

        def parse_raw(record):
            ex = tf.io.parse_single_example(record, features)
            image = tf.reshape(tf.io.decode_raw(ex["image"], tf.uint8), [size, size, 3])
            return image, tf.cast(ex["label"], tf.int32)

        return dataset.map(parse_raw if raw else parse, num_parallel_calls=tf.data.AUTOTUNE)

    raw = summary.get("format", "jpeg") == "raw"
    size = int(summary["size"])
    return Source(
        train=split("train", True),
        validation=split("validation", False),
        class_names=(root / "labels.txt").read_text().splitlines(),
        train_size=summary["splits"]["train"]["images"],
        validation_size=summary["splits"]["validation"]["images"],
        encoded=not raw,
        train_bytes=sum(p.stat().st_size for p in root.glob("train-*.tfrecord")),
    )


def load_source(data_config, seed=0, shard=None):
    """The `Source` named by `data_config.source`.

    `shard` (workers, index) splits a folder source's training files between
    multi-worker workers (see `folder_source`); other sources ignore it
    (records: and tfds: are split by file by tf.data, in memory ones by element).

    Raises:
        DataError: the data is missing or not in a readable layout.
    """
    kind, _, _ = data_config.source.partition(":")
    if kind == "digits":
        return digits_source(data_config)
    if kind == "synthetic":
        return synthetic_source(data_config, seed)
    if kind == "folder":
        return folder_source(data_config, seed, shard)
    if kind == "records":
        return records_source(data_config, seed)
    return tfds_source(data_config, seed)


def skip_undecodable(dataset, counter=None, keep_name=False, max_pixels=None):
    """(bytes, label, name) -> (bytes, label), dropping files that cannot be decoded.

    With a `counter`, each dropped file is named in a warning on stderr and
    counted in it. Without one the files are dropped silently: for a second
    pass over data whose bad files another pipeline already reports. With
    keep_name the triples are kept whole. With `max_pixels` (data.max_pixels),
    a PNG, GIF or BMP larger than that (decoded whole, it could take the
    process's memory) is dropped the same way; its size comes from its header.
    """

    def check(data, label, name):
        decodable = is_decodable(data)
        pixels = whole_decode_pixels(data) if max_pixels else tf.constant(0, tf.int64)
        small = pixels <= (max_pixels or 0)
        ok = tf.logical_and(decodable, small)
        if counter is not None:

            def too_large():
                tf.print("warning: skipping image larger than data.max_pixels", name, "-", pixels,
                         "pixels, more than", max_pixels or 0, output_stream=sys.stderr)
                return ok

            def undecodable():
                tf.print("warning: skipping undecodable image", name, output_stream=sys.stderr)
                return ok

            def skip():
                counter.assign_add(1)
                return tf.cond(decodable, too_large, undecodable)

            ok = tf.cond(ok, lambda: ok, skip)
        return data, label, name, ok

    # The check (the file's header and, for a JPEG, its end) runs in a parallel
    # map, in order: tf.data's filter is sequential, so only the test of its
    # result runs there.
    dataset = dataset.map(check, num_parallel_calls=tf.data.AUTOTUNE)
    dataset = dataset.filter(lambda data, label, name, ok: ok)
    if keep_name:
        return dataset.map(lambda data, label, name, ok: (data, label, name))
    return dataset.map(lambda data, label, name, ok: (data, label))


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
    )
