import keras
import numpy as np

from pipeline.evaluation.metrics import SparseTopKError, error_metrics


def test_top_k_error_is_one_minus_top_k_accuracy():
    labels = np.array([0, 1, 2, 3])
    scores = np.array([
        [9, 1, 0, 0, 0, 0, 0],  # right at top-1
        [9, 1, 0, 0, 0, 0, 0],  # label second: top-5 only
        [9, 8, 7, 6, 5, 4, 0],  # label 2 third: top-5 only
        [1, 2, 3, 0, 4, 5, 6],  # label 3 ranks 6th of 7: neither
    ], np.float32)  # fmt: skip
    top1, top5 = SparseTopKError(1), SparseTopKError(5)
    top1.update_state(labels, scores)
    top5.update_state(labels, scores)
    assert float(top1.result()) == 0.75
    assert float(top5.result()) == 0.25
    assert [m.name for m in error_metrics(10)] == ["top1_error", "top5_error"]
    assert [m.name for m in error_metrics(5)] == ["top1_error"]


def test_keras_callbacks_in_auto_mode_minimise_the_error():
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4)])
    model.compile(loss="sparse_categorical_crossentropy", metrics=[SparseTopKError(1)])
    model.fit(np.zeros((4, 3)), np.zeros(4), verbose=0)
    stopping = keras.callbacks.EarlyStopping(monitor="val_top1_error", mode="auto")
    stopping.set_model(model)
    stopping._set_monitor_op()
    assert stopping.monitor_op(0.1, 0.2)  # 0.1 is an improvement on 0.2
