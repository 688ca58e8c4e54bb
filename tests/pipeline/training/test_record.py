"""The run's record: history.csv rows, the best checkpoint, environment.json sessions."""

import csv
import io
import json

import keras
import numpy as np

from pipeline.training.record import BestCheckpoint, environment, history_csv, record_environment


def test_history_csv_has_a_row_per_epoch_and_every_figure_in_order_first_seen():
    history = [{"loss": 2.5, "val_loss": 2.25}, {"loss": 2.0, "val_loss": 1.75, "val_10crop_top1_error": 0.5}]
    times = [{"epoch_seconds": 10.0, "elapsed_seconds": 10.5, "finished_at": "2026-11-30T12:00:00+00:00"}]
    assert history_csv(history, times) == (
        "epoch,loss,val_loss,val_10crop_top1_error,epoch_seconds,elapsed_seconds,finished_at\n"
        "1,2.5,2.25,,10.0,10.5,2026-11-30T12:00:00+00:00\n"
        "2,2.0,1.75,0.5,,,\n"
    )
    rows = list(csv.DictReader(io.StringIO(history_csv(history, times))))
    assert [row["epoch"] for row in rows] == ["1", "2"] and float(rows[1]["val_loss"]) == 1.75


def tiny_model():
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, name="fc8")])
    model.compile("sgd", "mse")
    return model


def test_the_best_checkpoint_is_the_model_of_the_lowest_epoch_and_carries_its_state(tmp_path):
    model = tiny_model()
    best = BestCheckpoint(tmp_path / "checkpoints" / "best.keras", "val_top1_error")
    best.set_model(model)
    kernels = {}
    for epoch, value in enumerate([0.9, 0.7, 0.8, 0.7, float("nan")]):
        model.get_layer("fc8").kernel.assign(np.full((3, 2), epoch, np.float32))
        kernels[epoch + 1] = model.get_layer("fc8").get_weights()[0]
        best.on_epoch_end(epoch, {"val_top1_error": value})
    assert best.get_state() == {"best": 0.7, "best_epoch": 2}  # ties and nan do not replace it
    saved = keras.models.load_model(tmp_path / "checkpoints" / "best.keras")
    np.testing.assert_array_equal(saved.get_layer("fc8").get_weights()[0], kernels[2])
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["best.keras"]
    # A resumed run compares against the best of its earlier sessions.
    again = BestCheckpoint(tmp_path / "checkpoints" / "best.keras", "val_top1_error")
    again.set_state(best.get_state())
    again.set_model(model)
    again.on_epoch_end(5, {"val_top1_error": 0.75})
    assert again.get_state() == {"best": 0.7, "best_epoch": 2}


def test_environment_json_gets_one_session_per_start_and_survives_damage(tmp_path, monkeypatch):
    from pipeline.data import memory

    monkeypatch.setitem(memory._state, "applied", None)
    session = environment(["/cpu:0"], ["train.precision: float32"])
    assert {"python", "tensorflow", "keras", "devices", "cpu", "git_commit", "command", "choices"} <= set(session)
    assert session["malloc"] is None  # no input pipeline built yet
    line = memory.keep_freed_memory()
    assert line and environment(["/cpu:0"])["malloc"] == line
    assert session["devices"] == ["/cpu:0"] and isinstance(session["cpu"]["flags"], list)
    path = tmp_path / "environment.json"
    record_environment(path, {"n": 1})
    record_environment(path, {"n": 2})
    assert json.loads(path.read_text()) == {"sessions": [{"n": 1}, {"n": 2}]}
    path.write_text("{not json")
    record_environment(path, {"n": 3})
    assert json.loads(path.read_text()) == {"sessions": [{"n": 3}]}
