"""The identity of a run's data (`pipeline.data.identity`) and the folder split it relies on: a file's split is a
function of its own name, so files that come and go move no other file between the splits."""

import hashlib
import json
import os

import numpy as np
import pytest

from pipeline.config import load_config
from pipeline.data import identity
from pipeline.data.sources import SPLIT_SALT, held_out, load_source
from pipeline.data.splits import DataError
from pipeline.storage.files import DirectoryError
from tests.helpers.images import write_tree


def folder_config(root, *overrides):
    return load_config([], [f"data.source=folder:{root}", "data.validation_fraction=0.2", *overrides]).data


def split_names(source):
    """{relative name: split} of every file of a folder source (its root is the folder)."""
    found = {}
    for split, dataset in (("train", source.train), ("validation", source.validation)):
        for _, _, name in dataset.as_numpy_iterator():
            found[name.decode()] = split
    return found


def write_folder(root, count, classes=3):
    write_tree(root, {f"c{i % classes}/{i:03d}.jpg": b"not read" for i in range(count)})


def test_adding_and_removing_files_moves_no_other_file_between_the_splits(tmp_path):
    write_folder(tmp_path, 600)
    before = split_names(load_source(folder_config(tmp_path)))
    assert list(before.values()).count("validation") == 120
    (tmp_path / "c1" / "new.jpg").write_bytes(b"added")
    removed = sorted(before)[::12]  # 50 files, from both splits
    for name in removed:
        os.remove(name)
    after = split_names(load_source(folder_config(tmp_path)))
    assert len(removed) == 50 and len(after) == 551
    assert all(after[name] == split for name, split in before.items() if name not in removed)
    assert after[str(tmp_path / "c1" / "new.jpg")] == "train"
    assert [before[name] for name in removed].count("validation") == 9
    assert list(after.values()).count("validation") == 111
    # The run's seed draws no other split.
    assert split_names(load_source(folder_config(tmp_path), seed=7)) == after


def test_the_split_is_the_hash_of_the_name_under_the_split_seed():
    names = [f"c{i % 2}/{i}.jpg" for i in range(8)]
    hashes = identity.name_hashes(names, salt=SPLIT_SALT)
    draws = (hashes >> np.uint64(11)) * 2.0**-53
    assert held_out(hashes, 0.3).tolist() == (draws < 0.3).tolist()
    assert identity.name_hashes([b"c0/0.jpg"]).tolist() == [  # blake2b-64 of the name, little-endian
        int.from_bytes(hashlib.blake2b(b"c0/0.jpg", digest_size=8).digest(), "little")
    ]
    odd = identity.name_hashes([b"c0/\xff.jpg"]).tolist()  # a name that is not UTF-8: its bytes
    assert identity.name_hashes([os.fsdecode(b"c0/\xff.jpg")]).tolist() == odd


def test_tiny_folders_hold_out_one_file_and_train_on_one_at_least(tmp_path):
    half, quarter = np.uint64(2**63), np.uint64(2**62)  # draws of 0.5 and 0.25
    # No file drawn at 1 %: the one with the smallest draw is held out.
    assert held_out(np.array([half, quarter]), 0.01).tolist() == [False, True]
    # Every file drawn at 99 %: the one with the largest draw trains.
    assert held_out(np.array([np.uint64(0), quarter, np.uint64(1)]), 0.99).tolist() == [True, False, True]
    assert held_out(np.array([half]), 0.99).tolist() == [True]
    write_tree(tmp_path, {"a/1.jpg": b"x", "b/2.jpg": b"y"})
    source = load_source(folder_config(tmp_path, "data.validation_fraction=0.01"))
    assert (source.train_size, source.validation_size) == (1, 1)
    write_tree(tmp_path / "single", {"a/1.jpg": b"x"})
    with pytest.raises(DataError, match=r"single holds 1 image file\(s\): none is left for training once "
                                        r"data.validation_fraction \(0.2\) is held out; add images"):
        load_source(folder_config(tmp_path / "single"))


def test_an_identity_is_recorded_and_read_back_whole(tmp_path):
    write_folder(tmp_path / "photos", 40)
    source = load_source(folder_config(tmp_path / "photos"))
    found = identity.identify(source)
    assert found.class_names == ("c0", "c1", "c2")
    counts = (found.splits["train"].count, found.splits["validation"].count)
    assert counts == (source.train_size, source.validation_size) == (32, 8)
    run = tmp_path / "run"
    run.mkdir()
    identity.record(run, found)
    assert sorted(p.name for p in run.iterdir()) == ["data_identity.bin", "data_identity.json"]
    assert (run / "data_identity.bin").stat().st_size == 8 * 40
    summary = json.loads((run / "data_identity.json").read_text())
    assert summary["class_names"] == ["c0", "c1", "c2"] and summary["format"] == 1
    back = identity.read(run)
    assert back.class_names == found.class_names
    for split in ("train", "validation"):
        assert back.splits[split].count == found.splits[split].count
        assert back.splits[split].digest == found.splits[split].digest
        np.testing.assert_array_equal(back.splits[split].hashes, found.splits[split].hashes)
    assert back == found and identity.changes(back, found) == {}
    assert identity.read(tmp_path) is None  # a run begun before identities were recorded


def test_every_worker_of_a_sharded_folder_has_the_whole_identity(tmp_path):
    write_folder(tmp_path, 30)
    config = folder_config(tmp_path)
    whole = identity.identify(load_source(config))
    for index in (0, 1):
        share = load_source(config, shard=(2, index))
        assert share.train_size == 24 and identity.changes(whole, identity.identify(share)) == {}


