"""The benchmark command: its three modes, their options, the PyTorch peer's network, the CPU kernels; no timings
are asserted. The TensorFlow report it prints is tested in bench/test_report.py."""

import pytest

from model_defs.alexnet import build_alexnet
from pipeline import benchmark
from pipeline.bench import input as input_benchmark
from pipeline.console import cli
from pipeline.errors import ConfigError


@pytest.fixture(scope="module")
def paper_models():
    return build_alexnet(), build_alexnet(groups=1)


def test_help_shows_every_mode_and_the_usage_examples(capsys):
    with pytest.raises(SystemExit) as stop:
        benchmark.main(["--help"])
    assert stop.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: python -m pipeline.benchmark [--input | --backend BACKEND] [options]\n")
    for text in ("modes (one at most, anywhere on the line):", "  --input ", "  --backend {jax,tensorflow,torch}",
                 "    python -m pipeline.benchmark --backend jax --config configs/imagenet2012.yaml",
                 "    python -m pipeline.benchmark --input [--images DIR]", "  --fit-source SOURCE"):
        assert text in out, text
    with pytest.raises(SystemExit):
        benchmark.main(["--set", "model.groups=1", "--backend", "jax", "--help"])
    out = capsys.readouterr().out
    assert out.startswith("usage: python -m pipeline.benchmark --backend {jax,tensorflow,torch} [options]\n")
    assert "  --loss-steps N " in out and "  --grouped-conv " in out and "  --fit-source SOURCE" not in out


def test_input_mode_stands_anywhere_and_hands_the_rest_to_the_input_benchmark(monkeypatch):
    calls = []
    monkeypatch.setattr(input_benchmark, "main", lambda argv: calls.append(argv))
    for argv in (["--input", "--images", "DIR", "--repeats", "5"], ["--images", "DIR", "--input", "--repeats", "5"],
                 ["--images", "DIR", "--repeats", "5", "--input"]):
        assert benchmark.main(argv) == 0
    assert calls == [["--images", "DIR", "--repeats", "5"]] * 3


def test_one_mode_at_most(capsys):
    assert benchmark.main(["--backend", "jax", "--steps", "1", "--input"]) == 2
    assert capsys.readouterr().err == (
        "error: argument --input: not allowed with argument --backend: see python -m pipeline.benchmark --help\n"
    )


def test_backend_options_and_the_model_from_the_config():
    args = benchmark.parse_backend_args(["--backend", "jax"])
    assert args.precision == ["mixed_bfloat16", "float32"] and args.batch_size == [128, 512]
    assert args.grouped_conv == ["towers", "native"] and args.lrn_implementation == ["auto"]
    assert (args.steps, args.warmup, args.repeats, args.num_classes, args.config, args.set) == (20, 3, 3, 1000, [], [])
    args = benchmark.parse_backend_args(["--set", "model.groups=1", "--backend", "torch", "--batch-size", "4", "8",
                                         "--config", "configs/imagenet2012.yaml", "--no-timing", "--loss-steps", "5"])
    assert (args.backend, args.batch_size, args.timing, args.loss_steps) == ("torch", [4, 8], False, 5)
    assert (args.config, args.set) == (["configs/imagenet2012.yaml"], ["model.groups=1"])
    with pytest.raises(ConfigError, match="--batch-size must be at least 1, got 0") as stop:
        benchmark.parse_backend_args(["--backend", "jax", "--batch-size", "4", "0"])
    assert cli.exit_status(stop.value) == 2


def test_backend_mode_reads_the_config_before_anything_else(capsys):
    assert benchmark.main(["--backend", "jax", "--set", "data.image_size=32"]) == 2
    assert capsys.readouterr().err.startswith("error: data.image_size: Input should be greater than or equal to 64")
    assert benchmark.main(["--backend", "jax", "--set", "model.widths=alexnet"]) == 2
    assert "model.widths" in capsys.readouterr().err


def test_options_map_onto_the_config():
    args = benchmark.parse_args(["--precision", "mixed_bfloat16", "--groups", "1", "--jit", "--batch-size", "128"])
    assert (args.precision, args.groups, args.jit, args.batch_size, args.fit) == ("mixed_bfloat16", 1, True, 128, True)
    assert benchmark.parse_args(["--no-jit", "--no-fit"]).jit is False
    with pytest.raises(ConfigError, match="--repeats must be at least 1, got 0"):
        benchmark.parse_args(["--repeats", "0"])


def test_bad_override_exits_2(capsys):
    assert benchmark.main(["--set", "model.groups=3"]) == 2
    assert "model.groups" in capsys.readouterr().err


@pytest.mark.torch
def test_torch_reference_is_the_same_network(paper_models):
    import torch

    from benchmarks.torch_reference import build_torch_alexnet

    for model, groups in zip(paper_models, (2, 1)):
        reference = build_torch_alexnet(groups=groups)
        assert sum(p.numel() for p in reference.parameters()) == model.count_params()
        with torch.no_grad():
            logits = reference(torch.zeros(2, 3, 224, 224).to(memory_format=torch.channels_last))
        assert tuple(logits.shape) == (2, 1000)


def test_importing_the_package_selects_onednn_unless_the_environment_says_otherwise():
    import os
    import subprocess
    import sys

    probe = "import pipeline, tensorflow; from tensorflow.python.util import _pywrap_util_port as p; print(p.IsMklEnabled())"
    env = {k: v for k, v in os.environ.items() if k != "TF_ENABLE_ONEDNN_OPTS"}
    for setting, expected in ((None, "True"), ("0", "False")):
        run_env = dict(env, **({"TF_ENABLE_ONEDNN_OPTS": setting} if setting else {}))
        done = subprocess.run([sys.executable, "-c", probe], env=run_env, capture_output=True, text=True, check=True)
        assert done.stdout.strip().splitlines()[-1] == expected, (setting, done.stdout)
