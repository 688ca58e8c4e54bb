"""Folder and TFDS sources on data written by the tests, and every kind of bad file."""

import io
import pathlib
import tarfile

import numpy as np
import pytest
import tensorflow as tf

from pipeline import train
from pipeline.config import load_config
from pipeline.data.pipelines import build_datasets
from pipeline.data.sources import load_source
from pipeline.data.splits import DataError
from tests.helpers.images import jpeg_bytes, photo, pil_bytes, write_tree

SMALL = ["data.image_size=64", "data.resize=72", "data.cache=false"]


def data_config(source, *overrides):
    return load_config([], [f"data.source={source}", *SMALL, *overrides]).data


def collect(dataset):
    images, labels = [], []
    for x, y in dataset:
        images.append(x.numpy())
        labels.append(y.numpy())
    return np.concatenate(images), np.concatenate(labels)


def test_folder_with_train_and_val_splits(tmp_path):
    write_tree(tmp_path, {
        "train/n02/a.JPEG": jpeg_bytes(seed=1),
        "train/n02/b.jpg": jpeg_bytes(seed=2),
        "train/n01/c.JPEG": jpeg_bytes(seed=3),
        "train/n01/notes.txt": b"not an image, not listed",
        "val/n01/d.JPEG": jpeg_bytes(seed=4),
        "val/n02/e.JPEG": jpeg_bytes(seed=5),
    })  # fmt: skip
    config = data_config(f"folder:{tmp_path}")
    source = load_source(config)
    assert source.class_names == ["n01", "n02"]  # sorted folder names
    assert (source.train_size, source.validation_size) == (3, 2)
    datasets = build_datasets(config, batch_size=2, seed=0)
    images, labels = collect(datasets.train)
    assert images.shape == (3, 64, 64, 3) and sorted(labels.tolist()) == [0, 1, 1]
    images, labels = collect(datasets.validation)
    assert labels.tolist() == [0, 1]  # validation order is fixed
    assert int(datasets.skipped.numpy()) == 0


def test_single_folder_holds_out_a_validation_fraction(tmp_path):
    write_tree(tmp_path, {f"cls{c}/{i}.jpg": jpeg_bytes(seed=10 * c + i) for c in range(2) for i in range(5)})
    source = load_source(data_config(f"folder:{tmp_path}", "data.validation_fraction=0.2"))
    # Each file drawn by its name (pipeline.data.sources.held_out): 4 of 10 here, the same whatever the run.
    assert (source.train_size, source.validation_size) == (6, 4)
    validation = [n.decode() for _, _, n in source.validation.as_numpy_iterator()]
    assert validation == [str(tmp_path / name) for name in ("cls0/1.jpg", "cls0/4.jpg", "cls1/3.jpg", "cls1/4.jpg")]
    names = {n.numpy() for _, _, n in source.train} | {n.numpy() for _, _, n in source.validation}
    assert len(names) == 10  # every file in exactly one split


def test_every_bad_file_kind(tmp_path, capfd):
    cmyk = pil_bytes("JPEG", mode="CMYK")
    write_tree(tmp_path, {
        "a/grey.JPEG": pil_bytes("JPEG", mode="L"),
        "a/cmyk.JPEG": cmyk,
        "a/png_named_jpeg.JPEG": pil_bytes("PNG"),
        "a/anim.gif": pil_bytes("GIF"),
        "a/bitmap.bmp": pil_bytes("BMP"),
        "a/tiny.JPEG": jpeg_bytes(10, 12),
        "b/empty.JPEG": b"",
        "b/truncated.JPEG": jpeg_bytes(120, 160)[:400],
        "b/text.jpg": b"this is a text file with an image name",
        "b/good.JPEG": jpeg_bytes(),
    })  # fmt: skip
    config = data_config(f"folder:{tmp_path}", "data.validation_fraction=0.25")  # validation: good.JPEG, text.jpg
    datasets = build_datasets(config, batch_size=4, seed=0)
    train, validation = collect(datasets.train), collect(datasets.validation)  # uint8 and float32 images
    assert (len(train[0]), len(validation[0])) == (6, 1)
    images = np.concatenate([train[0], validation[0]])
    assert images.shape == (7, 64, 64, 3)  # 10 files, 3 undecodable
    assert np.isfinite(images).all()
    assert int(datasets.skipped.numpy()) == 3
    err = capfd.readouterr().err
    for name in ("empty.JPEG", "truncated.JPEG", "text.jpg"):
        assert "skipping undecodable image" in err and name in err
    # CMYK decodes to RGB close to the original colours.
    rgb = tf.io.decode_jpeg(cmyk, channels=3).numpy().astype(float)
    assert rgb.shape == (30, 40, 3) and np.abs(rgb - photo(30, 40)).mean() < 20


