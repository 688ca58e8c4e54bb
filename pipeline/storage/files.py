"""Files and directories written so that nothing is lost.

- `atomic_output` / `atomic_write_text`: a file is replaced whole or not at all (temporary name beside it,
  fsync, rename); a full disk ends in `DiskFull` naming the file, never in half a file under its name.
- `replace_directory` / `recover_directory`: a directory (a SavedModel, a prepared dataset) is
  written beside its place and swapped in; at every instant the complete old or the complete
  new one is on disk, and a killed swap is repaired by the next run.
- The locks that keep two processes out of one directory are in `pipeline.storage.locks`.
- `check_ours` / `remove_entries`: `--overwrite` deletes only a directory this project wrote,
  holding nothing but what it writes, at every depth.
"""

import contextlib
import ctypes
import errno
import fnmatch
import os
import pathlib
import shutil
import stat

from pipeline.config import build_config, load_yaml
from pipeline.console.text import printable
from pipeline.errors import ConfigError, DiskFull, is_disk_full

CONFIG_FILE = "config.yaml"  # what makes a run or a search directory recognisably ours
TEMPORARY_PREFIX = ".tmp-"  # files being written: `.tmp-<final name>` beside their final name


class DirectoryError(ConfigError):
    """A directory cannot be used as asked: busy, finished, another config, a file, or not ours (exit status 2)."""


# --- What a directory of ours holds -------------------------------------------------------------
#
# A tree is a dict {glob pattern: kind}: FILE matches a regular file, ANY anything (a file, or a
# directory with whatever is inside: a SavedModel, a profile), and a dict a directory holding only
# what that dict describes. A symbolic link matches nothing: the project writes none.

FILE = "file"
ANY = "any"
TEMPORARY = {f"{TEMPORARY_PREFIX}*": FILE}


def tensorboard_tree():
    """What a TensorBoard log directory holds: event files, in sub-directories of any name, and profiles."""
    tree = {"events.out.tfevents.*": FILE, "plugins": ANY}
    tree["*"] = tree  # runs (train, validation, eval, a trial's execution0, ...) at any depth
    return tree


def _kind_matches(entry, kind):
    if entry.is_symlink():
        return False
    if kind == ANY:
        return True
    if kind == FILE:
        return entry.is_file(follow_symlinks=False)
    return entry.is_dir(follow_symlinks=False)


def _as_tree(entries):
    """A tree from a tree, or from a flat sequence of patterns (each a file or anything at the top level)."""
    return entries if isinstance(entries, dict) else {pattern: ANY for pattern in entries}


def strangers(path, entries, limit=None):
    """Paths (relative to `path`, sorted) in directory `path` that its tree `entries` does not describe.

    Args:
        path: an existing directory.
        entries: a tree (see above) or a sequence of glob patterns of top-level names.
        limit: stop after this many (None: all).
    """
    found = []
    tree = _as_tree(entries)

    def visit(folder, tree, prefix):
        for entry in sorted(os.scandir(folder), key=lambda e: e.name):
            kind = next((k for p, k in tree.items() if fnmatch.fnmatchcase(entry.name, p) and _kind_matches(entry, k)),
                        None)
            if kind is None:
                found.append(prefix + entry.name)
            elif isinstance(kind, dict):
                visit(entry.path, kind, f"{prefix}{entry.name}/")
            if limit is not None and len(found) >= limit:
                return

    visit(path, tree, "")
    return found[:limit] if limit is not None else found


def _listing(names, limit=5):
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def check_ours(path, entries, what, config_file=CONFIG_FILE):
    """Refuses to let `--overwrite` touch a directory this project did not write.

    A directory qualifies when it is empty, or when its `config_file` parses as
    this project's config and every entry, at every depth, is one that `entries`
    describes (what such a directory holds). Anything else might be a user's files.

    Args:
        path: an existing path.
        entries: the tree of what `what` writes (see `strangers`).
        what: "run", "search" or "prepared dataset", for the message.
        config_file: the file that must parse as a config (None: no such file).

    Raises:
        DirectoryError (exit status 2): naming the path and what is in it.
    """
    path = pathlib.Path(path)
    if not path.is_dir():
        raise DirectoryError(f"{path} is a file, not a directory: choose another directory")
    names = sorted(printable(e.name) for e in os.scandir(path))
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
    others = strangers(path, entries, limit=6)
    if others:
        raise DirectoryError(
            f"{path} holds files that no {what} of this project writes ({_listing([printable(o) for o in others])}); "
            "they are left untouched: move them out, or choose another directory"
        )


