"""Config files (`pipeline.config.files`): the shipped quickstart when none is given, later files and overrides
winning, YAML read strictly (exponent floats, one-line errors for a missing or malformed file, an unknown key named
by its dotted path), the resolved config read back equal, malformed overrides, and a `base:` a file layers on
(beside it or shipped, a cycle refused).
Bad files through every command that reads one are in tests/pipeline/console/test_cli.py."""

import pytest
import yaml

from pipeline.config import (
    DEFAULT_CONFIG,
    build_config,
    load_config,
    parse_override,
)
from pipeline.errors import ConfigError


def write(tmp_path, name, data):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return path


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


def test_unknown_key_in_a_file_names_the_path(tmp_path):
    path = write(tmp_path, "x.yaml", {"model": {"droput": 0.3}})
    with pytest.raises(ConfigError, match=r"model\.droput: unknown key"):
        load_config([path])


def test_a_base_beside_the_file_is_loaded_first_and_the_files_keys_win(tmp_path, monkeypatch):
    folder = tmp_path / "experiments"
    folder.mkdir()
    write(folder, "base.yaml", {"train": {"epochs": 3, "batch_size": 16, "optimizer": {"learning_rate": 0.1}}})
    child = write(folder, "child.yaml", {"base": "base.yaml", "train": {"epochs": 5, "optimizer": {"momentum": 0.5}}})
    # A base.yaml in the working directory is not the one meant.
    write(tmp_path, "base.yaml", {"train": {"epochs": 99}})
    monkeypatch.chdir(tmp_path)
    config = load_config([child])
    assert config.name == "child"
    assert (config.train.epochs, config.train.batch_size) == (5, 16)
    assert (config.train.optimizer.learning_rate, config.train.optimizer.momentum) == (0.1, 0.5)
    # A base of a base: loaded in turn, the nearest file winning.
    write(folder, "grandchild.yaml", {"base": "child.yaml", "train": {"batch_size": 8}})
    grand = load_config([folder / "grandchild.yaml"])
    assert (grand.train.epochs, grand.train.batch_size, grand.train.optimizer.momentum) == (5, 8, 0.5)


def test_a_shipped_config_is_a_base_by_name_unless_a_file_beside_has_that_name(tmp_path):
    child = write(tmp_path, "child.yaml", {"base": "quickstart", "name": "mine", "train": {"epochs": 1}})
    assert load_config([child]) == load_config(["quickstart"], ["name=mine", "train.epochs=1"])
    write(tmp_path, "quickstart.yaml", {"data": {"source": "synthetic"}})
    child = write(tmp_path, "child.yaml", {"base": "quickstart.yaml", "train": {"epochs": 1}})
    # The file beside, over the defaults: not the shipped quickstart.
    expected = build_config({"name": "child", "data": {"source": "synthetic"}, "train": {"epochs": 1}})
    assert load_config([child]) == expected


def test_bases_that_lead_back_to_a_file_a_missing_base_and_a_base_that_is_not_a_name_are_refused(tmp_path):
    a = write(tmp_path, "a.yaml", {"base": "b.yaml"})
    b = write(tmp_path, "b.yaml", {"base": "a.yaml"})
    itself = write(tmp_path, "itself.yaml", {"base": "itself.yaml"})
    missing = write(tmp_path, "missing.yaml", {"base": "nowhere.yaml"})
    listed = write(tmp_path, "listed.yaml", {"base": ["a.yaml", "b.yaml"]})
    for path, message in (
        (a, f"{b}: base a.yaml leads back to itself"),
        (itself, f"{itself}: base itself.yaml leads back to itself"),
        (listed, f"{listed}: base must name one config file, got ['a.yaml', 'b.yaml']"),
    ):
        with pytest.raises(ConfigError) as refused:
            load_config([path])
        assert str(refused.value) == message
    with pytest.raises(ConfigError, match=r"^config file not found: nowhere\.yaml \(a path, or one of the shipped "):
        load_config([missing])
