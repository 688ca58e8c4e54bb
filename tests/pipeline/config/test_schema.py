"""The config tree (`pipeline.config.schema`): the paper's defaults, frozen sections, and validation that names the
dotted key: wrong types, out-of-range values (the LRN constants cuDNN cannot run among them), unknown keys, nan and
inf; a flood of errors is cut short. Keys in a file are named the same way (test_files.py)."""

import pytest

from pipeline.config import Config, build_config, load_config
from pipeline.errors import ConfigError


def test_defaults_are_the_papers():
    config = Config()
    assert config.model.dropout == 0.5
    assert config.model.groups == 2
    assert (config.model.lrn_k, config.model.lrn_n, config.model.lrn_alpha, config.model.lrn_beta) == (2.0, 5, 1e-4, 0.75)
    assert config.train.optimizer.learning_rate == 0.01
    assert config.train.optimizer.momentum == 0.9
    assert config.train.optimizer.weight_decay == 5e-4
    assert config.train.batch_size == 128
    assert config.data.image_size == 224 and config.data.resize == 256


@pytest.mark.parametrize(
    "override, key",
    [
        ("train.batch_sise=64", "train.batch_sise: unknown key"),
        ("bogus.x=1", "bogus: unknown key"),
        ("train.batch_size=-1", "train.batch_size"),
        ("train.batch_size=abc", "train.batch_size"),
        ("train.epochs=2.5", "train.epochs"),
        ("model.dropout=1.0", "model.dropout"),
        ("model.dropout=-0.1", "model.dropout"),
        ("model.lrn=1", "model.lrn"),
        ("model.lrn_n=4", "model.lrn_n"),
        ("model.groups=3", "model.groups"),
        ("data.image_size=32", "data.image_size"),
        ("data.source=imagenet", "data.source"),
        ("data.resize=100", "data.resize"),  # smaller than image_size 128
        ("tune.learning_rate.min=0.5", "tune.learning_rate"),  # min above max
        ("train.epochs.x=1", "train.epochs"),
    ],
)
def test_bad_values_name_the_dotted_key(override, key):
    with pytest.raises(ConfigError) as error:
        load_config([], [override])
    assert key in str(error.value)


def test_config_is_frozen():
    config = Config()
    with pytest.raises(Exception):
        config.train.epochs = 3


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("lrn_n", 17, "must be odd, from 3 to 15 (the window is centred on each channel; cuDNN's LRN takes a "
                      "depth radius n // 2 from 1 to 7) (got 17)"),
        ("lrn_n", 1, "must be odd, from 3 to 15"),
        ("lrn_beta", 0.001, "must be at least 0.01 (the smallest beta cuDNN's LRN runs) (got 0.001)"),
        ("lrn_k", 0, "must be at least 1e-05 (the smallest k cuDNN's LRN runs) (got 0)"),
    ],
)
def test_lrn_constants_cudnn_cannot_run_are_refused(key, value, message):
    from pipeline.config import load_config

    with pytest.raises(ConfigError) as exc:
        load_config([], [f"model.{key}={value}"])
    assert str(exc.value) == f"model.{key}: {message}" or str(exc.value).startswith(f"model.{key}: {message}")


def test_a_flood_of_errors_is_cut_short_and_a_bad_value_quoted_short(capsys):
    from pipeline.config import build_config

    with pytest.raises(ConfigError) as exc:
        build_config({f"key{i}": i for i in range(5000)})
    assert str(exc.value).endswith("; and 4990 more errors") and len(str(exc.value)) < 400
    with pytest.raises(ConfigError) as exc:
        build_config({"data": {"augment": {"min_area": [list(range(10**5))] * 10**4}}})
    message = str(exc.value)
    assert message.startswith("data.augment.min_area: Input should be a valid number (got [[0, 1, 2, 3, ...], [")
    assert message.endswith("...)") and len(message) < 150


@pytest.mark.parametrize("tree, message", [
    ({"model": {"std": [float("nan"), 1.0, 1.0]}}, "model.std.0: Input should be a finite number (got nan)"),
    ({"model": {"mean": [1.0, float("-inf"), 2.0]}}, "model.mean.1: Input should be a finite number (got -inf)"),
    ({"train": {"optimizer": {"learning_rate": float("inf")}}},
     "train.optimizer.learning_rate: Input should be a finite number (got inf)"),
    ({"data": {"augment": {"pca_noise": float("nan")}}},
     "data.augment.pca_noise: Input should be a finite number (got nan)"),
], ids=["std", "mean", "learning_rate", "pca_noise"])
def test_nan_and_inf_are_not_numbers(tree, message):
    with pytest.raises(ConfigError) as refused:
        build_config(tree)
    assert str(refused.value) == message
