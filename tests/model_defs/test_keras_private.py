"""Every private Keras, TensorFlow and KerasTuner attribute the project uses is still there.

An upgrade that removes one fails here.

Each check reads the installed library for exactly what `model_defs.keras_private` relies on.
"""

import inspect

import keras
import numpy as np
import pytest

from model_defs import keras_private


def test_build_metrics_creates_the_compiled_metrics_variables_before_any_step():
    import tensorflow as tf

    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(3)])
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=[keras.metrics.SparseCategoricalAccuracy()])
    # The loss tracker is made by compile; the compiled metrics at the first step, or here.
    assert [v.path for v in model.metrics_variables] == ["loss/total", "loss/count"]
    keras_private.build_metrics(model, (tf.TensorSpec([None, 2], tf.float32), tf.TensorSpec([None], tf.int32)))
    paths = [v.path for v in model.metrics_variables]
    assert paths[:2] == ["loss/total", "loss/count"] and len(paths) == 4
    assert all(p.startswith("sparse_categorical_accuracy/") for p in paths[2:])


def test_tensorboard_keeps_its_writers_by_name(tmp_path):
    callback = keras.callbacks.TensorBoard(str(tmp_path))
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile("sgd", "mse")
    model.fit(np.zeros((4, 2)), np.zeros((4, 1)), epochs=1, verbose=0, callbacks=[callback])
    assert "_writers" in inspect.getsource(keras.callbacks.TensorBoard)
    writers = keras_private.summary_writers(callback)
    # The writer of the training run is there, and is the one that flushes the events.
    assert set(writers) == {"train"} and all(callable(writer.flush) for writer in writers.values())
    writers["train"].flush()
    assert list((tmp_path / "train").glob("events.out.tfevents.*"))


def test_optimizers_file_variables_by_key_and_index():
    optimizer = keras.optimizers.SGD(momentum=0.9)
    variables = [keras.Variable(np.zeros(2, "float32")), keras.Variable(np.ones(3, "float32"))]
    optimizer.build(variables)
    keys = [keras_private.optimizer_variable_key(optimizer, v) for v in variables]
    assert len(set(keys)) == 2
    assert [keras_private.optimizer_variable_index(optimizer, v) for v in variables] == [0, 1]


def test_tensorflow_says_whether_onednn_runs():
    import os

    pytest.importorskip("tensorflow")
    # The tests import model_defs before TensorFlow, which asks for oneDNN unless the environment says otherwise.
    assert keras_private.onednn_enabled() == (os.environ.get("TF_ENABLE_ONEDNN_OPTS") == "1")


def test_the_tuner_chief_polls_through_its_modules_time_and_the_quick_chief_cuts_its_sleeps(monkeypatch):
    import time

    from keras_tuner.src.distribute import oracle_chief

    # What quick_tuner_chief relies on: start_server waits with its module's `time.sleep`, 20 s once stopping.
    source = inspect.getsource(oracle_chief.start_server)
    assert "time.sleep(20)" in source and "exit_chief(oracle)" in source
    monkeypatch.setattr(oracle_chief, "time", time)  # restored after the test
    keras_private.quick_tuner_chief(longest=0.01)
    assert oracle_chief.time.monotonic is time.monotonic  # the rest of the module is time's
    start = time.monotonic()
    oracle_chief.time.sleep(20)
    assert time.monotonic() - start < 5
