"""The evaluation's pictures (pipeline.evaluation.pictures): fc7 features and the neighbour search on a run, the
centre view of ten crops, the images shown, and the files and TensorBoard images `python -m pipeline.evaluate`
writes."""

import json

import keras
import numpy as np
import pytest
from PIL import Image

from pipeline import evaluate
from pipeline.data.pipelines import eval_pipeline
from pipeline.data.sources import load_source
from pipeline.evaluation import analysis, drawing, evaluator, pictures, scoring
from pipeline.evaluation.images import to_uint8
from tests.helpers.runs import image_summaries, make_run


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("runs") / "tiny"
    config, model = make_run(run_dir)  # 16 training, 8 validation images, 10 classes
    return run_dir, config, model


def test_a_training_image_is_its_own_nearest_neighbour_in_fc7_space(run):
    _, config, model = run
    source = load_source(config.data, config.seed)
    pool = eval_pipeline(source.train, config.data, 8)
    queries = np.concatenate([images.numpy() for images, _ in pool])[[0, 5, 11]]
    extract = pictures.feature_extractor(model)
    fc7 = keras.Model(model.input, model.get_layer("fc7").output)(queries, training=False).numpy()
    np.testing.assert_allclose(extract(queries), fc7, rtol=1e-5, atol=1e-7)  # graph vs eager rounding
    assert extract(queries).shape == (3, 32) and (fc7 >= 0).all()  # fc_units wide, after the ReLU
    search = pictures.search_neighbours(extract, queries, pool, k=3)
    assert search.pool_size == 16
    for query, best in zip((0, 5, 11), search.results()):
        distance, index, image, _ = best[0]
        assert index == query
        # 0 up to float32 rounding: the queries ran as a batch of 3, the pool as batches of 8, and the
        # matrix products round differently with the batch size (measured: 2e-6 of the next distance).
        assert distance < 1e-4 * best[1][0]
        np.testing.assert_array_equal(image, to_uint8(queries[[0, 5, 11].index(query)]))


def test_ten_crop_evaluation_shows_the_centre_view(run):
    _, config, model = run
    source = load_source(config.data, config.seed)
    shown = {}
    for crops in (1, 10):
        samples = analysis.EvaluationSamples(10, shown=8)
        dataset = eval_pipeline(source.validation, config.data, 3, crops=crops)
        result = scoring.evaluate_model(model, dataset, crops, 10, verbose=0, samples=samples)
        assert samples.confusion.sum() == 8
        assert samples.confusion.trace() == round((1 - result["top1_error"]) * 8)
        shown[crops] = np.stack(samples.shown()[0])
    assert shown[1].shape == (8, 64, 64, 3)
    # Synthetic images are resize x resize squares: the centre of the ten crops is the centre crop.
    np.testing.assert_array_equal(shown[10], shown[1])


# ---------------------------------------------------------------- the evaluate command


def test_evaluate_writes_six_pictures_and_tensorboard_images(run, capsys):
    run_dir = run[0]
    assert evaluate.main([str(run_dir), "--batch-size", "3", "--neighbour-pool", "5"]) == 0
    out = capsys.readouterr().out
    assert "Searching 5 training images for the nearest neighbours in fc7 space" in out
    names = [f"{name}.png" for name in pictures.PICTURES]
    assert names == [
        "conv1_kernels.png",
        "top5_predictions.png",
        "nearest_neighbours.png",
        "per_class_error.png",
        "confusion_matrix.png",
        "confident_mistakes.png",
    ]
    for name in names:
        assert f"Wrote {run_dir / 'figures' / name}\n" in out
    assert sorted(p.name for p in (run_dir / "figures").iterdir()) == sorted(names)  # no temporary file left
    saved = json.loads((run_dir / "eval_validation_1.json").read_text())
    assert saved["figure_files"] == [f"figures/{name}" for name in names]

    for name in pictures.PICTURES:
        with Image.open(run_dir / "figures" / f"{name}.png") as png:
            png.load()
            assert png.format == "PNG"
            width, height = png.size
        assert 300 <= width <= 2000 and 300 <= height <= 2000, (name, png.size)
        steps, images, description = image_summaries(run_dir / "logs" / "eval", name)
        assert steps == [1]  # train.epochs of the run, beside the error scalars
        assert images[0].shape == (height, width, 3)  # the same picture as the file
        assert "8 validation images of synthetic, centre crop; nearest neighbours among 5 training" in description
    # The pictures differ from one another (each drew its own content).
    drawn = {np.asarray(Image.open(run_dir / "figures" / name).convert("RGB")).tobytes() for name in names}
    assert len(drawn) == 6


def test_no_figures_and_a_bad_pool(run, tmp_path, capsys):
    config, _ = make_run(tmp_path / "other")
    assert evaluate.main([str(tmp_path / "other"), "--no-figures"]) == 0
    assert not (tmp_path / "other" / "figures").exists()
    assert json.loads((tmp_path / "other" / "eval_validation_1.json").read_text())["figure_files"] == []
    assert image_summaries(tmp_path / "other" / "logs" / "eval", "conv1_kernels") == ([], [], None)
    assert "/figures/" not in capsys.readouterr().out

    assert evaluate.main([str(run[0]), "--neighbour-pool", "0"]) == 2
    assert capsys.readouterr().err == "error: --neighbour-pool must be at least 1, got 0\n"


def test_a_class_sorted_folder_shows_images_of_eight_classes_the_same_each_time(run, tmp_path, monkeypatch):
    from tests.helpers.images import jpeg_bytes, write_tree

    # Read in class order, as every folder of class sub-folders is: the split's first 8 images hold 3 classes.
    # The run's class names (synthetic data): another dataset with the same classes.
    layout = {f"validation/class_{c}/{i}.jpg": jpeg_bytes(seed=10 * c + i) for c in range(10) for i in range(3)}
    layout.update({f"train/class_{c}/0.jpg": jpeg_bytes(seed=c) for c in range(10)})
    write_tree(tmp_path / "photos", layout)
    shown = []

    def top5(images, labels, probabilities, class_names, k=5):
        shown.append(("top5", list(labels), [image.tobytes() for image in images]))
        return drawing.render_mistakes([], class_names)

    def neighbours(queries, query_labels, found, class_names, split="validation"):
        shown.append(("neighbours", list(query_labels), [image.tobytes() for image in queries]))
        return drawing.render_mistakes([], class_names)

    monkeypatch.setattr(drawing, "render_top5", top5)
    monkeypatch.setattr(drawing, "render_neighbours", neighbours)
    for batch_size in (4, 7):
        evaluator.evaluate_run(run[0], batch_size=batch_size, overrides=[f"data.source=folder:{tmp_path / 'photos'}"],
                               verbose=0, neighbour_pool=3)  # fmt: skip
    (_, labels, images), (_, queries, query_images) = shown[:2]
    assert len(labels) == 8 and len(set(labels)) == 8
    assert queries == labels[:5] and query_images == images[:5]  # the neighbour queries: the first five shown
    assert shown[2:] == shown[:2]  # another batch size, the same pictures
