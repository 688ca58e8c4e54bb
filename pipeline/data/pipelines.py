"""Batched tf.data pipelines: a source's splits -> training and evaluation batches.

`build_datasets` turns a source (`pipeline.data.sources`) into the batched
training pipeline (bad files skipped, cache, shuffle, augmentation with
stateless per-image seeds, batch, prefetch; uint8 images out) and the
evaluation pipeline (resize, centre or ten crops, batch; float32 out).
Images of one size (raw records, the synthetic source) are batched first and
augmented a batch at a time; prepared JPEG records are batched first too, and
each image's crop window decoded in a loop inside the batch's map; others are
cropped (a JPEG decoded only in its crop window) one at a time in a parallel
map, then flipped and coloured a batch at a time (`pipeline.data.augment`).

Undecodable files (empty, not an image, a JPEG cut short), files gone since
the folder was listed, and PNG, GIF or BMP files above data.max_pixels are
skipped, each named in a warning and counted in `Datasets.skipped` once,
however many epochs meet it.
"""

import dataclasses
import hashlib
import pathlib

import tensorflow as tf

from pipeline.data.augment import BatchAugment, EvalTransform, TrainTransform
from pipeline.data.decode import SkippedFiles, skip_undecodable
from pipeline.data.identity import DataIdentity, identify
from pipeline.data.memory import keep_freed_memory
from pipeline.data.records import RecordsSource
from pipeline.data.sources import load_source
from pipeline.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class Datasets:
    """Batched pipelines ready for training.

    `train_for(epoch, first=0, repeat=False, count=None)` gives epoch
    `epoch`'s training batches from its `first` example on (`train_pipeline`);
    `train` is the first epoch's.
    """

    train_for: object
    validation: tf.data.Dataset
    class_names: list
    train_size: int
    validation_size: int
    skipped: SkippedFiles = None  # files skipped so far (gone, undecodable, too large): .count distinct files
    train_sharded: bool = False  # train holds this worker's share only: tf.data must not shard it again
    # The training data comes from record files tf.data can split between workers (records:, tfds:);
    # otherwise (in memory, a list of image files) workers split the batches.
    split_by_files: bool = False
    # What the data is (`pipeline.data.identity`): to record when a run begins and compare when it resumes.
    identity: DataIdentity = None

    @property
    def num_classes(self):
        return len(self.class_names)

    @property
    def train(self):
        """The first epoch's training batches."""
        return self.train_for(0)


# The shuffle buffer of the training pipeline: up to this many examples, and at most
# about this many bytes (raw 256x256 records are 196 KB each: 10,000 of them would
# take 2 GB).
SHUFFLE_EXAMPLES = 10_000
SHUFFLE_BYTES = 2**30


def _nothing_random(augment):
    return augment.crop == "center" and not augment.flip and augment.pca_noise == 0


def epoch_seed(seed, epoch):
    """The seed of one epoch's order and augmentation: a function of the run's seed and the epoch alone.

    So a run resumed at epoch E draws what an uninterrupted run draws there,
    however many epochs its process has iterated before (`Datasets.train_for`).
    """
    digest = hashlib.blake2b(f"alexnet-epoch/{seed}/{epoch}".encode(), digest_size=7).digest()
    return int.from_bytes(digest, "little")


def _image_seeds(seed, first=0):
    """The stream of [2] int64 seeds, one per image, of an epoch's `seed`, from its `first` image on."""
    return tf.data.Dataset.random(seed=seed).skip(2 * first).batch(2)


def _batch_seeds(seed, batch_size, first=0):
    """[batch_size, 2] int64 seeds a batch: `_image_seeds` in rows (the last batch takes the first rows)."""
    draws = tf.data.Dataset.random(seed=seed).skip(2 * first).batch(2 * batch_size)
    return draws.map(lambda draw: tf.reshape(draw, [batch_size, 2]))


