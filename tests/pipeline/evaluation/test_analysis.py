"""What the evaluation pictures show (pipeline.evaluation.analysis): predictions, confusion counts, per-class error,
confident mistakes, the sample spread over the classes, nearest neighbours; streamed batch by batch."""

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
    # It shows six images, as uint8, each with its own label and probabilities, and no more.
    items = samples.sample.items()
    shown_images, shown_labels, shown_probabilities = samples.shown()
    rows = [index for index, _, _, _ in items]
    assert len(rows) == 6 and len(set(rows)) == 6
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


# ---------------------------------------------------------------- the images shown, spread over the classes


def class_sorted(classes, per_class):
    """A split sorted by class, as a folder of class sub-folders is read; each image's pixels hold its row."""
    labels = np.repeat(np.arange(classes), per_class)
    images = np.arange(len(labels), dtype=np.float32)[:, None, None, None] * np.ones((len(labels), 1, 1, 3))
    probabilities = np.full((len(labels), classes), 1.0 / classes)
    return images % 256, labels, probabilities


def streamed(size, classes, seed, batch, data):
    images, labels, probabilities = data
    sample = analysis.ClassSpreadSample(size, classes, seed)
    most = 0
    for start in range(0, len(labels), batch):
        end = start + batch
        sample.add(images[start:end], labels[start:end], probabilities[start:end])
        most = max(most, sample.held)
    return sample, most


def expected_sample(size, classes, seed, labels):
    """The documented choice, made knowing the whole split: classes in key order, then images in key order, in turns."""
    image_keys = analysis.sample_keys(2 * np.arange(len(labels)) + 1, seed)
    class_keys = analysis.sample_keys(2 * np.arange(classes), seed)
    present = sorted(set(labels.tolist()), key=lambda c: class_keys[c])
    per_class = {c: sorted(np.flatnonzero(labels == c).tolist(), key=lambda i: image_keys[i]) for c in present}
    chosen = [per_class[c][turn] for turn in range(len(labels)) for c in present if turn < len(per_class[c])]
    return chosen[:size]


def test_a_class_sorted_split_shows_eight_different_classes_the_same_whatever_the_batch():
    data = class_sorted(classes=10, per_class=6)
    labels = data[1]
    sample, most = streamed(8, 10, seed=0, batch=7, data=data)
    rows = [index for index, _, _, _ in sample.items()]
    assert rows == expected_sample(8, 10, 0, labels)
    assert len({int(labels[i]) for i in rows}) == 8  # the first images of the split would all be class 0
    assert [label for _, _, label, _ in sample.items()] == labels[rows].tolist()
    assert [int(image[0, 0, 0]) for _, image, _, _ in sample.items()] == rows  # each image kept with its row
    assert most <= 16
    for batch in (1, 3, 60):
        assert [item[0] for item in streamed(8, 10, 0, batch, data)[0].items()] == rows, batch
    other = [item[0] for item in streamed(8, 10, 1, 7, data)[0].items()]
    assert other == expected_sample(8, 10, 1, labels) and other != rows  # another seed, another sample


def test_fewer_classes_than_images_take_turns_and_a_big_class_count_stays_bounded():
    data = class_sorted(classes=3, per_class=20)
    labels = data[1]
    sample, most = streamed(8, 3, seed=0, batch=5, data=data)
    rows = [item[0] for item in sample.items()]
    assert rows == expected_sample(8, 3, 0, labels)
    assert sorted(np.bincount(labels[rows], minlength=3).tolist()) == [2, 3, 3]  # in turns: 3, 3 and 2
    assert most <= 16
    many = class_sorted(classes=200, per_class=3)
    sample, most = streamed(8, 200, seed=5, batch=16, data=many)
    assert [item[0] for item in sample.items()] == expected_sample(8, 200, 5, many[1])
    assert most <= 16  # at most two images a sample place, however many classes and images pass


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
