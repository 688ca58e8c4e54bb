"""The model's FLOP count, exact, from the paper's shapes."""

import pytest

from model_defs.alexnet import build_alexnet
from model_defs.flops import forward_flops, layer_forward_flops, training_flops


@pytest.fixture(scope="module")
def paper_models():
    return build_alexnet(), build_alexnet(groups=1)


# Forward multiply-adds of the paper's layers at 224x224 (section 3.5): output
# positions x kernel size x output maps; grouped layers see half the input maps.
PAPER_MACS = {
    "conv1": 55 * 55 * (11 * 11 * 3) * 96,
    "conv2": 27 * 27 * (5 * 5 * 48) * 256,
    "conv3": 13 * 13 * (3 * 3 * 256) * 384,
    "conv4": 13 * 13 * (3 * 3 * 192) * 384,
    "conv5": 13 * 13 * (3 * 3 * 192) * 256,
    "fc6": 6 * 6 * 256 * 4096,
    "fc7": 4096 * 4096,
    "fc8": 4096 * 1000,
}


def test_flops_of_each_layer_follow_the_paper_shapes(paper_models):
    grouped, _ = paper_models
    for name, macs in PAPER_MACS.items():
        assert layer_forward_flops(grouped.get_layer(name)) == 2 * macs, name
    assert layer_forward_flops(grouped.get_layer("conv1")) == 210_830_400
    assert layer_forward_flops(grouped.get_layer("pool1")) == 0


def test_whole_model_flops_grouped_and_single_tower(paper_models):
    grouped, single = paper_models
    assert forward_flops(grouped) == 1_448_813_632  # ~1.45 GFLOP forward
    # Three forward passes' worth per layer, but two for conv1: the images need no gradient.
    assert training_flops(grouped) == 3 * 1_448_813_632 - 210_830_400 == 4_135_610_496
    # One tower: conv2, conv4 and conv5 see all input maps, twice the multiply-adds.
    assert forward_flops(single) == 2_270_512_192  # ~2.27 GFLOP forward
    assert training_flops(single) == 3 * 2_270_512_192 - 210_830_400 == 6_600_706_176