def _batched_views(dataset, make_views, batch_size, seed, deterministic, first=0):
    """Batch first, then one map over (batch, seeds): no per-image tf.data work after the shuffle."""
    dataset = tf.data.Dataset.zip(dataset.batch(batch_size), _batch_seeds(seed, batch_size, first))
    return dataset.map(
        lambda batch, keys: make_views(batch, keys[: tf.shape(tf.nest.flatten(batch)[0])[0]]),
        num_parallel_calls=tf.data.AUTOTUNE, deterministic=deterministic,
    )


def _per_image_views(dataset, transform, batch_size, seed, deterministic, parse, first=0):
    """Crop (and decode) per image in a parallel map, then flip and colour per batch."""
    dataset = tf.data.Dataset.zip(dataset, _image_seeds(seed, first))

    def crop(example, key):
        image, label = parse(example)
        return transform.crop_view(image, key), label, key

    dataset = dataset.map(crop, num_parallel_calls=tf.data.AUTOTUNE, deterministic=deterministic)
    # Backstop for a file that passes the cheap guard yet fails to decode (a
    # corrupt body): TensorFlow logs the error and the image is dropped.
    dataset = dataset.ignore_errors(log_warning=True).batch(batch_size)
    return dataset.map(
        lambda images, labels, keys: (transform.augment(images, keys), labels),
        num_parallel_calls=tf.data.AUTOTUNE, deterministic=deterministic,
    )


def _batched_decodes(dataset, transform, batch_size, seed, deterministic, parse, first=0):
    """Prepared JPEG records: batched first, then each image's window decoded in one map a batch.

    The same views as `_per_image_views` (`transform.crop_view`, then the
    batch's flip and colour), with tf.data's per-image stages (seed, map,
    error check, batch) replaced by one loop inside the map: 1.1-1.25x the
    images/s on this project's benchmark. Every record was decoded once by
    `pipeline.prepare`, so no image is expected to fail; a batch that does
    fail (a damaged shard) is dropped with a warning.
    """
    size = transform.image_size
    signature = (tf.TensorSpec([size, size, 3], tf.uint8), tf.TensorSpec([], tf.int32))

    def views(records, keys):
        def view(record_and_key):
            image, label = parse(record_and_key[0])
            return transform.crop_view(image, record_and_key[1]), label

        images, labels = tf.map_fn(view, (records, keys), fn_output_signature=signature, parallel_iterations=4)
        return transform.augment(images, keys), labels

    return _batched_views(dataset, views, batch_size, seed, deterministic, first).ignore_errors(log_warning=True)


def _first_two(example):
    return example[0], example[1]


