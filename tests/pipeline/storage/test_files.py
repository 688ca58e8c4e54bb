"""Locks that belong to the directory, trees checked at every depth, files written whole even on a full disk."""

import errno
import fcntl
import os
import shutil
import subprocess
import textwrap
import types
import zipfile

import pytest

from pipeline.errors import DiskFull
from pipeline.storage import files
from pipeline.storage.files import (
    ANY,
    FILE,
    DirectoryError,
    DirectoryLock,
    atomic_output,
    atomic_write_text,
    check_ours,
    locked,
    strangers,
    tensorboard_tree,
)
from tests.helpers.processes import ROOT, command, finish, kill, project_env, start, wait_until

# --- DirectoryLock ---------------------------------------------------------------------------------


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
        from pipeline.storage.files import DirectoryLock
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
            files.take_lock(lock_path, "busy")
    assert not lock_path.exists()
    # A handle on a lock file that was deleted and made anew does not count as holding it.
    stale = open(lock_path, "a")
    os.unlink(lock_path)
    fcntl.flock(stale, fcntl.LOCK_EX | fcntl.LOCK_NB)
    try:
        handle = files.take_lock(lock_path, "busy")  # the path names a new file: the lock is free
        files.release_lock(handle)
    finally:
        stale.close()


# --- Trees ---------------------------------------------------------------------------------------


RUN_LIKE = {"config.yaml": FILE, "logs": tensorboard_tree(), "figures": {"*.png": FILE}, "saved_model": ANY}


def test_strangers_are_found_at_every_depth(tmp_path):
    for name in ("config.yaml", "logs/train/events.out.tfevents.1", "logs/eval/deep/events.out.tfevents.2",
                 "figures/a.png", "saved_model/variables/whatever", "logs/train/plugins/profile/x/host.xplane.pb"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("x")
    assert strangers(tmp_path, RUN_LIKE) == []
    (tmp_path / "logs" / "NOTES.md").write_text("mine")
    (tmp_path / "figures" / "my_notes.txt").write_text("mine")
    (tmp_path / "figures" / "b.png").mkdir()  # a directory where a file belongs
    (tmp_path / "logs" / "link").symlink_to(tmp_path / "figures")
    assert strangers(tmp_path, RUN_LIKE) == ["figures/b.png", "figures/my_notes.txt", "logs/NOTES.md", "logs/link"]


def test_check_ours_names_a_stranger_deep_in_the_tree(tmp_path):
    atomic_write_text(tmp_path / "config.yaml", "name: x\n")
    (tmp_path / "logs" / "train").mkdir(parents=True)
    (tmp_path / "logs" / "train" / "NOTES.md").write_text("mine")
    with pytest.raises(DirectoryError, match=r"holds files that no run of this project writes \(logs/train/NOTES.md\)"):
        check_ours(tmp_path, RUN_LIKE, "run")


# --- Files written whole -------------------------------------------------------------------------


def test_atomic_output_leaves_the_old_file_when_the_writer_fails(tmp_path):
    path = tmp_path / "model.keras"
    path.write_text("old")

    def write_then_fail(tmp, error):
        tmp.write_text("half")
        raise error

    with pytest.raises(DiskFull, match=f"^{path}: no space left on the device"):
        with atomic_output(path) as tmp:
            write_then_fail(tmp, OSError(errno.ENOSPC, "No space left on device"))
    # h5py reports a full disk as a RuntimeError naming errno 28.
    with pytest.raises(DiskFull):
        with atomic_output(path) as tmp:
            write_then_fail(tmp, RuntimeError("Can't write data (file write failed: errno = 28, ...)"))
    with pytest.raises(ValueError, match="other"):
        with atomic_output(path) as tmp:
            write_then_fail(tmp, ValueError("other"))
    assert path.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["model.keras"]


def test_a_file_larger_than_the_free_space_is_refused_before_it_is_written(tmp_path, monkeypatch):
    usage = types.SimpleNamespace(total=10**9, used=10**9 - 2 * 10**6, free=2 * 10**6)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage)
    with pytest.raises(DiskFull, match=r"model.keras: no space left on the device \(2.0 MB free\)"):
        with atomic_output(tmp_path / "model.keras", needed=5 * 10**6) as tmp:
            tmp.write_text("never")
    assert list(tmp_path.iterdir()) == []
    with atomic_output(tmp_path / "small", needed=1000) as tmp:
        tmp.write_text("fits")
    assert (tmp_path / "small").read_text() == "fits"


@pytest.fixture
def small_disk(tmp_path):
    """A 70 MB tmpfs: room for a tiny run's config, logs, best checkpoint and backup, not for its model.keras too."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=70m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.decode().strip()}): the full-disk run needs one")
    yield mount
    subprocess.run(["umount", str(mount)], capture_output=True)


@pytest.mark.slow
def test_a_full_disk_ends_in_one_line_naming_the_file_and_the_same_command_finishes_later(small_disk):
    from tests.helpers.runs import args

    run_dir = small_disk / "run"
    # fc6/fc7 of 1024 units on 64x64 inputs: about 14 MB of weights, 29 MB with the momentum. The best
    # checkpoint and the backup fit on the 70 MB disk; model.keras, as large again, does not.
    argv = command("pipeline.train", *args(run_dir, "model.fc_units=1024", "train.epochs=1"))
    status, output = finish(start(argv, cwd=ROOT))
    lines = output.strip().splitlines()
    assert status == 1, output[-3000:]
    assert lines[-1].startswith(f"error: {run_dir / 'model.keras'}: no space left on the device ("), lines[-1]
    assert "Traceback" not in output
    # Nothing under a final name is half a file, and no temporary file is left.
    written = sorted(p.relative_to(run_dir).as_posix() for p in run_dir.rglob("*") if p.is_file())
    assert not any(name.split("/")[-1].startswith(".tmp-") for name in written), written
    assert "model.keras" not in written and "metrics.json" not in written
    assert "backup/state.json" in written and "checkpoints/best.keras" in written
    # Room made: the same command exports the trained run and finishes it.
    subprocess.run(["mount", "-o", "remount,size=200m", str(small_disk)], check=True)
    status, output = finish(start(argv, cwd=ROOT))
    assert status == 0, output[-3000:]
    assert "all 1 epochs are trained; exporting" in output
    assert (run_dir / "metrics.json").is_file() and zipfile.is_zipfile(run_dir / "model.keras")


def test_the_run_process_env_names_this_checkout():
    assert project_env()["PYTHONPATH"] == str(ROOT)
