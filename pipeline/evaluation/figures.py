"""The paper's pictures of a trained network, and three of our own, as PNG files and TensorBoard images.

What each picture shows is computed by plain NumPy functions (tested on
hand-made inputs); `render_*` functions draw them with matplotlib's object API
(`Figure` + the Agg canvas, never pyplot's global state), and `rgb_array` /
`encode_png` turn a figure into a TensorBoard image or a PNG file.

    conv1_kernels        conv1's learned kernels, one block per tower (paper, Figure 3)
    top5_predictions     validation images with their top-5 predictions (Figure 4, left)
    nearest_neighbours   validation images and the training images nearest in fc7 space (Figure 4, right)
    per_class_error      top-1 error of each class, worst first
    confusion_matrix     true class x predicted class counts of the evaluated split
    confident_mistakes   the misclassified images the network was surest of

The streaming helpers (`EvaluationSamples`, `ConfidentMistakes`,
`NeighbourSearch`) keep running counts and a bounded number of images, so
an evaluation's memory does not grow with the split.
"""

import heapq
import io
import math

import numpy as np

# Picture name -> PNG file name in <run>/figures/ (the name is also the TensorBoard tag).
FIGURE_NAMES = (
    "conv1_kernels",
    "top5_predictions",
    "nearest_neighbours",
    "per_class_error",
    "confusion_matrix",
    "confident_mistakes",
)
# The paper's Figure 4 shows eight images with their top-5 labels and five queries with six neighbours each.
TOP5_IMAGES = 8
NEIGHBOUR_QUERIES = 5
NEIGHBOURS = 6
CONFIDENT_MISTAKES = 16
# A per-class bar chart of 1,000 classes is unreadable: show the worst ones.
WORST_CLASSES = 30
# Up to this many classes the confusion matrix carries class names (and counts, up to COUNTS_UP_TO).
NAMES_UP_TO = 30
COUNTS_UP_TO = 12
DPI = 100
TRUE_COLOUR = "tab:red"
OTHER_COLOUR = "tab:blue"


# ---------------------------------------------------------------- conv1 kernels (paper, Figure 3)


def scale_each(kernels):
    """Scales every kernel to [0, 1] by its own minimum and maximum.

    Args:
        kernels: [N, H, W, C] array.

    Returns:
        float32 [N, H, W, C]; a constant kernel becomes 0.5 everywhere.
    """
    kernels = np.asarray(kernels, np.float64)
    low = kernels.min(axis=(1, 2, 3), keepdims=True)
    span = kernels.max(axis=(1, 2, 3), keepdims=True) - low
    scaled = np.where(span > 0, (kernels - low) / np.where(span > 0, span, 1.0), 0.5)
    return scaled.astype(np.float32)


def kernel_blocks(kernel, groups=2, columns=16):
    """conv1's kernels arranged as the paper's Figure 3: one block of tiles per tower.

    conv1 itself is not grouped, but with groups=2 its output maps 0..n/2-1 feed
    the first tower of the grouped conv2 and n/2..n-1 the second (the paper's
    two GPUs), so the kernels split into `groups` consecutive blocks. Kernel i
    of tower t (conv1 output map t * n / groups + i) lands at row i // columns,
    column i % columns of block t. Each kernel is scaled to [0, 1] by its own
    minimum and maximum (`scale_each`).

    Args:
        kernel: conv1's kernel, [H, W, in_channels, n] (Keras layout).
        groups: the model's groups (1: one block).
        columns: tiles per row; fewer when a tower has fewer kernels.

    Returns:
        float32 [groups, rows, columns, H, W, in_channels]; NaN in the cells
        left empty in a block's last row.
    """
    kernel = np.asarray(kernel)
    height, width, channels, count = kernel.shape
    if count % groups:
        raise ValueError(f"{count} kernels do not split into {groups} towers")
    per_tower = count // groups
    columns = max(1, min(columns, per_tower))
    rows = math.ceil(per_tower / columns)
    kernels = scale_each(np.moveaxis(kernel, -1, 0))  # [n, H, W, C]
    blocks = np.full((groups, rows * columns, height, width, channels), np.nan, np.float32)
    blocks[:, :per_tower] = kernels.reshape(groups, per_tower, height, width, channels)
    return blocks.reshape(groups, rows, columns, height, width, channels)


def tile_block(block, border=1, fill=1.0):
    """One block of `kernel_blocks` as an image: tiles side by side, `border` pixels of `fill` between and around.

    Args:
        block: [rows, columns, H, W, C] values in [0, 1], NaN in empty cells.
        border: pixels between tiles and around the block.
        fill: value of the border and of empty cells.

    Returns:
        float32 [rows * (H + border) + border, columns * (W + border) + border, C].
    """
    rows, columns, height, width, channels = block.shape
    shape = (rows * (height + border) + border, columns * (width + border) + border, channels)
    image = np.full(shape, fill, np.float32)
    for row in range(rows):
        for column in range(columns):
            top, left = border + row * (height + border), border + column * (width + border)
            image[top : top + height, left : left + width] = np.nan_to_num(block[row, column], nan=fill)
    return image


