"""model_defs.geometry: the paper's shapes, checked by arithmetic (no TensorFlow)."""

import pytest

from model_defs.geometry import CONV1_PADDING, MIN_INPUT_SIZE, WIDTHS, feature_map_sizes


def test_a_224_input_gives_the_papers_feature_maps():
    # Section 3.5 / Figure 2: 55x55 after conv1, 27 after pool1, 13 after pool2, 6 after pool5.
    assert feature_map_sizes(224) == {"conv1": 55, "pool1": 27, "pool2": 13, "pool5": 6}


def test_the_padding_makes_224_behave_as_the_227_conv1_needs():
    assert sum(CONV1_PADDING[0]) == 3 and CONV1_PADDING[0] == CONV1_PADDING[1]
    assert feature_map_sizes(224)["conv1"] == (227 - 11) // 4 + 1


@pytest.mark.parametrize(
    "size, sizes",
    [(64, (15, 7, 3, 1)), (128, (31, 15, 7, 3)), (256, (63, 31, 15, 7))],
)
def test_other_inputs(size, sizes):
    assert tuple(feature_map_sizes(size).values()) == sizes


def test_the_smallest_input_is_the_smallest_with_a_pool5_pixel():
    assert MIN_INPUT_SIZE == 64
    assert feature_map_sizes(MIN_INPUT_SIZE)["pool5"] == 1
    assert feature_map_sizes(MIN_INPUT_SIZE - 1)["pool5"] == 0


def test_widths():
    assert WIDTHS["paper"] == (96, 256, 384, 384, 256)
    assert WIDTHS["torchvision"] == (64, 192, 384, 256, 256)
