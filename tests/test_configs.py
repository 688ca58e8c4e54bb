"""Every shipped experiment file loads, names its command in its header, and is runnable as named."""

import pathlib
import re

import pytest

from pipeline.config import CONFIG_DIR, load_config

CONFIGS = sorted(CONFIG_DIR.glob("*.yaml"))


def test_the_shipped_configs_are_there():
    assert {"quickstart.yaml", "imagenet2012.yaml", "imagenette.yaml"} <= {p.name for p in CONFIGS}


# The configs whose result this project has measured, and those that state the result is not measured.
MEASURED = {"quickstart", "tune_quickstart", "cifar10"}
NOT_MEASURED = {"imagenet2012", "imagenette"}
RESULT = re.compile(r"^Result \(measured (\d{4}-\d{2}-\d{2}), 2 cores of an? [^,]+, TF 2\.21, [^)]+\): .+")


def header(path):
    """The comment lines before the first key."""
    lines = path.read_text().splitlines()
    return lines[: next(i for i, line in enumerate(lines) if line and not line.startswith("#"))]


def result(path):
    """The header's Result paragraph, as one line."""
    lines = header(path)
    start = next(i for i, line in enumerate(lines) if line.startswith("# Result"))
    end = next((i for i in range(start, len(lines)) if lines[i].strip() in ("#", "")), len(lines))
    return " ".join(line.removeprefix("#").strip() for line in lines[start:end])


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_a_config_opens_with_what_it_is_its_command_and_its_result(path: pathlib.Path):
    config = load_config([path])
    assert config.name == path.stem
    lines = header(path)
    assert lines[0].startswith("# ") and any("python -m " in line for line in lines)
    assert len(lines) <= 15, len(lines)  # what, command, result; the reasons are in the README
    assert sum(line.startswith("# Result") for line in path.read_text().splitlines()) == 1
    if path.stem in MEASURED:
        # A measured result names its date, its machine and its command.
        assert RESULT.match(result(path)), result(path)
    else:
        assert path.stem in NOT_MEASURED and result(path).startswith("Result: not measured"), result(path)


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_each_departure_from_the_paper_is_marked_beside_its_key(path: pathlib.Path):
    body = path.read_text().splitlines()[len(header(path)):]
    assert any("# departure" in line and not line.startswith("#") for line in body)


def test_imagenet2012_is_the_papers_recipe():
    config = load_config([CONFIG_DIR / "imagenet2012.yaml"])
    assert config.data.source == "tfds:imagenet2012"
    assert (config.data.image_size, config.data.resize) == (224, 256)
    assert config.model.groups == 2 and config.model.lrn
    # The one departure, the initialisation, is documented with the switch back to the paper's.
    assert config.model.init == "he_normal" and config.model.std == [58.4, 57.1, 57.4]
    assert '--set model.init=paper --set "model.std=[1,1,1]"' in (CONFIG_DIR / "imagenet2012.yaml").read_text()
    paper = load_config([CONFIG_DIR / "imagenet2012.yaml"], ["model.init=paper", "model.std=[1,1,1]"])
    assert (paper.model.init, paper.model.std) == ("paper", [1.0, 1.0, 1.0])
    assert config.train.batch_size == 128 and config.train.epochs == 90
    assert config.train.optimizer.learning_rate == 0.01 and config.train.optimizer.weight_decay == 5e-4
    assert config.train.schedule.name == "plateau" and config.train.schedule.max_reductions == 3


@pytest.mark.slow
def test_cifar10_config_trains_a_step_on_a_folder_of_its_layout(tmp_path):
    import json

    from pipeline import train
    from tests.helpers.images import jpeg_bytes, write_tree

    classes = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    write_tree(tmp_path / "cifar10", {
        f"train/{name}/{i:04d}.jpg": jpeg_bytes(32, 32, seed=10 * c + i) for c, name in enumerate(classes)
        for i in range(3)
    })  # fmt: skip
    config = load_config([CONFIG_DIR / "cifar10.yaml"])
    assert (config.data.source, config.data.image_size, config.model.fc_units) == ("tfds:cifar10", 64, 1024)
    argv = ["--config", str(CONFIG_DIR / "cifar10.yaml"), "--run-dir", str(tmp_path / "run"),
            "--set", f"data.source=folder:{tmp_path / 'cifar10'}", "--set", "train.epochs=1",
            "--set", "train.steps_per_epoch=1", "--set", "export.saved_model=false", "--set", "train.verbose=0"]
    assert train.main(argv) == 0
    figures = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert figures["epochs"] == 1 and 0.0 <= figures["val_top1_error"] <= 1.0
    assert (tmp_path / "run" / "labels.txt").read_text().splitlines() == classes
