"""Locks that belong to the directory: the same under every name, released with the process, leaving nothing."""

import fcntl
import os
import textwrap

import pytest

from pipeline.storage import locks
from pipeline.storage.files import DirectoryError
from pipeline.storage.locks import DirectoryLock, locked
from tests.helpers.processes import kill, start, wait_until


def test_a_directory_lock_is_the_same_under_every_name(tmp_path):
    target = tmp_path / "a"
    target.mkdir()
    (tmp_path / "link").symlink_to(target)
    (tmp_path / "sub").mkdir()
    with DirectoryLock(target, "busy"):
        for name in (tmp_path / "link", tmp_path / "sub" / ".." / "a", target / "."):
            with pytest.raises(DirectoryError, match="^busy$"):
                DirectoryLock(name, "busy").acquire()
    # Released: another may take it, and nothing was written to take it.
    with DirectoryLock(tmp_path / "link", "busy"):
        pass
    assert list(target.iterdir()) == []


def test_a_lock_held_by_another_process_refuses_and_dies_with_it(tmp_path):
    target = tmp_path / "run"
    target.mkdir()
    holder = start(command_holding_lock(target))
    wait_until(lambda: (tmp_path / "held").exists(), holder)
    with pytest.raises(DirectoryError):
        DirectoryLock(target, "busy").acquire()
    kill(holder)  # kill -9: the kernel lets go of the lock
    with DirectoryLock(target, "busy"):
        pass


def command_holding_lock(target):
    code = textwrap.dedent(
        f"""
        import pathlib, time
        from pipeline.storage.locks import DirectoryLock
        lock = DirectoryLock({str(target)!r}, "busy").acquire()
        (pathlib.Path({str(target)!r}).parent / "held").write_text("")
        time.sleep(600)
        """
    )
    return ["python", "-c", code]


def test_a_lock_creates_missing_directories_and_removes_them_when_unused(tmp_path):
    path = tmp_path / "runs" / "deep" / "run"
    lock = DirectoryLock(path, "busy").acquire()
    assert path.is_dir()
    lock.release(remove_created=True)
    assert list(tmp_path.iterdir()) == []
    # Kept when they hold something, or when asked to keep them.
    lock = DirectoryLock(path, "busy").acquire()
    (path / "config.yaml").write_text("x")
    lock.release(remove_created=True)
    assert (path / "config.yaml").is_file()


def test_a_dangling_link_or_a_file_is_refused_and_nothing_is_created(tmp_path):
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    with pytest.raises(DirectoryError, match="is a symbolic link to .*nowhere, which does not exist"):
        DirectoryLock(tmp_path / "dangling", "busy").acquire()
    (tmp_path / "file").write_text("data")
    with pytest.raises(DirectoryError, match="is a file, not a directory"):
        DirectoryLock(tmp_path / "file", "busy").acquire()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dangling", "file"]


def test_a_lock_file_is_removed_when_released_and_a_stale_handle_is_not_trusted(tmp_path):
    lock_path = tmp_path / ".data.lock"
    with locked(lock_path, "busy"):
        assert lock_path.exists()
        with pytest.raises(DirectoryError, match="busy"):
            locks.take_lock(lock_path, "busy")
    assert not lock_path.exists()
    # A handle on a lock file that was deleted and made anew does not count as holding it.
    stale = open(lock_path, "a")
    os.unlink(lock_path)
    fcntl.flock(stale, fcntl.LOCK_EX | fcntl.LOCK_NB)
    try:
        handle = locks.take_lock(lock_path, "busy")  # the path names a new file: the lock is free
        locks.release_lock(handle)
    finally:
        stale.close()
