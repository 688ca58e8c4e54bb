"""The run directory: one place per experiment, its layout, safe against clobbering and concurrent use.

runs/<name>/
    config.yaml      resolved config, written before training starts
    logs/            TensorBoard (logs/eval: the evaluations)
    backup/          the training state of an unfinished run (pipeline.training.backup.RunBackup)
    model.keras      the trained Keras model
    saved_model/     the exported SavedModel
    labels.txt       class names, one per line, in class-index order
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

from pipeline.config import build_config, config_fingerprint, load_yaml
from pipeline.errors import ConfigError
from pipeline.storage.files import (
    CONFIG_FILE,
    DirectoryError,
    atomic_write_text,
    check_ours,
    release_lock,
    remove_entries,
    take_lock,
)

METRICS_FILE = "metrics.json"
LABELS_FILE = "labels.txt"
KERAS_FILE = "model.keras"
SAVED_MODEL_DIR = "saved_model"
LOGS_DIR = "logs"
EVAL_LOGS_DIR = "eval"  # under logs/
BACKUP_DIR = "backup"
FIGURES_DIR = "figures"
LOCK_FILE = ".lock"

# Everything a run writes into its directory (glob patterns). `--overwrite`
# deletes a directory only when it holds nothing else; `discard_attempt` only these.
RUN_ENTRIES = (
    CONFIG_FILE, METRICS_FILE, LABELS_FILE, LOGS_DIR, BACKUP_DIR, "checkpoints", KERAS_FILE, SAVED_MODEL_DIR,
    "eval_*.json", FIGURES_DIR, ".*.tmp", ".*.old",
)  # fmt: skip


def eval_result_path(run_dir, split, crops):
    """Where one evaluation's figures go: <run>/eval_<split>_<crops>.json."""
    return pathlib.Path(run_dir) / f"eval_{split}_{crops}.json"


class RunDir:
    """A run directory opened for training.

    Use as a context manager: entering takes an exclusive lock (a second
    process training into the same directory is refused) and, unless the run
    is resumed, writes config.yaml.

    Args:
        path: the directory.
        config: the resolved `Config` of this run.
        overwrite: delete a finished (or differently configured) run first.
    """

    def __init__(self, path, config, overwrite=False):
        self.path = pathlib.Path(path)
        self.config = config
        self.overwrite = overwrite
        self.resumed = False
        self._lock = None

    def __enter__(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._take_lock()
        try:
            self._check_existing()
            self.path.mkdir(parents=True, exist_ok=True)
            if not self.resumed:
                atomic_write_text(self.path / CONFIG_FILE, self.config.to_yaml())
        except BaseException:
            self._release_lock()
            raise
        return self

    def __exit__(self, *exc):
        self._release_lock()
        return False

    # The lock lives beside the run directory, so --overwrite can delete the
    # directory while holding it.
    @property
    def lock_path(self):
        return self.path.parent / f".{self.path.name}{LOCK_FILE}"

    def _take_lock(self):
        self._lock = take_lock(
            self.lock_path,
            f"{self.path} is in use by another training process: wait for it or choose another --run-dir",
        )

    def _release_lock(self):
        release_lock(self._lock)
        self._lock = None

    def _check_existing(self):
        if self.path.exists() and not self.path.is_dir():
            raise DirectoryError(f"{self.path} is a file, not a run directory: choose another --run-dir")
        if not self.path.exists() or not any(self.path.iterdir()):
            return
        if self.overwrite:
            # Only a directory that is recognisably a run of this project is replaced.
            check_ours(self.path, RUN_ENTRIES, "run")
            remove_entries(self.path, RUN_ENTRIES)
            return
        if not (self.path / CONFIG_FILE).is_file():
            raise DirectoryError(
                f"{self.path} is not empty and holds no {CONFIG_FILE}: it is not a run directory of this project; "
                "choose another --run-dir"
            )
        if self.finished:
            raise DirectoryError(
                f"{self.path} holds a finished run; pass --overwrite to train it again, "
                "or choose another --run-dir / name"
            )
        saved = self.saved_config()
        if config_fingerprint(saved) != config_fingerprint(self.config):
            changed = changed_keys(saved.to_dict(), self.config.to_dict())
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

    def discard_attempt(self, keep=(CONFIG_FILE, LABELS_FILE)):
        """Deletes what an earlier attempt left before its first backup (logs, exports).

        Used when an unfinished run has no backup and so trains from epoch 0
        again: stale TensorBoard events would otherwise draw two curves.
        Only what a run writes (`RUN_ENTRIES`) is deleted.

        Args:
            keep: names in the run directory to leave alone.
        """
        remove_entries(self.path, [p for p in RUN_ENTRIES if p not in keep])

    def write_metrics(self, figures):
        atomic_write_text(self.path / METRICS_FILE, json.dumps(figures, indent=2, sort_keys=True) + "\n")

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
