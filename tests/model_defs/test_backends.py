"""The same model on every Keras backend: same parameter counts, same logits, same training, models that travel.

The backend is fixed when Keras is imported, so each backend runs in its own
subprocess; they exchange weights and results through files in tmp_path. This
process (TensorFlow, as the rest of the suite) writes the starting weights and
a model.keras, and reads back what the others trained and saved.
"""

import json
import subprocess
import sys

import keras
import numpy as np
import pytest

from model_defs.alexnet import build_alexnet
from tests.helpers.runs import ROOT, project_env

# A tiny network with every layer kind: the input normalisation (mean only, as the paper: activations in the
# hundreds, so LRN's alpha term counts), LRN, the grouped convolutions, dropout (off, so that the backends'
# random streams do not enter).
TINY = dict(num_classes=5, input_size=64, fc_units=16, dropout=0.0, init="glorot_uniform")
OPTIMIZER = dict(learning_rate=1e-3, momentum=0.9, coupled_weight_decay=5e-4)
COUNTS = [({}, 60_965_224), ({"groups": 1}, 62_378_344), ({"groups": 1, "widths": "torchvision"}, 61_100_840)]
# The PyTorch leg is opt-in (pytest.ini: -m torch), as torch is not in the test extra.
TORCH = pytest.param("torch", marks=pytest.mark.torch)
BACKENDS = ["tensorflow", "jax", TORCH]
OTHERS = ["jax", TORCH]

SCRIPT = r"""
import json, os, sys

from tests.helpers import no_tensorflow

if os.environ["KERAS_BACKEND"] != "tensorflow":
    no_tensorflow.install()

import numpy as np

import keras
from model_defs.alexnet import build_alexnet
from model_defs.optimizers import PaperSGD

work, tiny, optimizer, counts = sys.argv[1], *map(json.loads, sys.argv[2:5])
backend = keras.backend.backend()
data = np.load(f"{work}/inputs.npz")
# The paper's models built without their random initialisation (seconds of XLA compiling per weight shape on
# JAX's CPU): the weights' shapes count.
with keras.StatelessScope(initialize_variables=False):
    result = {"backend": backend, "counts": [build_alexnet(**kwargs).count_params() for kwargs in counts]}
model, *forms = [build_alexnet(**tiny, grouped_conv=form) for form in ("auto", "towers", "native")]
arrays = {}

model.load_weights(f"{work}/start.weights.h5")
arrays["logits"] = keras.ops.convert_to_numpy(model(data["x"], training=False))
for form, other in zip(("towers", "native"), forms):
    other.set_weights(model.get_weights())
    arrays[f"logits_{form}"] = keras.ops.convert_to_numpy(other(data["x"], training=False))

model.compile(PaperSGD(**optimizer), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
result["losses"] = [float(model.train_on_batch(data["x"], data["y"])) for _ in range(3)]
for i, weight in enumerate(model.weights):
    arrays[f"weight{i}"] = keras.ops.convert_to_numpy(weight)
result["names"] = [weight.path for weight in model.weights]
model.save(f"{work}/{backend}.keras")

reloaded = keras.models.load_model(f"{work}/tensorflow_saved.keras")  # saved by TensorFlow
arrays["reloaded_logits"] = keras.ops.convert_to_numpy(reloaded(data["x"], training=False))

np.savez(f"{work}/{backend}.npz", **arrays)
result["tensorflow_imports"] = no_tensorflow.imports
result["tensorflow_probes"] = no_tensorflow.probes
result["tensorflow_loaded"] = "tensorflow" in sys.modules
print("RESULT", json.dumps(result))
"""


def _close(actual, expected, rtol=1e-5):
    """Equal to float32 precision: `rtol` of each value, or of the array's largest value where a value is near 0."""
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=rtol * float(np.max(np.abs(expected))))


class Runs(dict):
    """{backend: (result dict, arrays)} of SCRIPT on each backend, all from the same weights and batch.

    TensorFlow and JAX start together; another backend starts when a test first asks for it.
    """

    def __init__(self, work):
        super().__init__()
        self.work = work
        argv = [sys.executable, "-c", SCRIPT, str(work), json.dumps(TINY), json.dumps(OPTIMIZER),
                json.dumps([kwargs for kwargs, _ in COUNTS])]  # fmt: skip
        self.argv = argv
        self.started = {backend: self._start(backend) for backend in ("tensorflow", "jax")}

    def _start(self, backend):
        # JAX_THREEFRY_PARTITIONABLE=0: the random initialisation (replaced by the loaded weights) compiles in half
        # the time on JAX's CPU.
        env = project_env(KERAS_BACKEND=backend, JAX_THREEFRY_PARTITIONABLE="0")
        return subprocess.Popen(self.argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def __missing__(self, backend):
        process = self.started.pop(backend, None) or self._start(backend)
        out, err = process.communicate(timeout=300)
        assert process.returncode == 0, f"{backend}: {err[-3000:]}"
        result = json.loads(next(line for line in out.splitlines() if line.startswith("RESULT "))[7:])
        assert result["backend"] == backend
        self[backend] = (result, dict(np.load(self.work / f"{backend}.npz")))
        return self[backend]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    work = tmp_path_factory.mktemp("backends")
    keras.backend.clear_session()
    model = build_alexnet(**TINY, seed=7)
    model.save_weights(work / "start.weights.h5")
    model.save(work / "tensorflow_saved.keras")
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (4, 64, 64, 3)).astype(np.float32)
    np.savez(work / "inputs.npz", x=x, y=np.array([0, 1, 2, 3]),
             logits=keras.ops.convert_to_numpy(model(x, training=False)))  # fmt: skip
    started = Runs(work)
    yield started
    for process in started.started.values():
        process.kill()


