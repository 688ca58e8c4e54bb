"""What the evaluation pictures show (pipeline.evaluation.analysis): predictions, confusion counts, per-class error,
confident mistakes, nearest neighbours; streamed batch by batch."""

import numpy as np

from pipeline.evaluation import analysis, scoring
from pipeline.evaluation.images import to_uint8

# ---------------------------------------------------------------- predictions, confusion, per-class error


def test_top_k_and_predicted_classes_with_a_tie():
    probabilities = np.array([[0.1, 0.6, 0.3], [0.4, 0.4, 0.2], [0.2, 0.3, 0.5]])
    classes, scores = analysis.top_k(probabilities, k=2)
    np.testing.assert_array_equal(classes, [[1, 2], [0, 1], [2, 1]])
    np.testing.assert_array_equal(scores, [[0.6, 0.3], [0.4, 0.4], [0.5, 0.3]])
    # Row 1's true class 1 ties with class 0 for the highest score: a hit, as top_k_hits counts it.
    labels = np.array([2, 1, 2])
    np.testing.assert_array_equal(analysis.predicted_classes(probabilities, labels), [1, 1, 2])
    assert scoring.top_k_hits(probabilities, labels, 1) == 2


def test_confusion_rows_sum_to_the_class_counts_and_the_diagonal_counts_the_hits():
    rng = np.random.default_rng(2)
    labels = rng.integers(0, 5, 40)
    probabilities = rng.dirichlet(np.ones(5), 40)
    probabilities[:10, :] = 0.2  # all tied: counted right
    images = rng.uniform(0, 255, (40, 4, 4, 3))
    samples = analysis.EvaluationSamples(5, shown=6, mistakes=4)
    for start in range(0, 40, 16):  # batches of 16, 16, 8
        samples.add(images[start : start + 16], labels[start : start + 16], probabilities[start : start + 16])
    np.testing.assert_array_equal(samples.confusion.sum(axis=1), np.bincount(labels, minlength=5))
    assert samples.confusion.trace() == scoring.top_k_hits(probabilities, labels, 1)
    predictions = analysis.predicted_classes(probabilities, labels)
    expected = np.zeros((5, 5), np.int64)
    for label, predicted in zip(labels, predictions):
        expected[label, predicted] += 1
    np.testing.assert_array_equal(samples.confusion, expected)
    # It keeps the first six images, as uint8, and no more.
    shown_images, shown_labels, shown_probabilities = samples.shown()
    rows = list(range(6))
    np.testing.assert_array_equal(np.stack(shown_images), to_uint8(images[rows]))
    assert shown_labels == labels[rows].tolist()
    np.testing.assert_array_equal(np.stack(shown_probabilities), probabilities[rows])
    assert len(samples.mistakes.items()) == 4


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
    classes, errors, counts = analysis.per_class_error(confusion)
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
    assert analysis.confident_mistakes(labels, probabilities, 10).tolist() == [2, 4, 1, 3]
    assert analysis.confident_mistakes(labels, probabilities, 3).tolist() == [2, 4, 1]

    images = np.arange(7, dtype=np.float32)[:, None, None, None] * np.ones((7, 2, 2, 3), np.float32)
    heap = analysis.ConfidentMistakes(limit=3)
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
    indices, distances = analysis.nearest_neighbours(pool[[3, 7]], pool, k=4)
    assert indices[:, 0].tolist() == [3, 7]
    assert distances[:, 0].tolist() == [0.0, 0.0]
    expected = np.sqrt(((pool[None, [3, 7]] - pool[:, None]) ** 2).sum(-1)).T  # [2, 20]
    np.testing.assert_allclose(distances, np.sort(expected, axis=1)[:, :4], rtol=1e-6)

    # Streamed in batches of 6 (images are kept with their pool index), the same neighbours.
    search = analysis.NeighbourSearch(pool[[3, 7]], k=4)
    images = np.arange(20)[:, None, None, None] * np.ones((20, 2, 2, 3))
    for start in range(0, 20, 6):
        search.add(pool[start : start + 6], images[start : start + 6], np.arange(start, min(start + 6, 20)) % 5)
    assert search.pool_size == 20
    for row, best in zip(indices, search.results()):
        assert [index for _, index, _, _ in best] == row.tolist()
        assert [int(image[0, 0, 0]) for _, _, image, _ in best] == row.tolist()
        assert [label for _, _, _, label in best] == (row % 5).tolist()
