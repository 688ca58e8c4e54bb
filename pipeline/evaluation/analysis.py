"""What the evaluation pictures show, computed with NumPy in one streamed pass over a split.

Top-k predictions, confusion counts, per-class error, the most confident
mistakes, a sample of images spread over the classes, and the nearest
neighbours in fc7 space. The streaming helpers (`EvaluationSamples`,
`ClassSpreadSample`, `ConfidentMistakes`, `NeighbourSearch`) keep running
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


# ---------------------------------------------------------------- images spread over the classes


def sample_keys(values, seed):
    """A fixed pseudo-random uint64 key for each non-negative integer and seed (splitmix64's mixing function).

    Args:
        values: int array-like.
        seed: int.

    Returns:
        uint64 array shaped like `values`.
    """
    z = np.asarray(values, np.uint64) + np.uint64(0x9E3779B97F4A7C15) * np.asarray(seed + 1, np.uint64)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


class ClassSpreadSample:
    """A sample of a streamed split's images spread over its classes; the same sample for the same split and seed.

    Image i of the split (in stream order) has the key `sample_keys(2 i + 1, seed)`,
    class c the key `sample_keys(2 c, seed)`. Classes are taken in key order,
    each with its images in key order: the sample is the first image of each
    class, then the second of each, and so on, from classes with images only,
    until `size` images. So `size` or more classes give one image of each of
    the `size` first classes, whatever the split's order by class and the batch
    size. At most about 2 x `size` images are held.

    Args:
        size: images in the sample.
        num_classes: the model's classes.
        seed: picks the classes and the images.
    """

    def __init__(self, size, num_classes, seed=0):
        self.size = size
        self.seed = seed
        self._class_keys = sample_keys(2 * np.arange(num_classes), seed)
        self._kept = {}  # class -> [(image key, index, image, probabilities)], lowest key first
        self._seen = 0

    def add(self, images, labels, probabilities):
        """Offers one batch: images [B, H, W, 3] (0-255, kept as uint8), labels [B], probabilities [B, classes]."""
        labels = np.asarray(labels).reshape(-1)
        keys = sample_keys(2 * np.arange(self._seen, self._seen + len(labels)) + 1, self.seed)
        for i, (label, key) in enumerate(zip(labels.tolist(), keys)):
            if self._admit(label, key):
                entries = self._kept[label]
                entries.append((key, self._seen + i, to_uint8(images[i]), np.asarray(probabilities[i])))
                entries.sort(key=lambda entry: entry[0])
                self._trim()
        self._seen += len(labels)

    def _admit(self, label, key):
        """Whether an image of class `label` with image key `key` joins the sample now (making room for it)."""
        if label in self._kept:
            entries = self._kept[label]
            return len(entries) < self._per_class() or key < entries[-1][0]
        if len(self._kept) < self.size:
            self._kept[label] = []
            return True
        last = max(self._kept, key=lambda c: self._class_keys[c])
        if self._class_keys[label] >= self._class_keys[last]:
            return False
        # A class that leaves never returns: the classes kept only ever get lower keys.
        del self._kept[last]
        self._kept[label] = []
        return True

    def _per_class(self):
        # Enough images of each class for `size` in turn; it only falls as classes join, so what a
        # trim drops would not have been shown.
        return -(-self.size // max(1, len(self._kept)))

    def _trim(self):
        for entries in self._kept.values():
            del entries[self._per_class() :]

    @property
    def held(self):
        """Images held now."""
        return sum(len(entries) for entries in self._kept.values())

    def items(self):
        """The sample in the order shown: a list of (index in the split, image uint8, label, probabilities)."""
        classes = sorted(self._kept, key=lambda c: self._class_keys[c])
        chosen = []
        for turn in range(self.size):
            chosen += [(c, self._kept[c][turn]) for c in classes if turn < len(self._kept[c])]
        return [(index, image, c, probabilities) for c, (_, index, image, probabilities) in chosen[: self.size]]


class EvaluationSamples:
    """What the evaluation pictures need from one pass over a split, in bounded memory.

    Keeps the running confusion matrix, a `ClassSpreadSample` (shown with its
    top-5 predictions; its first images are the nearest-neighbour queries) and
    the `ConfidentMistakes`. Images are stored as uint8.

    Args:
        num_classes: the model's classes.
        shown: images in the sample.
        mistakes: how many confident mistakes to keep.
        seed: the sample's seed (the run's seed: the same run shows the same images).
    """

    def __init__(self, num_classes, shown=TOP5_IMAGES, mistakes=CONFIDENT_MISTAKES, seed=0):
        self.num_classes = num_classes
        self.confusion = np.zeros((num_classes, num_classes), np.int64)
        self.sample = ClassSpreadSample(shown, num_classes, seed)
        self.mistakes = ConfidentMistakes(mistakes)

    def add(self, images, labels, probabilities):
        """Takes one batch: images [B, H, W, 3] on the 0-255 scale, labels [B], probabilities [B, classes]."""
        labels = np.asarray(labels).reshape(-1)
        probabilities = np.asarray(probabilities)
        self.confusion += confusion_counts(labels, predicted_classes(probabilities, labels), self.num_classes)
        self.sample.add(images, labels, probabilities)
        self.mistakes.add(images, labels, probabilities)

    def shown(self):
        """The sampled images, their labels and probabilities, in the order shown: three lists."""
        items = self.sample.items()
        return [item[1] for item in items], [item[2] for item in items], [item[3] for item in items]


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
