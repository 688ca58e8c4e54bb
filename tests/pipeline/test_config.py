import pytest
import yaml

from pipeline.config import (
    DEFAULT_CONFIG,
    Config,
    load_config,
    parse_override,
)
from pipeline.errors import ConfigError


def write(tmp_path, name, data):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return path


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


def test_no_files_loads_the_quickstart_and_names_it():
    config = load_config()
    assert config.name == "quickstart" == DEFAULT_CONFIG.stem
    assert config.data.source == "digits"


def test_later_files_and_overrides_win(tmp_path):
    a = write(tmp_path, "a.yaml", {"train": {"epochs": 3, "optimizer": {"learning_rate": 0.1}}})
    b = write(tmp_path, "b.yaml", {"train": {"optimizer": {"learning_rate": 0.2}}})
    config = load_config([a, b], ["train.optimizer.momentum=0.5", "model.lrn=false"])
    assert config.name == "a"
    assert config.train.epochs == 3
    assert config.train.optimizer.learning_rate == 0.2
    assert config.train.optimizer.momentum == 0.5
    assert config.model.lrn is False


def test_exponent_floats_without_a_dot_are_numbers(tmp_path):
    # PyYAML reads `5e-4` as a string (YAML 1.1); a config written that way must still load.
    path = tmp_path / "e.yaml"
    path.write_text("train:\n  optimizer:\n    weight_decay: 5e-4\n    learning_rate: 1E-2\n")
    config = load_config([path], ["model.lrn_alpha=2e-4"])
    assert config.train.optimizer.weight_decay == 5e-4
    assert config.train.optimizer.learning_rate == 0.01
    assert config.model.lrn_alpha == 2e-4
    # A quoted value stays a string, so the type check still catches it.
    with pytest.raises(ConfigError, match="train.optimizer.weight_decay"):
        load_config([], ["train.optimizer.weight_decay='5e-4'"])


def test_resolved_config_round_trips(tmp_path):
    config = load_config([], ["train.epochs=7", "data.source=synthetic"])
    path = tmp_path / "config.yaml"
    path.write_text(config.to_yaml())
    assert load_config([path]) == config


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


def test_unknown_key_in_a_file_names_the_path(tmp_path):
    path = write(tmp_path, "x.yaml", {"model": {"droput": 0.3}})
    with pytest.raises(ConfigError, match=r"model\.droput: unknown key"):
        load_config([path])


@pytest.mark.parametrize("text", ["noequals", "=3", "a..b=1"])
def test_malformed_override(text):
    with pytest.raises(ConfigError, match="--set"):
        parse_override(text)


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config([tmp_path / "nope.yaml"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config([bad])
    listy = tmp_path / "list.yaml"
    listy.write_text("- 1\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config([listy])


def test_config_is_frozen():
    config = Config()
    with pytest.raises(Exception):
        config.train.epochs = 3
