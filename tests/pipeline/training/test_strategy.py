"""Distribution: the strategy choice, two logical CPU replicas, the strategy.run loop, two local workers.

TensorFlow fixes its devices and collective ops when it first starts, so the
tests that need two logical CPUs or a multi-worker cluster run in
subprocesses of their own.
"""

import json
import signal
import subprocess
import sys
import time

import pytest

from pipeline import train
from pipeline.config import load_config
from pipeline.errors import ConfigError
from pipeline.training import run as training_run
from pipeline.training import strategy
from tests.helpers.processes import free_ports
from tests.helpers.runs import (
    TINY,
    args,
    backup_epoch,
    event_steps,
    project_env,
    scalars,
)


def subprocess_env(tmp_path):
    """project_env (no TF_CONFIG of this process) with temporary files in tmp_path/tmp."""
    (tmp_path / "tmp").mkdir(exist_ok=True)
    return project_env(TMPDIR=str(tmp_path / "tmp"))


def test_tf_config_from_worker_flags():
    assert strategy.tf_config(["10.0.0.1:2222", "10.0.0.2:2222"], 1) == {
        "cluster": {"worker": ["10.0.0.1:2222", "10.0.0.2:2222"]},
        "task": {"type": "worker", "index": 1},
    }
    with pytest.raises(ConfigError, match="host:port"):
        strategy.tf_config(["10.0.0.1"], 0)
    with pytest.raises(ConfigError, match="between 0 and 1"):
        strategy.tf_config(["a:1", "b:2"], 2)
    with pytest.raises(ConfigError, match="twice"):
        strategy.tf_config(["a:1", "a:1"], 0)


def test_worker_flags_are_checked_before_anything_runs(tmp_path, capsys):
    run_dir = tmp_path / "r"
    assert train.main(args(run_dir) + ["--worker-hosts", "a:1,b:2"]) == 2
    assert "go together" in capsys.readouterr().err
    assert train.main(args(run_dir, "train.strategy=mirrored") + ["--worker-hosts", "a:1,b:2", "--task-index", "0"]) == 2
    assert "train.strategy auto or multi_worker" in capsys.readouterr().err
    assert not run_dir.exists()


def test_linear_learning_rate_scaling():
    config = load_config([], ["train.batch_size=512", "train.optimizer.learning_rate=0.01"])
    assert strategy.scaled_learning_rate(config.train) == 0.01  # the paper: no scaling
    config = load_config([], ["train.batch_size=512", "train.lr_scaling=linear", "train.lr_reference_batch=128"])
    assert strategy.scaled_learning_rate(config.train) == pytest.approx(0.04)


def test_default_strategy_on_one_cpu_and_batch_check():
    cluster = strategy.make_cluster(load_config([], TINY).train)
    assert (cluster.kind, cluster.replicas, cluster.workers, cluster.is_chief) == ("default", 1, 1, True)
    line = cluster.describe(16, 0.01, load_config([], TINY).train)
    assert "global batch 16 = 1 x 16 per replica" in line
    with pytest.raises(ConfigError, match="train.devices: /gpu:7"):
        strategy.make_cluster(load_config([], TINY + ["train.strategy=mirrored", "train.devices=['/gpu:7']"]).train)


@pytest.mark.slow
def test_strategy_run_loop_matches_model_fit(tmp_path):
    """The multi-worker loop, run on one device, gives model.fit's figures exactly."""
    # steps_per_epoch: model.fit's end-of-data probe on a dataset of unknown
    # length advances the dropout seed once more per epoch; with a fixed step
    # count both loops draw the same masks.
    extra = ["train.steps_per_epoch=3", "train.validation_steps=1", "export.keras=false", "export.saved_model=false"]
    config = load_config([], TINY + extra)
    by_fit = training_run.train(config, tmp_path / "fit", loop="fit")
    by_loop = training_run.train(config, tmp_path / "loop", loop="custom")
    for key in ("loss", "top1_error", "top5_error", "val_loss", "val_top1_error", "learning_rate"):
        assert by_loop[key] == pytest.approx(by_fit[key], rel=1e-6), key
    assert by_loop["epochs"] == by_fit["epochs"] == 2
    for run in ("fit", "loop"):
        assert len(scalars(tmp_path / run / "logs" / "validation", "epoch_top5_error")) == 2


REPLICAS_SCRIPT = r"""
import json, sys
import tensorflow as tf

# Two logical devices on the one CPU: must happen before TensorFlow initialises them.
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

import keras
from pipeline.config import load_config
from pipeline.training import run as training_run

overrides, root = json.loads(sys.argv[1]), sys.argv[2]
out = {}
for name, extra in [("one", ["train.strategy=one_device"]),
                    ("two", ["train.strategy=mirrored", "train.devices=['/cpu:0', '/cpu:1']"])]:
    keras.backend.clear_session()
    out[name] = training_run.train(load_config([], overrides + extra), f"{root}/{name}")
print("RESULT " + json.dumps(out))
"""


