"""The benchmark command: its options, its report, the PyTorch peer, the CPU kernels; no timings are asserted."""

import pytest

from model_defs.alexnet import build_alexnet
from pipeline import benchmark
from pipeline.errors import ConfigError


@pytest.fixture(scope="module")
def paper_models():
    return build_alexnet(), build_alexnet(groups=1)


def test_options_map_onto_the_config():
    args = benchmark.parse_args(["--precision", "mixed_bfloat16", "--groups", "1", "--jit", "--batch-size", "128"])
    assert (args.precision, args.groups, args.jit, args.batch_size, args.fit) == ("mixed_bfloat16", 1, True, 128, True)
    assert benchmark.parse_args(["--no-jit", "--no-fit"]).jit is False
    with pytest.raises(ConfigError, match="--repeats must be at least 1, got 0"):
        benchmark.parse_args(["--repeats", "0"])


@pytest.mark.slow
def test_report_names_every_figure(capsys, tmp_path):
    import importlib.util

    import numpy as np
    import tensorflow as tf

    rng = np.random.default_rng(0)
    for i in range(12):  # the end-to-end figure reads real JPEGs from a folder
        path = tmp_path / f"class{i % 2}" / f"{i}.jpg"
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(tf.io.encode_jpeg(rng.integers(0, 255, (90, 120, 3), dtype=np.uint8)).numpy())
    tiny = ["--set", "data.image_size=64", "--set", "data.resize=72", "--set", "model.fc_units=16"]
    quick = ["--batch-size", "4", "--steps", "1", "--warmup", "1", "--repeats", "1"]
    assert benchmark.main(tiny + quick + ["--fit-source", f"folder:{tmp_path}"]) == 0
    out = capsys.readouterr().out
    for label in ("CPU kernels: ", "matmul float32  2048", "matmul float32  4096", "training FLOPs/image",
                  "step (in-memory batch)", "of the matmul rate", "paired with a matmul", "fit (pipeline.train)",
                  f"folder:{tmp_path}", "step again after fit", "of the step figure before and after", "peak RSS"):
        assert label in out, label
    if importlib.util.find_spec("torch"):
        assert "PyTorch step (same net)" in out and "x PyTorch's" in out


def test_bad_override_exits_2(capsys):
    assert benchmark.main(["--set", "model.groups=3"]) == 2
    assert "model.groups" in capsys.readouterr().err


def test_torch_reference_is_the_same_network(paper_models):
    torch = pytest.importorskip("torch")
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
