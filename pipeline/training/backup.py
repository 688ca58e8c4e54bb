"""The backup of an unfinished run: atomic, complete, and resumed by the same command at the step it stopped."""

import json
import pathlib
import shutil
import time

import keras
import numpy as np

from pipeline.storage.files import DirectoryError, atomic_write_text
from pipeline.storage.models import save_weights
from pipeline.training.loop import Position
from pipeline.training.record import now_utc, write_history

# What to do with a damaged backup: the last words of its error.
_DAMAGED_ADVICE = "restore it from a copy, or pass --overwrite to train the run afresh"


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
    - The position to the step, and what a step changes beyond the weights:
      the dropout layers' random state and, for a backup taken mid-epoch, the
      epoch's running metrics. The training loop (`pipeline.training.loop`)
      starts a resumed run at `position`, with the batches an uninterrupted
      run would see from there, so it ends with the same weights.
    - A backup at the end of every epoch also when `save_freq` is a step
      count, one where the loop stops on a signal (`save_at`), and no
      deletion at the end of training: the trainer deletes the backup only
      after the exports and metrics.json are written, so a kill during export
      resumes into "all epochs done, export again".

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
        self._session_end = None
        self._metrics = None  # a mid-epoch backup's running metrics, put back when its epoch begins again
        self.restored = None  # the state this session resumed from (None: a fresh run)

    @property
    def position(self):
        """Where the run stands (`pipeline.training.loop.Position`): the loop starts a resumed run there."""
        return Position(self._epoch, self._step_in_epoch)

    def read_state(self):
        """The committed backup's state (a dict), or None when there is none.

        Needs no model, so the trainer can tell before building anything
        whether, and from which epoch, a run resumes.

        Raises:
            DirectoryError: state.json is damaged (cut short, empty, not this project's), or the
                weights file it names is missing.
        """
        path = self.path / self.STATE_FILE
        if not path.is_file():
            return None
        try:
            state = json.loads(path.read_text())
            missing = [key for key in ("epoch", "step", "weights", "saves", "train_seconds", "history", "callbacks")
                       if key not in state]
        except (ValueError, TypeError, UnicodeDecodeError) as exc:
            raise DirectoryError(f"{path} is damaged ({type(exc).__name__}: {exc}): {_DAMAGED_ADVICE}") from None
        if missing:
            raise DirectoryError(f"{path} is damaged (it lacks {', '.join(missing)}): {_DAMAGED_ADVICE}")
        weights = self.path / str(state["weights"])
        if not weights.is_file():
            raise DirectoryError(f"{weights}, which {path} names, is missing: {_DAMAGED_ADVICE}")
        problem = _hdf5_problem(weights)
        if problem:
            raise DirectoryError(f"{weights} is damaged ({problem}): {_DAMAGED_ADVICE}")
        return state

    def on_train_begin(self, logs=None):
        self._session_start = time.perf_counter()
        self._session_end = None
        state = self.read_state()
        if state is None:
            return
        if self.model.optimizer is not None and not self.model.optimizer.built:
            # The weights file holds optimizer variables; they must exist to be loaded.
            self.model.optimizer.build(self.model.trainable_variables)
        weights = self.path / state["weights"]
        try:
            self.model.load_weights(weights)
        except (OSError, ValueError, KeyError) as exc:
            raise DirectoryError(f"{weights} is damaged ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}): "
                                 f"{_DAMAGED_ADVICE}") from None
        self.apply_state(state)

    def apply_state(self, state):
        """Takes over a backup's position, history, random state and callback state (not the weights)."""
        self.restored = state
        self._epoch = state["epoch"]
        self._step_in_epoch = state["step"]
        self.history = [dict(logs) for logs in state["history"]]
        self.times = [dict(times) for times in state.get("times", [])]
        self.prior_seconds = float(state["train_seconds"])
        self._saves = int(state["saves"])
        if state.get("random") is not None:
            _assign(random_state(self.model), state["random"])
        self._metrics = state.get("metrics") if state["step"] else None
        for name, callback in self.stateful.items():
            if name in state["callbacks"]:
                callback.set_state(state["callbacks"][name])

    def current_state(self, weights=None):
        """This run's state as a JSON-ready dict (what `state.json` holds)."""
        mid_epoch = self._step_in_epoch > 0
        return {
            "epoch": self._epoch,  # finished epochs
            "step": self._step_in_epoch,  # steps of the next epoch already trained (mid-epoch backups)
            "weights": weights,
            "saves": self._saves,
            "train_seconds": self.train_seconds(),
            "history": self.history,
            "times": self.times,
            "callbacks": {name: callback.get_state() for name, callback in self.stateful.items()},
            # Dropout's random state: the masks of the steps to come.
            "random": _values(random_state(self.model)) if self.model is not None else None,
            # The epoch's running means so far (loss, errors), for the epoch's figures when it resumes.
            "metrics": _values(self.model.metrics_variables) if mid_epoch and self.model is not None else None,
        }

    def train_seconds(self):
        """Training time of all sessions so far, in seconds (up to the end of training, once it has ended)."""
        now = self._session_end or time.perf_counter()
        return self.prior_seconds + (now - self._session_start if self._session_start else 0.0)

    def on_train_end(self, logs=None):
        # What follows (letting go of the input pipelines, exports) is not training time.
        self._session_end = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        self._step_in_epoch = batch + 1
        self._steps_since_save += 1
        if self.save_freq != "epoch" and self._steps_since_save >= self.save_freq:
            self._save()

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_start = time.perf_counter()
        if self._metrics is not None and (logs or {}).get("first_step"):
            # The loop reset the metrics as the epoch began; a mid-epoch backup's epoch goes on from its sums.
            _assign(self.model.metrics_variables, self._metrics)
        self._metrics = None

    def on_epoch_end(self, epoch, logs=None):
        self.history.append({key: float(value) for key, value in (logs or {}).items()})
        seconds = time.perf_counter() - self._epoch_start if self._epoch_start is not None else None
        self.times.append({"epoch_seconds": seconds, "elapsed_seconds": self.train_seconds(), "finished_at": now_utc()})
        self._epoch = epoch + 1
        self._step_in_epoch = 0
        self._save()
        self.write_history()

    def save_at(self, position):
        """Backs up now, at `position` (the training loop's stop at a step boundary)."""
        if position != self.position:
            raise ValueError(f"the backup stands at {self.position}, not at {position}")  # a bug if reached
        if position.step and self._steps_since_save:
            self._save()  # else this step's backup (or at step 0 the previous epoch's) is written already

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


