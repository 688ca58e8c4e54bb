"""The evaluation pictures drawn with matplotlib's object API (`Figure` + the Agg canvas, never pyplot's state).

`render_*` functions take what `pipeline.evaluation.analysis` computed and
return a `Figure`; `rgb_array` and `encode_png` turn one into a TensorBoard
image or a PNG file.

    render_kernels          conv1's learned kernels, one block per tower (paper, Figure 3)
    render_top5             images with their top-5 predictions (Figure 4, left)
    render_neighbours       query images and the training images nearest in fc7 space (Figure 4, right)
    render_per_class_error  top-1 error of each class, worst first
    render_confusion        true class x predicted class counts
    render_mistakes         the misclassified images the network was surest of
"""

import io
import math

import numpy as np
from PIL import Image

from pipeline.evaluation.analysis import per_class_error, top_k
from pipeline.evaluation.images import tile, tower_kernels

# A per-class bar chart of 1,000 classes is unreadable: show the worst ones.
WORST_CLASSES = 30
# Up to this many classes the confusion matrix carries class names (and counts, up to COUNTS_UP_TO).
NAMES_UP_TO = 30
COUNTS_UP_TO = 12
DPI = 100
TRUE_COLOUR = "tab:red"
OTHER_COLOUR = "tab:blue"


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


def render_tiles(images, titles, columns, title, tile_px=130, caption_px=30, gap_px=8, first_gap_px=None,
                 min_width_px=560):
    """Equally sized images, each with a small caption above it, `columns` to a row, drawn as one image in one axes.

    One axes for the whole grid rather than one per image: with 30-40 images
    the per-axes layout made most of an evaluation's drawing time.

    Args:
        images: uint8 [H, W, 3] images of one size, row by row.
        titles: the captions, one per image (up to two short lines each).
        columns: images per row.
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
    height, width = images[0].shape[:2]
    scale = tile_px / max(height, width)  # screen pixels per image pixel

    def pixels(screen):
        return math.ceil(screen / scale)

    # At least min_width_px wide, the images centred, so that the title fits above one or two images.
    mosaic, tops, lefts = tile(
        np.stack(images), columns, border=pixels(gap_px), caption=pixels(caption_px),
        first_gap=None if first_gap_px is None else pixels(first_gap_px), min_width=pixels(min_width_px),
    )  # fmt: skip
    header = 30  # screen pixels for the title
    figure = new_figure(mosaic.shape[1] * scale / DPI, (mosaic.shape[0] * scale + header) / DPI, layout=None)
    axes = figure.add_axes((0, 0, 1, mosaic.shape[0] * scale / (mosaic.shape[0] * scale + header)))
    axes.imshow(mosaic, interpolation="antialiased")
    axes.set_axis_off()
    for i, text in enumerate(titles):
        top, left = tops[i // len(lefts)], lefts[i % len(lefts)]
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

    Kernel i of tower t (conv1 map t * n / groups + i, `tower_kernels`) is
    tile i of block t, `columns` to a row (fewer when a tower has fewer
    kernels), one pixel of white between tiles.

    Args:
        kernel: [11, 11, 3, n] conv1 kernel.
        groups: the model's groups.
        columns: kernels per row.
        title: the figure's title.

    Returns:
        A matplotlib `Figure`.
    """
    towers = tower_kernels(kernel, groups)
    images = [tile(tower, columns, border=1, fill=1.0)[0] for tower in towers]
    height, width = images[0].shape[:2]
    scale = 4 / DPI  # inches per kernel pixel: an 11x11 kernel is 44 screen pixels wide
    figure = new_figure(width * scale + 0.4, groups * (height * scale + 0.45) + 0.45)
    figure.suptitle(title, fontsize=10)
    per_tower = towers.shape[1]
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
    images, titles = [], []
    for query, label, found in zip(queries, query_labels, neighbours):
        images += [query] + [image for _, _, image, _ in found]
        titles += [f"query\n{short_name(class_names[label], 18)}"]
        titles += [f"{short_name(class_names[other], 18)}\nd={distance:.3g}" for distance, _, _, other in found]
    title = f"{split} images (first column) and the training images nearest to them in fc7 space"
    return render_tiles(images, titles, 1 + len(neighbours[0]), title, first_gap_px=24)


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
    return render_tiles(images, titles, columns, "most confident mistakes, most confident first", tile_px=160)
