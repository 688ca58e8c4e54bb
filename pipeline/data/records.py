"""Prepared records: the dataset format `python -m pipeline.prepare` writes and the `records:` source reads.

Layout of a prepared dataset folder:
    train-00000-of-000NN.tfrecord ...   tf.train.Example: image (JPEG or raw bytes), label (int64), name (bytes)
    validation-00000-of-000NN.tfrecord ...
    labels.txt                          class names in index order
    prepared.json                       the manifest: counts per split, size, format, quality (written last)

Three forms of image (`python -m pipeline.benchmark --input` measures them):
    jpeg            JPEGs at shorter side `size`, the whole image (images already
                    smaller keep their size).
    jpeg, square    the paper's central `size` square as a JPEG.
    raw             the central square as raw uint8 pixels, every image exactly
                    size x size (smaller ones upscaled): no decoding in training.
                    A raw record is not a tf.train.Example but the label (int64,
                    little-endian) followed by the pixels (`RawLayout`), so that
                    training cuts each crop window straight out of a batch of
                    records, with no parsing. All of a raw dataset's records
                    are one length, so training reads them as fixed-length
                    frames of the TFRecord files (`RawLayout.framed`).

A dataset is written into a staging folder beside its place and swapped in
whole (`pipeline.storage.files.replace_directory`), under a lock beside it.
"""

import dataclasses
import json
import pathlib
import struct

from pipeline.console.progress import Progress
from pipeline.data.splits import DataError, Source
from pipeline.errors import ConfigError
from pipeline.storage.files import (
    atomic_write_text,
    check_ours,
    recover_directory,
    replace_directory,
    staging_path,
)
from pipeline.storage.locks import lock_file_for, locked

# This module imports TensorFlow only where it runs it: the prepare command checks its arguments first.
FORMATS = ("jpeg", "raw")
MANIFEST = "prepared.json"
LABELS = "labels.txt"
# Everything a prepared dataset holds (glob patterns): --overwrite replaces only such a folder.
DATASET_ENTRIES = ("train-*.tfrecord", "validation-*.tfrecord", LABELS, MANIFEST)
MAX_SHARDS = 100_000
IMAGES_PER_SHARD = 1000
# prepared.json's "raw_record" for raw records laid out as `RawLayout` describes; raw datasets
# written before it hold tf.train.Examples, which are still read.
RAW_RECORD = "int64 label, uint8 pixels"
LABEL_BYTES = 8
# A TFRecord file frames each record: its length (uint64) and the length's masked CRC-32C (uint32) before it,
# the record's masked CRC-32C (uint32) after it.
FRAME_HEAD, FRAME_TAIL = 12, 4
# FixedLengthRecordDataset's read buffer for raw frames (its default is 256 KiB, about one 256x256 frame).
FRAME_READ_BUFFER = 4 << 20


