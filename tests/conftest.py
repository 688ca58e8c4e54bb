"""Shared fixtures. Every test builds its own tiny data; nothing is downloaded."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# Before any test module loads TensorFlow: the kernels users get (oneDNN, see model_defs).
import pytest  # noqa: E402

import model_defs  # noqa: E402,F401


@pytest.fixture(autouse=True)
def _fresh_keras_state():
    """Each test starts with an empty Keras graph state (names, uid counters)."""
    import keras

    keras.backend.clear_session()
    yield
