"""`python -m pipeline.predict`: tables, JSON lines, folders, per-file errors, exit codes."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from pipeline import predict
from tests.helpers.images import RED_GIF, random_image
from tests.helpers.runs import make_run

NAMES = [f"class_{c}" for c in range(10)]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A run, a folder of images, and the SavedModel's own probabilities for each image."""
    root = tmp_path_factory.mktemp("predict")
    make_run(root / "run")
    images = root / "images"
    (images / "sub").mkdir(parents=True)
    (images / "a.jpg").write_bytes(tf.io.encode_jpeg(random_image(90, 120, 1)).numpy())
    (images / "b.PNG").write_bytes(tf.io.encode_png(random_image(70, 70, 2)).numpy())
    (images / "sub" / "c.gif").write_bytes(RED_GIF)
    (images / "notes.txt").write_text("not an image, and not picked from a folder")
    bad = root / "bad"
    bad.mkdir()
    (bad / "text.png").write_text("a text file with an image name")
    (bad / "empty.jpg").write_bytes(b"")
    (bad / "truncated.jpg").write_bytes((images / "a.jpg").read_bytes()[:200])
    served = tf.saved_model.load(str(root / "run" / "saved_model"))
    expected = {}
    for path in (images / "a.jpg", images / "b.PNG", images / "sub" / "c.gif"):
        expected[path.name] = served.serving_default(tf.constant([path.read_bytes()]))["probabilities"].numpy()[0]
    return root, expected


def ranked(probabilities, top):
    order = np.argsort(-probabilities)[:top]
    return [(NAMES[i], int(i), float(probabilities[i])) for i in order]


def test_table_shows_top_k_names_with_probabilities(setup, capsys):
    root, expected = setup
    files = [root / "images" / "a.jpg", root / "images" / "b.PNG"]
    assert predict.main([str(root / "run"), *map(str, files), "--top", "3"]) == 0
    lines = capsys.readouterr().out.splitlines()
    want = []
    for path in files:
        want.append(str(path))
        want += [f"  {rank}. {name}  {p:7.2%}" for rank, (name, _, p) in enumerate(ranked(expected[path.name], 3), 1)]
    assert lines == want


def test_json_lines_and_folder_expansion(setup, capsys):
    root, expected = setup
    # The saved_model/ directory itself works as well as the run directory.
    assert predict.main([str(root / "run" / "saved_model"), str(root / "images"), "--json"]) == 0
    results = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    # Sorted, recursive, image suffixes only (any case): notes.txt is skipped.
    assert [r["file"] for r in results] == [
        str(root / "images" / name) for name in ("a.jpg", "b.PNG", "sub/c.gif")
    ]
    for result in results:
        name = result["file"].rsplit("/", 1)[-1]
        want = ranked(expected[name], 5)
        assert [(t["class"], t["index"]) for t in result["top"]] == [(n, i) for n, i, _ in want]
        np.testing.assert_allclose([t["probability"] for t in result["top"]], [p for _, _, p in want], atol=1e-6)