def train_pipeline(examples, data_config, batch_size, seed, size=None, shuffled=False, cache=False,
                   example_bytes=None, records=None):
    """Unbatched (image, label) -> each epoch's shuffled, augmented, batched, prefetched uint8 [N, S, S, 3] and labels.

    Returns a function `train_for(epoch, first=0, repeat=False, count=None)`:
    the dataset of epoch `epoch` (a pass over the examples, or with `repeat`
    a stream of passes, `count` examples long) from its `first` example on. Its order and
    every image's augmentation are functions of `seed` and the epoch alone
    (`epoch_seed`), so a run resumed at step S of epoch E (first = S x
    batch) reads what an uninterrupted run reads from there on. The examples
    before `first` are skipped before anything is decoded: by the source,
    before reading, when it orders all of its examples itself (`shuffled`),
    else right after the shuffle.

    Each image has its own [2] seed from the epoch's `Dataset.random`,
    paired with it before any parallel work, so its view does not depend on
    thread scheduling (`pipeline.data.augment`). Images of equal size (raw
    records, the synthetic source) are batched first and cropped, flipped
    and coloured a batch at a time; others are cropped per image in a
    parallel map, which, unless `data.deterministic`, hands them on as they
    are finished, so the batches of two runs with one seed hold the same
    augmented images in a slightly different order.

    Args:
        examples: `(seed, skip=0, repeat=False) -> ` the unbatched (image or
            encoded bytes, label) examples of one pass in the order of `seed`
            (with `records`, their serialized `train_records`); with
            `shuffled`, all of them shuffled, the first `skip` left out, and
            with `repeat` pass after pass. The cache calls it once, with the
            run's seed.
        data_config: `DataConfig`.
        batch_size: global batch size.
        seed: the run's seed.
        size: examples per epoch (sizes the shuffle buffer).
        shuffled: the source shuffles all of its examples itself (file
            names), so no shuffle buffer of images is needed unless the
            cache would freeze the order.
        cache: keep the examples in memory after the first epoch (see
            `cache_decision` for data.cache).
        example_bytes: the mean size of one example as stored, to bound the
            shuffle buffer's memory (None: unknown).
        records: the `pipeline.data.records.RecordsSource` the records come
            from: parsed inside the decoding map, or, for raw records of the
            central data.resize square, cut a batch at a time.
    """
    augment = data_config.augment
    transform = TrainTransform(
        data_config.image_size,
        resize=data_config.resize,
        crop=augment.crop,
        flip=augment.flip,
        pca_noise=augment.pca_noise,
        min_area=augment.min_area,
        jpeg_side=records.stored_side if records is not None and records.encoded else None,
    )
    parse = records.parse_record if records is not None else _first_two
    buffer = min(size or SHUFFLE_EXAMPLES, SHUFFLE_EXAMPLES)
    if example_bytes:
        buffer = max(1, min(buffer, SHUFFLE_BYTES // max(1, int(example_bytes))))

    def shuffled_from(dataset, epoch_seed_, first, repeat):
        # The examples of an epoch in its order from `first` on; a cache (or a source that keeps an order of its
        # own) is shuffled here. The cached dataset is made once, so every epoch reads the same memory.
        dataset = dataset.shuffle(buffer, seed=epoch_seed_, reshuffle_each_iteration=True)
        return (dataset.repeat() if repeat else dataset).skip(first)

    def counted(dataset, count):
        # An epoch of a repeated stream ends with its last example: its iterator is done when the loop lets go
        # of it (deleting one that still works ahead stalled the next epoch for seconds).
        return dataset if count is None else dataset.take(count)

    if _nothing_random(augment):
        # Nothing random: transform once, then cache the model-ready images.
        # In order: nothing else would vary between two runs with one seed.
        def view(*example):
            image, label = parse(example[0] if records is not None else example)
            return transform(image, tf.zeros([2], tf.int64)), label

        ready = examples(seed).map(view, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        ready = ready.ignore_errors(log_warning=True)  # see _per_image_views
        ready = ready.cache() if cache else ready

        def ready_for(epoch, first=0, repeat=False, count=None):
            dataset = counted(shuffled_from(ready, epoch_seed(seed, epoch), first, repeat), count)
            return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)

        return ready_for
    deterministic = data_config.deterministic
    batch_augment = BatchAugment(data_config.image_size, crop=augment.crop, flip=augment.flip,
                                 pca_noise=augment.pca_noise)
    layout = _raw_windows(records, data_config)
    cached = examples(seed).cache() if cache else None
    probe = cached if cached is not None else examples(seed)

    def train_for(epoch, first=0, repeat=False, count=None):
        this = epoch_seed(seed, epoch)
        if cached is not None or not shuffled:
            dataset = shuffled_from(cached if cached is not None else examples(this), this, first, repeat)
        else:
            dataset = examples(this, first, repeat)
        dataset = counted(dataset, count)
        if layout is not None:
            def views(serialized, keys):
                offsets = batch_augment.offsets(keys, layout.side)
                windows, labels = layout.windows(serialized, offsets, data_config.image_size)
                return batch_augment.from_windows(windows, keys, layout.row_bytes), labels

            dataset = _batched_views(dataset, views, batch_size, this, deterministic, first)
        elif records is None and _equal_size(probe, data_config):
            dataset = _batched_views(dataset, lambda batch, keys: (batch_augment(batch[0], keys), batch[1]),
                                     batch_size, this, deterministic, first)
        elif records is not None and records.encoded:
            dataset = _batched_decodes(dataset, transform, batch_size, this, deterministic, parse, first)
        else:
            dataset = _per_image_views(dataset, transform, batch_size, this, deterministic, parse, first)
        return dataset.prefetch(tf.data.AUTOTUNE)

    return train_for


def _equal_size(dataset, data_config):
    """Decoded images all data.resize square (the synthetic source): cropped a batch at a time."""
    spec = dataset.element_spec[0]
    return (
        data_config.augment.crop in ("random", "center") and spec.dtype == tf.uint8
        and spec.shape.as_list() == [data_config.resize, data_config.resize, 3]
        and data_config.image_size <= data_config.resize
    )  # fmt: skip


def _raw_windows(records, data_config):
    """The raw records' `RawLayout` when the training views can be cut straight out of them, else None.

    That needs a crop of the central data.resize square ("random" or
    "center"), which raw records hold when they were prepared at that size.
    """
    if records is None or records.layout is None or records.layout.side != data_config.resize:
        return None
    if data_config.augment.crop not in ("random", "center") or data_config.image_size > data_config.resize:
        return None
    return records.layout


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
    if _nothing_random(augment):
        # Nothing random: the cache holds model-ready uint8 images (`train_pipeline`).
        return source.train_size * data_config.image_size**2 * 3
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

    Sets the process's malloc to keep freed memory for the next batch
    (`pipeline.data.memory.keep_freed_memory`), once.

    Args:
        data_config: `pipeline.config.DataConfig`.
        batch_size: global batch size.
        seed: seed of the shuffle order and the augmentation.
        shard: (workers, index) under multi-worker training: a folder source
            gives this worker its share of the training files (`folder_source`).

    Returns:
        `Datasets`: training batches of uint8 images (the model normalises
        them), validation batches of float32 images in [0, 255], int32 labels.
    """
    keep_freed_memory()
    source = load_source(data_config, seed, shard)
    cache, note = cache_decision(data_config, source)
    if note:
        print(note)
    skipped = SkippedFiles()  # one for every pass over the training and validation files
    validation = source.validation
    records = source if isinstance(source, RecordsSource) else None
    if source.encoded:
        validation = skip_undecodable(validation, skipped, max_pixels=data_config.max_pixels)

    def examples(epoch_seed_, skip=0, repeat=False):
        """The training examples of one pass in the order of `epoch_seed_` (see `train_pipeline`)."""
        if records is not None:
            # Prepared records were decoded once by prepare: no bad-file check, parsed where they are decoded.
            return records.train_records_for(epoch_seed_)
        if source.train_epoch is None:
            return source.train  # in memory: one order, which the pipeline shuffles
        train = source.train_epoch(epoch_seed_, skip, repeat)
        if source.encoded:
            train = skip_undecodable(train, skipped, max_pixels=data_config.max_pixels)
        if source.sharded:
            # Every worker must run the same number of steps: an epoch is exactly
            # its share of images, topped up from the next pass over its files
            # where undecodable ones were dropped.
            share = source.train_size // shard[0]
            train = train.repeat() if repeat else train.repeat().take(share - skip)
        return train

    return Datasets(
        train_for=train_pipeline(
            examples, data_config, batch_size, seed, size=source.train_size, shuffled=source.shuffled, cache=cache,
            example_bytes=source.train_bytes / source.train_size if source.train_bytes and source.train_size else None,
            records=records,
        ),
        validation=eval_pipeline(validation, data_config, batch_size),
        class_names=source.class_names,
        train_size=source.train_size,
        validation_size=source.validation_size,
        skipped=skipped,
        train_sharded=source.sharded,
        split_by_files=data_config.source_kind in ("records", "tfds"),
        identity=identify(source),
    )
