"""Image arrays for the pictures (pipeline.evaluation.images): uint8, the one tiling, grids, conv1's kernels."""

import numpy as np
import pytest

from pipeline.evaluation import images as pictures


def tile_at(grid, i, size, columns=4, border=2):
    """Image i of a grid of size x size images, `columns` to a row."""
    top = border + (i // columns) * (size + border)
    left = border + (i % columns) * (size + border)
    return grid[top : top + size, left : left + size]


def test_grid_of_five_images_is_two_rows_of_three_clipped_to_uint8():
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (5, 32, 32, 3)).astype(np.float32)
    images[0, 0, 0, 0] = 300.0
    images[1, 0, 0, 0] = -5.0
    grid = pictures.image_grid(images)
    assert pictures.grid_shape(5) == (2, 3)
    assert grid.shape == (2 * 32 + 3 * 2, 3 * 32 + 4 * 2, 3)
    assert grid.dtype == np.uint8
    expected = np.clip(np.rint(images), 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(pictures.to_uint8(images), expected)
    for i in range(5):
        row, column = divmod(i, 3)
        top, left = 2 + row * 34, 2 + column * 34
        np.testing.assert_array_equal(grid[top : top + 32, left : left + 32], expected[i], err_msg=f"image {i}")
    assert grid[2, 2, 0] == 255  # 300 clipped
    assert grid[2, 36, 0] == 0  # -5 clipped
    assert (grid[:2] == 255).all() and (grid[:, :2] == 255).all()  # the outer border
    assert (grid[34:36] == 255).all() and (grid[:, 34:36] == 255).all()  # between tiles
    assert (grid[36:68, 70:102] == 255).all()  # the empty sixth cell


def test_grid_shows_at_most_sixteen_images_in_four_rows_of_four():
    images = np.arange(20, dtype=np.float32)[:, None, None, None] * np.ones((20, 8, 8, 1), np.float32)
    grid = pictures.image_grid(images)
    assert grid.shape == (4 * 8 + 5 * 2, 4 * 8 + 5 * 2, 1)
    for i in range(16):
        assert (tile_at(grid, i, 8) == i).all(), i
    assert pictures.grid_shape(1) == (1, 1) and pictures.grid_shape(16) == (4, 4) and pictures.grid_shape(17) == (4, 5)


def test_tile_with_captions_a_set_apart_first_column_and_a_least_width():
    images = (np.arange(5, dtype=np.uint8) + 1)[:, None, None, None] * np.ones((5, 3, 2, 1), np.uint8)
    grid, tops, lefts = pictures.tile(images, 3, border=1, fill=0, caption=2, first_gap=4, min_width=20)
    # Natural width 1 + 2 + 4 + 2 + 1 + 2 + 1 = 13, centred in 20: everything 3 pixels to the right.
    assert grid.shape == (2 * (3 + 2 + 1) + 1, 20, 1) and grid.dtype == np.uint8
    assert tops == [3, 9] and lefts == [4, 10, 13]
    for i in range(5):
        top, left = tops[i // 3], lefts[i % 3]
        assert (grid[top : top + 3, left : left + 2] == i + 1).all(), i
    assert int((grid > 0).sum()) == 5 * 3 * 2  # nothing else is drawn: captions, gaps, the empty cell
    with pytest.raises(ValueError, match=r"tile needs images of shape \[N, H, W, C\] with N >= 1, got \(0, 3, 2, 1\)"):
        pictures.tile(images[:0], 3)


def test_each_kernel_is_scaled_by_its_own_min_and_max():
    kernels = np.zeros((3, 1, 2, 1))
    kernels[0, 0, :, 0] = [-2.0, 2.0]
    kernels[1, 0, :, 0] = [10.0, 30.0]
    kernels[2, 0, :, 0] = [7.0, 7.0]  # constant
    scaled = pictures.scale_each(kernels)
    np.testing.assert_array_equal(scaled[:, 0, :, 0], [[0.0, 1.0], [0.0, 1.0], [0.5, 0.5]])


def test_kernel_i_of_tower_t_is_conv1_map_t_times_n_over_groups_plus_i():
    kernel = np.random.default_rng(0).normal(size=(11, 11, 3, 96)).astype(np.float32)
    towers = pictures.tower_kernels(kernel, groups=2)
    assert towers.shape == (2, 48, 11, 11, 3)
    scaled = pictures.scale_each(np.moveaxis(kernel, -1, 0))
    for tower in range(2):
        for i in range(48):
            np.testing.assert_array_equal(towers[tower, i], scaled[48 * tower + i])
    assert towers.min() == 0.0 and towers.max() == 1.0
    one = pictures.tower_kernels(kernel, groups=1)
    assert one.shape == (1, 96, 11, 11, 3)
    np.testing.assert_array_equal(one[0, 50], scaled[50])
    with pytest.raises(ValueError, match="96 kernels do not split into 5 towers"):
        pictures.tower_kernels(kernel, groups=5)


def test_a_tower_tiled_as_in_the_kernel_picture_and_its_empty_cells():
    kernel = np.random.default_rng(1).normal(size=(3, 3, 3, 20))
    towers = pictures.tower_kernels(kernel, groups=2)  # 10 kernels a tower: 3 rows of 4, 2 cells empty
    image, _, _ = pictures.tile(towers[1], 4, border=1, fill=1.0)
    assert image.shape == (3 * 4 + 1, 4 * 4 + 1, 3) and image.dtype == np.float32
    scaled = pictures.scale_each(np.moveaxis(kernel, -1, 0))
    # Kernel 6 of the second tower (conv1 map 16): row 1, column 2, top-left pixel at (1 + 4, 1 + 8).
    np.testing.assert_array_equal(image[5:8, 9:12], scaled[16])
    assert (image[9:12, 9:16] == 1.0).all()  # the empty cells
    assert (image[0] == 1.0).all() and (image[:, 4] == 1.0).all()  # border and gap
