"""The SavedModel `pipeline.serving.saved_model` writes: its three signatures, the evaluation preprocessing of
encoded JPEG, PNG, GIF and BMP bytes inside the graph, the class names inside, top-k capped at the class count,
probabilities equal to the Keras model's, and loading with no project code.
"""

import json
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from pipeline.config import load_config
from pipeline.data.augment import EvalTransform
from pipeline.data.pipelines import eval_pipeline
from pipeline.serving import saved_model
from pipeline.storage.rundir import LABELS_FILE
from pipeline.training import run as training_run
from tests.helpers.images import RED_GIF, bmp_bytes, random_image
from tests.helpers.runs import EXPORT_TINY, make_run
from tests.helpers.serving import keras_probabilities


def eval_preprocessed(image, size=64, resize=72):
    return EvalTransform(size, resize=resize)(tf.constant(image)).numpy()


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("runs") / "tiny"
    config, model = make_run(run_dir)
    return run_dir, config, model


@pytest.fixture(scope="module")
def served(run):
    return tf.saved_model.load(str(run[0] / "saved_model"))


def test_signatures_on_jpeg_and_png_bytes(served):
    names = [f"class_{c}" for c in range(10)]
    encoded = [tf.io.encode_jpeg(random_image(90, 120, 1)).numpy(), tf.io.encode_png(random_image(72, 50, 2)).numpy()]
    assert set(served.signatures) == {"serving_default", "serve_preprocessed", "class_names"}
    out = served.signatures["serving_default"](image_bytes=tf.constant(encoded))
    assert set(out) == {"probabilities", "top5_indices", "top5_names", "top5_probabilities"}
    probabilities = out["probabilities"].numpy()
    assert probabilities.shape == (2, 10) and probabilities.dtype == np.float32
    np.testing.assert_allclose(probabilities.sum(axis=1), [1.0, 1.0], atol=1e-6)
    expected_top = np.argsort(-probabilities, axis=1)[:, :5]
    np.testing.assert_array_equal(out["top5_indices"].numpy(), expected_top)
    assert out["top5_indices"].dtype == tf.int32
    np.testing.assert_allclose(out["top5_probabilities"].numpy(), np.take_along_axis(probabilities, expected_top, 1))
    assert [[n.decode() for n in row] for row in out["top5_names"].numpy()] == [
        [names[i] for i in row] for row in expected_top
    ]
    # The two images are classified differently enough for the equality tests to mean something.
    assert np.abs(probabilities[0] - probabilities[1]).max() > 0.05


def test_saved_model_equals_keras_model_on_the_same_preprocessed_input(run, served):
    _, _, model = run
    x = np.random.default_rng(3).uniform(0, 255, (4, 64, 64, 3)).astype(np.float32)
    got = served.signatures["serve_preprocessed"](image=tf.constant(x))["probabilities"].numpy()
    expected = keras_probabilities(model, x)
    assert expected.max() > 0.3  # far from uniform (0.1)
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_encoded_images_get_the_evaluation_preprocessing(run, served):
    _, config, model = run
    png_image, jpeg_image = random_image(90, 130, 4), random_image(100, 80, 5)
    jpeg = tf.io.encode_jpeg(jpeg_image, quality=90)
    decoded_jpeg = tf.io.decode_jpeg(jpeg, channels=3).numpy()
    got = served.serving_default(tf.constant([tf.io.encode_png(png_image).numpy(), jpeg.numpy()]))["probabilities"]
    # The same transform the evaluation pipeline applies (PNG is lossless: the original pixels).
    pipeline_png = next(iter(eval_pipeline(
        tf.data.Dataset.from_tensors((png_image, 0)), config.data, batch_size=1, cache=False)))[0].numpy()
    np.testing.assert_array_equal(pipeline_png[0], eval_preprocessed(png_image))
    expected = keras_probabilities(model, [pipeline_png[0], eval_preprocessed(decoded_jpeg)])
    np.testing.assert_allclose(got.numpy(), expected, atol=1e-5)