def _hdf5_problem(path):
    """What is wrong with an HDF5 weights file (unreadable, cut short), or None; reads its layout, not its data.

    Checked when the backup is read, before the run directory receives
    anything, rather than when the weights are loaded, after the callbacks
    have opened their log files.
    """
    import h5py

    size = path.stat().st_size
    short = []

    def check(name, item):
        if isinstance(item, h5py.Dataset):
            offset = item.id.get_offset()
            if offset is not None and offset + item.id.get_storage_size() > size:
                short.append(name)

    try:
        with h5py.File(path, "r") as weights:
            weights.visititems(check)
    except (OSError, RuntimeError, KeyError) as exc:
        return f"not a readable weights file: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
    if short:
        return f"cut short: {short[0]} lies past its end of {size:,} bytes"
    return None


def random_state(model):
    """The model's random state: the variables of `model.variables` that are not weights (dropout's seeds)."""
    weights = {id(v) for v in model.weights}
    return [v for v in model.variables if id(v) not in weights]


def _values(variables):
    return [np.asarray(keras.ops.convert_to_numpy(v)).tolist() for v in variables]


def _assign(variables, values):
    if len(variables) != len(values):
        raise DirectoryError(f"the backup holds {len(values)} values for {len(variables)} variables: {_DAMAGED_ADVICE}")
    for variable, value in zip(variables, values):
        variable.assign(np.asarray(value, dtype=keras.backend.standardize_dtype(variable.dtype)))
