"""What the evaluation pictures show, computed with NumPy in one streamed pass over a split.

Top-k predictions, confusion counts, per-class error, the most confident
mistakes, and the nearest neighbours in fc7 space. The streaming helpers
(`EvaluationSamples`, `ConfidentMistakes`, `NeighbourSearch`) keep running
counts and a bounded number of images, so an evaluation's memory does not grow
with the split. `pipeline.evaluation.drawing` draws the results.
"""

import heapq

import numpy as np

from pipeline.evaluation.images import to_uint8

# The paper's Figure 4 shows eight images with their top-5 labels and five queries with six neighbours each.
TOP5_IMAGES = 8
NEIGHBOUR_QUERIES = 5
NEIGHBOURS = 6
CONFIDENT_MISTAKES = 16


# ---------------------------------------------------------------- predictions


def top_k(probabilities, k=5):
    """The k highest scores of each row, highest first (a tie goes to the lower class index).

    Args:
        probabilities: [N, classes].
        k: how many; at most the number of classes.

    Returns:
        (classes [N, k] int, scores [N, k] float).
    """
    probabilities = np.asarray(probabilities)
    k = min(k, probabilities.shape[-1])
    order = np.argsort(-probabilities, axis=-1, kind="stable")[:, :k]
    return order, np.take_along_axis(probabilities, order, axis=-1)


def predicted_classes(probabilities, labels):
    """Each row's predicted class; a true class tied with the highest score counts as predicted.

    That is how `pipeline.evaluation.scoring.top_k_hits` counts a tie (as `tf.math.in_top_k`),
    so the confusion matrix's diagonal holds exactly the top-1 hits.

    Args:
        probabilities: [N, classes].
        labels: [N] true classes.

    Returns:
        int64 [N].
    """
    probabilities = np.asarray(probabilities)
    labels = np.asarray(labels, np.int64)
    best = np.argmax(probabilities, axis=-1)
    own = probabilities[np.arange(len(labels)), labels]
    return np.where(own >= probabilities.max(axis=-1), labels, best)


# ---------------------------------------------------------------- errors per class, confusion matrix


