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

import contextlib
import ctypes
import errno
import fcntl
import fnmatch
import json
import os
import pathlib
import shutil

from pipeline.config import ConfigError, build_config, config_fingerprint, load_yaml

CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.json"
LABELS_FILE = "labels.txt"
LOCK_FILE = ".lock"

# Everything a run writes into its directory (glob patterns). `--overwrite`
# deletes a directory only when it holds nothing else; `discard_attempt` only these.
RUN_ENTRIES = (
    CONFIG_FILE, METRICS_FILE, LABELS_FILE, "logs", "backup", "checkpoints", "model.keras", "saved_model",
    "eval_*.json", "figures", ".*.tmp", ".*.old",
)  # fmt: skip


class RunDirError(ConfigError):
    """The run directory cannot be used as asked (finished, busy, another config, or not a run at all)."""


def strangers(path, entries):
    """The names in directory `path` that match none of the glob patterns `entries`, sorted."""
    return sorted(e.name for e in os.scandir(path) if not any(fnmatch.fnmatchcase(e.name, p) for p in entries))


def _listing(names, limit=5):
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def check_ours(path, entries, what, config_file=CONFIG_FILE):
    """Refuses to let `--overwrite` touch a directory this project did not write.

    A directory qualifies when it is empty, or when its `config_file` parses as
    this project's config and every entry matches `entries` (the names such a
    directory holds). Anything else might be a user's files.

    Args:
        path: an existing path.
        entries: glob patterns of the names `what` writes.
        what: "run", "search" or "prepared dataset", for the message.
        config_file: the file that must parse as a config (None: no such file).

    Raises:
        RunDirError (exit status 2): naming the path and what is in it.
    """
    path = pathlib.Path(path)
    if not path.is_dir():
        raise RunDirError(f"{path} is a file, not a directory: choose another directory")
    names = sorted(e.name for e in os.scandir(path))
    if not names:
        return
    refuse = (
        f"{path} is not a {what} directory of this project (it holds {_listing(names)}); "
        f"it is left untouched: choose another directory"
    )
    if config_file is not None:
        if not (path / config_file).is_file():
            raise RunDirError(f"{refuse} (no {config_file})")
        try:
            build_config(load_yaml(path / config_file))
        except ConfigError:
            raise RunDirError(f"{refuse} ({config_file} is not a config of this project)") from None
    others = strangers(path, entries)
    if others:
        raise RunDirError(
            f"{path} holds files that no {what} of this project writes ({_listing(others)}); they are left "
            f"untouched: move them out, or choose another directory"
        )


def remove_entries(path, entries):
    """Deletes the entries of directory `path` that match the glob patterns `entries`; others stay."""
    for entry in os.scandir(path):
        if any(fnmatch.fnmatchcase(entry.name, p) for p in entries):
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path)
            else:
                os.unlink(entry.path)


def take_lock(lock_path, busy_message):
    """An exclusive, non-blocking lock on `lock_path` (created if needed); the open handle holds it.

    Raises:
        RunDirError: another process holds it (`busy_message`).
    """
    handle = open(lock_path, "a")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise RunDirError(busy_message) from None
    return handle


def release_lock(handle):
    if handle is not None:
        fcntl.flock(handle, fcntl.LOCK_UN)
        handle.close()


@contextlib.contextmanager
def locked(lock_path, busy_message):
    """Holds `take_lock(lock_path, busy_message)` for the block."""
    handle = take_lock(lock_path, busy_message)
    try:
        yield
    finally:
        release_lock(handle)


# Atomic replacement of a directory: a new SavedModel or prepared dataset is
# written completely into a staging directory beside its target, then swapped
# in. Linux swaps the two names in one step (renameat2 with RENAME_EXCHANGE);
# elsewhere the old one is first renamed aside (`.<name>.old`), and
# `recover_directory` puts it back if a kill came between the two renames.
_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


def staging_path(target):
    """Where the new version of directory `target` is written before the swap."""
    target = pathlib.Path(target)
    return target.with_name(f".{target.name}.tmp")


def _aside_path(target):
    target = pathlib.Path(target)
    return target.with_name(f".{target.name}.old")


def _exchange(a, b):
    """Swaps the names a and b in one step; False where the system cannot."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        return False
    if renameat2(_AT_FDCWD, os.fsencode(str(a)), _AT_FDCWD, os.fsencode(str(b)), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.ENOTSUP):
        return False
    raise OSError(code, os.strerror(code), str(b))


def _between_renames():
    """Runs between the two renames of a swap without `_exchange` (tests pause here to kill the process)."""


def replace_directory(staging, target):
    """Moves the complete directory `staging` to `target`, replacing any directory there.

    At every instant a complete old or a complete new `target` is on disk: an
    atomic exchange where the system has one, else two renames whose
    interruption `recover_directory` repairs on the next run.
    """
    staging, target = pathlib.Path(staging), pathlib.Path(target)
    fsync_path(staging)
    if not target.exists():
        os.rename(staging, target)
    elif _exchange(staging, target):
        shutil.rmtree(staging)  # now the old version
    else:
        aside = _aside_path(target)
        if aside.exists():
            shutil.rmtree(aside)
        os.rename(target, aside)
        fsync_path(target.parent)
        _between_renames()
        os.rename(staging, target)
        fsync_path(target.parent)
        shutil.rmtree(aside)
    fsync_path(target.parent)


def recover_directory(target):
    """Repairs what a killed `replace_directory` left: the old version back in place, leftovers removed.

    Returns:
        A line saying what was repaired, or None when there was nothing to do.
    """
    target = pathlib.Path(target)
    staging, aside = staging_path(target), _aside_path(target)
    done = []
    if aside.exists() and not target.exists():
        os.rename(aside, target)
        done.append(f"restored {target} from an interrupted replacement")
    for leftover in (aside, staging):
        if leftover.exists():
            shutil.rmtree(leftover) if leftover.is_dir() else leftover.unlink()
            done.append(f"removed the unfinished {leftover.name}")
    if done:
        fsync_path(target.parent)
    return "; ".join(done) or None


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
        self._lock = take_lock(
            self.lock_path,
            f"{self.path} is in use by another training process: wait for it or choose another --run-dir",
        )

    def _release_lock(self):
        release_lock(self._lock)
        self._lock = None

    def _check_existing(self):
        if self.path.exists() and not self.path.is_dir():
            raise RunDirError(f"{self.path} is a file, not a run directory: choose another --run-dir")
        if not self.path.exists() or not any(self.path.iterdir()):
            return
        if self.overwrite:
            # Only a directory that is recognisably a run of this project is replaced.
            check_ours(self.path, RUN_ENTRIES, "run")
            remove_entries(self.path, RUN_ENTRIES)
            return
        if not (self.path / CONFIG_FILE).is_file():
            raise RunDirError(
                f"{self.path} is not empty and holds no {CONFIG_FILE}: it is not a run directory of this project; "
                "choose another --run-dir"
            )
        if self.finished:
            raise RunDirError(
                f"{self.path} holds a finished run; pass --overwrite to train it again, "
                "or choose another --run-dir / name"
            )
        saved = self.saved_config()
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
        try:
            return build_config(load_yaml(path))
        except ConfigError as exc:
            raise RunDirError(
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
