"""The run directory: one place per experiment, its layout, safe against clobbering and concurrent use.

runs/<name>/
    config.yaml      resolved config, written once the data has been found, before training starts
    environment.json what each session of the run ran on: versions, devices, CPU flags, commit, command
    logs/            TensorBoard (logs/eval: the evaluations)
    backup/          the training state of an unfinished run (pipeline.training.backup.RunBackup)
    history.csv      one row per finished epoch: every logged metric, learning rate, images/s, times
    checkpoints/     best.keras: the model of the best epoch so far (train.checkpoint_monitor)
    model.keras      the trained Keras model
    saved_model/     the exported SavedModel
    labels.txt       class names, one per line, in class-index order
    data_identity.json, data_identity.bin
                     the data the run began with: class names, per split its count and digest, and (folder
                     sources) the sorted 64-bit hashes of its files' names (pipeline.data.identity)
    metrics.json     final figures; its presence marks the run as finished
    eval_<split>_<crops>.json, figures/
                     what python -m pipeline.evaluate writes

Every file name of the run directory is defined here and nowhere else.

A run ends in this order: last epoch backed up, exports written, metrics.json
written, backup/ deleted. A kill at any point before metrics.json leaves a
backup, so the same command resumes (and, when every epoch is done, only
exports again); a kill after it leaves a finished run.
"""

import json
import pathlib

from pipeline.config import build_config, comparable, config_fingerprint, load_yaml
from pipeline.errors import ConfigError
from pipeline.storage.files import (
    ANY,
    CONFIG_FILE,
    FILE,
    TEMPORARY,
    DirectoryError,
    atomic_write_text,
    remove_entries,
    tensorboard_tree,
)
from pipeline.storage.locks import DirectoryLock, OwnedDirectory

DEFAULT_RUNS = pathlib.Path("runs")  # where runs/<name> and searches runs/<name>_search go by default
METRICS_FILE = "metrics.json"
LABELS_FILE = "labels.txt"
KERAS_FILE = "model.keras"
SAVED_MODEL_DIR = "saved_model"
LOGS_DIR = "logs"
EVAL_LOGS_DIR = "eval"  # under logs/
BACKUP_DIR = "backup"
FIGURES_DIR = "figures"
HISTORY_FILE = "history.csv"
ENVIRONMENT_FILE = "environment.json"
CHECKPOINTS_DIR = "checkpoints"
BEST_CHECKPOINT = "best.keras"  # under checkpoints/
DATA_IDENTITY_FILE = "data_identity.json"  # pipeline.data.identity
DATA_HASHES_FILE = "data_identity.bin"  # its name hashes, beside it

# Everything a run writes into its directory, at every depth (`pipeline.storage.files.strangers`).
# `--overwrite` deletes a directory only when it holds nothing else; `discard_attempt` only these.
SAVED_MODEL_TREE = {
    "saved_model.pb": FILE, "fingerprint.pb": FILE, "variables": {"variables.*": FILE}, "assets": ANY,
}  # fmt: skip
RUN_TREE = {
    CONFIG_FILE: FILE, ENVIRONMENT_FILE: FILE, METRICS_FILE: FILE, LABELS_FILE: FILE, HISTORY_FILE: FILE,
    KERAS_FILE: FILE, "eval_*.json": FILE, DATA_IDENTITY_FILE: FILE, DATA_HASHES_FILE: FILE, **TEMPORARY,
    LOGS_DIR: tensorboard_tree(),
    BACKUP_DIR: {"state.json": FILE, "ckpt-*.weights.h5": FILE, **TEMPORARY},
    CHECKPOINTS_DIR: {BEST_CHECKPOINT: FILE, **TEMPORARY},
    FIGURES_DIR: {"*.png": FILE, **TEMPORARY},
    SAVED_MODEL_DIR: SAVED_MODEL_TREE,
    f".{SAVED_MODEL_DIR}.tmp": ANY, f".{SAVED_MODEL_DIR}.old": ANY,
}  # fmt: skip