def confusion_counts(labels, predictions, num_classes):
    """Confusion matrix of one batch: entry [t, p] counts images of class t predicted as p.

    Args:
        labels: [N] true classes.
        predictions: [N] predicted classes.
        num_classes: matrix size.

    Returns:
        int64 [num_classes, num_classes]; row t sums to the images of class t.
    """
    index = np.asarray(labels, np.int64) * num_classes + np.asarray(predictions, np.int64)
    return np.bincount(index, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def per_class_error(confusion):
    """Top-1 error of every class that has images, worst first.

    Args:
        confusion: [classes, classes] counts (rows: true class).

    Returns:
        (classes, errors, counts): int [M], float [M], int [M] for the M classes
        with at least one image, sorted by error, highest first; equal errors in
        class order.
    """
    confusion = np.asarray(confusion)
    counts = confusion.sum(axis=1)
    present = np.flatnonzero(counts)
    errors = 1.0 - np.diag(confusion)[present] / counts[present]
    order = np.argsort(-errors, kind="stable")
    return present[order], errors[order], counts[present][order]


# ---------------------------------------------------------------- confident mistakes


def confident_mistakes(labels, probabilities, limit):
    """Which images are the most confidently misclassified: wrong ones by predicted probability, highest first.

    Args:
        labels: [N] true classes.
        probabilities: [N, classes].
        limit: most images returned.

    Returns:
        int [<= limit] row indices; equal confidences in row order.
    """
    probabilities = np.asarray(probabilities)
    wrong = np.flatnonzero(predicted_classes(probabilities, labels) != np.asarray(labels))
    confidence = probabilities[wrong].max(axis=-1)
    return wrong[np.argsort(-confidence, kind="stable")[:limit]]


class ConfidentMistakes:
    """A bounded heap of the most confidently misclassified images met so far (streaming `confident_mistakes`).

    Args:
        limit: images kept.
    """

    def __init__(self, limit=CONFIDENT_MISTAKES):
        self.limit = limit
        self._heap = []  # (confidence, -serial, serial, image, label, predicted): the least confident on top
        self._seen = 0

    def add(self, images, labels, probabilities):
        """Offers one batch: images [B, H, W, 3] (0-255, kept as uint8), labels [B], probabilities [B, classes]."""
        probabilities = np.asarray(probabilities)
        predictions = predicted_classes(probabilities, labels)
        for i in confident_mistakes(labels, probabilities, self.limit):
            serial = self._seen + int(i)
            # -serial: of two equal confidences the earlier image ranks higher (and is kept).
            confidence = float(probabilities[i].max())
            item = (confidence, -serial, serial, to_uint8(images[i]), int(labels[i]), int(predictions[i]))
            if len(self._heap) < self.limit:
                heapq.heappush(self._heap, item)
            elif item[:2] > self._heap[0][:2]:
                heapq.heapreplace(self._heap, item)
        self._seen += len(labels)

    def items(self):
        """The kept mistakes, most confident first.

        Returns:
            A list of (confidence, index in the split, image, label, predicted).
        """
        ranked = sorted(self._heap, key=lambda item: item[:2], reverse=True)
        return [(item[0],) + item[2:] for item in ranked]


# ---------------------------------------------------------------- the images of one pass


class EvaluationSamples:
    """What the evaluation pictures need from one pass over a split, in bounded memory.

    Keeps the running confusion matrix, the split's first `shown` images
    (shown with their top-5 predictions; the first of them are the
    nearest-neighbour queries) and the `ConfidentMistakes`. Images are stored
    as uint8.

    Args:
        num_classes: the model's classes.
        shown: how many of the split's first images to keep.
        mistakes: how many confident mistakes to keep.
    """

    def __init__(self, num_classes, shown=TOP5_IMAGES, mistakes=CONFIDENT_MISTAKES):
        self.num_classes = num_classes
        self.size = shown
        self.confusion = np.zeros((num_classes, num_classes), np.int64)
        self.mistakes = ConfidentMistakes(mistakes)
        self._first = []  # (image, label, probabilities)

    def add(self, images, labels, probabilities):
        """Takes one batch: images [B, H, W, 3] on the 0-255 scale, labels [B], probabilities [B, classes]."""
        labels = np.asarray(labels).reshape(-1)
        probabilities = np.asarray(probabilities)
        self.confusion += confusion_counts(labels, predicted_classes(probabilities, labels), self.num_classes)
        room = self.size - len(self._first)
        if room > 0:  # only the images kept are converted: a whole batch each step would cost time
            self._first += zip(to_uint8(images[:room]), labels[:room].tolist(), probabilities[:room])
        self.mistakes.add(images, labels, probabilities)

    def shown(self):
        """The images shown, their labels and probabilities: three lists."""
        return [item[0] for item in self._first], [item[1] for item in self._first], [item[2] for item in self._first]


# ---------------------------------------------------------------- nearest neighbours (paper, Figure 4 right)


def euclidean_distances(queries, pool):
    """Euclidean distance of every query to every pool vector.

    Computed from the differences (not |q|^2 + |p|^2 - 2 q.p), so a vector's
    distance to itself is exactly 0.

    Args:
        queries: [Q, D].
        pool: [P, D].

    Returns:
        float64 [Q, P].
    """
    queries = np.asarray(queries, np.float64)
    pool = np.asarray(pool, np.float64)
    if not len(queries):
        return np.zeros((0, len(pool)))
    return np.stack([np.sqrt(((pool - query) ** 2).sum(axis=-1)) for query in queries])


def nearest_neighbours(queries, pool, k=NEIGHBOURS):
    """The k pool vectors nearest to each query (Euclidean), nearest first; equal distances in pool order.

    Args:
        queries: [Q, D] feature vectors.
        pool: [P, D] feature vectors.
        k: neighbours per query (at most P).

    Returns:
        (indices [Q, k] int, distances [Q, k] float64).
    """
    distances = euclidean_distances(queries, pool)
    order = np.argsort(distances, axis=-1, kind="stable")[:, :k]
    return order, np.take_along_axis(distances, order, axis=-1)


class NeighbourSearch:
    """The nearest pool images of each query, over a pool streamed batch by batch.

    Only the k best (distance, image, label) of each query are kept, not the
    pool's features or images.

    Args:
        queries: [Q, D] query feature vectors (fc7 activations).
        k: neighbours per query.
    """

    def __init__(self, queries, k=NEIGHBOURS):
        self.queries = np.asarray(queries)
        self.k = k
        self._best = [[] for _ in range(len(self.queries))]  # per query: (distance, pool index, image, label)
        self._seen = 0

    def add(self, features, images, labels):
        """Offers one batch of the pool: features [B, D], images [B, H, W, 3] (0-255), labels [B]."""
        features = np.asarray(features)
        if len(features):
            indices, distances = nearest_neighbours(self.queries, features, self.k)
            images = to_uint8(images)
            for best, rows, values in zip(self._best, indices, distances):
                best.extend((float(d), self._seen + int(i), images[i], int(labels[i])) for i, d in zip(rows, values))
                best.sort(key=lambda item: item[:2])
                del best[self.k :]
        self._seen += len(features)

    @property
    def pool_size(self):
        """Pool images searched so far."""
        return self._seen

    def results(self):
        """Per query, its neighbours nearest first: a list of lists of (distance, pool index, image, label)."""
        return [list(best) for best in self._best]
