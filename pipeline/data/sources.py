"""Data sources: where images come from, as unbatched splits with their class names.

A source yields unbatched examples for a training and a validation split:
in-memory sources `(image, label)` with image [H, W, 3] uint8 RGB of any size;
file sources `(encoded bytes, label, name)`, decoded later by the transforms,
only the crop window of a JPEG (`pipeline.data.pipelines` batches them).

Sources, chosen by `data.source` (`DataConfig.source_kind`):
    digits     scikit-learn's bundled handwritten digits (1,797 8x8 images, 10
               classes), offline; split 80/20 with a fixed seed.
    synthetic  random images whose colour depends on the class: learnable,
               any class count, no I/O (tests, benchmarks).
    folder:P   image folders: P/<train_split>/<class>/* and P/<validation_split>/<class>/*
               (or P/val/<class>/*), or P/<class>/* with validation_fraction held out
               (`held_out`: each file by its own name, so adding or removing files moves
               no other file between the splits). Class indices follow the sorted class
               folder names, so ImageNet synset folders get TFDS imagenet2012's indices.
               A file gone when it is read (deleted or moved since the listing) reads
               as empty bytes, without an error: the pipelines skip it by name.
    tfds:NAME  a TensorFlow Datasets image-classification dataset (imagenet2012 from
               the two ILSVRC tars in data.manual_dir, imagenette, ...).
    records:D  TFRecords written once by `python -m pipeline.prepare`
               (`pipeline.data.records`).
"""

import dataclasses
import json
import os
import pathlib

import numpy as np
import tensorflow as tf

from pipeline.data.identity import digest
from pipeline.data.listing import (
    IMAGE_EXTENSIONS,
    estimated_bytes,
    list_class_folders,
    list_images,
    relative_name_hashes,
)
from pipeline.data.records import MANIFEST, records_source
from pipeline.data.splits import DataError, Source, SplitContents

# The validation split never depends on the run's seed, so runs with different
# seeds are measured on the same images.
SPLIT_SEED = 20120101
SPLIT_SALT = SPLIT_SEED.to_bytes(8, "little")  # the key of the hashes that draw a folder's validation files


def _split(num_examples, fraction):
    """A fixed permutation split of in-memory examples into (train indices, validation indices)."""
    order = np.random.default_rng(SPLIT_SEED).permutation(num_examples)
    num_val = max(1, int(round(num_examples * fraction)))
    return np.sort(order[num_val:]), np.sort(order[:num_val])


def held_out(hashes, fraction):
    """Which files of a single class folder tree the validation split holds (a boolean mask).

    Each file is drawn by its own name: a 64-bit hash of (SPLIT_SEED, its name
    relative to the folder) becomes a number u uniform in [0, 1), and the file
    is held out for validation when u < fraction. So adding or removing files
    never moves another file between the splits, and the split is the same
    whatever the run's seed.

    Tiny folders: when no file is drawn, the one with the smallest u is held
    out (a split needs an image); when every file is drawn, the one with the
    largest u is not (nor is training without one). A single file is held
    out, leaving none to train on.

    Args:
        hashes: `name_hashes(names, salt=SPLIT_SALT)` of the files' names
            relative to the folder (<class>/<file>).
        fraction: data.validation_fraction, in (0, 1).
    """
    draws = (hashes >> np.uint64(11)).astype(np.float64) * 2.0**-53  # the top 53 bits: exact in a float64
    held = draws < fraction
    if len(held) and not held.any():
        held[np.argmin(draws)] = True
    elif len(held) > 1 and held.all():
        held[np.argmax(draws)] = False
    return held


