"""Prepared records read by training: raw windows cut from batches of records, JPEG records parsed where decoded."""

import json
import struct

import numpy as np
import tensorflow as tf

from pipeline import prepare
from pipeline.config import load_config
from pipeline.data.augment import BatchAugment, TrainTransform, crop_offsets
from pipeline.data.pipelines import build_datasets
from pipeline.data.records import RawLayout, RecordsSource, parse_jpeg_record
from pipeline.data.sources import load_source
from tests.helpers.images import random_image, write_tree

SIDE = 80


def _raw_records(tmp_path, count=6):
    """Random 80x80 PNGs in two classes, prepared as raw records at 80: {index: image} and the folder."""
    images = {i: random_image(SIDE, SIDE, seed=i) for i in range(count)}
    write_tree(tmp_path / "images", {
        f"{split}/c{i % 2}/{i}.png": tf.io.encode_png(image).numpy()
        for i, image in images.items() for split in ("train", "val")
    })  # fmt: skip
    out = tmp_path / "raw"
    argv = ["--set", f"data.source=folder:{tmp_path / 'images'}", "--size", str(SIDE), "--output", str(out)]
    assert prepare.main(argv + ["--format", "raw"]) == 0
    return images, out


def _config(out, *overrides):
    return load_config([], [f"data.source=records:{out}", f"data.resize={SIDE}", "data.image_size=64",
                            "data.cache=false", *overrides]).data


def test_a_raw_record_is_the_label_then_the_pixels(tmp_path):
    images, out = _raw_records(tmp_path, count=2)
    assert json.loads((out / "prepared.json").read_text())["raw_record"] == "int64 label, uint8 pixels"
    records = [r.numpy() for r in tf.data.TFRecordDataset(sorted(str(p) for p in out.glob("train-*.tfrecord")))]
    by_pixels = {image.tobytes(): i for i, image in images.items()}
    for record in records:
        assert len(record) == 8 + SIDE * SIDE * 3
        image = by_pixels[record[8:]]  # the pixels exactly, row by row
        assert struct.unpack("<q", record[:8])[0] == image % 2


def test_windows_cut_from_records_are_the_views_of_the_decoded_images(tmp_path):
    originals, out = _raw_records(tmp_path)
    source = load_source(_config(out))
    # Training reads the records as whole TFRecord frames, of one length.
    assert isinstance(source, RecordsSource) and source.layout == RawLayout(SIDE, framed=True)
    serialized = next(iter(source.train_records.batch(6)))
    assert set(tf.strings.length(serialized).numpy()) == {12 + 8 + SIDE * SIDE * 3 + 4}
    decoded = [source.parse_record(record) for record in serialized]
    assert sorted(image.numpy().tobytes() for image, _ in decoded) == sorted(i.tobytes() for i in originals.values())
    keys = tf.constant([[i, 5] for i in range(6)], tf.int64)
    augment = BatchAugment(64, crop="random")
    windows, labels = source.layout.windows(serialized, augment.offsets(keys, SIDE), 64)
    views = augment.from_windows(windows, keys, source.layout.row_bytes).numpy()
    assert views.shape == (6, 64, 64, 3) and views.dtype == np.uint8
    np.testing.assert_array_equal(labels.numpy(), [int(label) for _, label in decoded])
    # The same pixels as a batch of decoded images, and as one image at a time.
    images = tf.stack([image for image, _ in decoded])
    np.testing.assert_array_equal(views, augment(images, keys).numpy())
    for i in range(6):
        np.testing.assert_array_equal(views[i], TrainTransform(64, resize=SIDE)(images[i], keys[i]).numpy())
    # Without flip and colour, each view is exactly the seed's window.
    plain = BatchAugment(64, crop="random", flip=False, pca_noise=0.0)
    windows, _ = source.layout.windows(serialized, plain.offsets(keys, SIDE), 64)
    cut = plain.from_windows(windows, keys, source.layout.row_bytes).numpy()
    for i, (top, left) in enumerate(crop_offsets(keys, SIDE - 64).numpy()):
        np.testing.assert_array_equal(cut[i], images.numpy()[i, top : top + 64, left : left + 64])


