"""Keras models on disk (`pipeline.storage.models`): `model_bytes` counts the bytes of a model's variables and its
optimizer's, exactly; `save_keras` and `save_weights` check the free space for that many bytes, write through
`.tmp-<name>` beside the file and rename it into place, and leave nothing under either name when writing fails."""

import keras
import numpy as np
import pytest

from pipeline.storage import files
from pipeline.storage.models import model_bytes, save_keras, save_weights


def tiny_model(dtype="float32"):
    """Dense(4) on 3 inputs: a 3x4 kernel and 4 biases, 16 variables' worth of numbers."""
    return keras.Sequential([keras.Input((3,)), keras.layers.Dense(4, dtype=dtype)])


def test_the_bytes_of_the_weights_and_of_an_sgd_with_momentum():
    model = tiny_model()
    assert model_bytes(model) == model_bytes(model, optimizer=False) == 16 * 4
    model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9), loss="mse")
    # Before its first step the optimizer holds its step count (int64) and its learning rate (float32).
    assert model_bytes(model) == 16 * 4 + 8 + 4
    model.optimizer.build(model.trainable_variables)
    # Then one momentum per weight.
    assert model_bytes(model) == 16 * 4 + 8 + 4 + 16 * 4
    assert model_bytes(model, optimizer=False) == 16 * 4
    assert model_bytes(tiny_model("float16")) == 16 * 2


def test_save_keras_checks_the_space_writes_beside_the_file_and_renames_it(tmp_path, monkeypatch):
    model = tiny_model()
    model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9), loss="mse")
    model.optimizer.build(model.trainable_variables)
    checked, saved = [], []
    real_check, real_save = files.check_free_space, model.save
    monkeypatch.setattr(files, "check_free_space", lambda path, needed: checked.append(needed) or real_check(path, needed))
    monkeypatch.setattr(model, "save", lambda path: saved.append(path) or real_save(path))
    path = tmp_path / "model.keras"
    assert save_keras(model, path) == path
    assert checked == [140] and saved == [tmp_path / ".tmp-model.keras"]  # the weights and the optimizer: 140 bytes
    assert [p.name for p in tmp_path.iterdir()] == ["model.keras"]
    reloaded = keras.models.load_model(path)
    x = np.ones((1, 3), np.float32)
    np.testing.assert_array_equal(np.asarray(reloaded(x)), np.asarray(model(x)))


@pytest.mark.parametrize("save, method, name", [
    (save_keras, "save", "model.keras"),
    (save_weights, "save_weights", "backup.weights.h5"),
])
def test_a_failed_write_leaves_nothing_under_the_name_or_its_temporary_name(tmp_path, monkeypatch, save, method, name):
    model = tiny_model()

    def half_then_fail(path, **kwargs):
        path.write_bytes(b"half a model")
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(model, method, half_then_fail)
    with pytest.raises(OSError, match="Input/output error"):
        save(model, tmp_path / name)
    assert list(tmp_path.iterdir()) == []
