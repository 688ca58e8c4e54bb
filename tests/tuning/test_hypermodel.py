"""The hypermodel: a trial builds, compiles and trains the trainer's model with the trial's values."""

import re

import keras
import keras_tuner
import numpy as np
import pytest

from pipeline.config import load_config
from tuning.hypermodel import AlexNetHyperModel, TrialDiverged

TINY = [
    "data.source=synthetic",
    "data.image_size=64",
    "data.resize=64",
    "data.num_examples=32",
    "model.fc_units=32",
    "train.batch_size=16",
    "train.verbose=0",
]


def tiny_config(*extra):
    return load_config(overrides=TINY + list(extra))


def hypermodel_of(config):
    """The hypermodel a search makes: the data every trial reads, the trial strategy."""
    from pipeline.data.pipelines import build_datasets
    from pipeline.training.strategy import make_cluster

    return AlexNetHyperModel(config, build_datasets(config.data, config.train.batch_size), make_cluster(config.train))


def fixed_hp(**values):
    """HyperParameters that hold the given values, as a trial's do."""
    hp = keras_tuner.HyperParameters()
    hp.values.update(values)
    return hp


def test_build_uses_the_trainers_model_and_compile_with_the_trial_values():
    config = tiny_config("tune.momentum={min: 0.5, max: 0.95}", "data.num_classes=10")
    hypermodel = hypermodel_of(config)
    model = hypermodel.build(fixed_hp(dropout=0.41, learning_rate=0.0123, momentum=0.77))
    assert model.get_layer("drop6").rate == pytest.approx(0.41)
    assert model.get_layer("drop7").rate == pytest.approx(0.41)
    assert model.get_layer("fc6").units == 32
    assert model.output_shape == (None, 10)
    optimizer = model.optimizer
    assert isinstance(optimizer, keras.optimizers.SGD)
    assert float(keras.ops.convert_to_numpy(optimizer.learning_rate)) == pytest.approx(0.0123)
    assert optimizer.momentum == pytest.approx(0.77)
    # Same metrics as training: the names the objective refers to.
    logs = model.evaluate(np.zeros((2, 64, 64, 3), "float32"), np.array([0, 1]), verbose=0, return_dict=True)
    assert sorted(logs) == ["loss", "top1_error", "top5_error"]


def test_fit_trains_with_the_trials_schedule_and_stops_on_nan():
    config = tiny_config("train.schedule.name=step", "train.schedule.milestones=[1]", "train.schedule.factor=0.5",
                         "tune.epochs=2", "data.num_examples=16", "data.num_classes=10")
    hypermodel = hypermodel_of(config)  # one step of 16 synthetic images an epoch
    assert hypermodel.plan.steps_per_epoch == 1
    hp = fixed_hp(dropout=0.4, learning_rate=0.02)
    model = hypermodel.build(hp)
    history = hypermodel.fit(hp, model, epochs=2, verbose=0, callbacks=[])
    # Step schedule at epoch 1: the trial's own rate, then half of it.
    assert len(history.history["loss"]) == 2
    assert float(keras.ops.convert_to_numpy(model.optimizer.learning_rate)) == pytest.approx(0.01)
    # A rate no network survives: the trial stops at the first non-finite loss (64 images, 4 steps an epoch),
    # failed for KerasTuner with the search's advice (the trainer's is to start the run again with --overwrite).
    hypermodel = hypermodel_of(tiny_config("data.num_examples=64", "data.num_classes=10", "tune.epochs=1"))
    hp = fixed_hp(dropout=0.4, learning_rate=1e30)
    with pytest.raises(TrialDiverged) as failed:
        hypermodel.fit(hp, hypermodel.build(hp), epochs=1, verbose=0, callbacks=[])
    assert isinstance(failed.value, keras_tuner.errors.FailedTrialError)  # recorded FAILED, not retried
    assert re.fullmatch(
        r"the training loss became nan at epoch 1, step \d \(learning rate 1e\+30\); the trial is recorded as "
        r"FAILED and the search goes on; if many trials diverge, lower tune.learning_rate's max \(now 0.1\) or add "
        r"train.schedule.warmup_epochs", str(failed.value))
    assert failed.value.__cause__ is None and failed.value.__suppress_context__  # no trainer's advice in its traceback


def test_divergence_advice_names_what_to_lower():
    untuned = hypermodel_of(tiny_config("tune.learning_rate=null", "tune.dropout={min: 0.3, max: 0.6}",
                                        "train.optimizer.learning_rate=0.02"))
    assert untuned.divergence_advice() == (
        "the trial is recorded as FAILED and the search goes on; if many trials diverge, lower "
        "train.optimizer.learning_rate (now 0.02) or add train.schedule.warmup_epochs"
    )