def _tfrecord_file(path, records):
    with tf.io.TFRecordWriter(str(path)) as writer:
        for record in records:
            writer.write(record)
    return str(path)


def test_raw_files_are_read_as_frames_only_when_every_frame_has_the_record_length(tmp_path):
    layout = RawLayout(4)  # records of 8 + 48 bytes, frames of 72
    record = struct.pack("<q", 1) + bytes(range(48))
    even = _tfrecord_file(tmp_path / "even.tfrecord", [record, record])
    framed = layout.frames([even])
    assert framed == RawLayout(4, framed=True) and framed.frame_bytes == 72
    (frame,) = list(framed.read(even).take(1))
    image, label = framed.decode(frame)
    assert int(label) == 1 and image.numpy().tobytes() == bytes(range(48))
    # A record of another length anywhere (or a damaged or compressed file): TFRecordDataset reads, checking.
    odd = _tfrecord_file(tmp_path / "odd.tfrecord", [record, record + b"x"])
    assert layout.frames([even, odd]) is None
    assert RawLayout(4, example=True).frames([even]) is None


def test_a_frame_whose_length_field_is_not_the_records_is_refused(tmp_path):
    import pytest

    layout = RawLayout(4)
    # Two records 4 bytes short and long: the file holds two frames' bytes, but not two frames.
    damaged = _tfrecord_file(tmp_path / "damaged.tfrecord", [bytes(52), bytes(60)])
    framed = layout.frames([damaged])
    frames = next(iter(framed.read(damaged).batch(2)))
    with pytest.raises(tf.errors.InvalidArgumentError, match="frame does not hold 56 bytes: the prepared dataset"):
        framed.windows(frames, tf.zeros([2, 2], tf.int32), 2)
    # And where training cuts them, in a tf.data map.
    windows = framed.read(damaged).batch(2).map(lambda frames: framed.windows(frames, tf.zeros([2, 2], tf.int32), 2))
    with pytest.raises(tf.errors.InvalidArgumentError, match="frame does not hold 56 bytes"):
        next(iter(windows))


def test_raw_records_written_as_examples_read_the_same(tmp_path):
    images, out = _raw_records(tmp_path, count=2)
    legacy = RawLayout(SIDE, example=True)
    examples = [
        tf.train.Example(features=tf.train.Features(feature={
            "image": tf.train.Feature(bytes_list=tf.train.BytesList(value=[images[i].tobytes()])),
            "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[i % 2])),
            "name": tf.train.Feature(bytes_list=tf.train.BytesList(value=[b"x"])),
        })).SerializeToString()
        for i in range(2)
    ]  # fmt: skip
    image, label = legacy.decode(tf.constant(examples[1]))
    np.testing.assert_array_equal(image.numpy(), images[1])
    assert int(label) == 1
    offsets = tf.constant([[3, 5], [16, 16]], tf.int32)
    windows, labels = legacy.windows(tf.constant(examples), offsets, 64)
    views = BatchAugment(64, flip=False, pca_noise=0.0).from_windows(windows, tf.zeros([2, 2], tf.int64), SIDE * 3)
    np.testing.assert_array_equal(views.numpy()[0], images[0][3:67, 5:69])
    np.testing.assert_array_equal(views.numpy()[1], images[1][16:80, 16:80])
    assert labels.numpy().tolist() == [0, 1]


