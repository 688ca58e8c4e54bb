"""The one training-step timer (pipeline.bench.step): what it times, the model it times, and a tiny run on JAX
through `pipeline.benchmark --backend` with TensorFlow unimportable."""

import json
import subprocess
import sys

import pytest

from pipeline.bench import step
from pipeline.bench.timing import CoreMeter
from pipeline.config import load_config
from tests.helpers.runs import project_env


def test_time_steps_warms_up_then_times_each_repeat_after_the_function_beside_it(monkeypatch):
    now, calls = [0.0], []

    def run(n):  # a step takes 0.25 s of the fake clock
        calls.append(("run", n))
        now[0] += 0.25 * n

    def beside():  # untimed, however long it takes
        calls.append(("beside",))
        now[0] += 100.0

    monkeypatch.setattr(step.time, "perf_counter", lambda: now[0])
    meter = CoreMeter()
    rates = step.time_steps(run, batch_size=8, steps=4, warmup=3, repeats=2, meter=meter, beside=beside)
    assert calls == [("run", 3), ("beside",), ("run", 4), ("beside",), ("run", 4)]
    assert rates == [4 * 8 / 1.0, 4 * 8 / 1.0]
    assert meter.wall == 2.0  # only the timed steps are charged
    calls.clear()
    assert step.time_steps(run, 4, 2, warmup=0, repeats=1) == [4 * 2 / 0.5]
    assert calls == [("run", 2)]  # no warm-up step


def test_the_timed_model_is_the_configured_one_with_the_papers_optimizer_and_no_metric():
    config = load_config([], ["data.image_size=64", "model.fc_units=16", "model.groups=1", "train.precision=float32",
                              "train.optimizer.learning_rate=0.02", "train.optimizer.weight_decay=0.001"])
    model = step.bare_model(config, 4, lrn_implementation="windowed", jit=False)
    assert model.get_layer("fc6").units == 16 and model.get_layer("conv2").groups == 1
    assert model.input_shape == (None, 64, 64, 3) and model.output_shape == (None, 4)
    assert {layer.implementation for layer in model.layers if hasattr(layer, "implementation")} == {"windowed"}
    assert type(model.optimizer).__name__ == "PaperSGD" and model.optimizer.coupled_weight_decay == 0.001
    assert float(model.optimizer.learning_rate) == pytest.approx(0.02)
    images, labels = step.random_batch(2, 64, 4)
    assert images.shape == (2, 64, 64, 3) and labels.tolist() == step.random_batch(2, 64, 4)[1].tolist()
    run = step.trainer_steps(model, images, labels)
    assert isinstance(run(2), float)
    assert [m.name for m in model.metrics] == ["loss"]


TINY = ["--set", "data.image_size=64", "--set", "model.fc_units=16", "--num-classes", "4", "--steps", "1",
        "--warmup", "0", "--repeats", "1"]  # fmt: skip

# pipeline.benchmark with --backend hands over before anything imports Keras or TensorFlow; TensorFlow is made
# unimportable, as on a GPU host without it.
RUN = """
import json, sys

from tests.helpers import no_tensorflow

no_tensorflow.install()
from pipeline import benchmark
status = benchmark.main(sys.argv[1:])
print("TENSORFLOW IMPORTS", json.dumps(no_tensorflow.imports))
sys.exit(status)
"""


@pytest.mark.slow
def test_a_tiny_run_on_jax_through_pipeline_benchmark_needs_no_tensorflow(tmp_path):
    argv = [*TINY, "--precision", "float32", "--batch-size", "4", "--loss-steps", "2", "--backend", "jax",
            "--loss-batch-size", "4", "--no-torch", "--json", str(tmp_path / "steps.json")]  # fmt: skip
    done = subprocess.run([sys.executable, "-c", RUN, *argv], env=project_env(), capture_output=True, text=True,
                          timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((tmp_path / "steps.json").read_text())
    # Nothing asked for TensorFlow but Keras' own probe of whether it is there (it goes on without).
    attempts = json.loads(done.stdout.splitlines()[-1].removeprefix("TENSORFLOW IMPORTS "))
    assert set(attempts) <= {"keras/src/utils/module_utils.py"}, attempts
    assert results["backend"] == "jax" and results["tensorflow_loaded"] is False
    assert (results["image_size"], results["model"]["fc_units"], results["model"]["init"]) == (64, 16, "glorot_uniform")
    assert [(s["grouped_conv"], s["batch_size"]) for s in results["steps"]] == [("towers", 4), ("native", 4)]
    assert all(s["images_per_second"][0] > 0 for s in results["steps"])
    (curve,) = results["loss_curves"]
    assert len(curve["losses"]) == 3 and curve["every_10"] == {"0": round(curve["losses"][0], 4)}
    assert "float32        batch    4  towers LRN auto" in done.stdout and "loss, float32" in done.stdout
    assert "AlexNet 64x64, groups 2, widths paper, LRN, fc 16, 4 classes" in done.stdout