def test_synset_folders_get_tfds_imagenet2012_indices(tmp_path):
    import tensorflow_datasets as tfds

    labels_file = pathlib.Path(tfds.__file__).parent / "datasets/imagenet2012/labels.txt"
    synsets = labels_file.read_text().split()
    assert len(synsets) == 1000
    tiny = jpeg_bytes(8, 8)
    write_tree(tmp_path, {f"train/{s}/x.JPEG": tiny for s in reversed(synsets)})
    source = load_source(data_config(f"folder:{tmp_path}"))
    assert source.class_names == synsets
    assert tfds.builder("imagenet2012").info.features["label"].names == synsets


def test_missing_folder_and_empty_folder(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_source(data_config(f"folder:{tmp_path / 'nope'}"))
    (tmp_path / "train" / "c").mkdir(parents=True)
    with pytest.raises(DataError, match="no image files"):
        load_source(data_config(f"folder:{tmp_path}"))


def test_unprepared_tfds_dataset_says_where_the_tars_go(tmp_path):
    with pytest.raises(DataError, match="ILSVRC2012_img_train.tar"):
        load_source(data_config("tfds:imagenet2012", f"data.data_dir={tmp_path}"))
    with pytest.raises(DataError, match="no dataset"):
        load_source(data_config("tfds:no_such_dataset_xyz", f"data.data_dir={tmp_path}"))


def make_ilsvrc_tars(manual_dir, synsets, per_class=2, val_images=3):
    """Tiny archives in the exact ILSVRC-2012 layout: a tar of per-synset tars, and a flat val tar."""

    def add(tar, name, data):
        info = tarfile.TarInfo(name)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))

    with tarfile.open(manual_dir / "ILSVRC2012_img_train.tar", "w") as outer:
        for c, synset in enumerate(synsets):
            inner_bytes = io.BytesIO()
            with tarfile.open(fileobj=inner_bytes, mode="w") as inner:
                for i in range(per_class):
                    add(inner, f"{synset}_{i + 1}.JPEG", jpeg_bytes(seed=100 * c + i))
            add(outer, f"{synset}.tar", inner_bytes.getvalue())
    with tarfile.open(manual_dir / "ILSVRC2012_img_val.tar", "w") as tar:
        for i in range(val_images):
            add(tar, f"ILSVRC2012_val_{i + 1:08d}.JPEG", jpeg_bytes(seed=1000 + i))


@pytest.mark.slow
def test_tfds_imagenet2012_from_manual_tars_trains_a_step(tmp_path):
    import tensorflow_datasets as tfds

    synsets = (pathlib.Path(tfds.__file__).parent / "datasets/imagenet2012/labels.txt").read_text().split()
    manual = tmp_path / "manual"
    manual.mkdir()
    make_ilsvrc_tars(manual, [synsets[0], synsets[7]])
    overrides = [
        "data.source=tfds:imagenet2012",
        f"data.data_dir={tmp_path / 'tfds'}",
        f"data.manual_dir={manual}",
        "data.download=true",
        *SMALL,
        "model.fc_units=16",
        "model.init=glorot_uniform",
        "train.epochs=1",
        "train.batch_size=2",
        "train.steps_per_epoch=1",
        "train.verbose=0",
        "export.saved_model=false",
    ]
    config = load_config([], overrides)
    source = load_source(config.data)
    assert source.num_classes == 1000 and source.class_names == synsets
    assert (source.train_size, source.validation_size) == (4, 3)
    from pipeline.data.identity import digest, identify

    # TFDS knows no file names: a split is its dataset, version and split spec.
    assert identify(source).splits["validation"].digest == digest(
        {"tfds": "imagenet2012/5.1.0", "split": "validation", "count": 3})
    labels = sorted(int(y) for _, y, _ in source.train)
    assert labels == [0, 0, 7, 7]  # synset -> TFDS index
    # The shipped validation labels of images 1..3.
    shipped = (pathlib.Path(tfds.__file__).parent / "datasets/imagenet2012/validation_labels.txt").read_text().split()
    assert sorted(int(y) for _, y, _ in source.validation) == sorted(synsets.index(s) for s in shipped[:3])
    argv = ["--run-dir", str(tmp_path / "run")]
    for item in overrides:
        argv += ["--set", item]
    assert train.main(argv) == 0
    assert (tmp_path / "run" / "metrics.json").is_file()