@pytest.mark.slow
def test_two_logical_cpu_replicas_match_one_device(tmp_path):
    # No dropout: each replica draws its own masks, which one device cannot reproduce.
    overrides = TINY + [
        "model.dropout=0.0",
        "train.steps_per_epoch=3",
        "train.validation_steps=1",
        "export.keras=false",
        "export.saved_model=false",
    ]
    done = subprocess.run(
        [sys.executable, "-c", REPLICAS_SCRIPT, json.dumps(overrides), str(tmp_path)],
        env=subprocess_env(tmp_path), cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Strategy mirrored: 2 replicas" in done.stdout
    assert "global batch 16 = 2 x 8 per replica" in done.stdout
    result = json.loads(done.stdout.split("RESULT ", 1)[1])
    one, two = result["one"], result["two"]
    # Same global batch, same seed: after 6 SGD steps the two agree to float rounding.
    for key in ("loss", "val_loss"):
        assert two[key] == pytest.approx(one[key], rel=1e-4), key
    assert two["loss"] != pytest.approx(2.0794, abs=1e-3)  # it trained (ln 8 is chance)


def _launch_workers(tmp_path, run_dir, overrides):
    hosts = ",".join(f"127.0.0.1:{port}" for port in free_ports(2))
    procs = []
    for index in (0, 1):
        log = open(tmp_path / f"worker{index}-{time.monotonic_ns()}.log", "w+")
        cmd = [sys.executable, "-m", "pipeline.train", "--worker-hosts", hosts, "--task-index", str(index)]
        cmd += args(run_dir, *overrides)
        procs.append((subprocess.Popen(cmd, env=subprocess_env(tmp_path), cwd=tmp_path, stdout=log,
                                       stderr=subprocess.STDOUT, text=True), log))
    return procs


def _finish(procs, timeout=300):
    outputs = []
    try:
        for proc, log in procs:
            proc.wait(timeout=timeout)
            log.seek(0)
            outputs.append((proc.returncode, log.read()))
    finally:
        for proc, _ in procs:
            if proc.poll() is None:
                proc.kill()
    return outputs


@pytest.mark.slow
def test_two_local_workers_split_a_folder_resume_after_a_kill_and_agree(tmp_path):
    """Two worker processes on 127.0.0.1 train on a folder, each decoding its own share of the training images;
    killed after the first backup, restarted, finished with the same weights."""
    from tests.helpers.images import jpeg_bytes, write_tree

    root = tmp_path / "images"
    # 26 sorted training files; an empty one at sorted position 3 falls in worker 1's share (every 2nd from 1).
    files = {f"train/c{c}/{i:02d}.jpg": jpeg_bytes(seed=10 * c + i) for c in (0, 1) for i in range(13)}
    files["train/c0/03.jpg"] = b""
    files.update({f"val/c{c}/{i}.jpg": jpeg_bytes(seed=100 + 10 * c + i) for c in (0, 1) for i in range(2)})
    write_tree(root, files)
    run_dir = tmp_path / "runs" / "mw"
    overrides = [f"data.source=folder:{root}", "train.epochs=3", "train.batch_size=8", "train.verbose=2",
                 "export.keras=false"]
    procs = _launch_workers(tmp_path, run_dir, overrides)
    deadline = time.monotonic() + 240
    while backup_epoch(run_dir) < 1 and time.monotonic() < deadline and all(p.poll() is None for p, _ in procs):
        time.sleep(0.05)
    for proc, _ in procs:
        proc.send_signal(signal.SIGKILL)
    first = _finish(procs)
    resumed_from = backup_epoch(run_dir)
    assert 1 <= resumed_from < 3, first[0][1][-3000:]

    # The same command again on both (new ports: the old ones may linger).
    outputs = _finish(_launch_workers(tmp_path, run_dir, overrides))
    for code, text in outputs:
        assert code == 0, text[-3000:]
    chief, other = (text for _, text in outputs)
    assert f"Resuming the unfinished run in {run_dir} from epoch {resumed_from + 1} of 3" in chief
    assert "2 replicas on 2 workers" in chief
    assert "Worker 0 reads 13 of the 26 training images each epoch" in chief
    assert "Worker 1 reads 13 of the 26 training images each epoch" in other
    # Only the worker whose share holds the empty file reads it (once a session: the data is cached).
    assert "skipping undecodable image" not in chief
    assert other.count("skipping undecodable image") == 1 and str(root / "train" / "c0" / "03.jpg") in other
    digests = [line.split("final weights ")[1].strip() for text in (chief, other)
               for line in text.splitlines() if "final weights" in line]
    assert len(digests) == 2 and digests[0] == digests[1]

    for name in ("config.yaml", "labels.txt", "metrics.json", "history.csv", "saved_model/saved_model.pb"):
        assert (run_dir / name).exists(), name
    assert not (run_dir / "backup").exists()
    assert json.loads((run_dir / "metrics.json").read_text())["epochs"] == 3
    assert sorted(set(event_steps(run_dir / "logs" / "train", "epoch_loss"))) == [0, 1, 2]
    # Worker 1 wrote only into a temporary directory, removed at its end; only
    # the killed first attempt's is left (SIGKILL leaves no time to clean up).
    assert len([p for p in (tmp_path / "tmp").iterdir() if "worker1" in p.name]) <= 1
