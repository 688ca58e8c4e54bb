"""Image arrays for the pictures, in NumPy: uint8 conversion, images tiled into one array, conv1's kernels as images.

No matplotlib here: the training callbacks use these as they are, and
`pipeline.evaluation.drawing` puts them into figures.
"""

import math

import numpy as np


def to_uint8(images):
    """Images on the 0-255 scale, rounded and clipped to uint8."""
    return np.clip(np.rint(np.asarray(images, np.float32)), 0, 255).astype(np.uint8)


def grid_shape(count):
    """(rows, columns) of the grid that shows `count` images: ceil(sqrt(count)) columns, rows as needed.

    16 images -> 4 x 4, 5 -> 2 x 3, 1 -> 1 x 1.
    """
    columns = max(1, math.ceil(math.sqrt(count)))
    return max(1, math.ceil(count / columns)), columns


def tile(images, columns, border=1, fill=255, caption=0, first_gap=None, min_width=0):
    """Lays images of one shape out row by row in one array.

    Image i goes to row r = i // columns, column c = i % columns, its top-left
    pixel at (border + caption + r * (H + caption + border), lefts[c]), where
    lefts[c] = border + c * (W + border), plus first_gap - border for c >= 1.
    A grid narrower than `min_width` is centred in it. Borders, caption rows
    and the cells left empty in the last row hold `fill`.

    Args:
        images: [N, H, W, C] array (N >= 1); the result has its dtype.
        columns: images per row.
        border: pixels between images and around them.
        fill: value of every pixel that no image covers.
        caption: blank pixels above each row of images (room for captions).
        first_gap: pixels between the first and the second column (None: border),
            to set a first column apart.
        min_width: the least width of the result.

    Returns:
        (array [rows * (H + caption + border) + border, max(grid width, min_width), C],
        tops, lefts): the top and left pixel of each row and column.
    """
    images = np.asarray(images)
    if images.ndim != 4 or not len(images):
        raise ValueError(f"tile needs images of shape [N, H, W, C] with N >= 1, got {images.shape}")
    count, height, width, channels = images.shape
    columns = max(1, min(columns, count))
    rows = math.ceil(count / columns)
    first_gap = border if first_gap is None else first_gap
    lefts = [border + c * (width + border) + (first_gap - border if c else 0) for c in range(columns)]
    natural = lefts[-1] + width + border
    total = max(natural, min_width)
    lefts = [left + (total - natural) // 2 for left in lefts]
    tops = [border + caption + r * (height + caption + border) for r in range(rows)]
    grid = np.full((rows * (height + caption + border) + border, total, channels), fill, images.dtype)
    for i, image in enumerate(images):
        top, left = tops[i // columns], lefts[i % columns]
        grid[top : top + height, left : left + width] = image
    return grid, tops, lefts


def image_grid(images, max_images=16, border=2, fill=255):
    """The first min(N, max_images) images as one uint8 picture in a `grid_shape` grid (`tile`).

    Pixel values are rounded and clipped to [0, 255] (the PCA colour noise can
    leave that range).

    Args:
        images: [N, H, W, C] array-like (N >= 1), pixel values on the 0-255 scale.
        max_images: most images shown.
        border: pixels between tiles and around the edge.
        fill: value of the border pixels and of the empty cells.

    Returns:
        uint8 array [rows * H + (rows + 1) * border, columns * W + (columns + 1) * border, C].
    """
    images = to_uint8(images)[:max_images]
    return tile(images, grid_shape(len(images))[1], border=border, fill=fill)[0]


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


def tower_kernels(kernel, groups=2):
    """conv1's kernels as images, split by the tower of conv2 that their output maps feed (paper, Figure 3).

    conv1 itself is not grouped, but with groups=2 its output maps 0..n/2-1
    feed the first tower of the grouped conv2 and n/2..n-1 the second (the
    paper's two GPUs). Each kernel is scaled to [0, 1] by its own minimum and
    maximum (`scale_each`).

    Args:
        kernel: conv1's kernel, [H, W, in_channels, n] (Keras layout).
        groups: the model's groups (1: one tower).

    Returns:
        float32 [groups, n / groups, H, W, in_channels]: [t, i] is conv1 map t * n / groups + i.
    """
    kernel = np.asarray(kernel)
    height, width, channels, count = kernel.shape
    if count % groups:
        raise ValueError(f"{count} kernels do not split into {groups} towers")
    return scale_each(np.moveaxis(kernel, -1, 0)).reshape(groups, count // groups, height, width, channels)
