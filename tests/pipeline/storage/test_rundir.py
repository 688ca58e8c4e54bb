"""Run directories (`pipeline.storage.rundir`) lose nothing: --overwrite touches only run directories, names stay
under runs/, directories swap atomically, an unfinished run resumes only with its own config, and a run in use is
refused under any name."""

import fcntl
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from pipeline import train
from pipeline.config import load_config
from pipeline.storage import files
from pipeline.storage.files import (
    DirectoryError,
    recover_directory,
    replace_directory,
    staging_path,
)
from pipeline.storage.rundir import RunDir
from tests.helpers.folders import unchanged, user_folder
from tests.helpers.runs import ROOT, TINY, args, project_env


def test_overwrite_refuses_a_folder_of_user_files_and_leaves_every_file(tmp_path, capsys):
    photos = tmp_path / "photos"
    files = user_folder(photos)
    assert train.main(args(photos) + ["--overwrite"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {photos} is not a run directory of this project (it holds config.yaml, notes, ")
    assert "config.yaml is not a config of this project" in err and err.count("\n") == 1
    assert unchanged(photos, files)
    # Without --overwrite the message does not suggest it.
    assert train.main(args(photos)) == 2
    assert "--overwrite" not in capsys.readouterr().err
    assert unchanged(photos, files)


def test_overwrite_refuses_a_run_directory_holding_other_files(tmp_path, capsys):
    run_dir = tmp_path / "run"
    with RunDir(run_dir, load_config([], TINY)):
        pass
    (run_dir / "my_notes.txt").write_text("keep me")
    assert train.main(args(run_dir) + ["--overwrite"]) == 2
    err = capsys.readouterr().err
    assert err == (f"error: {run_dir} holds files that no run of this project writes (my_notes.txt); they are left "
                   "untouched: move them out, or choose another directory\n")
    assert (run_dir / "my_notes.txt").read_text() == "keep me" and (run_dir / "config.yaml").is_file()


def test_a_run_dir_that_is_a_file_is_refused(tmp_path, capsys):
    path = tmp_path / "run"
    path.write_text("data")
    for extra in ([], ["--overwrite"]):
        assert train.main(args(path) + extra) == 2
        assert capsys.readouterr().err == f"error: {path} is a file, not a run directory: choose another --run-dir\n"
    assert path.read_text() == "data"


def test_overwrite_replaces_an_empty_folder_and_an_unfinished_run(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with RunDir(empty, load_config([], TINY), overwrite=True):
        pass
    unfinished = tmp_path / "unfinished"
    with RunDir(unfinished, load_config([], TINY)):
        (unfinished / "logs").mkdir()
    with RunDir(unfinished, load_config([], TINY + ["train.epochs=3"]), overwrite=True) as run:
        assert not run.resumed and not (unfinished / "logs").exists()
    assert load_config([unfinished / "config.yaml"]).train.epochs == 3


@pytest.mark.parametrize("name", ["../../x", "/abs/path", "a/b", "..", ".", "with space"])
def test_unsafe_names_are_refused_before_anything_is_written(tmp_path, name):
    # In a subprocess whose working directory is empty: nothing may appear anywhere.
    target = tmp_path / "abs"
    name = str(target) if name == "/abs/path" else name
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    command = [sys.executable, "-m", "pipeline.train", "--set", f"name={name}", *[a for t in TINY for a in ("--set", t)]]
    done = subprocess.run(command, cwd=cwd, env=project_env(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("error: name: must be one path component of letters, digits, '.', '_' and '-'")
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert list(cwd.iterdir()) == [] and not target.exists()
    assert not (tmp_path / "x").exists()


def test_a_config_file_name_becomes_a_safe_run_name(tmp_path):
    path = tmp_path / "my exp (2).yaml"
    path.write_text("train:\n  epochs: 1\n")
    assert load_config([path]).name == "my_exp__2_"


def _tree(path):
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def _version(path, text):
    (path / "sub").mkdir(parents=True)
    (path / "sub" / "file").write_text(text)
    (path / "top").write_text(text * 2)


@pytest.mark.parametrize("exchange", [True, False])
def test_replace_directory_swaps_in_the_new_version(tmp_path, monkeypatch, exchange):
    if not exchange:
        monkeypatch.setattr(files, "_exchange", lambda a, b: False)
    target = tmp_path / "saved_model"
    _version(target, "old")
    staging = staging_path(target)
    _version(staging, "new")
    seen = []
    monkeypatch.setattr(files, "_between_renames", lambda: seen.append(_tree(tmp_path)))
    replace_directory(staging, target)
    assert _tree(target) == {"sub/file": b"new", "top": b"newnew"}
    assert sorted(os.listdir(tmp_path)) == ["saved_model"]
    # Between the two renames (no exchange) the old version is whole, beside its place.
    assert seen == ([] if exchange else [{".saved_model.old/sub/file": b"old", ".saved_model.old/top": b"oldold",
                                          ".saved_model.tmp/sub/file": b"new", ".saved_model.tmp/top": b"newnew"}])


def test_recover_directory_puts_back_the_old_version_after_a_kill_between_renames(tmp_path):
    target = tmp_path / "data"
    _version(tmp_path / ".data.old", "old")
    _version(tmp_path / ".data.tmp", "half")
    assert recover_directory(target) == (
        f"restored {target} from an interrupted replacement; removed the unfinished .data.tmp"
    )
    assert _tree(tmp_path) == {"data/sub/file": b"old", "data/top": b"oldold"}
    assert recover_directory(target) is None


KILL_BETWEEN_RENAMES = textwrap.dedent(
    """
    import pathlib, sys, time
    from pipeline import export
    from pipeline.storage import files
    marker = pathlib.Path(sys.argv[1])
    files._exchange = lambda a, b: False  # the two-rename path, as on a system without renameat2
    def pause():
        marker.write_text("between")
        time.sleep(120)
    files._between_renames = pause
    sys.exit(export.main(sys.argv[2:]))
    """
)


def _wait_for(path, process, timeout=120):
    deadline = time.time() + timeout
    while not path.exists():
        assert process.poll() is None, process.communicate()
        assert time.time() < deadline, "timed out"
        time.sleep(0.2)


@pytest.mark.slow
def test_a_reexport_killed_between_the_renames_loses_nothing(tmp_path):
    from pipeline import export
    from tests.helpers.runs import make_run

    run_dir = tmp_path / "run"
    make_run(run_dir)
    saved = run_dir / "saved_model"
    before = _tree(saved)
    marker = tmp_path / "between"
    process = subprocess.Popen(
        [sys.executable, "-c", KILL_BETWEEN_RENAMES, str(marker), str(run_dir)],
        env=project_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    _wait_for(marker, process)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    # The old SavedModel is whole beside its place, the new one whole in staging.
    assert not saved.exists() and _tree(run_dir / ".saved_model.old") == before
    assert (run_dir / ".saved_model.tmp" / "saved_model.pb").is_file()
    # The next export repairs it first (the old one back), then replaces it.
    assert export.main([str(run_dir)]) == 0
    assert (saved / "saved_model.pb").is_file()
    assert sorted(p.name for p in run_dir.iterdir() if p.name.startswith(".saved_model")) == []


# --- Cases an adversarial pass broke -----------------------------------------------------------------


def _finished_run(run_dir):
    from tests.helpers.runs import make_run

    make_run(run_dir)
    return run_dir


@pytest.mark.parametrize("mine", ["logs/NOTES.md", "figures/my_notes.txt", "saved_model/variables/mine.txt"])
def test_overwrite_refuses_a_run_with_a_users_file_deep_inside(tmp_path, capsys, mine):
    run_dir = _finished_run(tmp_path / "run")
    (run_dir / mine).parent.mkdir(parents=True, exist_ok=True)
    (run_dir / mine).write_text("keep me")
    before = _tree(run_dir)
    assert train.main(args(run_dir) + ["--overwrite"]) == 2
    err = capsys.readouterr().err
    assert err == (f"error: {run_dir} holds files that no run of this project writes ({mine}); they are left "
                   "untouched: move them out, or choose another directory\n")
    assert _tree(run_dir) == before


def test_a_start_that_fails_on_its_data_writes_nothing_and_the_corrected_command_runs(tmp_path, capsys):
    run_dir = tmp_path / "runs" / "first"
    assert train.main(args(run_dir, "data.source=folder:/nonexistent")) == 2
    assert capsys.readouterr().err == "error: data.source: folder /nonexistent does not exist\n"
    assert list(tmp_path.iterdir()) == []  # not even runs/
    assert train.main(args(run_dir, "train.epochs=1")) == 0
    assert (run_dir / "metrics.json").is_file()


def test_overwrite_of_a_finished_run_deletes_nothing_when_the_new_data_is_missing(tmp_path):
    run_dir = _finished_run(tmp_path / "run")
    before = _tree(run_dir)
    assert train.main(args(run_dir, "data.source=folder:/nonexistent") + ["--overwrite"]) == 2
    assert _tree(run_dir) == before


def test_refused_run_directories_leave_no_lock_file(tmp_path, capsys, monkeypatch):
    run_dir = _finished_run(tmp_path / "qs")
    (run_dir / "logs" / "train").mkdir(parents=True)
    (run_dir / "logs" / "train" / "events.out.tfevents.1").write_bytes(b"")
    before = sorted(os.listdir(tmp_path)), _tree(run_dir)
    root_before = sorted(os.listdir("/"))
    for cwd, target in ((ROOT, run_dir / "logs"), (run_dir, "."), (ROOT, "/")):
        monkeypatch.chdir(cwd)
        assert train.main(args(target)) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and ("holds no config.yaml" in err or "holds a finished run" in err), err
    assert (sorted(os.listdir(tmp_path)), _tree(run_dir)) == before
    assert sorted(os.listdir("/")) == root_before
    # The refused attempts left nothing that stops the run's own --overwrite.
    monkeypatch.chdir(tmp_path)
    assert train.main(args(run_dir, "train.epochs=1") + ["--overwrite"]) == 0


def test_a_dangling_symlink_as_run_dir_is_one_line_exit_2(tmp_path, capsys):
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "nowhere")
    assert train.main(args(link)) == 2
    assert capsys.readouterr().err == (
        f"error: {link} is a symbolic link to {tmp_path / 'nowhere'}, which does not exist: "
        "create that directory, or choose another\n"
    )
    assert sorted(os.listdir(tmp_path)) == ["link"]


@pytest.mark.slow
def test_a_symlink_to_a_live_run_meets_its_lock_with_or_without_overwrite(tmp_path, capsys):
    from tests.helpers.processes import command, kill, start, wait_until
    from tests.helpers.runs import backup_epoch

    live = tmp_path / "A"
    process = start(command("pipeline.train", *args(live, "train.epochs=40")), cwd=tmp_path)
    try:
        wait_until(lambda: backup_epoch(live) >= 1, process)
        (tmp_path / "L").symlink_to(live)
        for extra in (["--overwrite", "--set", "train.epochs=1", "--set", "seed=7"], []):
            assert train.main(args(tmp_path / "L", "train.epochs=40") + extra) == 2
            assert capsys.readouterr().err == (
                f"error: {tmp_path / 'L'} is in use by another process (a training run, an export or an evaluation "
                "of this run): wait for it to finish, or choose another --run-dir\n"
            )
        assert process.poll() is None  # the live run goes on, its backup and config untouched
        assert backup_epoch(live) >= 1 and "seed: 0" in (live / "config.yaml").read_text()
    finally:
        kill(process)


def test_export_and_evaluate_wait_for_a_process_that_holds_the_run(tmp_path, capsys):
    from pipeline import evaluate, export
    from pipeline.storage.rundir import lock_run

    run_dir = _finished_run(tmp_path / "run")
    before = _tree(run_dir)
    with lock_run(run_dir):
        for main, argv in ((export.main, [str(run_dir)]), (evaluate.main, [str(run_dir), "--no-figures"])):
            assert main(argv) == 2
            assert capsys.readouterr().err == (
                f"error: {run_dir} is in use by another process (a training run, an export or an evaluation of "
                "this run): wait for it to finish, or choose another run directory\n"
            )
    assert _tree(run_dir) == before


def test_unfinished_run_with_another_config_is_refused(tmp_path):
    config = load_config([], TINY)
    run_dir = tmp_path / "r"
    with RunDir(run_dir, config):
        pass  # writes config.yaml, no metrics: an unfinished run
    other = load_config([], TINY + ["train.epochs=3"])
    with pytest.raises(DirectoryError, match="train.epochs"):
        with RunDir(run_dir, other):
            pass
    with RunDir(run_dir, config) as run:
        assert run.resumed


def test_second_process_on_the_same_run_is_refused_under_any_name(tmp_path):
    config = load_config([], TINY)
    run_dir = tmp_path / "busy"
    run_dir.mkdir()
    (tmp_path / "link").symlink_to(run_dir)
    # Another process holds the lock (flock locks are per open file description).
    handle = os.open(run_dir, os.O_RDONLY)
    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    try:
        for path in (run_dir, tmp_path / "link", run_dir / ".." / "busy"):
            with pytest.raises(DirectoryError, match="in use by another process"):
                with RunDir(path, config):
                    pass
    finally:
        os.close(handle)
    assert list(run_dir.iterdir()) == []  # nothing written, no lock file