def test_top_is_capped_at_the_number_of_classes(setup, capsys):
    root, expected = setup
    assert predict.main([str(root / "run"), str(root / "images" / "a.jpg"), "--top", "50", "--json"]) == 0
    (result,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [t["index"] for t in result["top"]] == list(np.argsort(-expected["a.jpg"]))
    assert abs(sum(t["probability"] for t in result["top"]) - 1.0) < 1e-5


def test_bad_files_get_their_own_error_and_the_rest_are_classified(setup, capsys):
    root, expected = setup
    good_a, good_b = root / "images" / "a.jpg", root / "images" / "b.PNG"
    bad = root / "bad"
    files = [good_a, root / "missing.jpg", bad / "text.png", good_b, bad / "empty.jpg", bad / "truncated.jpg"]
    # One batch holds good and bad images: the bad ones must not take the good ones down.
    assert predict.main([str(root / "run"), *map(str, files), "--json", "--batch-size", "8"]) == 1
    captured = capsys.readouterr()
    results = [json.loads(line) for line in captured.out.splitlines()]
    assert [r["file"] for r in results] == list(map(str, files))
    assert results[1]["error"] == "no such file"
    assert results[2]["error"].startswith("not a readable JPEG, PNG, GIF or BMP image (Unknown image file format.")
    assert results[4]["error"] == "empty file, not an image"
    # A JPEG cut short: the decoder of its crop window (as in pipeline.evaluate) says so.
    assert results[5]["error"] == "not a readable JPEG, PNG, GIF or BMP image (Invalid JPEG data, size 200)"
    assert not any("node" in r.get("error", "") for r in results)
    for index, name in ((0, "a.jpg"), (3, "b.PNG")):
        np.testing.assert_allclose(
            [t["probability"] for t in results[index]["top"]], [p for _, _, p in ranked(expected[name], 5)], atol=1e-6
        )
    assert "4 of 6 file(s) could not be classified" in captured.err

    # Table mode: errors go to stderr, one line per file, results to stdout.
    assert predict.main([str(root / "run"), str(good_a), str(root / "missing.jpg"), str(bad / "text.png")]) == 1
    captured = capsys.readouterr()
    assert captured.out.splitlines()[0] == str(good_a) and len(captured.out.splitlines()) == 6
    errors = [line for line in captured.err.splitlines() if line.startswith("error: ")]
    assert errors[0] == f"error: {root / 'missing.jpg'}: no such file"
    assert errors[1].startswith(f"error: {bad / 'text.png'}: not a readable JPEG, PNG, GIF or BMP image (")
    assert len(errors) == 2 and "Traceback" not in captured.err


def test_usage_errors_exit_2(setup, tmp_path, capsys):
    root, _ = setup
    assert predict.main([str(tmp_path), str(root / "images" / "a.jpg")]) == 2
    assert f"no SavedModel in {tmp_path}" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert predict.main([str(root / "run"), str(tmp_path / "empty")]) == 2
    assert f"no image files in {tmp_path / 'empty'}" in capsys.readouterr().err
    assert predict.main([str(root / "run"), str(root / "images" / "a.jpg"), "--top", "0"]) == 2
    assert capsys.readouterr().err == "error: --top must be at least 1, got 0\n"


def test_a_fifo_a_device_and_a_huge_file_get_their_own_error_and_nothing_hangs(setup, tmp_path, capsys, monkeypatch):
    from pipeline.serving import classifier

    root, _ = setup
    good = root / "images" / "a.jpg"
    fifo = tmp_path / "x.jpg"
    os.mkfifo(fifo)
    zero = tmp_path / "zero.jpg"
    zero.symlink_to("/dev/zero")
    huge = tmp_path / "huge.jpg"
    huge.write_bytes(good.read_bytes() + b"\0" * 5000)
    limit = good.stat().st_size + 1000
    monkeypatch.setattr(classifier, "MAX_FILE_BYTES", limit)
    assert predict.main([str(root / "run"), str(fifo), str(zero), str(huge), str(good), "--json"]) == 1
    results = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r.get("error") for r in results] == [
        "not a regular file (a FIFO, device or socket): not read",
        "not a regular file (a FIFO, device or socket): not read",
        f"{huge.stat().st_size:,} bytes, more than an image file may have ({limit:,}): not read",
        None,
    ]


def test_a_file_name_that_is_not_utf8_is_classified_and_printed_escaped(setup, tmp_path, capsys):
    root, expected = setup
    name = os.fsdecode(b"\xff\xfe.jpg")
    (tmp_path / name).write_bytes((root / "images" / "a.jpg").read_bytes())
    assert predict.main([str(root / "run"), str(tmp_path)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"{tmp_path}/\\xff\\xfe.jpg"
    assert out[1].split()[1] == ranked(expected["a.jpg"], 5)[0][0]


def test_bad_images_give_one_line_each_without_tensorflows_own_noise(setup, tmp_path):
    from tests.helpers.processes import command, project_env, run

    root, _ = setup
    bad = root / "bad"
    done = run(command("pipeline.predict", root / "run", bad / "text.png", bad / "truncated.jpg"), env=project_env())
    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        f"error: {bad / 'text.png'}: not a readable JPEG, PNG, GIF or BMP image (Unknown image file format. One of "
        "JPEG, JPEG XL, PNG, GIF, BMP, WebP required.)",
        f"error: {bad / 'truncated.jpg'}: not a readable JPEG, PNG, GIF or BMP image (Invalid JPEG data, size 200)",
        "2 of 2 file(s) could not be classified",
    ]
