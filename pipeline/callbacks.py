"""Keras callbacks the trainer adds: backups, divergence, throughput, learning rate, reference lines.

They serve both training loops (`model.fit` and the multi-worker loop in
`pipeline.distribute`), which call them through one `keras.callbacks.CallbackList`.
"""

import json
import math
import os
import pathlib
import shutil
import time

import keras
import tensorflow as tf

from pipeline import metrics
from pipeline.rundir import atomic_write_text, fsync_path

# TensorBoard run name -> the value drawn on the validation top-5 error chart.
REFERENCE_LINES = {
    "reference_ensemble_15.3pct": metrics.PAPER_ENSEMBLE_TOP5,
    "reference_one_cnn_18.2pct": metrics.PAPER_ONE_CNN_TOP5,
}


class EpochStats(keras.callbacks.Callback):
    """Adds `learning_rate` and `images_per_second` to each epoch's logs.

    Put it before the TensorBoard callback: the logs dict is shared, so both
    figures are then written with the metrics (as epoch_learning_rate and
    epoch_images_per_second). Throughput counts the training part of the epoch
    only, not validation.

    Args:
        images_per_epoch: training images in one epoch.
    """

    def __init__(self, images_per_epoch):
        super().__init__()
        self.images_per_epoch = images_per_epoch
        self._start = None
        self._train_seconds = None

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()
        self._train_seconds = None

    def on_test_begin(self, logs=None):
        if self._start is not None and self._train_seconds is None:
            self._train_seconds = time.perf_counter() - self._start

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        seconds = self._train_seconds or (time.perf_counter() - self._start)
        logs["images_per_second"] = self.images_per_epoch / seconds
        logs["learning_rate"] = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))


class ReferenceLines(keras.callbacks.Callback):
    """Draws the paper's top-5 error figures on the validation top-5 chart.

    TensorBoard has no reference lines, so each figure is written as a constant
    under the same tag (`epoch_top5_error`) in a run of its own, named after
    what it is: the 2012 winning ensemble (15.3 %) and one CNN (18.2 %).

    Args:
        log_dir: the TensorBoard log directory of the run.
    """

    def __init__(self, log_dir, tag="epoch_top5_error"):
        super().__init__()
        self.log_dir = log_dir
        self.tag = tag
        self._writers = {}

    def on_train_begin(self, logs=None):
        for run, _ in REFERENCE_LINES.items():
            self._writers[run] = tf.summary.create_file_writer(os.path.join(self.log_dir, run))

    def on_epoch_end(self, epoch, logs=None):
        for run, value in REFERENCE_LINES.items():
            with self._writers[run].as_default():
                tf.summary.scalar(self.tag, value, step=epoch)
                self._writers[run].flush()

    def on_train_end(self, logs=None):
        for writer in self._writers.values():
            writer.close()
        self._writers = {}


class TrainingDiverged(RuntimeError):
    """The training loss became NaN or infinite."""


class StopOnNaN(keras.callbacks.TerminateOnNaN):
    """Stops training with `TrainingDiverged` at the first non-finite training loss.

    Raising (rather than Keras' default of setting `stop_training`) matters for
    resuming: the epoch does not end, so the backup keeps the last good state
    instead of saving diverged weights as a finished epoch.
    """

    def __init__(self):
        super().__init__(raise_error=True)
        self._epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is None or math.isfinite(float(loss)):
            return
        rate = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
        raise TrainingDiverged(
            f"the training loss became {float(loss)} at epoch {self._epoch + 1}, step {batch + 1} "
            f"(learning rate {rate:g}). Lower train.optimizer.learning_rate or add "
            "train.schedule.warmup_epochs and start again with --overwrite, or check the input data "
            "(the run's backup, if any, holds the last epoch that ended with a finite loss)."
        )


class ReleaseValidationIterator(keras.callbacks.Callback):
    """Lets go of `model.fit`'s validation iterator as soon as each validation ends.

    Keras 3.15's fit keeps its validation epoch iterator, with a live
    iterator over the validation data, from one validation to the next and
    discards it only when the next validation starts. With a truncated
    validation set (`train.validation_steps`) that discard stalled 6-10 s in
    about half of the epochs on a 2-core CPU (measured: 7 epochs of 6 steps,
    stalls in 2-4 of them; none in 14 epochs with this callback). Resetting
    the iterator right after validation releases it while nothing waits.

    It reaches into Keras' private `_eval_epoch_iterator`; if a later Keras
    renames it, the callback does nothing.
    """

    def on_test_end(self, logs=None):
        iterator = getattr(self.model, "_eval_epoch_iterator", None)
        if iterator is not None and hasattr(iterator, "reset"):
            iterator.reset()


class RunTensorBoard(keras.callbacks.TensorBoard):
    """`keras.callbacks.TensorBoard` that flushes its event files at the end of every epoch.

    Event writers buffer for up to two minutes; after a kill, the epochs a
    backup has committed must already be on disk, or the resumed run's charts
    would have holes. Put it before `RunBackup`.
    """

    def on_epoch_end(self, epoch, logs=None):
        super().on_epoch_end(epoch, logs)
        for writer in getattr(self, "_writers", {}).values():
            writer.flush()