def eval_result_path(run_dir, split, crops):
    """Where one evaluation's results go: <run>/eval_<split>_<crops>.json."""
    return pathlib.Path(run_dir) / f"eval_{split}_{crops}.json"


def lock_run(path, what="--run-dir"):
    """A `DirectoryLock` on a run directory: one process at a time trains, exports or evaluates it."""
    return DirectoryLock(
        path,
        f"{path} is in use by another process (a training run, an export or an evaluation of this run): "
        f"wait for it to finish, or choose another {what}",
    )


class RunDir(OwnedDirectory):
    """A run directory opened for training.

    Use as a context manager. Entering locks the directory (a second process
    training, exporting or evaluating the same directory, under any path or
    symbolic link, is refused) and checks what it holds. `begin()` deletes
    the old run (with `overwrite`) and writes config.yaml (unless the run is
    resumed); the trainer calls it once the data has been found, so that a
    start that fails on its data writes nothing. A run that never began
    leaves nothing behind: directories created for the lock are removed again.

    Args:
        path: the directory.
        config: the resolved `Config` of this run.
        overwrite: delete a finished (or differently configured) run first.
        begin: call `begin()` on entering (False: the caller calls it).
    """

    kind, option, tree = "run", "--run-dir", RUN_TREE

    def __init__(self, path, config, overwrite=False, begin=True):
        super().__init__(path, config, overwrite, lock_run(path), begin_on_enter=begin)
        self.resumed = False

    def begin(self):
        """Makes the directory this run's: the old run deleted (with overwrite), config.yaml written."""
        if self.begun:
            return
        if self.overwrite and any(self.path.iterdir()):
            remove_entries(self.path, RUN_TREE)
        if not self.resumed:
            atomic_write_text(self.path / CONFIG_FILE, self.config.to_yaml())
        self.begun = True

    def _check_saved(self):
        if self.finished:
            raise DirectoryError(
                f"{self.path} holds a finished run; pass --overwrite to train it again, "
                "or choose another --run-dir / name"
            )
        saved = self.saved_config()
        if config_fingerprint(saved) != config_fingerprint(self.config):
            changed = changed_keys(comparable(saved), comparable(self.config))
            raise DirectoryError(
                f"{self.path} holds an unfinished run with another config (differs in: {', '.join(changed)}); "
                "pass --overwrite to start afresh, or choose another --run-dir"
            )
        self.resumed = True

    @property
    def finished(self):
        return (self.path / METRICS_FILE).is_file()

    def saved_config(self):
        path = self.path / CONFIG_FILE
        if not path.is_file():
            return None
        try:
            return build_config(load_yaml(path))
        except ConfigError as exc:
            raise DirectoryError(
                f"{path} is not a config of this project ({exc}); choose another --run-dir"
            ) from None

    def discard_attempt(self, keep=(CONFIG_FILE, LABELS_FILE, ENVIRONMENT_FILE, DATA_IDENTITY_FILE, DATA_HASHES_FILE)):
        """Deletes what an earlier attempt left before its first backup (logs, exports).

        Used when an unfinished run has no backup and so trains from epoch 0
        again: stale TensorBoard events would otherwise draw two curves.
        Only what a run writes (`RUN_TREE`) is deleted.

        Args:
            keep: names in the run directory to leave alone.
        """
        remove_entries(self.path, {p: k for p, k in RUN_TREE.items() if p not in keep})

    def write_metrics(self, metrics):
        atomic_write_text(self.path / METRICS_FILE, json.dumps(metrics, indent=2, sort_keys=True) + "\n")

    def write_labels(self, class_names):
        atomic_write_text(self.path / LABELS_FILE, "".join(f"{name}\n" for name in class_names))

    def sub(self, name):
        return self.path / name


def changed_keys(old, new, prefix=""):
    """Dotted keys whose values differ between two nested dicts."""
    keys = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            keys += changed_keys(a, b, f"{prefix}{key}.")
        elif a != b:
            keys.append(f"{prefix}{key}")
    return keys
