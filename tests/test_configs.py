"""Every shipped experiment file loads, names its command in its header, and is runnable as named."""

import pathlib

import pytest

from pipeline.config import CONFIG_DIR, load_config

CONFIGS = sorted(CONFIG_DIR.glob("*.yaml"))


def test_the_shipped_configs_are_there():
    assert {"quickstart.yaml", "imagenet2012.yaml", "imagenette.yaml"} <= {p.name for p in CONFIGS}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_config_loads_and_opens_with_its_command(path: pathlib.Path):
    config = load_config([path])
    assert config.name == path.stem
    header = path.read_text().splitlines()[:12]
    assert header[0].startswith("# ")
    assert any("python -m " in line for line in header)
    assert any("Expected" in line or "expected" in line for line in path.read_text().splitlines() if line.startswith("#"))


def test_imagenet2012_is_the_papers_recipe():
    config = load_config([CONFIG_DIR / "imagenet2012.yaml"])
    assert config.data.source == "tfds:imagenet2012"
    assert (config.data.image_size, config.data.resize) == (224, 256)
    assert config.model.init == "paper" and config.model.groups == 2 and config.model.lrn
    assert config.train.batch_size == 128 and config.train.epochs == 90
    assert config.train.optimizer.learning_rate == 0.01 and config.train.optimizer.weight_decay == 5e-4
    assert config.train.schedule.name == "plateau" and config.train.schedule.max_reductions == 3
