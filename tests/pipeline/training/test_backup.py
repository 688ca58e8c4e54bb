"""Surviving a kill: backups that restore everything, atomic commits, kill -9 and resume, kill during export."""

import csv
import json
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest
import tensorflow as tf

from pipeline.config import load_config
from pipeline.storage.rundir import RunDir
from pipeline.training import run as training_run
from pipeline.training.backup import RunBackup
from pipeline.training.core import EpochPlan
from pipeline.training.loop import TrainingLoop
from pipeline.training.schedules import PlateauSchedule
from tests.helpers.runs import (
    TINY,
    args,
    backup_epoch,
    event_steps,
    project_env,
    scalars,
)


class HalveRate(keras.callbacks.Callback):
    """Changes the learning rate every epoch, as a schedule would."""

    def on_epoch_end(self, epoch, logs=None):
        self.model.optimizer.learning_rate = float(self.model.optimizer.learning_rate) / 2


class Snapshot(keras.callbacks.Callback):
    """Records the training state at the start of fit (after a restore) and at its end."""

    def __init__(self, plateau):
        super().__init__()
        self.plateau = plateau
        self.at_begin = self.at_end = None

    def _state(self):
        return {
            "weights": [np.array(w) for w in self.model.get_weights()],
            "optimizer": [np.array(v) for v in self.model.optimizer.variables],
            "learning_rate": float(self.model.optimizer.learning_rate),
            "plateau": self.plateau.get_state(),
        }

    def on_train_begin(self, logs=None):
        self.at_begin = self._state()

    def on_train_end(self, logs=None):
        self.at_end = self._state()


def _tiny_model():
    keras.utils.set_random_seed(1)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    model.compile(keras.optimizers.SGD(0.1, momentum=0.9), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.optimizer.build(model.trainable_variables)
    return model


def _plan():
    """32 examples in batches of 8, the same order every epoch, no validation."""
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(32, 4)).astype("float32"), rng.integers(0, 3, 32).astype("int32")
    batches = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)
    return EpochPlan(lambda epoch, first_step=0: batches.skip(first_step), None, 4, 32, repeated=False,
                     element_spec=batches.element_spec)


def _train(model, backup, epochs, callbacks):
    """The training loop as a run drives it: from the backup's position."""
    return TrainingLoop(model, tf.distribute.get_strategy(), _plan(), callbacks).run(
        epochs, start=lambda: backup.position)


def _fit(backup_dir, epochs):
    model = _tiny_model()
    plateau = PlateauSchedule("loss", factor=0.5, patience=0, max_reductions=3)
    snapshot = Snapshot(plateau)
    backup = RunBackup(backup_dir, stateful={"plateau": plateau})
    # The snapshot after the backup: it sees the restored state at the start, the final one at the end.
    history = _train(model, backup, epochs, [HalveRate(), plateau, backup, snapshot])
    return history, backup, snapshot


def test_backup_restores_weights_optimizer_state_learning_rate_and_schedule(tmp_path):
    _, backup, first = _fit(tmp_path / "backup", epochs=2)
    assert backup.read_state()["epoch"] == 2
    assert first.at_end["learning_rate"] == pytest.approx(0.025)  # 0.1 halved twice

    history, backup, second = _fit(tmp_path / "backup", epochs=3)
    assert history.epoch == [2]  # one epoch left to run
    restored, saved = second.at_begin, first.at_end
    for got, want in zip(restored["weights"] + restored["optimizer"], saved["weights"] + saved["optimizer"]):
        np.testing.assert_array_equal(got, want)
    # The optimizer's variables: iteration count, learning rate, one momentum buffer per weight.
    assert len(saved["optimizer"]) == 2 + len(saved["weights"]) and int(saved["optimizer"][0]) == 8
    assert restored["learning_rate"] == saved["learning_rate"]
    assert restored["plateau"] == saved["plateau"] and saved["plateau"]["best"] is not None
    assert len(backup.history) == 3  # the epochs of both sessions


def test_a_kill_mid_backup_leaves_the_previous_backup_whole(tmp_path):
    path = tmp_path / "backup"
    _, _, first = _fit(path, epochs=2)
    committed = json.loads((path / "state.json").read_text())["weights"]
    # What a kill during the next backup leaves: a truncated new weights file,
    # a half-written state file beside the committed one.
    (path / "ckpt-99.weights.h5").write_bytes(b"\x89HDF\r\n\x1a\n truncated")
    (path / ".state.json.tmp").write_text('{"epoch": 3, "weig')
    assert RunBackup(path).read_state()["weights"] == committed

    _, _, second = _fit(path, epochs=3)
    for got, want in zip(second.at_begin["weights"], first.at_end["weights"]):
        np.testing.assert_array_equal(got, want)
    assert sorted(p.name for p in path.glob("ckpt-*")) == [json.loads((path / "state.json").read_text())["weights"]]