def test_a_corrupt_body_behind_valid_markers_is_dropped_not_fatal(tmp_path):
    good = jpeg_bytes(60, 80)
    # Keep the JPEG header and end marker but scramble the entropy-coded data.
    body = bytearray(good)
    for i in range(200, len(body) - 2):
        body[i] = 0xFF if i % 7 == 0 else 0x00
    write_tree(tmp_path, {"train/a/good.JPEG": good, "train/a/bad.JPEG": bytes(body), "train/b/good.JPEG": good,
                          "val/a/v.JPEG": good})
    config = data_config(f"folder:{tmp_path}")
    datasets = build_datasets(config, batch_size=4, seed=0)
    images, _ = collect(datasets.train)
    assert images.shape[0] in (2, 3)  # libjpeg may recover some scrambled data; it must not raise
    assert np.isfinite(images).all()


@pytest.mark.slow
def test_training_counts_skipped_files_in_the_summary(tmp_path, capsys):
    write_tree(tmp_path / "img", {
        "train/a/1.JPEG": jpeg_bytes(seed=1), "train/a/2.JPEG": jpeg_bytes(seed=2), "train/a/empty.JPEG": b"",
        "train/b/3.JPEG": jpeg_bytes(seed=3), "train/b/4.JPEG": jpeg_bytes(seed=4), "val/a/5.JPEG": jpeg_bytes(seed=5),
        "val/b/6.JPEG": jpeg_bytes(seed=6),
    })  # fmt: skip
    argv = ["--run-dir", str(tmp_path / "run")]
    for item in [f"data.source=folder:{tmp_path / 'img'}", *SMALL, "model.fc_units=16", "model.init=glorot_uniform",
                 "train.epochs=1", "train.batch_size=2", "train.verbose=0", "export.saved_model=false"]:  # fmt: skip
        argv += ["--set", item]
    assert train.main(argv) == 0
    assert "1 image file skipped (gone or undecodable, named in the warnings above)" in capsys.readouterr().out
    import json

    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["skipped_images"] == 1


def test_a_file_name_that_is_not_utf8_is_read_and_strange_entries_are_skipped_by_name(tmp_path, capsys):
    import os

    write_tree(tmp_path, {"a/one.jpg": jpeg_bytes(seed=1), "b/two.png": pil_bytes("PNG"), "b/three.jpg": jpeg_bytes()})
    odd = os.fsdecode(b"\xff\xfe.png")
    (tmp_path / "a" / odd).write_bytes(pil_bytes("PNG"))
    os.mkfifo(tmp_path / "a" / "fifo.jpg")  # reading it would block forever
    (tmp_path / "b" / "zero.jpg").symlink_to("/dev/zero")  # reading it would never end
    source = load_source(data_config(f"folder:{tmp_path}", "data.validation_fraction=0.25"))
    names = sorted(name for data in (source.train, source.validation) for _, _, name in data.as_numpy_iterator())
    assert names == sorted(os.fsencode(tmp_path / p) for p in ("a/one.jpg", f"a/{odd}", "b/two.png", "b/three.jpg"))
    assert capsys.readouterr().err == (
        f"warning: skipping 2 entries with an image suffix that are not regular files: {tmp_path}/a/fifo.jpg, "
        f"{tmp_path}/b/zero.jpg\n"
    )
    images, labels = collect(build_datasets(data_config(f"folder:{tmp_path}", "data.validation_fraction=0.25"),
                                            batch_size=4).train)
    assert images.shape == (3, 64, 64, 3) and sorted(labels.tolist()) == [0, 0, 1]  # b/two.png validates


