"""Tiny training configs, run directories, subprocess environments and TensorBoard/backup readers for the tests."""

import json
import pathlib

import tensorflow as tf
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from pipeline.config import load_config
from pipeline.data import identity
from pipeline.data.sources import load_source
from pipeline.serving import saved_model
from pipeline.storage.rundir import RunDir
from pipeline.training.model import build_model
from tests.helpers.processes import ROOT, project_env  # noqa: F401  (the tests import them from here too)

# Overrides for a real `pipeline.train` run that takes seconds: 48 synthetic images, 8 classes, 2 epochs.
TINY = [
    "data.source=synthetic",
    "data.image_size=64",
    "data.resize=64",
    "data.num_examples=48",
    "data.num_classes=8",
    "data.augment.pca_noise=0.0",
    "model.fc_units=32",
    "model.init=glorot_uniform",
    "train.epochs=2",
    "train.batch_size=16",
    "train.verbose=0",
]
# Overrides for `make_run` and export tests: 16 synthetic images, half held out, resized to 72 then cropped to 64.
EXPORT_TINY = [
    "data.source=synthetic",
    "data.image_size=64",
    "data.resize=72",
    "data.num_examples=16",
    "data.validation_fraction=0.5",
    "data.augment.pca_noise=0.0",
    "model.fc_units=32",
    "model.init=glorot_uniform",
    "train.epochs=1",
    "train.batch_size=8",
    "train.verbose=0",
]
# fc8's kernel is multiplied by this: untrained logits are nearly equal, and
# spread-out probabilities make every comparison in the export tests sensitive.
SHARPEN = 100.0


def args(run_dir, *extra):
    """Command-line arguments of `pipeline.train` for a TINY run in `run_dir`, plus `extra` overrides."""
    argv = ["--run-dir", str(run_dir)]
    for item in TINY + list(extra):
        argv += ["--set", item]
    return argv


def _tensor_events(log_dir, tag):
    acc = EventAccumulator(str(log_dir), size_guidance={"tensors": 0})
    acc.Reload()
    return acc.Tensors(tag)


def scalars(log_dir, tag):
    """The values of a scalar summary `tag` in `log_dir`, in order."""
    return [float(tf.make_ndarray(event.tensor_proto)) for event in _tensor_events(log_dir, tag)]


def event_steps(log_dir, tag):
    """The steps at which summary `tag` was written in `log_dir`, in order."""
    return [event.step for event in _tensor_events(log_dir, tag)]


def image_summaries(log_dir, tag):
    """(steps, decoded images, description) of the image summary `tag` in `log_dir`."""
    acc = EventAccumulator(str(log_dir), size_guidance={"tensors": 0})
    acc.Reload()
    if tag not in acc.Tags()["tensors"]:
        return [], [], None
    events = acc.Tensors(tag)
    # An image summary's tensor holds [width, height, PNG of each image].
    images = [tf.image.decode_png(tf.make_ndarray(e.tensor_proto)[2]).numpy() for e in events]
    return [e.step for e in events], images, acc.SummaryMetadata(tag).summary_description


def backup_epoch(run_dir):
    """The epoch of the run's backup, 0 while there is none (or it is being written)."""
    try:
        return json.loads((run_dir / "backup" / "state.json").read_text())["epoch"]
    except (FileNotFoundError, json.JSONDecodeError):
        return 0


class Killed(Exception):
    """Stands for a kill -9 of a training run."""


def killed_after_first_epoch(run_dir, *overrides):
    """An unfinished TINY run (and `overrides`) killed right after its first epoch's backup, as a kill leaves it.

    Returns:
        The state of its backup (state.json).
    """
    import pytest

    from pipeline.training import run as training_run
    from pipeline.training.backup import RunBackup

    real = RunBackup.on_epoch_end

    def kill_after_first(self, epoch, logs=None):
        real(self, epoch, logs)
        raise Killed()

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(RunBackup, "on_epoch_end", kill_after_first)
        with pytest.raises(Killed):
            training_run.train(load_config([], TINY + list(overrides)), run_dir)
    return json.loads((pathlib.Path(run_dir) / "backup" / "state.json").read_text())


def backed_up(backup_dir):
    """A `RunBackup` of `backup_dir` holding the backup of a first epoch (of a tiny model): a run that resumes."""
    import keras

    from pipeline.training.backup import RunBackup

    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile("sgd", "mse")
    writer = RunBackup(backup_dir)
    writer.set_model(model)
    writer.on_epoch_end(0, {"loss": 1.0})
    return RunBackup(backup_dir)


def make_run(run_dir, *overrides):
    """A finished run directory as `pipeline.train` leaves it, without the training.

    Returns:
        (config, model) of the run.
    """
    config = load_config([], EXPORT_TINY + list(overrides))
    source = load_source(config.data, config.seed)
    with RunDir(run_dir, config) as run:
        run.write_labels(source.class_names)
        identity.record(run.path, identity.identify(source))
        model = build_model(config, source.num_classes)
        fc8 = model.get_layer("fc8")
        kernel, bias = fc8.get_weights()
        fc8.set_weights([kernel * SHARPEN, bias])
        saved_model.export_run(model, run.path, config, source.class_names)
        run.write_metrics({"epochs": config.train.epochs})
    return config, model


def run_callbacks(config, log_dir, images_per_epoch, steps_per_epoch, learning_rate, backup, verbose=1,
                  first_batch=None, class_names=None):
    """The callbacks a training run gets (the core's, with the run's logging), from the plan's two figures.

    `first_batch` None stands for a worker other than the chief (no pictures).
    """
    from pipeline.training import core
    from pipeline.training.run import logging_callbacks

    plan = core.EpochPlan(None, None, steps_per_epoch, images_per_epoch, False)
    logging = logging_callbacks(config, log_dir, backup, first_batch, class_names)
    return core.build_callbacks(config, plan, learning_rate, logging=logging, backup=backup, verbose=verbose)
