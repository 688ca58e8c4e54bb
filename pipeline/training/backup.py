"""The backup of an unfinished run: atomic, complete, and resumed by the same command."""

import json
import pathlib
import shutil
import time

import keras

from model_defs import keras_private
from pipeline.storage.files import atomic_write_text
from pipeline.storage.models import save_weights
from pipeline.training.record import now_utc, write_history


class RunBackup(keras.callbacks.Callback):
    """Keras' `BackupAndRestore` idea, with backups that are atomic and carry the whole training state.

    The weights file (`model.save_weights`) holds the optimizer's variables
    too - iteration count, learning rate, momentum buffers (and the loss scale
    under mixed_float16). Beyond Keras' `BackupAndRestore`:

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

    Each epoch's commit also rewrites `history_file` (history.csv, see
    `pipeline.training.record`) from the committed history: a row appears once
    its epoch is safe, a resumed run appends, and no row is ever repeated.

    Args:
        backup_dir: directory of this run's backup (nothing else may write there).
        save_freq: "epoch", or a number of training steps between backups.
        stateful: dict name -> callback with get_state/set_state.
        history_file: history.csv to keep (None: none, e.g. on a worker other than the chief).
    """

    STATE_FILE = "state.json"

    def __init__(self, backup_dir, save_freq="epoch", stateful=None, history_file=None):
        super().__init__()
        if save_freq != "epoch" and not (isinstance(save_freq, int) and save_freq >= 1):
            raise ValueError(f"save_freq must be 'epoch' or a positive number of steps, got {save_freq!r}")
        self.path = pathlib.Path(backup_dir)
        self.save_freq = save_freq
        self.stateful = dict(stateful or {})
        self.history_file = pathlib.Path(history_file) if history_file else None
        self.history = []  # logs of every finished epoch, all sessions
        self.times = []  # per finished epoch: its seconds, the training seconds so far, when it ended
        self.prior_seconds = 0.0  # training time of earlier sessions
        self._epoch_start = None
        self._epoch = 0  # finished epochs
        self._saves = 0
        self._step_in_epoch = 0
        self._steps_since_save = 0
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
        keras_private.set_initial_epoch(self.model, state["epoch"])  # model.fit starts there
        self._epoch = state["epoch"]
        self.history = [dict(logs) for logs in state["history"]]
        self.times = [dict(times) for times in state.get("times", [])]
        self.prior_seconds = float(state["train_seconds"])
        self._saves = int(state["saves"])
        for name, callback in self.stateful.items():
            if name in state["callbacks"]:
                callback.set_state(state["callbacks"][name])

    def current_state(self, weights=None):
        """This run's state as a JSON-ready dict (what `state.json` holds)."""
        return {
            "epoch": self._epoch,  # finished epochs
            "step": self._step_in_epoch,  # steps of the next epoch already trained (mid-epoch backups)
            "weights": weights,
            "saves": self._saves,
            "train_seconds": self.train_seconds(),
            "history": self.history,
            "times": self.times,
            "callbacks": {name: callback.get_state() for name, callback in self.stateful.items()},
        }

    def train_seconds(self):
        """Training time of all sessions so far, in seconds."""
        now = time.perf_counter()
        return self.prior_seconds + (now - self._session_start if self._session_start else 0.0)

    def on_train_batch_end(self, batch, logs=None):
        self._step_in_epoch = batch + 1
        self._steps_since_save += 1
        if self.save_freq != "epoch" and self._steps_since_save >= self.save_freq:
            self._save()

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.history.append({key: float(value) for key, value in (logs or {}).items()})
        seconds = time.perf_counter() - self._epoch_start if self._epoch_start is not None else None
        self.times.append({"epoch_seconds": seconds, "elapsed_seconds": self.train_seconds(), "finished_at": now_utc()})
        self._epoch = epoch + 1
        self._step_in_epoch = 0
        self._save()
        self.write_history()

    def write_history(self):
        """Rewrites history.csv from the history (nothing without a history_file)."""
        if self.history_file is not None:
            write_history(self.history_file, self.history, self.times)

    def _save(self):
        self.path.mkdir(parents=True, exist_ok=True)
        self._steps_since_save = 0
        self._saves += 1
        name = f"ckpt-{self._saves}.weights.h5"
        save_weights(self.model, self.path / name)
        atomic_write_text(self.path / self.STATE_FILE, json.dumps(self.current_state(name), indent=1) + "\n")
        for stale in self.path.glob("ckpt-*.weights.h5"):
            if stale.name != name:
                stale.unlink()

    def delete(self):
        """Removes the backup (the run is finished)."""
        shutil.rmtree(self.path, ignore_errors=True)
