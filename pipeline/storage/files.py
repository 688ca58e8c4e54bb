"""Files and directories written so that nothing is lost.

- `atomic_write_text`: a file is replaced whole or not at all (temporary file, fsync, rename).
- `replace_directory` / `recover_directory`: a directory (a SavedModel, a prepared dataset) is
  written beside its place and swapped in; at every instant the complete old or the complete
  new one is on disk, and a killed swap is repaired by the next run.
- `locked`: an exclusive lock, so two processes never write one directory.
- `check_ours` / `remove_entries`: `--overwrite` deletes only a directory this project wrote,
  and only the entries it writes.
"""

import contextlib
import ctypes
import errno
import fcntl
import fnmatch
import os
import pathlib
import shutil

from pipeline.config import build_config, load_yaml
from pipeline.errors import ConfigError

CONFIG_FILE = "config.yaml"  # what makes a run or a search directory recognisably ours


class DirectoryError(ConfigError):
    """A directory cannot be used as asked: busy, finished, another config, a file, or not ours (exit status 2)."""


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
        DirectoryError (exit status 2): naming the path and what is in it.
    """
    path = pathlib.Path(path)
    if not path.is_dir():
        raise DirectoryError(f"{path} is a file, not a directory: choose another directory")
    names = sorted(e.name for e in os.scandir(path))
    if not names:
        return
    refuse = (
        f"{path} is not a {what} directory of this project (it holds {_listing(names)}); "
        f"it is left untouched: choose another directory"
    )
    if config_file is not None:
        if not (path / config_file).is_file():
            raise DirectoryError(f"{refuse} (no {config_file})")
        try:
            build_config(load_yaml(path / config_file))
        except ConfigError:
            raise DirectoryError(f"{refuse} ({config_file} is not a config of this project)") from None
    others = strangers(path, entries)
    if others:
        raise DirectoryError(
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
        DirectoryError: another process holds it (`busy_message`).
    """
    handle = open(lock_path, "a")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise DirectoryError(busy_message) from None
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
