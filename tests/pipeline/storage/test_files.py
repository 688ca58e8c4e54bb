"""Locks that belong to the directory, trees checked at every depth, files written whole even on a full disk."""

import errno
import shutil
import subprocess
import types
import zipfile

import pytest

from pipeline.errors import DiskFull
from pipeline.storage.files import (
    ANY,
    FILE,
    DirectoryError,
    atomic_output,
    atomic_write_text,
    check_ours,
    strangers,
    tensorboard_tree,
)
from tests.helpers.processes import ROOT, command, finish, project_env, start

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