@dataclasses.dataclass(frozen=True)
class RawLayout:
    """Where a raw record keeps its label and pixels: side x side x 3 uint8, row by row.

    Records of this layout (example=False) hold the label as 8 bytes (int64,
    little-endian), then the pixels. Older raw datasets (example=True) hold a
    tf.train.Example whose "image" feature holds the pixels; they are parsed
    a batch at a time first.

    framed=True: each record comes as its whole TFRecord frame, read by a
    `tf.data.FixedLengthRecordDataset` (`frames`): the frame's length field is
    checked against the record's, its CRC-32C checksums are not (the one
    per-byte pass over a record that training would otherwise make besides
    the copies).
    """

    side: int
    example: bool = False
    framed: bool = False

    @property
    def row_bytes(self):
        return self.side * 3

    @property
    def record_bytes(self):
        """A record's length as written: the label, then the pixels."""
        return LABEL_BYTES + self.side * self.row_bytes

    @property
    def frame_bytes(self):
        """A record's length in a TFRecord file, with its frame."""
        return FRAME_HEAD + self.record_bytes + FRAME_TAIL

    def pixels_and_labels(self, records):
        """Serialized records [N] -> (strings holding the pixels [N], where the pixels start, int32 labels [N])."""
        import tensorflow as tf

        if self.example:
            parsed = tf.io.parse_example(records, _features(names=False))
            return parsed["image"], 0, tf.cast(parsed["label"], tf.int32)
        start = 0
        if self.framed:
            lengths = tf.io.decode_raw(tf.strings.substr(records, 0, 8), tf.int64, little_endian=True)
            # Runs in eager code and in tf.data's traced functions alike (an assertion is a stateful op).
            tf.debugging.assert_equal(
                lengths, tf.constant(self.record_bytes, tf.int64),
                message=f"a raw record's frame does not hold {self.record_bytes} bytes: the prepared dataset is "
                        "damaged; prepare it again",
            )  # fmt: skip
            start = FRAME_HEAD
        labels = tf.io.decode_raw(tf.strings.substr(records, start, LABEL_BYTES), tf.int64, little_endian=True)
        return records, start + LABEL_BYTES, tf.cast(tf.reshape(labels, [-1]), tf.int32)

    def windows(self, records, offsets, size):
        """Each record's size x size window at offsets [N, 2] (top, left), and the labels.

        A window's rows are contiguous in the record but for the bytes between
        them, so it is cut as ONE substring per image, (size - 1) full rows and
        the last row's size pixels, with no parsing and no copy of the rest
        (`pipeline.data.augment.batch_view` drops the bytes between rows).

        Returns:
            (uint8 [N, (size - 1) * row_bytes + 3 * size], int32 labels [N]).
        """
        import tensorflow as tf

        pixels, start, labels = self.pixels_and_labels(records)
        position = start + offsets[:, 0] * self.row_bytes + offsets[:, 1] * 3
        length = tf.fill(tf.shape(position), (size - 1) * self.row_bytes + 3 * size)
        return tf.io.decode_raw(tf.strings.substr(pixels, position, length), tf.uint8), labels

    def frames(self, files):
        """This layout with framed=True if these TFRecord files can be read as its frames, else None.

        None when a file's size is not a whole number of frames (records of
        another length, a compressed or a damaged file): such files are read
        by `tf.data.TFRecordDataset`, which checks every record.
        """
        if self.example or not files or any(pathlib.Path(f).stat().st_size % self.frame_bytes for f in files):
            return None
        return dataclasses.replace(self, framed=True)

    def read(self, file):
        """The records of one TFRecord file, as this layout takes them: whole frames when framed."""
        import tensorflow as tf

        if self.framed:
            return tf.data.FixedLengthRecordDataset(file, self.frame_bytes, buffer_size=FRAME_READ_BUFFER)
        return tf.data.TFRecordDataset(file)

    def decode(self, record):
        """One serialized record -> (uint8 image [side, side, 3], int32 label)."""
        import tensorflow as tf

        pixels, start, labels = self.pixels_and_labels(record[None])
        image = tf.io.decode_raw(tf.strings.substr(pixels[0], start, self.side * self.row_bytes), tf.uint8)
        return tf.reshape(image, [self.side, self.side, 3]), labels[0]


@dataclasses.dataclass(frozen=True)
class RecordsSource(Source):
    """A prepared dataset: a `Source`, plus its training records undecoded, for the training pipeline.

    `train` and `validation` give what other sources give (JPEG records:
    (bytes, label, name) triples; raw records: decoded (uint8 image, label)
    pairs). `train_records` are the same training records serialized, in a new
    order of shards every epoch, and `train_records_for(seed)` in the shard
    order of `seed` (an epoch's, `pipeline.data.pipelines.epoch_seed`);
    `parse_record` turns one into (image, label), so the training pipeline
    parses inside its decoding map instead of in a stage of its own. Every
    image in them was decoded once by prepare, so no bad-file check is needed.
    """

    train_records: "tf.data.Dataset" = None  # noqa: F821
    train_records_for: object = None  # seed -> train_records in the shard order of that seed
    parse_record: object = None  # serialized record -> (image or JPEG bytes, int32 label)
    stored_side: int = 0  # the shorter side the images were prepared at (prepared.json's "size")
    layout: "RawLayout" = None  # raw records only


def _features(names=True):
    import tensorflow as tf

    features = {
        "image": tf.io.FixedLenFeature([], tf.string),
        "label": tf.io.FixedLenFeature([], tf.int64),
    }
    if names:
        features["name"] = tf.io.FixedLenFeature([], tf.string)
    return features


def parse_jpeg_record(record):
    """A serialized JPEG record -> (JPEG bytes, int32 label); the name is left unparsed."""
    import tensorflow as tf

    example = tf.io.parse_single_example(record, _features(names=False))
    return example["image"], tf.cast(example["label"], tf.int32)


