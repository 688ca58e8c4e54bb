import json

import numpy as np
import tensorflow as tf

from pipeline import prepare
from pipeline.config import load_config
from pipeline.data import build_datasets, load_source
from tests.helpers.images import jpeg_bytes, write_tree


def test_prepare_writes_256_jpeg_records_that_train_reads(tmp_path, capfd):
    folder = tmp_path / "images"
    write_tree(folder, {
        "train/a/big.JPEG": jpeg_bytes(300, 400, seed=1),
        "train/a/small.JPEG": jpeg_bytes(100, 120, seed=2),
        "train/b/wide.png": tf.io.encode_png(np.full((280, 700, 3), 9, np.uint8)).numpy(),
        "train/b/empty.JPEG": b"",
        "val/a/v.JPEG": jpeg_bytes(260, 300, seed=3),
    })  # fmt: skip
    out = tmp_path / "prepared"
    argv = ["--set", f"data.source=folder:{folder}", "--output", str(out), "--shards", "2"]
    assert prepare.main(argv) == 0
    assert "empty.JPEG" in capfd.readouterr().err
    summary = json.loads((out / "prepared.json").read_text())
    assert summary["splits"] == {"train": {"images": 3, "skipped": 1}, "validation": {"images": 1, "skipped": 0}}
    assert sorted(p.name for p in out.glob("*.tfrecord")) == [
        "train-00000-of-00002.tfrecord", "train-00001-of-00002.tfrecord",
        "validation-00000-of-00002.tfrecord", "validation-00001-of-00002.tfrecord",
    ]  # fmt: skip
    assert (out / "labels.txt").read_text().splitlines() == ["a", "b"]

    config = load_config([], [f"data.source=records:{out}", "data.image_size=64", "data.resize=72"]).data
    source = load_source(config)
    shapes = {}
    for data, label, name in source.train:
        shapes[int(label), tf.io.decode_jpeg(data).shape[:2]] = name.numpy()
    # Shorter side 256 where it was larger; the 100x120 image is not upscaled.
    assert set(shapes) == {(0, (256, 341)), (0, (100, 120)), (1, (256, 640))}
    images, labels = next(iter(build_datasets(config, batch_size=8).train))
    assert images.shape == (3, 64, 64, 3) and sorted(labels.numpy().tolist()) == [0, 0, 1]

    assert prepare.main(argv) == 2  # an existing prepared dataset is not overwritten silently
