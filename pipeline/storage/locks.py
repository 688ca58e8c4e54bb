"""Locks that keep two processes out of one directory, whatever path or symbolic link names it.

- `DirectoryLock`: an exclusive lock on a directory itself (flock on an open handle of it): nothing is
  written to take it, and the kernel releases it when the process dies. Run and search directories.
- `OwnedDirectory`: what a run and a search directory share: locked on entering, checked, and left
  as it was found by a process that never began writing.
- `locked` / `take_lock`: a lock file beside a directory that is swapped whole (a prepared dataset),
  named from its real path (`lock_file_for`) and removed when released.
"""

import contextlib
import fcntl
import os
import pathlib

from pipeline.storage.files import CONFIG_FILE, DirectoryError, check_ours


class DirectoryLock:
    """An exclusive lock on a directory itself: `flock` on an open handle of it.

    The lock belongs to the directory, not to the path that named it: a
    symbolic link, `..` or a relative path to the same directory meet the same
    lock. Nothing is written to take it, and the kernel releases it when the
    process dies (kill -9 included). A directory that does not exist yet is
    created (with its missing parents) to be locked; `release(remove_created=True)`
    removes again those that were created and are still empty.

    Args:
        path: the directory; a dangling symbolic link is refused.
        busy_message: the error when another process holds the lock.
    """

    def __init__(self, path, busy_message):
        self.path = pathlib.Path(path)
        self.busy_message = busy_message
        self.created = []
        self._handle = None

    def acquire(self):
        """Takes the lock, creating the directory if needed.

        Raises:
            DirectoryError: another process holds it, or the path is a file or a dangling link.
        """
        if self.path.is_symlink() and not self.path.exists():
            raise DirectoryError(
                f"{self.path} is a symbolic link to {os.readlink(self.path)}, which does not exist: "
                "create that directory, or choose another"
            )
        while True:
            self._make()
            handle = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY)
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(handle)
                raise DirectoryError(self.busy_message) from None
            # A holder that removed the directory as it let go leaves this handle on a deleted one: again.
            try:
                same = os.path.samestat(os.fstat(handle), os.stat(self.path))
            except FileNotFoundError:
                same = False
            if same:
                self._handle = handle
                return self
            os.close(handle)

    def _make(self):
        missing = []
        for folder in [self.path, *self.path.parents]:
            if folder.exists() or folder.is_symlink():
                break
            missing.append(folder)
        for folder in reversed(missing):
            try:
                folder.mkdir()
                self.created.append(folder)
            except FileExistsError:
                pass
        if not self.path.is_dir():
            raise DirectoryError(f"{self.path} is a file, not a directory: choose another directory")

    def release(self, remove_created=False):
        """Lets go of the lock; with remove_created, first removes the directories it created that are still empty."""
        if self._handle is None:
            return
        if remove_created:
            for folder in reversed(self.created):
                with contextlib.suppress(OSError):
                    folder.rmdir()
        fcntl.flock(self._handle, fcntl.LOCK_UN)
        os.close(self._handle)
        self._handle = None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()
        return False


class OwnedDirectory:
    """A directory one process writes into, as a context manager (`RunDir`, `SearchDir`).

    Entering refuses a file in its place, takes `lock` (a `DirectoryLock`),
    checks what the directory holds and, with `begin_on_enter`, calls
    `begin`. If that fails, or the process never calls `begin`, the lock is
    released and the directories created to take it are removed again: a
    start that fails writes nothing.

    A directory that holds anything must be one of this kind: with
    `overwrite`, everything in it must be in `tree` (`check_ours`), else it
    must hold a config.yaml, which `_check_saved` (each kind its own) then
    checks against this process's config.

    Subclasses set `kind` ("run", "search"), `option` (the command-line
    option naming the directory) and `tree`, and write `_check_saved` and
    `begin` (which sets `self.begun`).
    """

    kind = "owned"
    option = "--dir"
    tree = {}

    def __init__(self, path, config, overwrite, lock, begin_on_enter=False):
        self.path = pathlib.Path(path)
        self.config = config
        self.overwrite = overwrite
        self.begun = False
        self._lock = lock
        self._begin_on_enter = begin_on_enter

    def __enter__(self):
        if self.path.exists() and not self.path.is_dir():
            raise DirectoryError(f"{self.path} is a file, not a {self.kind} directory: choose another {self.option}")
        self._lock.acquire()
        try:
            self._check_existing()
            if self._begin_on_enter:
                self.begin()
        except BaseException:
            self._lock.release(remove_created=True)
            raise
        return self

    def __exit__(self, *exc):
        self._lock.release(remove_created=not self.begun)
        return False

    def _check_existing(self):
        if not any(self.path.iterdir()):
            return
        if self.overwrite:
            # Only a directory that is recognisably one of this kind is replaced (by `begin`).
            check_ours(self.path, self.tree, self.kind)
            return
        if not (self.path / CONFIG_FILE).is_file():
            raise DirectoryError(
                f"{self.path} is not empty and holds no {CONFIG_FILE}: it is not a {self.kind} directory of this "
                f"project; choose another {self.option}"
            )
        self._check_saved()

    def _check_saved(self):
        """Refuses a directory whose config.yaml this process may not continue (each kind its own rules)."""
        raise NotImplementedError


def lock_file_for(target):
    """The lock file of a directory that is swapped whole: `.<name>.lock` beside it, its path resolved."""
    target = pathlib.Path(os.path.realpath(target))
    return target.with_name(f".{target.name}.lock")


def take_lock(lock_path, busy_message):
    """An exclusive, non-blocking lock on the file `lock_path` (created if needed); the open handle holds it.

    `release_lock` deletes the file again, so a lock leaves nothing behind; a
    process that opened the file just before it was deleted notices and retries.

    Raises:
        DirectoryError: another process holds it (`busy_message`).
    """
    lock_path = pathlib.Path(lock_path)
    while True:
        handle = open(lock_path, "a")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            raise DirectoryError(busy_message) from None
        try:
            same = os.path.samestat(os.fstat(handle.fileno()), os.stat(lock_path))
        except FileNotFoundError:
            same = False
        if same:
            return handle
        handle.close()


def release_lock(handle):
    if handle is not None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(handle.name)
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