def test_gif_and_bmp_bytes_are_decoded_by_content(run, served):
    _, _, model = run
    bmp_image = random_image(7, 10, 6)
    got = served.serving_default(tf.constant([RED_GIF, bmp_bytes(bmp_image)]))["probabilities"].numpy()
    red = np.zeros((1, 1, 3), np.uint8)
    red[..., 0] = 255
    expected = keras_probabilities(model, [eval_preprocessed(red), eval_preprocessed(bmp_image)])
    np.testing.assert_allclose(got, expected, atol=1e-5)
    # The same pixels as a PNG give the same probabilities: only the pixels reach the model.
    png = tf.io.encode_png(bmp_image).numpy()
    as_png = served.serving_default(tf.constant([png]))["probabilities"].numpy()[0]
    np.testing.assert_allclose(as_png, got[1], atol=1e-6)


def test_undecodable_bytes_fail_the_call(served):
    with pytest.raises(tf.errors.InvalidArgumentError, match="Unknown image file format"):
        served.serving_default(tf.constant([b"this is not an image"]))


def test_class_names_are_inside_the_saved_model(run, served):
    run_dir, _, _ = run
    names = [n.decode() for n in served.signatures["class_names"]()["class_names"].numpy()]
    assert names == [f"class_{c}" for c in range(10)]
    assert (run_dir / LABELS_FILE).read_text().splitlines() == names


def test_top_k_is_capped_at_the_number_of_classes(tmp_path):
    run_dir = tmp_path / "three"
    make_run(run_dir, "data.num_classes=3")
    served = tf.saved_model.load(str(run_dir / "saved_model"))
    out = served.serving_default(tf.constant([tf.io.encode_png(random_image(64, 64)).numpy()]))
    assert out["probabilities"].shape == (1, 3)
    assert out["top5_indices"].shape == (1, 3) and out["top5_names"].shape == (1, 3)
    assert sorted(out["top5_indices"].numpy()[0].tolist()) == [0, 1, 2]


def test_loads_and_runs_without_project_code(run, served, tmp_path):
    run_dir, _, _ = run
    png_path = tmp_path / "image.png"
    png_path.write_bytes(tf.io.encode_png(random_image(80, 96, 7)).numpy())
    script = (
        "import json, sys\n"
        "import tensorflow as tf\n"
        f"served = tf.saved_model.load({str(run_dir / 'saved_model')!r})\n"
        f"data = open({str(png_path)!r}, 'rb').read()\n"
        "out = served.signatures['serving_default'](image_bytes=tf.constant([data]))\n"
        "names = served.signatures['class_names']()['class_names'].numpy().tolist()\n"
        "assert 'pipeline' not in sys.modules and 'model_defs' not in sys.modules, sorted(sys.modules)\n"
        "print(json.dumps({'probabilities': out['probabilities'].numpy().tolist(),\n"
        "                  'names': [n.decode() for n in names]}))\n"
    )
    # Run from an empty directory with no PYTHONPATH, so the project is not importable by accident.
    env = {"PATH": "/usr/bin:/bin", "TF_CPP_MIN_LOG_LEVEL": "3", "HOME": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["names"] == [f"class_{c}" for c in range(10)]
    expected = served.serving_default(tf.constant([png_path.read_bytes()]))["probabilities"].numpy()
    np.testing.assert_allclose(result["probabilities"], expected, atol=1e-6)


def test_class_count_must_match_the_model(run, tmp_path):
    _, _, model = run
    with pytest.raises(ValueError, match="10 outputs but 3 class names"):
        saved_model.export_saved_model(model, tmp_path / "sm", ["a", "b", "c"], 64, 72)
    assert not (tmp_path / "sm").exists()


@pytest.mark.slow
def test_training_run_exports_both_signatures(tmp_path):
    run_dir = tmp_path / "trained"
    training_run.train(load_config([], EXPORT_TINY), run_dir)
    model = keras.models.load_model(run_dir / "model.keras")
    served = tf.saved_model.load(str(run_dir / "saved_model"))
    assert set(served.signatures) == {"serving_default", "serve_preprocessed", "class_names"}
    names = [n.decode() for n in served.signatures["class_names"]()["class_names"].numpy()]
    assert names == (run_dir / LABELS_FILE).read_text().splitlines() == [f"class_{c}" for c in range(10)]
    x = np.random.default_rng(9).uniform(0, 255, (2, 64, 64, 3)).astype(np.float32)
    np.testing.assert_allclose(served.serve_preprocessed(x)["probabilities"].numpy(),
                               keras_probabilities(model, x), atol=1e-5)
