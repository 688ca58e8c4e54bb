"""The run directory: one place per experiment, safe against clobbering and concurrent use.

runs/<name>/
    config.yaml      resolved config, written before training starts
    logs/            TensorBoard
    backup/          the training state of an unfinished run (pipeline.callbacks.RunBackup)
    model.keras      the trained Keras model
    saved_model/     the exported SavedModel
    labels.txt       class names, one per line, in class-index order
    metrics.json     final figures; its presence marks the run as finished

A run ends in this order: last epoch backed up, exports written, metrics.json
written, backup/ deleted. A kill at any point before metrics.json leaves a
backup, so the same command resumes (and, when every epoch is done, only
exports again); a kill after it leaves a finished run.
"""

import fcntl
import json
import os
import pathlib
import shutil

from pipeline.config import ConfigError, build_config, config_fingerprint, load_yaml

CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.json"
LABELS_FILE = "labels.txt"
LOCK_FILE = ".lock"


class RunDirError(ConfigError):
    """The run directory cannot be used as asked (finished, busy, or another config)."""


def fsync_path(path):
    """Flushes a file (or a directory's entries) to disk."""
    flags = os.O_RDONLY | (os.O_DIRECTORY if os.path.isdir(path) else 0)
    handle = os.open(path, flags)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)


def atomic_write_text(path, text):
    """Writes text to path through a temporary file and a rename: never half a file.

    The file is flushed before the rename and the directory after it, so a
    crash leaves either the old content or the new one.
    """
    path = pathlib.Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    fsync_path(tmp)
    os.replace(tmp, path)
    fsync_path(path.parent)


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
        handle = open(self.lock_path, "a")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            raise RunDirError(
                f"{self.path} is in use by another training process; wait for it or choose another --run-dir"
            ) from None
        self._lock = handle

    def _release_lock(self):
        if self._lock is not None:
            fcntl.flock(self._lock, fcntl.LOCK_UN)
            self._lock.close()
            self._lock = None

    def _check_existing(self):
        if not self.path.exists() or not any(self.path.iterdir()):
            return
        if self.overwrite:
            shutil.rmtree(self.path)
            return
        if self.finished:
            raise RunDirError(
                f"{self.path} holds a finished run; pass --overwrite to train it again, "
                "or choose another --run-dir / name"
            )
        saved = self.saved_config()
        if saved is None:
            raise RunDirError(f"{self.path} exists but holds no {CONFIG_FILE}; pass --overwrite or choose another --run-dir")
        if config_fingerprint(saved) != config_fingerprint(self.config):
            changed = changed_keys(saved.to_dict(), self.config.to_dict())
            raise RunDirError(
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
        return build_config(load_yaml(path))

    def discard_attempt(self, keep=(CONFIG_FILE, LABELS_FILE)):
        """Deletes what an earlier attempt left before its first backup (logs, exports).

        Used when an unfinished run has no backup and so trains from epoch 0
        again: stale TensorBoard events would otherwise draw two curves.

        Args:
            keep: names in the run directory to leave alone.
        """
        for entry in self.path.iterdir():
            if entry.name in keep:
                continue
            if entry.is_dir():
                shutil.rmtree(entry)
            else:
                entry.unlink()

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
