"""A tiny tuning experiment, written as a config file for `python -m tuning.search` and the search directory."""

import json
import pathlib

import yaml

# 32 synthetic 64x64 images, 10 classes, a narrow fc6/fc7; three 1-epoch random trials.
TINY = {
    "name": "tiny",
    "data": {"source": "synthetic", "image_size": 64, "resize": 64, "num_examples": 32},
    "model": {"fc_units": 32, "init": "glorot_uniform"},
    "train": {"batch_size": 16, "verbose": 0},
    "tune": {"tuner": "random", "max_trials": 3, "epochs": 1},
}


def write_experiment(directory, **changes):
    """Writes TINY, each section updated by `changes` ({section: {key: value}}), to <directory>/tiny.yaml; its path."""
    tree = json.loads(json.dumps(TINY))
    for section, values in changes.items():
        tree[section].update(values)
    path = pathlib.Path(directory) / "tiny.yaml"
    path.write_text(yaml.safe_dump(tree))
    return path