def digits_source(data_config):
    """scikit-learn's digits as 8x8 RGB uint8 images (grey replicated), labels 0-9."""
    from sklearn.datasets import load_digits  # scikit-learn loads in a second: only for this source

    digits = load_digits()
    # Pixel values are 0..16 ink counts; stretch them to 0..255 grey.
    grey = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)
    images = np.repeat(grey[..., None], 3, axis=-1)
    labels = digits.target.astype(np.int32)
    train_idx, val_idx = _split(len(labels), data_config.validation_fraction)

    def contents(idx):
        return SplitContents(len(idx), digest=digest(images[idx].tobytes() + labels[idx].tobytes()))

    return Source(
        train=tf.data.Dataset.from_tensor_slices((images[train_idx], labels[train_idx])),
        validation=tf.data.Dataset.from_tensor_slices((images[val_idx], labels[val_idx])),
        class_names=[str(d) for d in range(10)],
        train_size=len(train_idx),
        validation_size=len(val_idx),
        train_bytes=int(images[train_idx].nbytes),
        contents={"train": contents(train_idx), "validation": contents(val_idx)},
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

    def contents(split, count):
        # The images are a function of these alone.
        made = {"synthetic": split, "seed": seed, "size": size, "classes": num_classes, "count": count}
        return SplitContents(count, digest=digest(made))

    return Source(
        train=make(0, num_train),
        validation=make(1, num_val),
        class_names=[f"class_{c}" for c in range(num_classes)],
        train_size=num_train,
        validation_size=num_val,
        train_bytes=num_train * size * size * 3,
        contents={"train": contents("train", num_train), "validation": contents("validation", num_val)},
    )


def read_if_there(path):
    """A file's bytes, or empty bytes when there is no file of that name: no error, so no TensorFlow warning.

    A file listed at the start of a run may be gone (deleted, moved) when an
    epoch days later reads it; `pipeline.data.decode.skip_undecodable` names
    and counts it. The check is a stat of the name (`tf.io.matching_files`,
    its glob characters escaped), in TensorFlow: no Python on the hot path. A
    file that is there but cannot be read (no permission) still fails the read.
    """
    pattern = tf.strings.regex_replace(path, r"([*?\[\]\\])", r"\\\1")
    there = tf.size(tf.io.matching_files(pattern)) > 0
    return tf.cond(there, lambda: tf.io.read_file(path), lambda: tf.constant(b""))


def _files_dataset(paths, labels):
    """The files as a function (seed=None, skip=0, repeat=False) -> dataset of (bytes, label, path).

    A file that is gone reads as empty bytes (`read_if_there`). With a seed,
    all of them in a random order (each pass of `repeat` in a new one), the
    first `skip` left out before anything is read; without, in the order of
    `paths`.
    """

    def read(path, label):
        return read_if_there(path), label, path

    # As bytes: a file name need not be UTF-8 (Linux names are bytes; Python hands them on escaped).
    names = np.array([os.fsencode(path) for path in paths], dtype=object)
    # Made once: every epoch's dataset reads the one copy of the names (ImageNet's take 100 MB).
    listed = tf.data.Dataset.from_tensor_slices((names, labels))

    def files(seed=None, skip=0, repeat=False):
        dataset = listed
        if seed is not None:
            # Shuffling names, not images: the whole list, at no memory cost.
            dataset = dataset.shuffle(len(names), seed=seed, reshuffle_each_iteration=True)
        if repeat:
            dataset = dataset.repeat()
        if skip:
            dataset = dataset.skip(skip)
        return dataset.map(read, num_parallel_calls=tf.data.AUTOTUNE)

    return files


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
    root = pathlib.Path(data_config.source_location).expanduser()
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
    classes = list_class_folders(train_root)
    paths, labels = list_images(train_root, classes)
    if not paths:
        raise DataError(f"no image files ({', '.join(sorted(IMAGE_EXTENSIONS))}) under {train_root}/<class>/")
    empty = [name for name, count in zip(classes, np.bincount(labels, minlength=len(classes))) if count == 0]
    if empty:
        raise DataError(
            f"{train_root}: class folder(s) without image files: {', '.join(empty[:5])}"
            f"{f' and {len(empty) - 5} more' if len(empty) > 5 else ''}; a class needs training images: "
            "add images or remove the folder(s)"
        )
    hashes = relative_name_hashes(train_root, classes, paths)
    if val_root is not None:
        unknown = sorted(set(list_class_folders(val_root)) - set(classes))
        if unknown:
            raise DataError(f"{val_root} has classes that {train_root} lacks: {', '.join(unknown[:5])}")
        val_paths, val_labels = list_images(val_root, classes)
        val_hashes = relative_name_hashes(val_root, classes, val_paths)
    else:
        held = held_out(relative_name_hashes(train_root, classes, paths, salt=SPLIT_SALT),
                        data_config.validation_fraction)
        if held.all():
            raise DataError(
                f"{train_root} holds {len(paths)} image file(s): none is left for training once "
                f"data.validation_fraction ({data_config.validation_fraction}) is held out; add images"
            )
        paths, val_paths = [p for p, h in zip(paths, held) if not h], [p for p, h in zip(paths, held) if h]
        labels, val_labels = labels[~held], labels[held]
        hashes, val_hashes = hashes[~held], hashes[held]
    # What the splits hold, before this worker's share is taken: every worker has the same.
    contents = {"train": SplitContents(len(paths), name_hashes=hashes),
                "validation": SplitContents(len(val_paths), name_hashes=val_hashes)}
    train_size = len(paths)
    if shard is not None:
        workers, index = shard
        share = len(paths) // workers
        if share == 0:
            raise DataError(f"{train_root} has {len(paths)} training images, fewer than the {workers} workers")
        paths, labels = paths[index::workers][:share], labels[index::workers][:share]
        train_size = share * workers
    train_files = _files_dataset(paths, labels)
    return Source(
        train=train_files(seed),
        validation=_files_dataset(val_paths, val_labels)(),
        train_epoch=train_files,
        class_names=classes,
        train_size=train_size,
        validation_size=len(val_paths),
        encoded=True,
        shuffled=True,
        sharded=shard is not None,
        train_bytes=estimated_bytes(paths),
        contents=contents,
    )


def tfds_source(data_config, seed=0):
    """A TFDS image-classification dataset, its images kept encoded until the crop."""
    import tensorflow_datasets as tfds  # seconds to import: only for this source

    name = data_config.source_location
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

    def as_triples(split, shuffle, order=seed):
        read_config = tfds.ReadConfig(shuffle_seed=order)
        dataset = builder.as_dataset(split=split, decoders=decoders, shuffle_files=shuffle, read_config=read_config)
        return dataset.map(
            lambda ex: (ex["image"], tf.cast(ex["label"], tf.int32), ex["file_name"] if has_names else split),
            num_parallel_calls=tf.data.AUTOTUNE,
        )

    train_size = splits[train_split].num_examples
    whole = splits[data_config.train_split]

    def contents(split):
        count = splits[split].num_examples
        return SplitContents(count, digest=digest({"tfds": info.full_name, "split": split, "count": count}))

    return Source(
        train=as_triples(train_split, True),
        validation=as_triples(val_split, False),
        # An epoch's order of files (the pipeline shuffles the examples after them).
        train_epoch=lambda order, skip=0, repeat=False: as_triples(train_split, True, order),
        class_names=list(info.features["label"].names),
        train_size=train_size,
        validation_size=splits[val_split].num_examples,
        encoded=True,
        train_bytes=int(whole.num_bytes * train_size / max(1, whole.num_examples)) if whole.num_bytes else None,
        contents={"train": contents(train_split), "validation": contents(val_split)},
    )


def _records_contents(data_config, source):
    """What a prepared dataset's splits hold: a digest of its manifest and of each split's shards (names, sizes)."""
    root = pathlib.Path(data_config.source_location).expanduser()
    manifest = json.loads((root / MANIFEST).read_text())
    contents = {}
    for split, count in (("train", source.train_size), ("validation", source.validation_size)):
        shards = [(p.name, p.stat().st_size) for p in sorted(root.glob(f"{split}-*.tfrecord"))]
        contents[split] = SplitContents(count, digest=digest({"manifest": manifest, "split": split, "shards": shards}))
    return contents


def load_source(data_config, seed=0, shard=None):
    """The `Source` named by `data_config.source`.

    `shard` (workers, index) splits a folder source's training files between
    multi-worker workers (see `folder_source`); other sources ignore it
    (records: and tfds: are split by file by tf.data, in memory ones by element).

    Raises:
        DataError: the data is missing or not in a readable layout.
    """
    kind = data_config.source_kind
    if kind == "digits":
        source = digits_source(data_config)
    elif kind == "synthetic":
        source = synthetic_source(data_config, seed)
    elif kind == "folder":
        source = folder_source(data_config, seed, shard)
    elif kind == "records":
        source = records_source(data_config, seed)
        source = dataclasses.replace(source, contents=_records_contents(data_config, source))
    else:
        source = tfds_source(data_config, seed)
    if source.num_classes < 2:
        raise DataError(
            f"data.source {data_config.source!r} has {source.num_classes} class "
            f"({', '.join(map(str, source.class_names)) or 'none'}): a classifier needs two or more, "
            "and its top-1 error means nothing with one"
        )
    return source