@pytest.mark.parametrize("backend", BACKENDS)
def test_parameter_counts_are_the_same_on_every_backend(runs, backend):
    assert runs[backend][0]["counts"] == [count for _, count in COUNTS]


@pytest.mark.parametrize("backend", OTHERS)
def test_other_backends_need_no_tensorflow(runs, backend):
    # SCRIPT ran there with TensorFlow made unimportable: building, running, training, saving and loading the
    # model never asked for it.
    # Only Keras' own probe of whether TensorFlow is there (when it saves a model) asks for it, and goes on without.
    assert {caller.rsplit("site-packages/", 1)[-1] for caller in runs[backend][0]["tensorflow_imports"]} <= {
        "keras/src/utils/module_utils.py"}
    assert runs[backend][0]["tensorflow_loaded"] is False
    # Asking whether it is there is no import (torch's dynamo asks about every library it knows), but the
    # project itself never asks.
    assert not [caller for caller in runs[backend][0]["tensorflow_probes"] if caller.startswith(str(ROOT))]


@pytest.mark.parametrize("backend", BACKENDS)
def test_same_weights_give_the_same_logits(runs, backend):
    expected = np.load(runs.work / "inputs.npz")["logits"]  # this process, TensorFlow
    arrays = runs[backend][1]
    assert np.ptp(expected, axis=0).min() > 0.01  # logits that carry the input, not a constant
    for key in ("logits", "logits_towers", "logits_native"):
        _close(arrays[key], expected)


@pytest.mark.parametrize("backend", OTHERS)
def test_three_paper_sgd_steps_give_the_same_weights(runs, backend):
    (tf_result, tf_arrays), (result, arrays) = runs["tensorflow"], runs[backend]
    assert result["names"] == tf_result["names"]
    np.testing.assert_allclose(result["losses"], tf_result["losses"], rtol=1e-5)
    assert tf_result["losses"][2] < tf_result["losses"][0]  # it trained
    moved = 0
    start = build_alexnet(**TINY)
    start.load_weights(runs.work / "start.weights.h5")
    for i, initial in enumerate(start.weights):
        _close(arrays[f"weight{i}"], tf_arrays[f"weight{i}"])
        moved += not np.allclose(tf_arrays[f"weight{i}"], keras.ops.convert_to_numpy(initial), rtol=1e-4, atol=1e-6)
    assert moved == len(start.weights)  # every kernel and bias took part


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_model_saved_on_one_backend_reloads_on_another(runs, backend):
    # TensorFlow's model.keras, loaded there.
    _close(runs[backend][1]["reloaded_logits"], np.load(runs.work / "inputs.npz")["logits"])
    # Theirs, trained, loaded here: the weights they trained, and the optimizer.
    reloaded = keras.models.load_model(runs.work / f"{backend}.keras")
    assert type(reloaded.optimizer).__name__ == "PaperSGD"
    assert reloaded.optimizer.coupled_weight_decay == OPTIMIZER["coupled_weight_decay"]
    for i, weight in enumerate(reloaded.weights):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(weight), runs[backend][1][f"weight{i}"])


STAND_IN = """
import importlib, importlib.util, json, sys
from tests.helpers import no_tensorflow

no_tensorflow.install()
found = importlib.util.find_spec("tensorflow"), importlib.util.find_spec("tensorflow.python")
try:
    import tensorflow.python  # noqa: F401
except ModuleNotFoundError as error:
    message = str(error)
print(json.dumps([found == (None, None), message, no_tensorflow.imports, no_tensorflow.probes,
                  "tensorflow" in sys.modules, importlib.util.find_spec("numpy") is not None]))
"""


def test_the_stand_in_for_a_host_without_tensorflow_answers_as_one_does():
    done = subprocess.run([sys.executable, "-c", STAND_IN], env=project_env(), capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout) == [
        True, "No module named 'tensorflow'", ["<string>"], ["<string>", "<string>"], False, True]
