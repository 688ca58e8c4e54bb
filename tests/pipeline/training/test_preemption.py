"""Preemption on one host: SIGTERM backs up at the step and the run resumes there exactly; damaged backups; the end."""

import json
import signal

import pytest

from pipeline import train
from pipeline.config import load_config
from pipeline.training import callbacks as training_callbacks
from pipeline.training import run as training_run
from pipeline.training.backup import RunBackup
from tests.helpers.processes import command, finish, start, wait_until
from tests.helpers.runs import TINY, args, backup_epoch, event_steps, killed_after_first_epoch

# 20 steps an epoch (320 images, batch 16), 3 epochs; one order of images whatever the threads do.
LONGER = ["data.num_examples=320", "train.epochs=3", "data.deterministic=true", "export.saved_model=false"]


@pytest.mark.slow
def test_sigterm_mid_epoch_backs_up_at_the_step_and_the_resumed_run_ends_as_an_uninterrupted_one(tmp_path):
    run_dir = tmp_path / "stopped"
    process = start(command("pipeline.train", *args(run_dir, *LONGER, "train.verbose=2")), cwd=tmp_path)
    wait_until(lambda: backup_epoch(run_dir) >= 1, process)
    process.send_signal(signal.SIGTERM)
    status, output = finish(process)
    assert status == 143, output[-3000:]
    state = json.loads((run_dir / "backup" / "state.json").read_text())
    epoch, step = state["epoch"], state["step"]
    last = output.strip().splitlines()[-1]
    if step:  # the signal came mid-epoch (at the very end of an epoch there is no step to name)
        assert last == (f"stopped by SIGTERM at epoch {epoch + 1} of 3, step {step} of 20; backed up: "
                        "run the same command to resume")
    assert "SIGTERM received: stopping after the current step with a backup" in output
    assert "Traceback" not in output and not (run_dir / "metrics.json").exists()

    config = load_config([], TINY + LONGER)
    resumed = training_run.train(config, run_dir)
    whole = training_run.train(config, tmp_path / "whole")
    for key in ("loss", "top1_error", "val_loss", "val_top1_error", "learning_rate"):
        assert resumed[key] == pytest.approx(whole[key], rel=1e-5), key
    # Each epoch on the charts once, the one cut in two included.
    assert event_steps(run_dir / "logs" / "train", "epoch_loss") == [0, 1, 2]


@pytest.mark.slow
def test_an_epoch_logged_but_not_backed_up_is_not_logged_twice(tmp_path, monkeypatch):
    """A kill after an epoch's figures reached TensorBoard and before its backup: the resumed run trains that
    epoch again, and TensorBoard keeps one point for it."""
    config = load_config([], TINY + ["train.epochs=3", "export.keras=false", "export.saved_model=false"])
    run_dir = tmp_path / "run"

    class Killed(Exception):
        pass

    real = RunBackup.on_epoch_end

    def killed_at_epoch_2(self, epoch, logs=None):
        if epoch == 1:
            raise Killed()
        real(self, epoch, logs)

    with monkeypatch.context() as patch:
        patch.setattr(RunBackup, "on_epoch_end", killed_at_epoch_2)
        with pytest.raises(Killed):
            training_run.train(config, run_dir)
    assert backup_epoch(run_dir) == 1
    assert training_callbacks.logged_epochs(run_dir / "logs") == 1  # epoch 2's figures are on the charts
    training_run.train(config, run_dir)
    for run, tag in (("train", "epoch_loss"), ("validation", "epoch_top1_error"),
                     ("reference_one_cnn_18.2pct", "epoch_top5_error")):
        assert event_steps(run_dir / "logs" / run, tag) == [0, 1, 2], run


NO_EXPORT = ["export.keras=false", "export.saved_model=false"]


@pytest.mark.parametrize("damage", ["state.json cut short", "state.json empty", "weights cut short", "weights missing"])
def test_a_damaged_backup_is_refused_in_one_line_naming_the_file(tmp_path, capsys, damage):
    run_dir = tmp_path / "run"
    state = killed_after_first_epoch(run_dir, *NO_EXPORT)
    backup = run_dir / "backup"
    named = backup / ("state.json" if damage.startswith("state.json") else state["weights"])
    if damage == "state.json cut short":
        named.write_text(named.read_text()[:100])
    elif damage == "state.json empty":
        named.write_text("")
    elif damage == "weights cut short":
        named.write_bytes(named.read_bytes()[:1000])
    else:
        named.unlink()
    before = sorted(str(p.relative_to(run_dir)) for p in run_dir.rglob("*"))
    capsys.readouterr()
    assert train.main(args(run_dir, *NO_EXPORT)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {named}"), err
    assert err[0].endswith("restore it from a copy, or pass --overwrite to train the run afresh")
    assert sorted(str(p.relative_to(run_dir)) for p in run_dir.rglob("*")) == before  # nothing written


def test_a_signal_after_the_run_finished_says_it_finished(tmp_path, capsys, monkeypatch):
    run_dir = tmp_path / "done"

    def interrupted(metrics, run_path):
        raise KeyboardInterrupt

    monkeypatch.setattr(training_run, "_summary", interrupted)
    assert train.main(args(run_dir, "train.epochs=1", "export.saved_model=false")) == 130
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"SIGINT after the run finished: {run_dir} holds the finished run (metrics.json, its exports); "
                   f"python -m pipeline.evaluate {run_dir} shows its figures"]
    assert (run_dir / "metrics.json").is_file() and not (run_dir / "backup").exists()