# ---------------------------------------------------------------- predictions (paper, Figure 4 left)


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


class EvaluationSamples:
    """What the evaluation pictures need from one pass over a split, in bounded memory.

    Keeps the running confusion matrix, the first `keep_first` images (shown
    with their top-5 predictions and used as nearest-neighbour queries) and the
    `ConfidentMistakes`. Images are stored as uint8.

    Args:
        num_classes: the model's classes.
        keep_first: how many of the split's first images to keep.
        mistakes: how many confident mistakes to keep.
    """

    def __init__(self, num_classes, keep_first=TOP5_IMAGES, mistakes=CONFIDENT_MISTAKES):
        self.num_classes = num_classes
        self.keep_first = keep_first
        self.confusion = np.zeros((num_classes, num_classes), np.int64)
        self.mistakes = ConfidentMistakes(mistakes)
        self.first_images, self.first_labels, self.first_probabilities = [], [], []

    def add(self, images, labels, probabilities):
        """Takes one batch: images [B, H, W, 3] on the 0-255 scale, labels [B], probabilities [B, classes]."""
        labels = np.asarray(labels).reshape(-1)
        probabilities = np.asarray(probabilities)
        self.confusion += confusion_counts(labels, predicted_classes(probabilities, labels), self.num_classes)
        room = self.keep_first - len(self.first_labels)
        if room > 0:  # only the images kept are converted: a whole batch each step would cost time
            self.first_images.extend(to_uint8(images[:room]))
            self.first_labels.extend(int(label) for label in labels[:room])
            self.first_probabilities.extend(probabilities[:room])
        self.mistakes.add(images, labels, probabilities)


def to_uint8(images):
    """Images on the 0-255 scale, rounded and clipped to uint8."""
    return np.clip(np.rint(np.asarray(images, np.float32)), 0, 255).astype(np.uint8)


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


# ---------------------------------------------------------------- rendering


