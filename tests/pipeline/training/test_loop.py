"""The training loop: model.fit's figures, a stop at a step boundary, and a resume that ends where an uninterrupted run ends."""

import signal

import keras
import numpy as np
import pytest
import tensorflow as tf

from pipeline.errors import Stopped
from pipeline.training.backup import RunBackup
from pipeline.training.core import EpochPlan
from pipeline.training.loop import Position, TrainingLoop

BATCH, EXAMPLES, EPOCHS = 8, 40, 3  # five steps an epoch
STEPS = EXAMPLES // BATCH


def _data():
    rng = np.random.default_rng(0)
    return rng.normal(size=(EXAMPLES, 6)).astype("float32"), rng.integers(0, 4, EXAMPLES).astype("int32")


def _plan(validation=True):
    """Each epoch's batches a function of the epoch alone (shuffled by it), as the pipelines give them."""
    x, y = _data()
    examples = tf.data.Dataset.from_tensor_slices((x, y))

    def train_for(epoch, first_step=0):
        order = examples.shuffle(EXAMPLES, seed=1000 + epoch)
        return order.skip(first_step * BATCH).batch(BATCH)

    val = examples.take(16).batch(BATCH) if validation else None
    return EpochPlan(train_for, val, STEPS, EXAMPLES, repeated=False, element_spec=val.element_spec if val else None)


def _model():
    keras.utils.set_random_seed(7)
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(16, activation="relu"),
                              keras.layers.Dropout(0.5), keras.layers.Dense(4)])
    model.compile(keras.optimizers.SGD(0.05, momentum=0.9), keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=[keras.metrics.SparseCategoricalAccuracy(name="acc")])
    model.optimizer.build(model.trainable_variables)
    return model


class SignalAt(keras.callbacks.Callback):
    """Stands for a SIGTERM that arrives during step `step` of epoch `epoch` (a `StopAtStep` that heard it)."""

    def __init__(self, epoch, step, signum=signal.SIGTERM):
        super().__init__()
        self.at = (epoch, step)
        self.signum = None
        self._signum = signum
        self._epoch = None

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_begin(self, batch, logs=None):
        if (self._epoch, batch) == self.at:
            self.signum = self._signum


class Steps(keras.callbacks.Callback):
    """Records (epoch, step) of every trained step and the first_step each epoch began at."""

    def __init__(self):
        super().__init__()
        self.steps, self.first = [], []

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch
        self.first.append((epoch, (logs or {}).get("first_step")))

    def on_train_batch_end(self, batch, logs=None):
        self.steps.append((self._epoch, batch))


def test_the_loop_gives_model_fits_figures():
    plan = _plan()
    by_fit = _model()
    # The same batches model.fit would read epoch by epoch: one dataset per epoch, fit one epoch at a time.
    fit_logs = []
    for epoch in range(EPOCHS):
        history = by_fit.fit(plan.train_for(epoch), validation_data=plan.validation, initial_epoch=epoch,
                             epochs=epoch + 1, verbose=0, shuffle=False)
        fit_logs.append({k: v[-1] for k, v in history.history.items()})
    by_loop = _model()
    history = TrainingLoop(by_loop, tf.distribute.get_strategy(), plan).run(EPOCHS)
    for epoch, logs in enumerate(fit_logs):
        for key, value in logs.items():
            assert history.history[key][epoch] == pytest.approx(value, rel=1e-6), (epoch, key)
    for got, want in zip(by_loop.get_weights(), by_fit.get_weights()):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)


def test_a_signal_stops_every_replica_at_the_next_step_boundary(tmp_path):
    steps, stop = Steps(), SignalAt(epoch=1, step=2)
    stopped_at = []
    loop = TrainingLoop(_model(), tf.distribute.get_strategy(), _plan(), [steps, stop])
    with pytest.raises(Stopped) as raised:
        loop.run(EPOCHS, stop=stop, on_stop=stopped_at.append)
    # The signal came during step 2 of epoch 1: that step finished, no other began.
    assert steps.steps[-1] == (1, 2) and len(steps.steps) == STEPS + 3
    assert stopped_at == [Position(1, 3)]
    assert raised.value.status == 143
    assert raised.value.message == ("stopped by SIGTERM at epoch 2 of 3, step 3 of 5; backed up: "
                                    "run the same command to resume")


def test_stopped_mid_epoch_and_resumed_it_ends_with_the_weights_and_history_of_an_uninterrupted_run(tmp_path):
    plan = _plan()
    whole = _model()
    whole_history = TrainingLoop(whole, tf.distribute.get_strategy(), plan).run(EPOCHS)

    backup = RunBackup(tmp_path / "backup")
    first, stop = _model(), SignalAt(epoch=1, step=2)
    with pytest.raises(Stopped):
        TrainingLoop(first, tf.distribute.get_strategy(), plan, [stop, backup]).run(
            EPOCHS, start=lambda: backup.position, stop=stop, on_stop=backup.save_at)
    state = RunBackup(tmp_path / "backup").read_state()
    assert (state["epoch"], state["step"]) == (1, 3)
    assert state["metrics"] is not None and state["random"] is not None

    # A new process: a fresh model (other dropout state), the backup, the same plan.
    keras.utils.set_random_seed(99)
    resumed, backup, steps = _model(), RunBackup(tmp_path / "backup"), Steps()
    for layer in resumed.layers:
        if layer.weights:
            layer.set_weights([w + 1.0 for w in layer.get_weights()])
    TrainingLoop(resumed, tf.distribute.get_strategy(), plan, [steps, backup]).run(EPOCHS, start=lambda: backup.position)
    assert steps.first == [(1, 3), (2, 0)]
    assert steps.steps[0] == (1, 3) and len(steps.steps) == (STEPS - 3) + STEPS
    for got, want in zip(resumed.get_weights(), whole.get_weights()):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    # The epoch that was cut in two has the figures of the whole one (its running metrics were backed up).
    for epoch in range(EPOCHS):
        for key, values in whole_history.history.items():
            assert backup.history[epoch][key] == pytest.approx(values[epoch], rel=1e-5), (epoch, key)


def test_a_stop_during_validation_ends_after_the_epochs_backup():
    class SignalInValidation(keras.callbacks.Callback):
        signum = None

        def on_test_begin(self, logs=None):
            self.signum = signal.SIGINT

    steps, stop = Steps(), SignalInValidation()
    stopped_at = []
    with pytest.raises(Stopped) as raised:
        TrainingLoop(_model(), tf.distribute.get_strategy(), _plan(), [steps, stop]).run(
            EPOCHS, stop=stop, on_stop=stopped_at.append)
    assert len(steps.steps) == STEPS and stopped_at == []  # the epoch ended; its end is the backup
    assert raised.value.status == 130
    assert raised.value.message.startswith("stopped by SIGINT at the end of epoch 1 of 3;")
