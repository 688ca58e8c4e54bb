"""The PyTorch peer: the same network's training step in PyTorch (`benchmarks/torch_reference.py`), timed in a
process of its own so that the two frameworks never share thread pools or GPU memory."""

import json
import os
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]
PEER = ROOT / "benchmarks" / "torch_reference.py"


def torch_peer(model, image_size, batch_size, steps, warmup, repeats, num_classes, precision="float32",
               compile=False):  # fmt: skip
    """Runs the peer once and returns what it measured.

    Args:
        model: the `ModelConfig` (groups, widths, fc_units, lrn shape the peer).
        image_size: input height and width.
        batch_size, steps, warmup, repeats: as for `pipeline.bench.step.time_steps`.
        num_classes: width of fc8.
        precision: "float32" or "bfloat16" (autocast).
        compile: time the step under `torch.compile`.

    Returns:
        The peer's dict ("images_per_second": one per timing, "device", "torch",
        "threads", "precision", ...), or {"error": why} when it cannot run.
    """
    if not PEER.is_file():
        return {"error": f"{PEER.relative_to(ROOT)} is not here: the peer runs from the project's checkout"}
    command = [
        sys.executable, "-m", "benchmarks.torch_reference", "--image-size", str(image_size),
        "--batch-size", str(batch_size), "--groups", str(model.groups), "--steps", str(steps),
        "--warmup", str(warmup), "--repeats", str(repeats), "--num-classes", str(num_classes),
        "--widths", model.widths, "--fc-units", str(model.fc_units), "--precision", precision,
    ] + (["--compile"] if compile else []) + ([] if model.lrn else ["--no-lrn"])  # fmt: skip
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if not lines:
        return {"error": f"benchmarks.torch_reference failed: {done.stderr.strip().splitlines()[-1:]}"}
    return json.loads(lines[-1])


def describe(result):
    """Where the peer ran, in words: "torch <version> on <device>, <n> threads"."""
    return f"torch {result['torch']} on {result['device']}, {result['threads']} threads"