def test_the_raw_training_pipeline_gives_windows_of_its_images(tmp_path):
    images, out = _raw_records(tmp_path)
    config = _config(out, "data.augment.crop=random", "data.augment.flip=false", "data.augment.pca_noise=0")
    batches = list(build_datasets(config, batch_size=4, seed=3).train)
    # Batches leave the parallel map as they are finished: the short last one may come first.
    assert sorted(tuple(b[0].shape) for b in batches) == [(2, 64, 64, 3), (4, 64, 64, 3)]
    assert batches[0][0].dtype == tf.uint8 and batches[0][1].dtype == tf.int32
    found = set()
    for view, label in ((v, int(l)) for b in batches for v, l in zip(b[0].numpy(), b[1].numpy())):
        matches = [(i, top, left) for i, image in images.items() for top in range(17) for left in range(17)
                   if np.array_equal(view, image[top : top + 64, left : left + 64])]
        assert len(matches) == 1 and matches[0][0] % 2 == label
        found.add(matches[0][0])
    assert found == set(images)  # every image once an epoch


def test_jpeg_records_are_parsed_where_they_are_decoded(tmp_path):
    from tests.helpers.images import jpeg_bytes

    write_tree(tmp_path / "images", {f"train/c{i % 2}/{i}.jpg": jpeg_bytes(300, 400, seed=i) for i in range(4)})
    out = tmp_path / "jpeg"
    assert prepare.main(["--set", f"data.source=folder:{tmp_path / 'images'}", "--set", "data.validation_fraction=0.25",
                         "--output", str(out)]) == 0
    config = load_config([], [f"data.source=records:{out}", "data.cache=false", "data.image_size=224",
                              "data.resize=256", "data.augment.crop=random", "data.augment.flip=true"]).data
    source = load_source(config)
    assert isinstance(source, RecordsSource) and source.stored_side == 256 and source.layout is None
    record = next(iter(source.train_records))
    data, label = parse_jpeg_record(record)
    assert tf.io.decode_jpeg(data).shape == (256, 341, 3) and label.dtype == tf.int32
    images, labels = next(iter(build_datasets(config, batch_size=8).train))
    assert images.shape == (3, 224, 224, 3) and images.dtype == tf.uint8 and labels.shape == (3,)
    # Its identity: a digest of the manifest and the shards a split, no file names; another prepare differs.
    from pipeline.data import identity

    first = identity.identify(source)
    assert [(first.splits[s].count, first.splits[s].hashes) for s in ("train", "validation")] == [(3, None), (1, None)]
    assert identity.changes(first, identity.identify(load_source(config))) == {}
    assert prepare.main(["--set", f"data.source=folder:{tmp_path / 'images'}", "--set", "data.validation_fraction=0.25",
                         "--output", str(out), "--overwrite", "--quality", "50"]) == 0
    assert list(identity.changes(first, identity.identify(load_source(config)))) == ["train", "validation"]


def test_jpeg_records_batched_before_decoding_give_the_views_of_one_image_at_a_time(tmp_path, monkeypatch):
    from pipeline.data import pipelines
    from tests.helpers.images import jpeg_bytes

    write_tree(tmp_path / "images", {f"train/c{i % 3}/{i}.jpg": jpeg_bytes(90 + 7 * i, 120, seed=i) for i in range(11)})
    out = tmp_path / "jpeg"
    assert prepare.main(["--set", f"data.source=folder:{tmp_path / 'images'}", "--set", "data.validation_fraction=0.1",
                         "--size", "80", "--output", str(out)]) == 0
    config = _config(out, "data.augment.crop=random", "data.augment.flip=true", "data.augment.pca_noise=0.1",
                     "data.deterministic=true")

    def batches():
        return [(images.numpy(), labels.numpy()) for images, labels in build_datasets(config, batch_size=4, seed=5).train]

    batched = batches()
    # The earlier path: each record cropped in a parallel map with its own seed, then batched.
    monkeypatch.setattr(pipelines, "_batched_decodes", pipelines._per_image_views)
    one_at_a_time = batches()
    assert [images.shape for images, _ in batched] == [(4, 64, 64, 3), (4, 64, 64, 3), (2, 64, 64, 3)]
    for (images, labels), (expected_images, expected_labels) in zip(batched, one_at_a_time, strict=True):
        np.testing.assert_array_equal(images, expected_images)
        np.testing.assert_array_equal(labels, expected_labels)