def test_a_class_folder_without_images_and_a_single_class_are_refused(tmp_path):
    write_tree(tmp_path, {"a/1.jpg": jpeg_bytes(), "a/2.jpg": jpeg_bytes(), "b/notes.txt": b"no image",
                          "c/3.jpg": jpeg_bytes()})
    with pytest.raises(DataError, match=rf"^{tmp_path}: class folder\(s\) without image files: b; a class needs"):
        load_source(data_config(f"folder:{tmp_path}"))
    for name in ("b", "c"):
        for child in (tmp_path / name).iterdir():
            child.unlink()
        (tmp_path / name).rmdir()
    with pytest.raises(DataError, match=r"has 1 class \(a\): a classifier needs two or more"):
        load_source(data_config(f"folder:{tmp_path}"))


def test_a_class_folder_whose_name_is_not_utf8_is_refused_by_name(tmp_path):
    import os

    write_tree(tmp_path, {"a/one.jpg": jpeg_bytes()})
    (tmp_path / os.fsdecode(b"cl\xe9")).mkdir()
    with pytest.raises(DataError, match=r"class folder .*/cl\\xe9: its name is not UTF-8 text"):
        load_source(data_config(f"folder:{tmp_path}"))


GONE_SCRIPT = """
import os, sys
from pipeline.config import load_config
from pipeline.data.pipelines import build_datasets
from tests.helpers.runs import TINY

config = load_config([], TINY + [f"data.source=folder:{sys.argv[1]}", "data.resize=72", "data.cache=false"])
data = build_datasets(config.data, batch_size=4, seed=0)
for name in sys.argv[2:]:
    os.remove(name)  # gone after the listing, before any epoch reads it
for epoch in range(2):
    images = sum(int(labels.shape[0]) for _, labels in data.train)
    images += sum(int(labels.shape[0]) for _, labels in data.validation)
    print(f"epoch {epoch}: {images} images, {int(data.skipped.numpy())} skipped", flush=True)
"""


def test_files_gone_since_the_listing_are_named_once_without_tensorflow_errors(tmp_path):
    """A run's folder changes under it: each file gone, and each undecodable validation file, met every epoch, is
    named once by the project and counted once; TensorFlow logs nothing (a subprocess: its C++ log is seen)."""
    import sys

    from tests.helpers.processes import project_env, run

    layout = {f"{split}/c{c}/{i}.jpg": jpeg_bytes(seed=10 * c + i) for split in ("train", "val") for c in range(2)
              for i in range(4)}  # fmt: skip
    layout["val/c1/empty.jpg"] = b""
    write_tree(tmp_path, layout)
    gone = [tmp_path / "train" / "c0" / "1.jpg", tmp_path / "train" / "c1" / "3.jpg", tmp_path / "val" / "c0" / "2.jpg"]
    result = run([sys.executable, "-c", GONE_SCRIPT, str(tmp_path), *map(str, gone)], env=project_env())
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.splitlines() == ["epoch 0: 13 images, 4 skipped", "epoch 1: 13 images, 4 skipped"]
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    gone_lines = [f'warning: skipping "{path}": the file is gone (deleted or moved since the folder was listed)'
                  for path in gone]
    assert sorted(warnings) == sorted(gone_lines + [f'warning: skipping undecodable image "{tmp_path}/val/c1/empty.jpg"'])
    assert "W0000" not in result.stderr and "NOT_FOUND" not in result.stderr and "Traceback" not in result.stderr


def test_a_file_is_read_whatever_its_name_and_a_gone_one_as_empty_bytes(tmp_path):
    import os

    from pipeline.data.sources import read_if_there

    names = ["a[1].jpg", "a1.jpg", "b*.jpg", "bx.jpg", "c?.jpg", "d\\x.jpg", "e[.jpg", os.fsdecode(b"\xff[.jpg")]
    for i, name in enumerate(names):
        (tmp_path / name).write_bytes(b"file %d" % i)
    paths = [os.fsencode(tmp_path / name) for name in names] + [os.fsencode(tmp_path / "gone.jpg")]
    expected = [b"file %d" % i for i in range(len(names))] + [b""]
    assert [read_if_there(tf.constant(path)).numpy() for path in paths] == expected  # eagerly
    dataset = tf.data.Dataset.from_tensor_slices(np.array(paths, dtype=object)).map(read_if_there)
    assert list(dataset.as_numpy_iterator()) == expected  # and inside tf.data