class RunBackup(keras.callbacks.BackupAndRestore):
    """`BackupAndRestore` whose backups are atomic and carry the whole training state.

    What Keras 3.15's `BackupAndRestore` already does right: its weights file
    (`model.save_weights`) holds the optimizer's variables too - iteration
    count, learning rate, momentum buffers (and the loss scale under
    mixed_float16). What this class adds:

    - Atomic commits. Keras overwrites `latest.weights.h5` in place and then
      the metadata, so a kill mid-write leaves a truncated file or weights
      and epoch that disagree. Here each backup goes to a new
      `ckpt-<n>.weights.h5`, is fsync'ed, and only then does `state.json`
      (written through a temporary file and a rename) point to it. A kill
      at any instant leaves the previous backup or the new one, whole.
    - The run's history (the logs of every finished epoch), the training
      time so far, and the state of other callbacks (`stateful`: name ->
      object with `get_state()` / `set_state()`, e.g. the plateau schedule's
      patience counter), so a resumed run ends with the same figures and
      schedule as an uninterrupted one.
    - A backup at the end of every epoch also when `save_freq` is a step
      count, and no deletion at the end of training: the trainer deletes
      the backup only after the exports and metrics.json are written, so a
      kill during export resumes into "all epochs done, export again".

    A backup taken mid-epoch (`save_freq` = N steps) restores that state and
    runs its epoch again from the epoch's first batch, as Keras does.

    Put it last in the callback list: it records the logs the others filled
    in, and restores callback state after their `on_train_begin` resets.

    Args:
        backup_dir: directory of this run's backup (nothing else may write there).
        save_freq: "epoch", or a number of training steps between backups.
        stateful: dict name -> callback with get_state/set_state.
    """

    STATE_FILE = "state.json"

    def __init__(self, backup_dir, save_freq="epoch", stateful=None):
        super().__init__(str(backup_dir), save_freq=save_freq, delete_checkpoint=False)
        self.path = pathlib.Path(backup_dir)
        self.stateful = dict(stateful or {})
        self.history = []  # logs of every finished epoch, all sessions
        self.prior_seconds = 0.0  # training time of earlier sessions
        self._saves = 0
        self._step_in_epoch = 0
        self._session_start = None

    def read_state(self):
        """The committed backup's state (a dict), or None when there is none.

        Needs no model, so the trainer can tell before building anything
        whether, and from which epoch, a run resumes.
        """
        path = self.path / self.STATE_FILE
        if not path.is_file():
            return None
        return json.loads(path.read_text())

    def on_train_begin(self, logs=None):
        self._session_start = time.perf_counter()
        state = self.read_state()
        if state is None:
            return
        if self.model.optimizer is not None and not self.model.optimizer.built:
            # The weights file holds optimizer variables; they must exist to be loaded.
            self.model.optimizer.build(self.model.trainable_variables)
        self.model.load_weights(self.path / state["weights"])
        self.apply_state(state)

    def apply_state(self, state):
        """Takes over a backup's epoch, history and callback state (not the weights)."""
        self.model._initial_epoch = state["epoch"]  # model.fit starts there (Keras' own mechanism)
        self._current_epoch = state["epoch"]
        self.history = [dict(logs) for logs in state["history"]]
        self.prior_seconds = float(state["train_seconds"])
        self._saves = int(state["saves"])
        for name, callback in self.stateful.items():
            if name in state["callbacks"]:
                callback.set_state(state["callbacks"][name])

    def current_state(self, weights=None):
        """This run's state as a JSON-ready dict (what `state.json` holds)."""
        return {
            "epoch": self._current_epoch,  # finished epochs
            "step": self._step_in_epoch,  # steps of the next epoch already trained (mid-epoch backups)
            "weights": weights,
            "saves": self._saves,
            "train_seconds": self.train_seconds(),
            "history": self.history,
            "callbacks": {name: callback.get_state() for name, callback in self.stateful.items()},
        }

    def train_seconds(self):
        """Training time of all sessions so far, in seconds."""
        now = time.perf_counter()
        return self.prior_seconds + (now - self._session_start if self._session_start else 0.0)

    def on_train_batch_end(self, batch, logs=None):
        self._step_in_epoch = batch + 1
        super().on_train_batch_end(batch, logs)

    def on_epoch_end(self, epoch, logs=None):
        self.history.append({key: float(value) for key, value in (logs or {}).items()})
        self._current_epoch = epoch + 1
        self._last_batch_seen = 0
        self._step_in_epoch = 0
        self._save_model()

    def _save_model(self):
        self.path.mkdir(parents=True, exist_ok=True)
        self._saves += 1
        name = f"ckpt-{self._saves}.weights.h5"
        self.model.save_weights(self.path / name, overwrite=True)
        fsync_path(self.path / name)
        atomic_write_text(self.path / self.STATE_FILE, json.dumps(self.current_state(name), indent=1) + "\n")
        for stale in self.path.glob("ckpt-*.weights.h5"):
            if stale.name != name:
                stale.unlink()

    def on_train_end(self, logs=None):
        pass  # kept until the trainer has exported the model: see the class docstring

    def delete(self):
        """Removes the backup (the run is finished)."""
        shutil.rmtree(self.path, ignore_errors=True)
