"""Distribution: the strategy choice, two logical CPU replicas, the strategy.run loop, two local workers.

TensorFlow fixes its devices and collective ops when it first starts, so the
tests that need two logical CPUs or a multi-worker cluster run in
subprocesses of their own.
"""

import json
import re
import signal
import subprocess
import sys
import time

import pytest

from pipeline import train
from pipeline.config import load_config
from pipeline.errors import ConfigError
from pipeline.training import strategy
from tests.helpers.processes import free_ports
from tests.helpers.runs import (
    TINY,
    args,
    event_steps,
    project_env,
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


def _launch_workers(tmp_path, run_dir, overrides, indices=(0, 1), hosts=None, extra=None):
    """Starts workers `indices` of a two-worker cluster on 127.0.0.1 (new ports unless `hosts`), output in log files.

    `extra` maps a worker's index to more --set overrides (a worker started with another config).
    """
    hosts = hosts or ",".join(f"127.0.0.1:{port}" for port in free_ports(2))
    procs = []
    for index in indices:
        log = open(tmp_path / f"worker{index}-{time.monotonic_ns()}.log", "w+")
        cmd = [sys.executable, "-m", "pipeline.train", "--worker-hosts", hosts, "--task-index", str(index)]
        cmd += args(run_dir, *overrides, *(extra or {}).get(index, []))
        procs.append((subprocess.Popen(cmd, env=subprocess_env(tmp_path), cwd=tmp_path, stdout=log,
                                       stderr=subprocess.STDOUT, text=True), log))
    return procs


def _output(log):
    log.seek(0)
    return log.read()


def _finish(procs, timeout=300):
    outputs = []
    try:
        for proc, log in procs:
            proc.wait(timeout=timeout)
            outputs.append((proc.returncode, _output(log)))
    finally:
        for proc, _ in procs:
            if proc.poll() is None:
                proc.kill()
    return outputs


def _last_line(text):
    return text.strip().splitlines()[-1]


def _wait_for(condition, procs, timeout=240):
    deadline = time.monotonic() + timeout
    while not condition():
        if any(proc.poll() is not None for proc, _ in procs):
            raise AssertionError("a worker ended first:\n" + "\n".join(_output(log)[-2000:] for _, log in procs))
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def _worker_args(run_dir, hosts, index, *overrides):
    return args(run_dir, *overrides) + ["--worker-hosts", hosts, "--task-index", str(index)]


def test_a_chief_alone_says_what_it_waits_for_gives_up_in_one_line_and_answers_ctrl_c(tmp_path, capsys):
    run_dir = tmp_path / "runs" / "alone"
    hosts = ",".join(f"127.0.0.1:{port}" for port in free_ports(2))
    worker1 = hosts.split(",")[1]
    # The workers meet before TensorFlow starts its cluster: in this process too, nothing of TensorFlow's is changed.
    assert train.main(_worker_args(run_dir, hosts, 0, "train.cluster_timeout=2")) == 1
    out, err = capsys.readouterr()
    assert f"waiting for worker 1 of 2 at {worker1}" in out
    assert err == (f"error: worker 1 of 2 ({worker1}) did not join within 2 s (train.cluster_timeout): "
                   "start it with the same command and --task-index 1, or raise train.cluster_timeout\n")
    assert not run_dir.exists()

    # Ctrl-C while it waits (for as long as it would: ten minutes), in a process of its own.
    [(proc, log)] = _launch_workers(tmp_path, run_dir, [], indices=(0,))
    _wait_for(lambda: "waiting for worker 1 of 2" in _output(log), [(proc, log)], timeout=120)
    proc.send_signal(signal.SIGINT)
    [(code, text)] = _finish([(proc, log)], timeout=20)
    assert code == 130 and "Traceback" not in text, text[-3000:]
    assert not run_dir.exists()


def test_a_busy_port_and_workers_with_other_configs_are_refused_in_one_line(tmp_path, capsys):
    import socket
    import threading

    run_dir = tmp_path / "runs" / "refused"
    hosts = ",".join(f"127.0.0.1:{port}" for port in free_ports(2))
    chief = hosts.split(",")[0]
    taken = socket.socket()
    taken.bind(("127.0.0.1", int(chief.rsplit(":", 1)[1])))
    taken.listen()
    try:
        assert train.main(_worker_args(run_dir, hosts, 0)) == 2
    finally:
        taken.close()
    assert capsys.readouterr().err == (f"error: {chief} (worker 0 of 2) is in use by another process: stop that "
                                       "process, or give this worker another port in --worker-hosts\n")

    # Two workers (threads here: they are refused before TensorFlow starts), the second with other values.
    codes = {}
    other = threading.Thread(target=lambda: codes.setdefault(1, train.main(_worker_args(
        run_dir, hosts, 1, "train.epochs=4", "train.optimizer.learning_rate=0.02"))))
    other.start()
    codes[0] = train.main(_worker_args(run_dir, hosts, 0, "train.epochs=3"))
    other.join(60)
    assert codes == {0: 2, 1: 2}
    refusal = ("error: worker 1's config differs from the chief's in train.epochs, train.optimizer.learning_rate: "
               "give every worker the same config files and --set options")
    assert capsys.readouterr().err.splitlines() == [refusal, refusal]
    assert not run_dir.exists()


@pytest.mark.slow
def test_two_local_workers_stop_on_sigterm_together_survive_a_lost_peer_and_finish_alike(tmp_path):
    """Two worker processes on 127.0.0.1 train on a folder, each decoding its own share of the training images.
    SIGTERM to one stops both at the same step with a backup; restarted, one is killed and the other ends in
    one line; restarted again, they finish with the same weights."""
    from tests.helpers.images import jpeg_bytes, write_tree

    root = tmp_path / "images"
    # 26 sorted training files; an empty one at sorted position 3 falls in worker 1's share (every 2nd from 1).
    files = {f"train/c{c}/{i:02d}.jpg": jpeg_bytes(seed=10 * c + i) for c in (0, 1) for i in range(13)}
    files["train/c0/03.jpg"] = b""
    files.update({f"val/c{c}/{i}.jpg": jpeg_bytes(seed=100 + 10 * c + i) for c in (0, 1) for i in range(2)})
    write_tree(root, files)
    run_dir = tmp_path / "runs" / "mw"
    overrides = [f"data.source=folder:{root}", "train.epochs=4", "train.batch_size=4", "train.verbose=2",
                 "export.keras=false", "train.backup_every_steps=2"]

    def position():
        try:
            state = json.loads((run_dir / "backup" / "state.json").read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return (0, 0)
        return (state["epoch"], state["step"])

    # 1. SIGTERM to worker 1 once the chief has backed up a step: both stop at one step, with a backup there.
    procs = _launch_workers(tmp_path, run_dir, overrides)
    _wait_for(lambda: position() >= (0, 2), procs)
    procs[1][0].send_signal(signal.SIGTERM)
    (chief_code, chief), (other_code, other) = _finish(procs)
    assert (chief_code, other_code) == (143, 143), chief[-3000:] + other[-3000:]
    stopped = position()
    where = _last_line(chief)
    assert where.startswith("stopped by SIGTERM at ") and where == _last_line(other), (where, _last_line(other))
    assert where.endswith("; backed up: run the same command to resume")
    if stopped[1]:
        assert f"epoch {stopped[0] + 1} of 4, step {stopped[1]} of 7;" in where
    assert "SIGTERM received" in other and "Traceback" not in chief + other

    # 2. The same commands resume there; worker 1 is killed once the run has moved on: the chief ends in one line.
    procs = _launch_workers(tmp_path, run_dir, overrides)
    _wait_for(lambda: position() > stopped, procs)
    procs[1][0].send_signal(signal.SIGKILL)
    (chief_code, chief), _ = _finish(procs)
    assert chief_code == 1, chief[-3000:]
    resumed = f"Resuming the unfinished run in {run_dir} from epoch {stopped[0] + 1} of 4"
    assert resumed in chief
    assert re.fullmatch(r"error: worker 1 of 2 \(127\.0\.0\.1:\d+\) was lost at epoch \d of 4, step \d+ of 7 "
                        r"\(\w+Error: .*\); the chief's last backup is kept: start every worker again with the same "
                        r"command to resume", _last_line(chief)), _last_line(chief)
    assert "Traceback" not in chief

    # 3. The same commands again: they finish, with the same weights.
    outputs = _finish(_launch_workers(tmp_path, run_dir, overrides))
    for code, text in outputs:
        assert code == 0, text[-3000:]
    chief, other = (text for _, text in outputs)
    assert "2 replicas on 2 workers" in chief
    assert "Worker 0 reads 13 of the 26 training images each epoch" in chief
    assert "Worker 1 reads 13 of the 26 training images each epoch" in other
    # Only the worker whose share holds the empty file reads it.
    assert "skipping undecodable image" not in chief
    assert str(root / "train" / "c0" / "03.jpg") in other
    digests = [line.split("final weights ")[1].strip() for text in (chief, other)
               for line in text.splitlines() if "final weights" in line]
    assert len(digests) == 2 and digests[0] == digests[1]

    for name in ("config.yaml", "labels.txt", "metrics.json", "history.csv", "saved_model/saved_model.pb"):
        assert (run_dir / name).exists(), name
    assert not (run_dir / "backup").exists()
    assert json.loads((run_dir / "metrics.json").read_text())["epochs"] == 4
    assert event_steps(run_dir / "logs" / "train", "epoch_loss") == [0, 1, 2, 3]
