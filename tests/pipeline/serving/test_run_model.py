"""What `pipeline.serving.run_model` hands back from a run directory: its class names from labels.txt, its config
and Keras model; and the one-line `ConfigError` for each thing that can be missing or damaged."""

import keras
import numpy as np
import pytest

from pipeline.config import load_config
from pipeline.errors import ConfigError
from pipeline.serving.run_model import load_run_model, read_labels


def refusal(call, *args):
    """The message of the ConfigError that call(*args) raises."""
    with pytest.raises(ConfigError) as refused:
        call(*args)
    return str(refused.value)


def test_the_labels_are_one_name_a_line_in_class_index_order(tmp_path):
    (tmp_path / "labels.txt").write_text("tench\ngoldfish\ngreat white shark\n", encoding="utf-8")
    assert read_labels(tmp_path) == ["tench", "goldfish", "great white shark"]


def test_missing_empty_or_unreadable_labels_are_refused_by_name(tmp_path):
    assert refusal(read_labels, tmp_path) == (
        f"{tmp_path} holds no labels.txt: the class names are unknown; it is written when a run starts training, "
        "so train the run (the same command resumes it)"
    )
    labels = tmp_path / "labels.txt"
    labels.write_text("")
    assert refusal(read_labels, tmp_path) == f"{labels} is empty: the class names are unknown; train the run again"
    labels.write_bytes(b"tench\n\xff\xfe\n")
    assert refusal(read_labels, tmp_path) == (
        f"{labels}: cannot be read ('utf-8' codec can't decode byte 0xff in position 6: invalid start byte): the "
        "class names are unknown; it is written when a run starts training, so train the run (the same command "
        "resumes it)"
    )


def tiny_model(bias):
    """A compiled one-layer Keras model whose outputs are its bias (zero kernel): it tells which file was loaded."""
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(3, kernel_initializer="zeros")])
    model.layers[0].bias.assign(np.float32(bias))
    model.compile(optimizer="sgd", loss="mse")
    return model


def test_the_config_and_the_model_of_a_run_or_another_model(tmp_path):
    config = load_config([], ["data.source=synthetic", "train.epochs=3"])
    (tmp_path / "config.yaml").write_text(config.to_yaml())
    tiny_model([1.0, 2.0, 3.0]).save(tmp_path / "model.keras")
    tiny_model([4.0, 5.0, 6.0]).save(tmp_path / "other.keras")
    loaded_config, model = load_run_model(tmp_path)
    assert loaded_config == config
    assert not model.compiled  # saved compiled, loaded without its optimizer
    np.testing.assert_array_equal(np.asarray(model(np.zeros((1, 2), np.float32))), [[1.0, 2.0, 3.0]])
    _, other = load_run_model(tmp_path, tmp_path / "other.keras")
    np.testing.assert_array_equal(np.asarray(other(np.zeros((1, 2), np.float32))), [[4.0, 5.0, 6.0]])


def test_a_missing_run_config_or_model_and_a_damaged_model_are_refused_by_name(tmp_path):
    assert refusal(load_run_model, tmp_path / "nowhere") == f"run directory not found: {tmp_path / 'nowhere'}"
    assert refusal(load_run_model, tmp_path) == f"{tmp_path} holds no config.yaml: it is not a run directory"
    (tmp_path / "config.yaml").write_text(load_config([], ["data.source=synthetic"]).to_yaml())
    for model_path in (None, tmp_path / "other.keras"):
        assert refusal(load_run_model, tmp_path, model_path) == (
            f"{model_path or tmp_path / 'model.keras'} not found: the run is unfinished, or was trained with "
            "export.keras=false; train it to the end first (the same command resumes it)"
        )
    (tmp_path / "model.keras").write_bytes(b"PK\x03\x04 not a whole zip")
    message = refusal(load_run_model, tmp_path)
    assert message.startswith(f"{tmp_path / 'model.keras'}: cannot be loaded as a Keras model (")
    assert message.endswith("): the file is damaged or not a model.keras of this project; train the run again "
                            "(--overwrite) or pass another --model")
