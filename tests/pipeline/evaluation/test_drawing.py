"""The pictures drawn with matplotlib (pipeline.evaluation.drawing): the captioned mosaic, the kernel blocks, PNGs."""

import io

import numpy as np
from PIL import Image

from pipeline.evaluation import drawing
from pipeline.evaluation.images import tile, tower_kernels


def test_captioned_mosaic_is_one_tiled_image_with_a_caption_over_each_picture():
    images = [np.full((10, 20, 3), 10 * (i + 1), np.uint8) for i in range(5)]
    titles = [f"picture {i}" for i in range(5)]
    figure = drawing.render_tiles(images, titles, 2, "five", tile_px=40, caption_px=10, gap_px=4, min_width_px=0)
    (axes,) = figure.axes
    # 40 screen pixels for 20 image pixels: 2 a pixel, so 2 image pixels of gap and 5 of caption.
    expected, tops, lefts = tile(np.stack(images), 2, border=2, fill=255, caption=5)
    np.testing.assert_array_equal(np.asarray(axes.images[0].get_array()), expected)
    assert [text.get_text() for text in axes.texts] == titles
    # Each caption is centred over its picture, one image pixel (two screen pixels) above it.
    positions = [(left + 10, top - 1) for top in tops for left in lefts][:5]
    assert [tuple(text.get_position()) for text in axes.texts] == positions
    assert figure.texts[0].get_text() == "five"  # the suptitle


def test_kernel_picture_has_one_block_per_tower_tiled_as_documented():
    kernel = np.random.default_rng(0).normal(size=(11, 11, 3, 96)).astype(np.float32)
    figure = drawing.render_kernels(kernel, groups=2, columns=16)
    assert [axes.get_title() for axes in figure.axes] == [
        "tower 1 (conv1 maps 0-47, feeding conv2 group 1)",
        "tower 2 (conv1 maps 48-95, feeding conv2 group 2)",
    ]
    for axes, tower in zip(figure.axes, tower_kernels(kernel, 2)):
        np.testing.assert_array_equal(np.asarray(axes.images[0].get_array()), tile(tower, 16, border=1, fill=1.0)[0])


def test_a_drawn_figure_becomes_the_same_pixels_in_a_png():
    figure = drawing.render_mistakes([], ["a", "b"])
    assert figure.texts[0].get_text() == "most confident mistakes: none, every image was classified right"
    image = drawing.rgb_array(figure)
    assert image.shape == (150, 560, 3) and image.dtype == np.uint8  # 5.6 x 1.5 inches at 100 dpi
    with Image.open(io.BytesIO(drawing.png_bytes(figure))) as png:
        np.testing.assert_array_equal(np.asarray(png.convert("RGB")), image)