def test_a_resumed_run_is_told_of_files_added_and_removed_and_refused_other_classes(tmp_path):
    write_tree(tmp_path / "data", {f"{split}/{c}/{i}.jpg": b"x" for split in ("train", "val")
                                   for c in ("blue", "green", "red") for i in range(4)})  # fmt: skip
    config = folder_config(tmp_path / "data")
    run = tmp_path / "run"
    run.mkdir()
    identity.record(run, identity.identify(load_source(config)))
    written = {p.name: p.read_bytes() for p in run.iterdir()}
    assert identity.check_resume(run, identity.identify(load_source(config))) == []

    write_tree(tmp_path / "data", {"train/red/new1.jpg": b"x", "train/red/new2.jpg": b"x", "train/blue/new.jpg": b"x"})
    os.remove(tmp_path / "data" / "train" / "green" / "0.jpg")
    os.remove(tmp_path / "data" / "val" / "red" / "3.jpg")
    assert identity.check_resume(run, identity.identify(load_source(config))) == [
        "note: the training split has 3 files added and 1 file removed since the run began (14 files now)",
        "note: the validation split has 1 file removed since the run began (11 files now)",
    ]

    for split in ("train", "val"):  # renamed: the same count, index 0 means another class
        os.rename(tmp_path / "data" / split / "blue", tmp_path / "data" / split / "navy")
    with pytest.raises(DataError) as refused:
        identity.check_resume(run, identity.identify(load_source(config)))
    assert str(refused.value) == (
        f"the data's classes are not those the run in {run} began with (class 0 is 'green' now, 'blue' when the "
        "run began; class 1 is 'navy' now, 'green' when the run began): restore the data the run began with, or "
        "pass --overwrite to train the run afresh, or choose another --run-dir"
    )
    assert {p.name: p.read_bytes() for p in run.iterdir()} == written  # the check writes nothing


def test_class_differences_in_one_line():
    change = identity.class_change
    assert change(["a", "b"], ["a", "b"]) is None
    assert change(["a", "b", "c"], ["a", "b", "c", "d"]) == "1 class added: 'd'"
    assert change(["a", "b", "blue", "c"], ["a", "b", "green", "c", "d"]) == (
        "class 2 is 'green' now, 'blue' when the run began; 2 classes added: 'green', 'd'; 1 class gone: 'blue'"
    )
    assert change(["a", "b", "c", "d", "e"], ["b", "c", "d", "e"]) == (
        "class 0 is 'b' now, 'a' when the run began; class 1 is 'c' now, 'b' when the run began; class 2 is 'd' "
        "now, 'c' when the run began; 1 more index differs; 1 class gone: 'a'"
    )
    assert change(["x", "y"], ["y", "x"], now="in the data", then="in the run") == (
        "class 0 is 'y' in the data, 'x' in the run; class 1 is 'x' in the data, 'y' in the run"
    )


def test_sources_without_file_names_are_the_same_or_differ(tmp_path):
    def synthetic(*overrides):
        config = load_config([], ["data.source=synthetic", "data.num_examples=20", *overrides]).data
        return identity.identify(load_source(config))

    first = synthetic()
    assert identity.changes(first, synthetic()) == {}
    change = identity.changes(first, synthetic("data.num_examples=30"))
    assert list(change) == ["train", "validation"]
    assert identity.resume_note(change["train"]) == (
        "note: the training split differs from the one the run began with (30 examples now, 20 then)"
    )
    assert identity.resume_note(change["validation"]) == (
        "note: the validation split differs from the one the run began with (6 examples now, 4 then)"
    )
    assert identity.evaluation_note(change["train"]) == (
        "note: the training split is not the one the run trained on (30 images now, 20 then)"
    )
    digits = identity.identify(load_source(load_config([], ["data.source=digits"]).data))
    assert (digits.splits["train"].count, digits.splits["validation"].count) == (1438, 359)
    assert digits.splits["train"].hashes is None and len(digits.splits["train"].digest) == 32
    run = tmp_path / "run"
    run.mkdir()
    identity.record(run, digits)
    assert sorted(p.name for p in run.iterdir()) == ["data_identity.json"]  # no name hashes to keep
    assert identity.read(run) == digits


def test_a_damaged_record_is_named_with_what_to_do(tmp_path):
    write_folder(tmp_path / "photos", 10)
    run = tmp_path / "run"
    run.mkdir()
    identity.record(run, identity.identify(load_source(folder_config(tmp_path / "photos"))))
    advice = (f"it records the data the run began with; delete data_identity.json and data_identity.bin from {run} "
              "to go on without comparing the data with it")
    hashes = run / "data_identity.bin"
    hashes.write_bytes(hashes.read_bytes()[:-8])
    with pytest.raises(DirectoryError) as damaged:
        identity.read(run)
    assert str(damaged.value) == (
        f"{hashes} is damaged (not the name hashes that data_identity.json describes): {advice}"
    )
    hashes.unlink()
    with pytest.raises(DirectoryError, match=r"data_identity.bin is damaged \(missing; data_identity.json names it\)"):
        identity.read(run)
    record = run / "data_identity.json"
    record.write_text('{"format": 1, "class_names": ["a"]')
    with pytest.raises(DirectoryError) as damaged:
        identity.read(run)
    assert str(damaged.value) == f"{record} is damaged (not JSON): {advice}"
    record.write_text('{"format": 1, "class_names": ["a", 2], "splits": {}}')
    with pytest.raises(DirectoryError, match=r"is damaged \(no list of class names\)"):
        identity.read(run)
