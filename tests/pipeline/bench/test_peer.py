"""The PyTorch peer (pipeline.bench.peer): the command it starts from the config, what it reads back, a real run."""

import subprocess
import sys
import types

import pytest

from pipeline.bench import peer
from pipeline.config import load_config


def test_the_peer_is_started_with_the_configured_network_and_its_last_json_line_read(monkeypatch):
    started = []

    def run(command, **kwargs):
        started.append(command)
        return types.SimpleNamespace(stdout='progress\n{"a": 1}\n{"images_per_second": [5.0], "device": "cpu"}\n',
                                     stderr="")  # fmt: skip

    monkeypatch.setattr(subprocess, "run", run)
    overrides = ["model.groups=1", "model.widths=torchvision", "model.fc_units=64", "model.lrn=false"]
    model = load_config([], overrides).model
    result = peer.torch_peer(model, 96, 8, 5, 1, 2, 10, precision="bfloat16", compile=True)
    assert result == {"images_per_second": [5.0], "device": "cpu"}
    assert started == [[
        sys.executable, "-m", "benchmarks.torch_reference", "--image-size", "96", "--batch-size", "8",
        "--groups", "1", "--steps", "5", "--warmup", "1", "--repeats", "2", "--num-classes", "10",
        "--widths", "torchvision", "--fc-units", "64", "--precision", "bfloat16", "--compile", "--no-lrn",
    ]]  # fmt: skip
    monkeypatch.setattr(subprocess, "run", lambda command, **kwargs: types.SimpleNamespace(
        stdout="", stderr="Traceback\nModuleNotFoundError: No module named 'torch'\n"))  # fmt: skip
    assert peer.torch_peer(model, 96, 8, 5, 1, 2, 10) == {
        "error": "benchmarks.torch_reference failed: [\"ModuleNotFoundError: No module named 'torch'\"]"
    }


def test_outside_the_checkout_the_peer_says_where_it_runs(monkeypatch):
    monkeypatch.setattr(peer, "PEER", peer.ROOT / "benchmarks" / "gone.py")
    assert peer.torch_peer(load_config([]).model, 64, 2, 1, 0, 1, 4) == {
        "error": "benchmarks/gone.py is not here: the peer runs from the project's checkout"
    }


@pytest.mark.torch
def test_the_pytorch_peer_runs_in_its_own_process():
    model = load_config([], ["model.fc_units=16"]).model
    result = peer.torch_peer(model, 64, 2, steps=1, warmup=0, repeats=1, num_classes=4, precision="bfloat16")
    assert "error" not in result, result
    assert result["precision"] == "bfloat16" and len(result["images_per_second"]) == 1
    assert result["device"] in ("cpu",) or result["device"].startswith("NVIDIA")
    assert peer.describe(result) == f"torch {result['torch']} on {result['device']}, {result['threads']} threads"
