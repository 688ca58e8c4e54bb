"""The TensorFlow-free step benchmark (pipeline.bench.step): options, FLOP count, a tiny run on JAX, the peer."""

import importlib.util
import json
import subprocess
import sys

import pytest

from pipeline.bench import step
from pipeline.console import cli
from pipeline.errors import ConfigError
from tests.helpers.runs import project_env


def test_default_grid_is_the_papers_network_in_both_precisions_batches_and_grouped_forms():
    args = step.parse_args([])
    assert (args.image_size, args.groups, args.widths, args.lrn, args.fc_units) == (224, 2, "paper", True, 4096)
    assert args.precision == ["mixed_bfloat16", "float32"] and args.batch_size == [128, 512]
    assert args.grouped_conv == ["towers", "native"]
    assert step.parse_args(["--groups", "1"]).grouped_conv == ["towers"]  # one tower has no form
    with pytest.raises(ConfigError, match="--image-size must be at least 64 for AlexNet, got 32") as stop:
        step.parse_args(["--image-size", "32"])
    assert cli.exit_status(stop.value) == 2 and "python -m pipeline.benchmark --backend BACKEND --help" in str(stop.value)


TINY = ["--image-size", "64", "--fc-units", "16", "--num-classes", "4", "--steps", "1", "--warmup", "0",
        "--repeats", "1"]  # fmt: skip

# pipeline.benchmark with --backend hands over before anything imports Keras or TensorFlow; TensorFlow is made
# unimportable, as on a GPU host without it.
RUN = """
import sys
sys.modules["tensorflow"] = None
from pipeline import benchmark
sys.exit(benchmark.main(sys.argv[1:]))
"""


@pytest.mark.slow
def test_a_tiny_run_on_jax_through_pipeline_benchmark_needs_no_tensorflow(tmp_path):
    argv = ["--backend", "jax", *TINY, "--precision", "float32", "--batch-size", "4", "--loss-steps", "2",
            "--loss-batch-size", "4", "--no-torch", "--json", str(tmp_path / "steps.json")]  # fmt: skip
    done = subprocess.run([sys.executable, "-c", RUN, *argv], env=project_env(), capture_output=True, text=True,
                          timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    figures = json.loads((tmp_path / "steps.json").read_text())
    assert figures["backend"] == "jax" and figures["tensorflow_loaded"] is False
    assert [(s["grouped_conv"], s["batch_size"]) for s in figures["steps"]] == [("towers", 4), ("native", 4)]
    assert all(s["images_per_second"][0] > 0 for s in figures["steps"])
    (curve,) = figures["loss_curves"]
    assert len(curve["losses"]) == 3 and curve["every_10"] == {"0": round(curve["losses"][0], 4)}
    assert "float32        batch    4  towers LRN auto" in done.stdout and "loss, float32" in done.stdout


def test_the_pytorch_peer_runs_in_its_own_process():
    if importlib.util.find_spec("torch") is None:
        pytest.skip("torch is not installed (pip install -e '.[torch]')")
    args = step.parse_args(TINY)
    result = step.torch_peer(args, "bfloat16", 2)
    assert "error" not in result, result
    assert result["precision"] == "bfloat16" and len(result["images_per_second"]) == 1
    assert result["device"] in ("cpu",) or result["device"].startswith("NVIDIA")
