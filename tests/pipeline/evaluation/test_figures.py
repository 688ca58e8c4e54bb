"""The evaluation's pictures (`pipeline.figures`): what each shows, the files and TensorBoard images
`python -m pipeline.evaluate` writes, and the conv1 kernel picture during training."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from pipeline import evaluate
from pipeline.config import load_config
from pipeline.data.pipelines import eval_pipeline
from pipeline.data.sources import load_source
from pipeline.evaluation import figures, pictures, scoring
from pipeline.training.backup import RunBackup
from pipeline.training.callbacks import CONV1_KERNELS_TAG, Conv1Kernels
from pipeline.training.model import build_model
from tests.helpers.runs import TINY, make_run, run_callbacks


def image_summaries(log_dir, tag):
    """(steps, decoded images, description) of the image summary `tag` in `log_dir`."""
    acc = EventAccumulator(str(log_dir), size_guidance={"tensors": 0})
    acc.Reload()
    if tag not in acc.Tags()["tensors"]:
        return [], [], None
    events = acc.Tensors(tag)
    # An image summary's tensor holds [width, height, PNG of each image].
    images = [tf.image.decode_png(tf.make_ndarray(e.tensor_proto)[2]).numpy() for e in events]
    return [e.step for e in events], images, acc.SummaryMetadata(tag).summary_description


# ---------------------------------------------------------------- conv1 kernels


def test_each_kernel_is_scaled_by_its_own_min_and_max():
    kernels = np.zeros((3, 1, 2, 1))
    kernels[0, 0, :, 0] = [-2.0, 2.0]
    kernels[1, 0, :, 0] = [10.0, 30.0]
    kernels[2, 0, :, 0] = [7.0, 7.0]  # constant
    scaled = figures.scale_each(kernels)
    np.testing.assert_array_equal(scaled[:, 0, :, 0], [[0.0, 1.0], [0.0, 1.0], [0.5, 0.5]])


def test_kernel_i_of_tower_t_lands_at_row_i_div_columns_of_block_t():
    kernel = np.random.default_rng(0).normal(size=(11, 11, 3, 96)).astype(np.float32)
    blocks = figures.kernel_blocks(kernel, groups=2, columns=16)
    assert blocks.shape == (2, 3, 16, 11, 11, 3)  # the paper's Figure 3: two blocks of 3 x 16
    scaled = figures.scale_each(np.moveaxis(kernel, -1, 0))
    for tower in range(2):
        for i in range(48):
            np.testing.assert_array_equal(blocks[tower, i // 16, i % 16], scaled[48 * tower + i])
    assert blocks.min() == 0.0 and blocks.max() == 1.0

    one = figures.kernel_blocks(kernel, groups=1, columns=16)
    assert one.shape == (1, 6, 16, 11, 11, 3)
    np.testing.assert_array_equal(one[0, 3, 2], scaled[50])  # 50 = 3 * 16 + 2


def test_tiles_of_a_block_and_the_empty_cells():
    kernel = np.random.default_rng(1).normal(size=(3, 3, 3, 20))
    blocks = figures.kernel_blocks(kernel, groups=2, columns=4)  # 10 kernels a tower: 3 rows of 4, 2 cells empty
    assert blocks.shape == (2, 3, 4, 3, 3, 3)
    assert np.isnan(blocks[1, 2, 2:]).all() and not np.isnan(blocks[1, 2, :2]).any()
    image = figures.tile_block(blocks[1], border=1, fill=1.0)
    assert image.shape == (3 * 4 + 1, 4 * 4 + 1, 3)
    scaled = figures.scale_each(np.moveaxis(kernel, -1, 0))
    # Kernel 6 of the second tower (conv1 map 16): row 1, column 2, top-left pixel at (1 + 4, 1 + 8).
    np.testing.assert_array_equal(image[5:8, 9:12], scaled[16])
    assert (image[9:12, 9:16] == 1.0).all()  # the empty cells
    assert (image[0] == 1.0).all() and (image[:, 4] == 1.0).all()  # border and gap


# ---------------------------------------------------------------- predictions, confusion, per-class error


def test_top_k_and_predicted_classes_with_a_tie():
    probabilities = np.array([[0.1, 0.6, 0.3], [0.4, 0.4, 0.2], [0.2, 0.3, 0.5]])
    classes, scores = figures.top_k(probabilities, k=2)
    np.testing.assert_array_equal(classes, [[1, 2], [0, 1], [2, 1]])
    np.testing.assert_array_equal(scores, [[0.6, 0.3], [0.4, 0.4], [0.5, 0.3]])
    # Row 1's true class 1 ties with class 0 for the highest score: a hit, as top_k_hits counts it.
    labels = np.array([2, 1, 2])
    np.testing.assert_array_equal(figures.predicted_classes(probabilities, labels), [1, 1, 2])
    assert scoring.top_k_hits(probabilities, labels, 1) == 2


def test_confusion_rows_sum_to_the_class_counts_and_the_diagonal_counts_the_hits():
    rng = np.random.default_rng(2)
    labels = rng.integers(0, 5, 40)
    probabilities = rng.dirichlet(np.ones(5), 40)
    probabilities[:10, :] = 0.2  # all tied: counted right
    images = rng.uniform(0, 255, (40, 4, 4, 3))
    samples = figures.EvaluationSamples(5, keep_first=6, mistakes=4)
    for start in range(0, 40, 16):  # batches of 16, 16, 8
        samples.add(images[start : start + 16], labels[start : start + 16], probabilities[start : start + 16])
    np.testing.assert_array_equal(samples.confusion.sum(axis=1), np.bincount(labels, minlength=5))
    assert samples.confusion.trace() == scoring.top_k_hits(probabilities, labels, 1)
    predictions = figures.predicted_classes(probabilities, labels)
    expected = np.zeros((5, 5), np.int64)
    for label, predicted in zip(labels, predictions):
        expected[label, predicted] += 1
    np.testing.assert_array_equal(samples.confusion, expected)
    # It keeps the first six images, as uint8, and no more.
    np.testing.assert_array_equal(np.stack(samples.first_images), figures.to_uint8(images[:6]))
    assert samples.first_labels == labels[:6].tolist()
    np.testing.assert_array_equal(np.stack(samples.first_probabilities), probabilities[:6])


def test_per_class_error_worst_first_with_exact_values():
    confusion = np.array(
        [
            [3, 1, 0, 0, 0, 0],  # class 0: 4 images, 3 right -> 0.25
            [1, 0, 0, 1, 0, 0],  # class 1: 2 images, none right -> 1.0
            [0, 0, 0, 0, 0, 0],  # class 2: no images -> left out
            [0, 1, 0, 2, 1, 0],  # class 3: 4 images, 2 right -> 0.5
            [0, 0, 0, 0, 1, 0],  # class 4: 1 image, right -> 0.0
            [0, 0, 0, 1, 0, 3],  # class 5: 4 images, 3 right -> 0.25, after class 0
        ]
    )
    classes, errors, counts = figures.per_class_error(confusion)
    assert classes.tolist() == [1, 3, 0, 5, 4]
    assert errors.tolist() == [1.0, 0.5, 0.25, 0.25, 0.0]
    assert counts.tolist() == [2, 4, 4, 4, 1]


def test_confident_mistakes_are_only_mistakes_most_confident_first_and_bounded():
    labels = np.array([0, 1, 2, 0, 1, 2, 0])
    probabilities = np.array(
        [
            [0.9, 0.05, 0.05],  # right
            [0.7, 0.2, 0.1],  # wrong, 0.7
            [0.1, 0.8, 0.1],  # wrong, 0.8
            [0.3, 0.6, 0.1],  # wrong, 0.6
            [0.1, 0.1, 0.8],  # wrong, 0.8 (after row 2)
            [0.2, 0.2, 0.6],  # right
            [0.5, 0.5, 0.0],  # tied with the true class: right
        ]
    )
    assert figures.confident_mistakes(labels, probabilities, 10).tolist() == [2, 4, 1, 3]
    assert figures.confident_mistakes(labels, probabilities, 3).tolist() == [2, 4, 1]

    images = np.arange(7, dtype=np.float32)[:, None, None, None] * np.ones((7, 2, 2, 3), np.float32)
    heap = figures.ConfidentMistakes(limit=3)
    for start in range(0, 7, 2):  # streamed in batches of 2
        heap.add(images[start : start + 2], labels[start : start + 2], probabilities[start : start + 2])
    items = heap.items()
    assert [(confidence, index, label, predicted) for confidence, index, _, label, predicted in items] == [
        (0.8, 2, 2, 1),
        (0.8, 4, 1, 2),
        (0.7, 1, 1, 0),
    ]
    assert [int(image[0, 0, 0]) for _, _, image, _, _ in items] == [2, 4, 1]  # each image kept with its row


# ---------------------------------------------------------------- nearest neighbours


def test_nearest_neighbours_of_a_pool_vector_is_itself_at_distance_zero():
    pool = np.random.default_rng(3).normal(size=(20, 32)).astype(np.float32)
    indices, distances = figures.nearest_neighbours(pool[[3, 7]], pool, k=4)
    assert indices[:, 0].tolist() == [3, 7]
    assert distances[:, 0].tolist() == [0.0, 0.0]
    expected = np.sqrt(((pool[None, [3, 7]] - pool[:, None]) ** 2).sum(-1)).T  # [2, 20]
    np.testing.assert_allclose(distances, np.sort(expected, axis=1)[:, :4], rtol=1e-6)

    # Streamed in batches of 6 (images are kept with their pool index), the same neighbours.
    search = figures.NeighbourSearch(pool[[3, 7]], k=4)
    images = np.arange(20)[:, None, None, None] * np.ones((20, 2, 2, 3))
    for start in range(0, 20, 6):
        search.add(pool[start : start + 6], images[start : start + 6], np.arange(start, min(start + 6, 20)) % 5)
    assert search.pool_size == 20
    for row, best in zip(indices, search.results()):
        assert [index for _, index, _, _ in best] == row.tolist()
        assert [int(image[0, 0, 0]) for _, _, image, _ in best] == row.tolist()
        assert [label for _, _, _, label in best] == (row % 5).tolist()


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
        np.testing.assert_array_equal(image, figures.to_uint8(queries[[0, 5, 11].index(query)]))


def test_ten_crop_evaluation_shows_the_centre_view(run):
    _, config, model = run
    source = load_source(config.data, config.seed)
    shown = {}
    for crops in (1, 10):
        samples = figures.EvaluationSamples(10, keep_first=8)
        dataset = eval_pipeline(source.validation, config.data, 3, crops=crops)
        result = scoring.evaluate_model(model, dataset, crops, 10, verbose=0, samples=samples)
        assert samples.confusion.sum() == 8
        assert samples.confusion.trace() == round((1 - result["top1_error"]) * 8)
        shown[crops] = np.stack(samples.first_images)
    assert shown[1].shape == (8, 64, 64, 3)
    # Synthetic images are resize x resize squares: the centre of the ten crops is the centre crop.
    np.testing.assert_array_equal(shown[10], shown[1])


# ---------------------------------------------------------------- the evaluate command


def test_evaluate_writes_six_pictures_and_tensorboard_images(run, capsys):
    run_dir = run[0]
    assert evaluate.main([str(run_dir), "--batch-size", "3", "--neighbour-pool", "5"]) == 0
    out = capsys.readouterr().out
    assert "Searching 5 training images for the nearest neighbours in fc7 space" in out
    names = [f"{name}.png" for name in figures.FIGURE_NAMES]
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

    for name in figures.FIGURE_NAMES:
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
    pictures = {np.asarray(Image.open(run_dir / "figures" / name).convert("RGB")).tobytes() for name in names}
    assert len(pictures) == 6


def test_no_figures_and_a_bad_pool(run, tmp_path, capsys):
    config, _ = make_run(tmp_path / "other")
    assert evaluate.main([str(tmp_path / "other"), "--no-figures"]) == 0
    assert not (tmp_path / "other" / "figures").exists()
    assert json.loads((tmp_path / "other" / "eval_validation_1.json").read_text())["figure_files"] == []
    assert image_summaries(tmp_path / "other" / "logs" / "eval", "conv1_kernels") == ([], [], None)
    assert "/figures/" not in capsys.readouterr().out

    assert evaluate.main([str(run[0]), "--neighbour-pool", "0"]) == 2
    assert capsys.readouterr().err == "error: --neighbour-pool must be at least 1, got 0\n"


# ---------------------------------------------------------------- conv1 kernels during training


def test_training_callback_draws_the_kernels_at_step_0_and_every_few_epochs(tmp_path):
    config = load_config([], TINY)
    model = build_model(config, 8)
    model.compile(optimizer=keras.optimizers.SGD(0.05),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    initial = model.get_layer("conv1").get_weights()[0]
    rng = np.random.default_rng(4)
    images = rng.uniform(0, 255, (8, 64, 64, 3)).astype(np.float32)
    labels = np.arange(8) % 8
    callback = Conv1Kernels(str(tmp_path), every=2, epochs=3, groups=2)
    model.fit(images, labels, batch_size=8, epochs=3, callbacks=[callback], verbose=0)
    final = model.get_layer("conv1").get_weights()[0]
    assert np.abs(final - initial).max() > 0  # training moved the kernels

    steps, pictures, description = image_summaries(tmp_path / "train", CONV1_KERNELS_TAG)
    assert steps == [0, 2, 3]  # the start, every 2nd epoch, the last
    expected_first = figures.rgb_array(figures.render_kernels(initial, 2, title="conv1 kernels after 0 epochs"))
    expected_last = figures.rgb_array(figures.render_kernels(final, 2, title="conv1 kernels after 3 epochs"))
    np.testing.assert_array_equal(pictures[0], expected_first)
    np.testing.assert_array_equal(pictures[2], expected_last)
    assert not np.array_equal(pictures[0], pictures[2])
    assert "one block per tower" in description

    resumed = tmp_path / "resumed"
    callback = Conv1Kernels(str(resumed), every=2, epochs=3, groups=2, at_start=False)
    model.fit(images, labels, batch_size=8, epochs=3, initial_epoch=1, callbacks=[callback], verbose=0)
    assert image_summaries(resumed / "train", CONV1_KERNELS_TAG)[0] == [2, 3]


def test_only_the_chief_draws_the_kernels_and_a_resumed_run_skips_step_0(tmp_path):
    config = load_config([], TINY + ["model.groups=1", "train.epochs=7"])
    batch = (np.zeros((2, 64, 64, 3), np.float32), np.zeros(2, np.int32))

    def kernels(backup, first_batch):
        callbacks = run_callbacks(config, tmp_path / "logs", 32, 2, 0.01, backup, 0, first_batch=first_batch)
        assert isinstance(callbacks[-1], RunBackup)
        return [c for c in callbacks if isinstance(c, Conv1Kernels)]

    (chief,) = kernels(RunBackup(tmp_path / "fresh"), batch)
    assert (chief.every, chief.epochs, chief.groups, chief.at_start) == (5, 7, 1, True)
    assert kernels(RunBackup(tmp_path / "fresh"), None) == []
    resumed = tmp_path / "resumed"
    resumed.mkdir()
    (resumed / RunBackup.STATE_FILE).write_text(json.dumps({"epoch": 1}))
    (again,) = kernels(RunBackup(resumed), batch)
    assert again.at_start is False
