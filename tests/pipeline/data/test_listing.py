"""Listing image folders (`pipeline.data.listing`): the class folders, sorted, a name that is not UTF-8 refused;
the image files of each class in a fixed order (a folder's files, then its sub-folders), hidden files and other
suffixes left out, entries that are not regular files left out with one warning; one listing per folder inside
`shared_listings`; the estimated size of the files; the hashes of the names relative to the root. The sources
built on it are in test_sources.py."""

import os

import numpy as np
import pytest

from pipeline.data.listing import estimated_bytes, list_class_folders, list_images, shared_listings
from pipeline.data.splits import DataError
from tests.helpers.images import write_tree


def test_class_folders_are_the_sorted_visible_sub_folders(tmp_path):
    write_tree(tmp_path, {"b/x.jpg": b"x", "a/y.jpg": b"y", ".cache/z.jpg": b"z", "notes.txt": b"n"})
    (tmp_path / "c").mkdir()  # empty: still a class folder here (the source refuses it, naming it)
    assert list_class_folders(tmp_path) == ["a", "b", "c"]


def test_no_class_folder_and_a_name_that_is_not_utf8_are_refused(tmp_path):
    write_tree(tmp_path, {"image.jpg": b"x"})
    with pytest.raises(DataError) as refused:
        list_class_folders(tmp_path)
    assert str(refused.value) == f"{tmp_path} has no class sub-folders; expected {tmp_path}/<class>/<image files>"
    (tmp_path / os.fsdecode(b"cl\xe9")).mkdir()
    with pytest.raises(DataError) as refused:
        list_class_folders(tmp_path)
    assert str(refused.value) == (
        f"class folder {tmp_path}/cl\\xe9: its name is not UTF-8 text, and a class name must be (labels.txt, the "
        "SavedModel's class names): rename the folder"
    )


def test_images_are_listed_files_first_then_sub_folders_with_their_class_index(tmp_path, capsys):
    write_tree(tmp_path, {
        "a/z.JPEG": b"1", "a/b.png": b"2", "a/deeper/c.gif": b"3", "a/notes.txt": b"4", "a/.hidden.jpg": b"5",
        "b/m.BMP": b"6", "b/a/jpeg.jpeg": b"7",
    })  # fmt: skip
    odd = os.fsdecode(b"\xff.jpg")
    (tmp_path / "b" / odd).write_bytes(b"8")
    (tmp_path / "a" / "link").symlink_to(tmp_path / "b", target_is_directory=True)  # not followed
    paths, labels = list_images(tmp_path, ["a", "b", "missing"])
    assert paths == [str(tmp_path / p) for p in ("a/b.png", "a/z.JPEG", "a/deeper/c.gif", "b/m.BMP", f"b/{odd}",
                                                  "b/a/jpeg.jpeg")]
    assert labels.dtype == np.int32 and labels.tolist() == [0, 0, 0, 1, 1, 1]
    assert capsys.readouterr().err == ""


def test_entries_that_are_not_regular_files_are_left_out_with_one_warning(tmp_path, capsys):
    write_tree(tmp_path, {"a/one.jpg": b"1"})
    os.mkfifo(tmp_path / "a" / "fifo.jpg")  # reading it would block
    (tmp_path / "a" / "zero.png").symlink_to("/dev/zero")  # reading it would never end
    (tmp_path / "a" / "dangling.jpg").symlink_to(tmp_path / "nowhere")
    for i in range(2):
        os.mkfifo(tmp_path / "a" / f"more{i}.gif")
    paths, labels = list_images(tmp_path, ["a"])
    assert paths == [str(tmp_path / "a" / "one.jpg")] and labels.tolist() == [0]
    assert capsys.readouterr().err == (
        f"warning: skipping 5 entries with an image suffix that are not regular files: {tmp_path}/a/dangling.jpg, "
        f"{tmp_path}/a/fifo.jpg, {tmp_path}/a/more0.gif and 2 more\n"
    )


def test_inside_shared_listings_a_folder_is_listed_once(tmp_path):
    write_tree(tmp_path, {"a/1.jpg": b"1"})
    first = [str(tmp_path / "a" / "1.jpg")]
    with shared_listings():
        for _ in range(2):
            paths, labels = list_images(tmp_path, ["a"])
            assert paths == first and labels.tolist() == [0]  # the first listing, each time
            write_tree(tmp_path, {"a/2.jpg": b"2"})
            paths.append("changed by a caller")  # a caller's copy: the listing stays as it was
            labels[0] = 7
        with shared_listings():  # a block inside shares the outer one's
            assert list_images(tmp_path, ["a"])[0] == first
        assert len(list_images(tmp_path, ["a", "b"])[0]) == 2  # other classes: another listing
    assert list_images(tmp_path, ["a"])[0] == [str(tmp_path / "a" / n) for n in ("1.jpg", "2.jpg")]


def test_the_size_of_the_files_is_estimated_from_a_spread_sample(tmp_path):
    sizes = [100, 300, 200, 400, 50, 150]
    paths = []
    for i, size in enumerate(sizes):
        (tmp_path / f"{i}.jpg").write_bytes(b"x" * size)
        paths.append(str(tmp_path / f"{i}.jpg"))
    assert estimated_bytes([]) == 0
    assert estimated_bytes(paths) == 1200  # all of them: the sum
    assert estimated_bytes(paths, sample=3) == 700  # files 0, 2, 4: a mean of 350/3 bytes, times 6
    assert estimated_bytes(paths + [str(tmp_path / "gone.jpg")], sample=10) == 1400  # gone: a mean of the six, times 7


def test_name_hashes_are_of_the_names_relative_to_the_root_and_computed_once_a_listing(tmp_path):
    from pipeline.data.identity import name_hashes
    from pipeline.data.listing import relative_name_hashes

    write_tree(tmp_path, {"a/1.jpg": b"1", "b/deeper/2.jpg": b"2"})
    (tmp_path / "a" / os.fsdecode(b"\xff.jpg")).write_bytes(b"3")
    paths, _ = list_images(tmp_path, ["a", "b"])
    expected = name_hashes([b"a/1.jpg", b"a/\xff.jpg", b"b/deeper/2.jpg"])
    assert relative_name_hashes(tmp_path, ["a", "b"], paths).tolist() == expected.tolist()
    assert relative_name_hashes(str(tmp_path) + "/", ["a", "b"], paths).tolist() == expected.tolist()
    with shared_listings():
        paths, _ = list_images(tmp_path, ["a", "b"])
        first = relative_name_hashes(tmp_path, ["a", "b"], paths)
        assert relative_name_hashes(tmp_path, ["a", "b"], paths) is first
        assert relative_name_hashes(tmp_path, ["a", "b"], paths, salt=b"x") is not first
        assert not first.flags.writeable