def _stored(size, quality, image_format="jpeg", square=False):
    """(bytes, label, name) -> (stored bytes, label, name): the image as a record holds it."""
    import tensorflow as tf

    from pipeline.data.augment import center_crop, resize_shorter_side

    def to_uint8(image):
        return tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8)

    def encode(data, label, name):
        image = tf.io.decode_image(data, channels=3, expand_animations=False)
        shape = tf.shape(image)
        shorter = tf.minimum(shape[0], shape[1])
        if image_format == "raw":
            # Every record exactly size x size (smaller images upscaled); written out as its bytes.
            return center_crop(to_uint8(resize_shorter_side(image, size)), size), label, name
        image = tf.cond(shorter > size, lambda: to_uint8(resize_shorter_side(image, size)), lambda: image)
        if square:
            image = center_crop(image, tf.minimum(size, shorter))
        return tf.io.encode_jpeg(image, quality=quality), label, name

    return encode


def _example(image, label, name):
    import tensorflow as tf

    return tf.train.Example(
        features=tf.train.Features(
            feature={
                "image": tf.train.Feature(bytes_list=tf.train.BytesList(value=[image])),
                "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[label])),
                "name": tf.train.Feature(bytes_list=tf.train.BytesList(value=[name])),
            }
        )
    ).SerializeToString()