def remove_entries(path, entries):
    """Deletes the top-level entries of directory `path` that `entries` describes; others stay."""
    tree = _as_tree(entries)
    for entry in os.scandir(path):
        if any(fnmatch.fnmatchcase(entry.name, p) and _kind_matches(entry, k) for p, k in tree.items()):
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path)
            else:
                os.unlink(entry.path)


# --- Directories swapped whole -------------------------------------------------------------------
#
# A new SavedModel or prepared dataset is written completely into a staging directory beside its
# target, then swapped in. Linux swaps the two names in one step (renameat2 with RENAME_EXCHANGE);
# elsewhere the old one is first renamed aside (`.<name>.old`), and `recover_directory` puts it
# back if a kill came between the two renames.
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

    Call it holding the lock that guards `target`.

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


# --- Files written whole ------------------------------------------------------------------------


def fsync_path(path):
    """Flushes a file (or a directory's entries) to disk."""
    flags = os.O_RDONLY | (os.O_DIRECTORY if os.path.isdir(path) else 0)
    handle = os.open(path, flags)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)


def temporary_path(path):
    """Where `path` is written before it is renamed into place: `.tmp-<name>` beside it (same suffixes)."""
    path = pathlib.Path(path)
    return path.with_name(f"{TEMPORARY_PREFIX}{path.name}")


def disk_full(path, free=None):
    """The `DiskFull` error for `path`: names the file, says there is no space left and what to do."""
    path = pathlib.Path(path)
    if free is None:
        with contextlib.suppress(OSError):
            free = shutil.disk_usage(path.parent).free
    left = f" ({free / 1e6:.1f} MB free)" if free is not None else ""
    return DiskFull(
        f"{path}: no space left on the device{left}: free some space (or choose a run directory on another "
        "disk), then run the same command again; nothing was written under this name"
    )


def check_free_space(path, needed):
    """Raises `DiskFull` for `path` when its file system has less than `needed` bytes free (plus a margin).

    Some writers (h5py) crash the process instead of reporting a full disk, so
    a large file is checked for before it is written.
    """
    free = shutil.disk_usage(pathlib.Path(path).parent).free
    if free < needed * 1.05 + 2**20:
        raise disk_full(path, free)


@contextlib.contextmanager
def atomic_output(path, needed=None):
    """Yields a temporary path beside `path` to write; on success it replaces `path` whole.

    The file is flushed before the rename and the directory after it, so a
    crash leaves either the old content or the new one under `path`. On any
    failure the temporary file is removed; a full disk becomes `DiskFull`.

    Args:
        path: the final file.
        needed: bytes the file will take, checked against the free space first (None: not checked).
    """
    path = pathlib.Path(path)
    tmp = temporary_path(path)
    try:
        if needed is not None:
            check_free_space(path, needed)
        yield tmp
        fsync_path(tmp)
        os.replace(tmp, path)
        fsync_path(path.parent)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            if tmp.is_dir() and not tmp.is_symlink():
                shutil.rmtree(tmp)
            else:
                tmp.unlink()
        if isinstance(exc, Exception) and not isinstance(exc, DiskFull) and is_disk_full(exc):
            raise disk_full(path) from None
        raise


def atomic_write_text(path, text):
    """Writes text (UTF-8) to path through a temporary file and a rename: never half a file."""
    with atomic_output(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def is_regular_file(path):
    """Whether `path` names a regular file (after symbolic links): not a FIFO, a device or a directory."""
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return False