def new_figure(width, height, layout="constrained"):
    """A matplotlib `Figure` of width x height inches on its own Agg canvas (no pyplot state).

    Constrained layout (the default) keeps titles, tick labels and the
    suptitle from overlapping; None places the axes by hand.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=DPI, layout=layout)
    FigureCanvasAgg(figure)
    return figure


def render_tiles(rows, titles, title, tile_px=130, caption_px=30, gap_px=8, first_gap_px=None, min_width_px=560):
    """Rows of equally sized images, each with a small caption above it, drawn as one image in one axes.

    One axes for the whole grid rather than one per image: with 30-40 images
    the per-axes layout made most of an evaluation's drawing time.

    Args:
        rows: a list of rows, each a list of uint8 [H, W, 3] images of one size.
        titles: the captions, shaped like `rows` (up to two short lines each).
        title: the figure's title.
        tile_px: screen pixels of an image's longer side.
        caption_px: screen pixels above each image for its caption.
        gap_px: screen pixels between images.
        first_gap_px: screen pixels after the first column (None: gap_px), to
            set a query column apart.
        min_width_px: the narrowest figure, in screen pixels.

    Returns:
        A matplotlib `Figure`.
    """
    height, width = next((image.shape[:2] for row in rows for image in row), (1, 1))
    scale = tile_px / max(height, width)  # screen pixels per image pixel

    def pixels(screen):
        return math.ceil(screen / scale)

    gap, caption = pixels(gap_px), pixels(caption_px)
    first_gap = pixels(first_gap_px) if first_gap_px is not None else gap
    columns = max((len(row) for row in rows), default=1)
    lefts = [gap + c * (width + gap) + (first_gap - gap if c else 0) for c in range(columns)]
    tops = [caption + r * (height + caption + gap) for r in range(len(rows))]
    # At least min_width_px wide, the images centred, so that the title fits above one or two images.
    total = max(lefts[-1] + width + gap, pixels(min_width_px))
    lefts = [left + (total - lefts[-1] - width - gap) // 2 for left in lefts]
    mosaic = np.full((max(tops, default=0) + height + gap, total, 3), 255, np.uint8)
    for top, row in zip(tops, rows):
        for left, image in zip(lefts, row):
            mosaic[top : top + height, left : left + width] = image
    header = 30  # screen pixels for the title
    figure = new_figure(mosaic.shape[1] * scale / DPI, (mosaic.shape[0] * scale + header) / DPI, layout=None)
    axes = figure.add_axes((0, 0, 1, mosaic.shape[0] * scale / (mosaic.shape[0] * scale + header)))
    axes.imshow(mosaic, interpolation="antialiased")
    axes.set_axis_off()
    for top, row_titles in zip(tops, titles):
        for left, text in zip(lefts, row_titles):
            axes.text(left + width / 2, top - pixels(2), text, ha="center", va="bottom", fontsize=7, linespacing=1.1)
    figure.suptitle(title, fontsize=9, y=1 - 6 / (mosaic.shape[0] * scale + header), va="top")
    return figure


def rgb_array(figure):
    """The figure drawn as a uint8 [H, W, 3] array (for `tf.summary.image` and `encode_png`)."""
    figure.canvas.draw()
    return np.asarray(figure.canvas.buffer_rgba())[..., :3].copy()


def encode_png(image):
    """PNG file contents of a uint8 [H, W, 3] array.

    Drawing a figure (its layout) costs far more than encoding it, so a
    picture is drawn once by `rgb_array` and the array serves both the file
    and TensorBoard.
    """
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def png_bytes(figure):
    """The figure as PNG file contents."""
    return encode_png(rgb_array(figure))


def short_name(name, length=22):
    """A class name cut to `length` characters for axis labels (ImageNet's can be long)."""
    name = str(name)
    return name if len(name) <= length else name[: length - 1] + "\u2026"


def _show(axes, image, title=None, fontsize=8):
    axes.imshow(image, interpolation="nearest")
    axes.set_xticks([])
    axes.set_yticks([])
    if title is not None:
        axes.set_title(title, fontsize=fontsize)


def render_kernels(kernel, groups=2, columns=16, title="conv1 kernels"):
    """conv1's kernels, one block per tower, as in the paper's Figure 3.

    Args:
        kernel: [11, 11, 3, n] conv1 kernel.
        groups: the model's groups.
        columns: kernels per row.
        title: the figure's title.

    Returns:
        A matplotlib `Figure`.
    """
    blocks = kernel_blocks(kernel, groups, columns)
    images = [tile_block(block) for block in blocks]
    height, width = images[0].shape[:2]
    scale = 4 / DPI  # inches per kernel pixel: an 11x11 kernel is 44 screen pixels wide
    figure = new_figure(width * scale + 0.4, groups * (height * scale + 0.45) + 0.45)
    figure.suptitle(title, fontsize=10)
    per_tower = kernel.shape[-1] // groups
    for t, image in enumerate(images):
        axes = figure.add_subplot(groups, 1, t + 1)
        caption = (
            f"tower {t + 1} (conv1 maps {t * per_tower}-{(t + 1) * per_tower - 1}, feeding conv2 group {t + 1})"
            if groups > 1
            else f"all {per_tower} kernels (one tower)"
        )
        _show(axes, image if image.shape[-1] == 3 else image[..., 0], caption, fontsize=9)
    return figure


def render_top5(images, labels, probabilities, class_names, k=5):
    """Images with their top-k predictions as horizontal bars, as in the paper's Figure 4 (left).

    Under each image its true class; the true class's bar is red when it is
    among the k, the others blue.

    Args:
        images: [N, H, W, 3] uint8.
        labels: [N] true classes.
        probabilities: [N, classes].
        class_names: class index -> name.
        k: bars per image.

    Returns:
        A matplotlib `Figure`.
    """
    classes, scores = top_k(probabilities, k)
    columns = min(4, len(images))
    rows = math.ceil(len(images) / columns)
    figure = new_figure(2.7 * columns, 3.6 * rows + 0.3)
    grid = figure.add_gridspec(2 * rows, columns, height_ratios=[2.2, 1.2] * rows)
    for i, (image, label) in enumerate(zip(images, labels)):
        row, column = divmod(i, columns)
        picture = figure.add_subplot(grid[2 * row, column])
        _show(picture, image)
        picture.set_xlabel(short_name(class_names[label], 28), fontsize=8)
        bars = figure.add_subplot(grid[2 * row + 1, column])
        positions = np.arange(len(classes[i]))
        colours = [TRUE_COLOUR if c == label else OTHER_COLOUR for c in classes[i]]
        bars.barh(positions, scores[i], color=colours)
        bars.set_yticks(positions, [short_name(class_names[c], 18) for c in classes[i]], fontsize=7)
        bars.invert_yaxis()
        bars.set_xlim(0, 1)
        bars.tick_params(axis="x", labelsize=6)
    figure.suptitle(f"top-{k} predictions (true class under each image, its bar in red when among them)", fontsize=9)
    return figure


def render_neighbours(queries, query_labels, neighbours, class_names, split="validation"):
    """Query images (first column) and the training images nearest in fc7 space, as in the paper's Figure 4 (right).

    Args:
        queries: [Q, H, W, 3] uint8.
        query_labels: [Q] true classes.
        neighbours: per query, a list of (distance, pool index, image, label), nearest first.
        class_names: class index -> name.
        split: the split the queries come from, for the title.

    Returns:
        A matplotlib `Figure`.
    """
    rows = [[query] + [image for _, _, image, _ in found] for query, found in zip(queries, neighbours)]
    titles = [
        [f"query\n{short_name(class_names[label], 18)}"]
        + [f"{short_name(class_names[other], 18)}\nd={distance:.3g}" for distance, _, _, other in found]
        for label, found in zip(query_labels, neighbours)
    ]
    title = f"{split} images (first column) and the training images nearest to them in fc7 space"
    return render_tiles(rows, titles, title, first_gap_px=24)


def render_per_class_error(confusion, class_names, worst=WORST_CLASSES):
    """Top-1 error per class as horizontal bars, worst first; with more than `worst` classes only the worst.

    Args:
        confusion: [classes, classes] counts.
        class_names: class index -> name.
        worst: most classes shown.

    Returns:
        A matplotlib `Figure`.
    """
    classes, errors, counts = per_class_error(confusion)
    shown = min(worst, len(classes))
    figure = new_figure(7, 0.25 * shown + 1.3)
    axes = figure.add_subplot(1, 1, 1)
    positions = np.arange(shown)
    axes.barh(positions, errors[:shown], color=OTHER_COLOUR)
    axes.set_yticks(positions, [f"{short_name(class_names[c])} ({n})" for c, n in zip(classes[:shown], counts[:shown])],
                    fontsize=7)
    axes.invert_yaxis()
    axes.set_xlim(0, 1)
    axes.set_xlabel("top-1 error (images of the class in brackets)", fontsize=8)
    which = f"the {shown} worst of {len(classes)} classes" if shown < len(classes) else f"all {shown} classes"
    if len(classes) < len(confusion):
        which += f" with images (of {len(confusion)})"
    axes.set_title(f"top-1 error per class, worst first: {which}", fontsize=9)
    return figure


def render_confusion(confusion, class_names):
    """The confusion matrix as an image, each row divided by its class's images; names and counts when few classes.

    Args:
        confusion: [classes, classes] counts (rows: true class, columns: predicted).
        class_names: class index -> name.

    Returns:
        A matplotlib `Figure`.
    """
    confusion = np.asarray(confusion)
    classes = len(confusion)
    counts = confusion.sum(axis=1, keepdims=True)
    fractions = confusion / np.maximum(counts, 1)
    size = 7 if classes <= NAMES_UP_TO else 9
    figure = new_figure(size + 1.2, size)
    axes = figure.add_subplot(1, 1, 1)
    shown = axes.imshow(fractions, cmap="Blues", vmin=0, vmax=1, interpolation="nearest")
    figure.colorbar(shown, ax=axes, fraction=0.046, pad=0.04, label="share of the true class's images")
    if classes <= NAMES_UP_TO:
        names = [short_name(name, 16) for name in class_names]
        axes.set_xticks(np.arange(classes), names, rotation=90, fontsize=7)
        axes.set_yticks(np.arange(classes), names, fontsize=7)
    if classes <= COUNTS_UP_TO:
        for (t, p), value in np.ndenumerate(confusion):
            if value:
                axes.text(p, t, str(value), ha="center", va="center", fontsize=7,
                          color="white" if fractions[t, p] > 0.5 else "black")
    axes.set_xlabel("predicted class", fontsize=8)
    axes.set_ylabel("true class", fontsize=8)
    axes.set_title(f"confusion matrix, {int(counts.sum()):,} images, {classes} classes", fontsize=9)
    return figure


def render_mistakes(mistakes, class_names, columns=4):
    """The most confidently misclassified images, most confident first, with true and predicted names.

    Args:
        mistakes: `ConfidentMistakes.items()`.
        class_names: class index -> name.
        columns: images per row.

    Returns:
        A matplotlib `Figure`.
    """
    if not mistakes:
        figure = new_figure(5.6, 1.5)
        figure.suptitle("most confident mistakes: none, every image was classified right", fontsize=9)
        return figure
    images = [image for _, _, image, _, _ in mistakes]
    titles = [
        f"true: {short_name(class_names[label], 18)}\n"
        f"predicted: {short_name(class_names[predicted], 14)} {confidence:.0%}"
        for confidence, _, _, label, predicted in mistakes
    ]
    starts = range(0, len(mistakes), columns)
    return render_tiles([images[i : i + columns] for i in starts], [titles[i : i + columns] for i in starts],
                        "most confident mistakes, most confident first", tile_px=160)