@pytest.mark.slow
def test_kill_9_mid_run_then_the_same_command_resumes_and_finishes(tmp_path):
    run_dir = tmp_path / "runs" / "killed"
    # Six steps an epoch, five epochs, the learning rate divided by 10 after
    # epochs 2 and 4: the resumed run must carry on with the right rate.
    command = [sys.executable, "-m", "pipeline.train"] + args(
        run_dir, "train.epochs=5", "data.num_examples=96", "train.schedule.name=step",
        "train.schedule.milestones=[2, 4]", "export.keras=false",
    )
    env = project_env()
    proc = subprocess.Popen(command, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 180
        while backup_epoch(run_dir) < 1 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        first_output = proc.communicate(timeout=60)[0]
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL, first_output[-2000:]
    done = backup_epoch(run_dir)
    assert 1 <= done < 5 and not (run_dir / "metrics.json").exists()

    again = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-2000:]
    assert f"Resuming the unfinished run in {run_dir} from epoch {done + 1} of 5" in again.stdout
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["epochs"] == 5  # as many as an uninterrupted run
    assert metrics["learning_rate"] == pytest.approx(1e-4)
    # history.csv: one row per epoch across the kill, none repeated, the two sessions' times adding up.
    rows = list(csv.DictReader(open(run_dir / "history.csv")))
    assert [int(row["epoch"]) for row in rows] == [1, 2, 3, 4, 5]
    assert [float(row["learning_rate"]) for row in rows] == pytest.approx([1e-2, 1e-2, 1e-3, 1e-3, 1e-4])
    elapsed = [float(row["elapsed_seconds"]) for row in rows]
    assert elapsed == sorted(elapsed) and elapsed[-1] == pytest.approx(metrics["wall_seconds"], rel=0.2)
    assert len(json.loads((run_dir / "environment.json").read_text())["sessions"]) == 2
    assert not (run_dir / "backup").exists()
    logs = run_dir / "logs"
    # Every epoch once on the charts (a kill between an epoch's events and its
    # backup would repeat that epoch: hence the set).
    assert sorted(set(event_steps(logs / "validation", "epoch_top1_error"))) == [0, 1, 2, 3, 4]
    rates = dict(zip(event_steps(logs / "train", "epoch_learning_rate"), scalars(logs / "train", "epoch_learning_rate")))
    np.testing.assert_allclose([rates[e] for e in range(5)], [1e-2, 1e-2, 1e-3, 1e-3, 1e-4], rtol=1e-6)


class Killed(Exception):
    """Stands for a kill during export."""


@pytest.mark.slow
def test_kill_during_export_resumes_into_export_only(tmp_path, monkeypatch, capsys):
    config = load_config([], TINY + ["export.keras=false"])
    run_dir = tmp_path / "exporting"

    def killed(*args, **kwargs):
        raise Killed()

    with monkeypatch.context() as patch:
        patch.setattr(training_run, "export_run", killed)
        with pytest.raises(Killed):
            training_run.train(config, run_dir)
    # Training ended, the run is not finished: the backup is still there.
    assert not (run_dir / "metrics.json").exists()
    state = json.loads((run_dir / "backup" / "state.json").read_text())
    assert state["epoch"] == 2
    capsys.readouterr()

    figures = training_run.train(config, run_dir)
    assert "all 2 epochs are trained; exporting" in capsys.readouterr().out
    assert figures["epochs"] == 2
    assert figures["val_top1_error"] == state["history"][-1]["val_top1_error"]  # no epoch trained again
    assert event_steps(run_dir / "logs" / "validation", "epoch_top1_error") == [0, 1]
    assert (run_dir / "saved_model" / "saved_model.pb").exists() and (run_dir / "metrics.json").exists()
    assert not (run_dir / "backup").exists()


@pytest.mark.slow
def test_unfinished_run_without_a_backup_starts_over_cleanly(tmp_path, capsys):
    config = load_config([], TINY + ["train.epochs=1", "export.keras=false", "export.saved_model=false"])
    run_dir = tmp_path / "early"
    with RunDir(run_dir, config):
        pass  # config.yaml written; then killed before the first epoch ended
    stale = run_dir / "logs" / "train" / "events.out.tfevents.0.stale"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"")
    figures = training_run.train(config, run_dir)
    assert "stopped before its first backup: training it from the start" in capsys.readouterr().out
    assert figures["epochs"] == 1 and not stale.exists()
    assert event_steps(run_dir / "logs" / "train", "epoch_loss") == [0]


class Crash(keras.callbacks.Callback):
    """Records the weights after each step and dies at step `at`, as a kill would."""

    def __init__(self, at):
        super().__init__()
        self.at = at
        self.after = {}
        self.order = []

    def on_train_batch_end(self, batch, logs=None):
        self.order.append(batch)
        self.after[batch] = [np.array(w) for w in self.model.get_weights()]
        if batch == self.at:
            raise Killed()


def test_backup_every_n_steps_restores_the_mid_epoch_state(tmp_path):
    path = tmp_path / "backup"
    model, crash, backup = _tiny_model(), Crash(at=2), RunBackup(path, save_freq=2)
    with pytest.raises(Killed):
        _train(model, backup, 2, [backup, crash])
    state = RunBackup(path).read_state()
    assert (state["epoch"], state["step"]) == (0, 2)  # saved after the 2nd step; the 3rd never got saved

    model, snapshot, backup = _tiny_model(), Snapshot(PlateauSchedule("loss", 0.5, 1, 1)), RunBackup(path, save_freq=2)
    steps = Crash(at=None)
    _train(model, backup, 2, [backup, snapshot, steps])
    assert steps.order == [2, 3, 0, 1, 2, 3]  # the epoch goes on at its third step, not at its first
    for got, want in zip(snapshot.at_begin["weights"], crash.after[1]):
        np.testing.assert_array_equal(got, want)
    assert int(snapshot.at_begin["optimizer"][0]) == 2  # iterations

