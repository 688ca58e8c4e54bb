"""The step on any Keras backend (pipeline.bench.backend): the grid the options and the config ask for, every row
in the JSON file as it comes; the timer itself is stubbed here (test_step.py runs it for real)."""

import json

import keras

import model_defs.flops
from pipeline import benchmark
from pipeline.bench import backend
from pipeline.config import load_config


def test_the_grid_follows_the_config_and_every_row_reaches_the_json_file(tmp_path, monkeypatch):
    built, saved = [], []
    monkeypatch.setattr(backend, "bare_model", lambda config, num_classes, lrn, jit: built.append(
        (config.train.precision, config.model.grouped_conv, lrn, jit, num_classes)) or "model")  # fmt: skip
    monkeypatch.setattr(backend, "trainer_steps", lambda model, images, labels: (model, images.shape, labels.shape))
    monkeypatch.setattr(backend, "time_steps", lambda run, batch_size, steps, warmup, repeats: [10.0, 30.0, 20.0])
    monkeypatch.setattr(model_defs.flops, "training_flops", lambda model: 2e9)
    monkeypatch.setattr(backend, "device_description", lambda: "cpu")
    path = tmp_path / "out.json"
    argv = ["--backend", "tensorflow", "--precision", "float32", "mixed_bfloat16", "--batch-size", "4",
            "--lrn-implementation", "banded", "windowed", "--num-classes", "7", "--no-torch", "--json", str(path)]
    args = benchmark.parse_backend_args(argv)
    # One tower: one grouped form; no LRN: no LRN forms to choose.
    config = load_config([], ["model.groups=1", "model.lrn=false", "data.image_size=64"])
    lines = []
    results = backend.benchmark(args, config, out=lambda line: lines.append(line) or saved.append(
        len(json.loads(path.read_text())["steps"]) if path.exists() else None))  # fmt: skip
    assert built == [("float32", "towers", "auto", None, 7), ("mixed_bfloat16", "towers", "auto", None, 7)]
    assert lines == [
        f"Keras {keras.__version__} on tensorflow {results['backend_version']}, cpu; AlexNet 64x64, groups 1, "
        "widths paper, no LRN, fc 4096, 7 classes",
        "float32        batch    4  towers LRN auto      20 images/s (spread 10-30, 3 runs)  0.04 TFLOP/s "
        "(2.000 GFLOP/image)",
        "mixed_bfloat16 batch    4  towers LRN auto      20 images/s (spread 10-30, 3 runs)  0.04 TFLOP/s "
        "(2.000 GFLOP/image)",
    ]
    assert json.loads(path.read_text()) == json.loads(json.dumps(results))
    assert saved == [None, None, 1]  # each row written before the next is measured
    assert results["steps"][1] == {"precision": "mixed_bfloat16", "batch_size": 4, "grouped_conv": "towers",
                                   "lrn_implementation": "auto", "images_per_second": [10.0, 30.0, 20.0],
                                   "training_flops": 2e9, "tflops": 20.0 * 2e9 / 1e12}  # fmt: skip
    assert (results["image_size"], results["seed"], results["model"]["groups"]) == (64, 0, 1)
