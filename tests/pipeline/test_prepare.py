import json
import re

import numpy as np
import pytest
import tensorflow as tf

from pipeline import prepare
from pipeline.config import load_config
from pipeline.data.pipelines import build_datasets
from pipeline.data.sources import load_source
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
    captured = capfd.readouterr()
    assert "empty.JPEG" in captured.err
    # The last line: images written, their rate, and the rate per busy core.
    last = captured.out.splitlines()[-1]
    assert re.fullmatch(r"4 images in \d+\.\d s: \d+\.\d images/s, \d+\.\d per busy core "
                        r"\(\d\.\d\d of \d+ cores busy\)", last), last
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


def _folder(tmp_path):
    folder = tmp_path / "images"
    write_tree(folder, {
        f"{split}/{c}/{i}.JPEG": jpeg_bytes(70, 90, seed=10 * ord(c) + i)
        for split in ("train", "val") for c in "ab" for i in range(3)
    })  # fmt: skip
    return folder


def _dataset_files(out):
    return {p.name: p.read_bytes() for p in sorted(out.iterdir())}


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--shards", "-1"], "--shards must be from 0 to 100000, got -1"),
        (["--quality", "101"], "--quality must be from 1 to 100, got 101"),
        (["--quality", "0"], "--quality must be from 1 to 100, got 0"),
        (["--size", "10"], "--size must be at least 64, got 10"),
        (["--shards", "x"], "argument --shards: invalid int value: 'x': see python -m pipeline.prepare --help"),
    ],
)
def test_bad_arguments_fail_before_anything_is_touched(tmp_path, capsys, extra, message):
    folder = _folder(tmp_path)
    out = tmp_path / "prepared"
    base = ["--set", f"data.source=folder:{folder}", "--output", str(out)]
    assert prepare.main(base) == 0
    before = _dataset_files(out)
    capsys.readouterr()
    assert prepare.main(base + ["--overwrite"] + extra) == 2
    assert capsys.readouterr().err == f"error: {message}\n"
    assert _dataset_files(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["images", "prepared"]  # no lock file left


def test_output_of_user_files_or_a_file_is_refused(tmp_path, capsys):
    folder = _folder(tmp_path)
    mine = tmp_path / "mine"
    write_tree(mine, {"holiday.jpg": b"x", "train-00000-of-00001.tfrecord": b"y"})
    for extra in ([], ["--overwrite"]):
        assert prepare.main(["--set", f"data.source=folder:{folder}", "--output", str(mine), *extra]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: {mine} holds files that no prepared dataset of this project writes (holiday.jpg)")
    assert sorted(p.name for p in mine.iterdir()) == ["holiday.jpg", "train-00000-of-00001.tfrecord"]
    a_file = tmp_path / "file"
    a_file.write_text("z")
    assert prepare.main(["--set", f"data.source=folder:{folder}", "--output", str(a_file)]) == 2
    assert capsys.readouterr().err == f"error: --output {a_file} is a file: choose a folder\n"


def test_a_second_prepare_into_the_same_folder_is_refused_under_any_name(tmp_path, capsys):
    from pipeline.storage.locks import lock_file_for, locked

    folder = _folder(tmp_path)
    out = tmp_path / "prepared"
    (tmp_path / "link").symlink_to(out)  # dangling until the first prepare writes the folder
    with locked(lock_file_for(out), "held by the test"):
        for target in (out, tmp_path / "link"):
            assert prepare.main(["--set", f"data.source=folder:{folder}", "--output", str(target)]) == 2
            assert capsys.readouterr().err == (
                f"error: {target} is being written by another prepare: wait for it, or choose another --output\n"
            )
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["images", "link"]


KILL_MID_PREPARE = """
import pathlib, sys, time
from pipeline import prepare
from pipeline.data import records
marker = pathlib.Path(sys.argv[1])
write_split = records.write_split
def slow(*args, **kwargs):
    written = write_split(*args, **kwargs)
    marker.write_text("one split written")
    time.sleep(120)
    return written
records.write_split = slow
sys.exit(prepare.main(sys.argv[2:]))
"""


@pytest.mark.slow
def test_a_killed_reprepare_leaves_the_previous_dataset_usable(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    from tests.helpers.runs import project_env

    folder = _folder(tmp_path)
    out = tmp_path / "prepared"
    base = ["--set", f"data.source=folder:{folder}", "--output", str(out)]
    assert prepare.main(base + ["--quality", "50"]) == 0
    before = _dataset_files(out)
    marker = tmp_path / "marker"
    process = subprocess.Popen([sys.executable, "-c", KILL_MID_PREPARE, str(marker), *base, "--overwrite"],
                               env=project_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while not marker.exists():
        assert process.poll() is None, process.communicate()
        assert time.time() < deadline
        time.sleep(0.2)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    # Half a new dataset in staging; the old one whole, and still what training reads.
    assert (tmp_path / ".prepared.tmp" / "train-00000-of-00001.tfrecord").is_file()
    assert _dataset_files(out) == before
    config = load_config([], [f"data.source=records:{out}", "data.image_size=64", "data.resize=72"]).data
    assert sum(1 for _ in load_source(config).train) == 6
    # The next prepare clears the leftover and replaces the dataset.
    assert prepare.main(base + ["--overwrite"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["images", "marker", "prepared"]
    assert json.loads((out / "prepared.json").read_text())["quality"] == 90


def test_square_jpeg_and_raw_records_hold_the_central_square(tmp_path):
    from pipeline.data.augment import center_crop, resize_shorter_side

    wide = np.tile(np.arange(700, dtype=np.uint8)[None, :, None] % 251, (280, 1, 3))
    folder = tmp_path / "images"
    write_tree(folder, {
        "train/a/wide.png": tf.io.encode_png(wide).numpy(),
        "train/b/small.JPEG": jpeg_bytes(70, 90, seed=2),
        "val/a/v.png": tf.io.encode_png(wide[:, ::-1]).numpy(),
    })  # fmt: skip
    common = ["--set", f"data.source=folder:{folder}", "--size", "128"]
    assert prepare.main(common + ["--output", str(tmp_path / "sq"), "--square"]) == 0
    assert prepare.main(common + ["--output", str(tmp_path / "raw"), "--format", "raw"]) == 0
    manifest = json.loads((tmp_path / "raw" / "prepared.json").read_text())
    assert (manifest["format"], manifest["square"], manifest["quality"], manifest["size"]) == ("raw", True, None, 128)

    def records(name, **overrides):
        config = load_config([], [f"data.source=records:{tmp_path / name}", "data.image_size=64", "data.resize=128"])
        return load_source(config.data)

    # JPEG squares: the central square at 128, or at the small image's own shorter side (never upscaled).
    shapes = sorted(tuple(tf.io.decode_jpeg(data).shape[:2]) for data, _, _ in records("sq").train)
    assert shapes == [(70, 70), (128, 128)]
    # Raw: decoded (image, label) pairs, every one 128 x 128, the exact pixels of the central square.
    source = records("raw")
    assert not source.encoded
    images = {int(label): image.numpy() for image, label in source.train}
    expected = center_crop(tf.cast(tf.clip_by_value(tf.round(resize_shorter_side(wide, 128)), 0, 255), tf.uint8), 128)
    np.testing.assert_array_equal(images[0], expected.numpy())
    assert images[1].shape == (128, 128, 3)
    config = load_config([], [f"data.source=records:{tmp_path / 'raw'}", "data.image_size=64", "data.resize=128"])
    batch, labels = next(iter(build_datasets(config.data, batch_size=4).train))
    assert batch.shape == (2, 64, 64, 3) and sorted(labels.numpy().tolist()) == [0, 1]