def write_split(dataset, output, split, count, shards, size, quality, counter, max_pixels=None, image_format="jpeg",
                square=False):
    """Writes one split's (bytes, label, name) triples as sharded TFRecords; returns images written."""
    import tensorflow as tf

    from pipeline.data.decode import skip_undecodable

    shards = shards or max(1, -(-count // IMAGES_PER_SHARD))
    triples = skip_undecodable(dataset, counter, keep_name=True, max_pixels=max_pixels)
    triples = triples.map(_stored(size, quality, image_format, square), num_parallel_calls=tf.data.AUTOTUNE)
    writers = [
        tf.io.TFRecordWriter(str(output / f"{split}-{i:05d}-of-{shards:05d}.tfrecord")) for i in range(shards)
    ]
    written = 0
    progress = Progress(f"{split} split", total=count)
    try:
        for image, label, name in triples.as_numpy_iterator():
            if image_format == "raw":
                record = struct.pack("<q", int(label)) + image.tobytes()
            else:
                record = _example(image, int(label), name)
            writers[written % shards].write(record)
            written += 1
            progress.update()
    finally:
        for writer in writers:
            writer.close()
    progress.done()
    return written


def check_output(output, overwrite):
    """Refuses an --output that is a file, holds a dataset without --overwrite, or holds anything else.

    Raises:
        ConfigError (exit status 2): naming the folder and what is in it.
    """
    if not output.exists():
        return
    if not output.is_dir():
        raise ConfigError(f"--output {output} is a file: choose a folder")
    if not any(output.iterdir()):
        return
    if (output / MANIFEST).is_file() and not overwrite:
        raise ConfigError(f"{output} already holds a prepared dataset: pass --overwrite to replace it")
    check_ours(output, DATASET_ENTRIES, "prepared dataset", config_file=None)
    if not overwrite:
        raise ConfigError(f"{output} holds an unfinished prepared dataset: pass --overwrite to replace it")


def prepare(source, config, output, size=256, quality=90, shards=0, overwrite=False, image_format="jpeg",
            square=False):
    """Writes a source's train and validation splits as a prepared dataset in `output`.

    Args:
        source: the `Source` to write (file sources only).
        config: the validated `Config` (data.source, data.max_pixels).
        output: the dataset folder; replaced atomically at the end.
        size, quality, shards, image_format, square: see `python -m pipeline.prepare --help`.
        overwrite: replace a prepared dataset in `output`.

    Returns:
        The summary written to prepared.json.

    Raises:
        ConfigError: the output cannot be used, or the source is in memory.
        DirectoryError: another prepare writes into `output`.
    """
    if not source.encoded:
        raise ConfigError(
            f"data.source {config.data.source!r} is in memory already: prepare folder: or tfds: sources"
        )
    output = pathlib.Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    busy = f"{output} is being written by another prepare: wait for it, or choose another --output"
    # Beside the dataset, named from its real path: the same lock under any name or symbolic link of it.
    with locked(lock_file_for(output), busy):
        repaired = recover_directory(output)
        if repaired:
            print(f"{output}: {repaired}")
        check_output(output, overwrite)
        staging = staging_path(output)
        staging.mkdir()
        summary = _write_dataset(source, config, staging, size, quality, shards, image_format, square)
        replace_directory(staging, output)
    return summary


def _write_dataset(source, config, folder, size, quality, shards, image_format="jpeg", square=False):
    import tensorflow as tf

    counter = tf.Variable(0, dtype=tf.int64, trainable=False)
    summary = {
        "source": config.data.source, "size": size, "format": image_format,
        "square": square or image_format == "raw", "quality": quality if image_format == "jpeg" else None,
        "splits": {},
    }  # fmt: skip
    if image_format == "raw":
        summary["raw_record"] = RAW_RECORD
    for split, dataset, count in (
        ("train", source.train, source.train_size),
        ("validation", source.validation, source.validation_size),
    ):
        before = int(counter.numpy())
        written = write_split(
            dataset, folder, split, count, shards, size, quality, counter, max_pixels=config.data.max_pixels,
            image_format=image_format, square=square,
        )
        summary["splits"][split] = {"images": written, "skipped": int(counter.numpy()) - before}
        print(f"{split}: {written} images written, {summary['splits'][split]['skipped']} skipped")
    atomic_write_text(folder / LABELS, "".join(f"{name}\n" for name in source.class_names))
    # The manifest last: a folder with prepared.json is complete.
    atomic_write_text(folder / MANIFEST, json.dumps(summary, indent=2) + "\n")
    return summary


def records_source(data_config, seed=0):
    """TFRecords written by `python -m pipeline.prepare` (JPEGs at shorter side 256, or raw squares).

    A `RecordsSource`: JPEG records give (bytes, label, name) triples like
    the other file sources; raw records (prepared.json's "format": "raw")
    decoded (uint8 image, label) pairs, which no decoder needs to see. Both
    give their undecoded training records beside them.
    """
    import tensorflow as tf

    root = pathlib.Path(data_config.source_location).expanduser()
    summary_path = root / MANIFEST
    if not summary_path.is_file():
        raise DataError(f"{root} holds no prepared dataset (prepared.json); write one with python -m pipeline.prepare")
    summary = json.loads(summary_path.read_text())

    files = {name: sorted(str(p) for p in root.glob(f"{name}-*.tfrecord")) for name in ("train", "validation")}

    def records(name, shuffle, reader=tf.data.TFRecordDataset, order=seed):
        shards = files[name]
        dataset = tf.data.Dataset.from_tensor_slices(shards)
        if shuffle:
            dataset = dataset.shuffle(len(shards), seed=order, reshuffle_each_iteration=True)
        return dataset.interleave(
            reader,
            cycle_length=min(len(shards), 16),
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=not shuffle or data_config.deterministic,
        )

    def parse(record):
        ex = tf.io.parse_single_example(record, _features())
        return ex["image"], tf.cast(ex["label"], tf.int32), ex["name"]

    common = dict(
        class_names=(root / LABELS).read_text().splitlines(),
        train_size=summary["splits"]["train"]["images"],
        validation_size=summary["splits"]["validation"]["images"],
        train_bytes=sum(pathlib.Path(f).stat().st_size for f in files["train"]),
        stored_side=int(summary["size"]),
    )
    if summary.get("format", "jpeg") != "raw":
        return RecordsSource(
            train=records("train", True).map(parse, num_parallel_calls=tf.data.AUTOTUNE),
            validation=records("validation", False).map(parse, num_parallel_calls=tf.data.AUTOTUNE),
            train_records=records("train", True), encoded=True, parse_record=parse_jpeg_record,
            train_records_for=lambda order: records("train", True, order=order), **common,
        )  # fmt: skip
    layout = RawLayout(int(summary["size"]), example=summary.get("raw_record") != RAW_RECORD)
    # Training reads the records as fixed-length frames where it can (no per-record checksum); the splits as
    # decoded pairs, which evaluation reads once, keep TFRecordDataset's checks.
    training = layout.frames(files["train"]) or layout
    return RecordsSource(
        train=records("train", True).map(layout.decode, num_parallel_calls=tf.data.AUTOTUNE),
        validation=records("validation", False).map(layout.decode, num_parallel_calls=tf.data.AUTOTUNE),
        train_records=records("train", True, training.read), parse_record=training.decode, layout=training,
        train_records_for=lambda order: records("train", True, training.read, order=order),
        **common,
    )  # fmt: skip
