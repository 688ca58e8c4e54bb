"""The functions of `pipeline.serving.classifier` on files made in the test: which SavedModel a path names, which
files a folder stands for, what reading a file gives (bytes, or the one-line reason it is not read), the reason
a decode error reduces to, and the table of one result. `python -m pipeline.predict` has its own tests
(tests/pipeline/test_predict.py)."""

import os
import types

import pytest

from pipeline.serving import classifier
from pipeline.serving.classifier import (
    UsageError,
    _decode_error,
    _read,
    expand_inputs,
    find_saved_model,
    format_table,
)


def test_a_savedmodel_is_found_in_itself_or_in_a_runs_saved_model_folder(tmp_path):
    run_dir = tmp_path / "run"
    (run_dir / "saved_model").mkdir(parents=True)
    (run_dir / "saved_model" / "saved_model.pb").write_bytes(b"")
    assert find_saved_model(run_dir) == run_dir / "saved_model"
    assert find_saved_model(run_dir / "saved_model") == run_dir / "saved_model"
    with pytest.raises(UsageError) as refused:
        find_saved_model(tmp_path)
    assert str(refused.value) == (
        f"no SavedModel in {tmp_path} (looked for saved_model.pb there and in {tmp_path / 'saved_model'}); pass a "
        "run directory of a finished run or its saved_model/ (python -m pipeline.export re-creates it)"
    )


def test_a_folder_stands_for_its_image_files_sorted_and_named_files_are_kept_as_given(tmp_path):
    folder = tmp_path / "images"
    (folder / "sub").mkdir(parents=True)
    for name in ("b.PNG", "a.jpeg", "sub/c.gif", "sub/d.BMP", "e.jpg", "notes.txt", ".hidden.jpg"):
        (folder / name).write_bytes(b"x")
    (folder / "folder.jpg").mkdir()  # a folder with an image name: not a file to classify
    os.mkfifo(folder / "fifo.png")  # reading it would block
    named = [tmp_path / "missing.jpg", tmp_path / "notes.txt"]
    assert expand_inputs([folder, *named]) == [
        folder / "a.jpeg", folder / "b.PNG", folder / "e.jpg", folder / "sub" / "c.gif", folder / "sub" / "d.BMP",
        *named,
    ]


def test_reading_a_file_gives_its_bytes_or_the_reason_it_is_not_read(tmp_path, monkeypatch):
    (tmp_path / "ten.jpg").write_bytes(b"0123456789")
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "folder.jpg").mkdir()
    os.mkfifo(tmp_path / "fifo.jpg")
    assert _read(tmp_path / "ten.jpg", limit=10) == (b"0123456789", None)
    assert _read(tmp_path / "ten.jpg", limit=9) == (None, "10 bytes, more than an image file may have (9): not read")
    assert _read(tmp_path / "missing.jpg") == (None, "no such file")
    assert _read(tmp_path / "empty.jpg") == (None, "empty file, not an image")
    assert _read(tmp_path / "folder.jpg") == (None, "not a regular file (a directory): not read")
    assert _read(tmp_path / "fifo.jpg") == (None, "not a regular file (a FIFO, device or socket): not read")
    # Without a limit, MAX_FILE_BYTES is the limit.
    monkeypatch.setattr(classifier, "MAX_FILE_BYTES", 2048)
    (tmp_path / "big.jpg").write_bytes(b"\0" * 4096)
    assert _read(tmp_path / "big.jpg") == (None, "4,096 bytes, more than an image file may have (2,048): not read")


def test_a_decode_error_becomes_its_last_line_without_graph_noise():
    message = (
        "Graph execution error:\n\nDetected at node DecodeJpeg defined at (most recent call last):\n"
        "<stack traces unavailable>\nInvalid JPEG data, size 200\n\t [[{{node DecodeJpeg}}]] [Op:__inference_1]"
    )
    assert _decode_error(types.SimpleNamespace(message=message)) == (
        "not a readable JPEG, PNG, GIF or BMP image (Invalid JPEG data, size 200)"
    )
    assert _decode_error(ValueError("")) == "not a readable JPEG, PNG, GIF or BMP image (ValueError)"


def test_an_image_over_the_pixel_limit_is_named_with_both_counts():
    # The message of the SavedModel's tf.debugging.Assert (pipeline.serving.saved_model), as TensorFlow words it.
    message = ("Graph execution error:\n\nDetected at node Assert/Assert defined at (most recent call last):\n\n"
               "assertion failed: [image larger than the SavedModel\\'s limit of] [50000000] "
               "[pixels (max_pixels):] [60000000]\n\t [[{{node Assert/Assert}}]] [Op:__inference_f_14]")
    assert _decode_error(types.SimpleNamespace(message=message)) == (
        "image of 60,000,000 pixels, larger than the SavedModel's limit of 50,000,000 (data.max_pixels when it was "
        "exported): not decoded; shrink it, or re-export with a higher data.max_pixels"
    )


def test_the_table_of_a_result_aligns_the_class_names():
    result = {"file": "photos/dog.jpg", "top": [
        {"class": "dog", "index": 5, "probability": 0.8125},
        {"class": "wolf", "index": 2, "probability": 0.15},
        {"class": "cat", "index": 3, "probability": 0.0375},
    ]}  # fmt: skip
    # Names padded to the longest, probabilities right-aligned in seven characters.
    assert format_table(result) == (
        "photos/dog.jpg\n"
        "  1. dog    81.25%\n"
        "  2. wolf   15.00%\n"
        "  3. cat     3.75%"
    )
