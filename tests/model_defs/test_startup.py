"""TensorFlow's start-up notices stay off the terminal unless TF_CPP_MIN_LOG_LEVEL is set."""

import subprocess
import sys

from model_defs.startup import is_noise
from tests.helpers.runs import project_env

# Lines TensorFlow 2.21 writes on a CPU-only host when it loads (copied from a terminal).
STARTUP = [
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
    "I0000 00:00:1796004185.090935   11521 port.cc:153] oneDNN custom operations are on. You may see slightly "
    "different numerical results due to floating-point round-off errors from different computation orders. To turn "
    "them off, set the environment variable `TF_ENABLE_ONEDNN_OPTS=0`.",
    "I0000 00:00:1796004185.091537   11521 cudart_stub.cc:31] Could not find cuda drivers on your machine, GPU will "
    "not be used.",
    "I0000 00:00:1796004185.226058   11521 cpu_feature_guard.cc:227] This TensorFlow binary is optimized to use "
    "available CPU instructions in performance-critical operations.",
    "To enable the following instructions: AVX2 FMA, in other operations, rebuild TensorFlow with the appropriate "
    "compiler flags.",
    "E0000 00:00:1796004193.230468   11521 cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error: Failed "
    "call to cuInit: UNKNOWN ERROR (303)",
]


def test_only_the_start_up_notices_count_as_noise():
    assert all(is_noise(line) for line in STARTUP)
    kept = [
        "W0000 00:00:1796004185.1 11521 gpu_device.cc:2] Cannot dlopen some GPU libraries.",
        "E0000 00:00:1796004193.2 11521 cuda_dnn.cc:52] Could not create cudnn handle: CUDNN_STATUS_INTERNAL_ERROR",
        "error: something else",
        "Traceback (most recent call last):",
    ]
    assert not any(is_noise(line) for line in kept)


# Imports TensorFlow, then starts and stops the profiler, which logs INFO lines as it runs.
SCRIPT = (
    "import model_defs, tensorflow as tf, sys, tempfile; print('warn', file=sys.stderr); tf.constant(1) + 1; "
    "tf.profiler.experimental.start(tempfile.mkdtemp()); tf.constant(1) + 1; tf.profiler.experimental.stop()"
)


def test_importing_tensorflow_through_the_package_is_quiet_unless_asked():
    env = project_env()
    assert "TF_CPP_MIN_LOG_LEVEL" not in env
    quiet = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=120)
    assert (quiet.returncode, quiet.stderr) == (0, "warn\n")
    env["TF_CPP_MIN_LOG_LEVEL"] = "0"
    loud = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=120)
    assert loud.returncode == 0 and "oneDNN custom operations are on" in loud.stderr


def test_asking_whether_tensorflow_is_installed_does_not_use_up_the_quiet_import():
    # `python -m pipeline.benchmark --backend tensorflow` asks first (importlib.util.find_spec), then imports.
    script = "import importlib.util, model_defs; assert importlib.util.find_spec('tensorflow'); " + SCRIPT
    quiet = subprocess.run([sys.executable, "-c", script], env=project_env(), capture_output=True, text=True,
                           timeout=120)
    assert (quiet.returncode, quiet.stderr) == (0, "warn\n")
