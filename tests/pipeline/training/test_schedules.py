"""Learning-rate schedules: exact rates per step, and the paper's plateau rule."""

import math
import types

import keras
import pytest

from pipeline.config import load_config
from pipeline.training.schedules import (
    PlateauSchedule,
    ScheduledLearningRate,
    learning_rate_at,
    plateau_mode,
    schedule_callbacks,
)


def schedule(*overrides):
    return load_config([], [f"train.schedule.{o}" for o in overrides]).train.schedule


def test_step_schedule_divides_at_each_milestone():
    s = schedule("name=step", "milestones=[30, 60, 80]", "factor=0.1")
    rates = {e: learning_rate_at(s, 0.01, 90, e, 0, 100) for e in (0, 29, 30, 59, 60, 80, 89)}
    assert rates == pytest.approx({0: 0.01, 29: 0.01, 30: 1e-3, 59: 1e-3, 60: 1e-4, 80: 1e-5, 89: 1e-5})


def test_cosine_schedule_falls_from_base_to_minimum():
    s = schedule("name=cosine", "min_learning_rate=0.001")
    assert learning_rate_at(s, 0.1, 10, 0, 0, 4) == pytest.approx(0.1)
    assert learning_rate_at(s, 0.1, 10, 5, 0, 4) == pytest.approx(0.001 + 0.099 * 0.5)  # half way: the mean
    # Last step: 9.75 of 10 epochs done when it starts.
    assert learning_rate_at(s, 0.1, 10, 9, 3, 4) == pytest.approx(0.001 + 0.099 * 0.5 * (1 + math.cos(math.pi * 0.975)))
    assert learning_rate_at(s, 0.1, 10, 10, 0, 4) == pytest.approx(0.001)  # clamped at the end


def test_warmup_rises_linearly_to_the_base_rate_then_hands_over():
    s = schedule("name=cosine", "warmup_epochs=2")
    assert learning_rate_at(s, 0.4, 12, 0, 0, 4) == pytest.approx(0.4 / 8)  # first of 8 warm-up steps
    assert learning_rate_at(s, 0.4, 12, 1, 3, 4) == pytest.approx(0.4)  # last warm-up step
    assert learning_rate_at(s, 0.4, 12, 2, 0, 4) == pytest.approx(0.4)  # cosine starts at the base
    plateau = schedule("name=plateau", "warmup_epochs=1")
    assert learning_rate_at(plateau, 0.4, 12, 0, 1, 2) == pytest.approx(0.4)
    assert learning_rate_at(plateau, 0.4, 12, 1, 0, 2) is None  # the plateau rule owns the rate after warm-up
    assert learning_rate_at(schedule("name=constant"), 0.4, 12, 5, 0, 2) == 0.4


def test_which_callbacks_each_schedule_needs():
    assert schedule_callbacks(schedule("name=constant"), 0.01, 5, 10) == []
    kinds = [type(c) for c in schedule_callbacks(schedule("name=plateau", "warmup_epochs=1"), 0.01, 5, 10)]
    assert kinds == [ScheduledLearningRate, PlateauSchedule]
    assert [type(c) for c in schedule_callbacks(schedule("name=step"), 0.01, 5, 10)] == [ScheduledLearningRate]


def _with_optimizer(callback, rate):
    optimizer = keras.optimizers.SGD(rate)
    callback.set_model(types.SimpleNamespace(optimizer=optimizer, metrics=[]))
    return optimizer


def test_plateau_divides_by_ten_three_times_and_no_more():
    # The paper (section 5): divide by 10 when the validation error stops improving, three times in all.
    plateau = PlateauSchedule("val_top1_error", factor=0.1, patience=1, max_reductions=3, verbose=0)
    optimizer = _with_optimizer(plateau, 0.01)
    plateau.on_train_begin()
    errors = [0.9, 0.8, 0.8, 0.7, 0.7, 0.6, 0.6, 0.6, 0.6]
    rates = []
    for epoch, error in enumerate(errors):
        plateau.on_epoch_end(epoch, {"val_top1_error": error})
        rates.append(float(optimizer.learning_rate))
    # patience 1: one epoch without improvement is enough.
    assert rates == pytest.approx([1e-2, 1e-2, 1e-3, 1e-3, 1e-4, 1e-4, 1e-5, 1e-5, 1e-5], rel=1e-6)
    assert plateau.reductions == 3


def test_plateau_treats_errors_as_lower_is_better():
    # Keras' "auto" mode would ask the metric, and top-k error derives from an accuracy.
    assert plateau_mode("val_top1_error") == "min" and plateau_mode("val_loss") == "min"
    assert plateau_mode("val_accuracy") == "max"
    plateau = PlateauSchedule("val_top1_error", factor=0.1, patience=1, max_reductions=3, verbose=0)
    optimizer = _with_optimizer(plateau, 0.01)
    plateau.on_train_begin()
    for epoch, error in enumerate([0.9, 0.8, 0.7, 0.6]):  # improving every epoch
        plateau.on_epoch_end(epoch, {"val_top1_error": error})
    assert float(optimizer.learning_rate) == pytest.approx(0.01)


def test_plateau_waits_for_the_warmup_and_restores_its_counters():
    plateau = PlateauSchedule("val_loss", factor=0.5, patience=1, max_reductions=2, warmup_epochs=2, verbose=0)
    optimizer = _with_optimizer(plateau, 1.0)
    plateau.on_train_begin()
    for epoch in range(2):
        plateau.on_epoch_end(epoch, {"val_loss": 1.0})  # no improvement, but warming up
    assert float(optimizer.learning_rate) == 1.0 and plateau.best is None
    plateau.on_epoch_end(2, {"val_loss": 1.0})
    plateau.on_epoch_end(3, {"val_loss": 1.0})
    assert float(optimizer.learning_rate) == 0.5
    state = plateau.get_state()
    assert state == {"best": 1.0, "wait": 0, "cooldown_counter": 0, "reductions": 1}

    resumed = PlateauSchedule("val_loss", factor=0.5, patience=1, max_reductions=2, warmup_epochs=2, verbose=0)
    optimizer = _with_optimizer(resumed, 0.5)
    resumed.on_train_begin()
    resumed.set_state(state)
    resumed.on_epoch_end(4, {"val_loss": 1.0})
    assert float(optimizer.learning_rate) == 0.25 and resumed.reductions == 2
    resumed.on_epoch_end(5, {"val_loss": 2.0})
    resumed.on_epoch_end(6, {"val_loss": 2.0})
    assert float(optimizer.learning_rate) == 0.25  # max_reductions reached


def test_scheduled_rate_is_written_before_each_step():
    s = schedule("name=step", "milestones=[1]", "warmup_epochs=0")
    callback = ScheduledLearningRate(s, 0.1, 3, 2)
    optimizer = _with_optimizer(callback, 0.1)
    seen = []
    for epoch in range(3):
        callback.on_epoch_begin(epoch)
        for step in range(2):
            callback.on_train_batch_begin(step)
            seen.append(float(optimizer.learning_rate))
    assert seen == pytest.approx([0.1, 0.1, 0.01, 0.01, 0.01, 0.01])
