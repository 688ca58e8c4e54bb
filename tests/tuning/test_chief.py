"""What the chief of a distributed search says while it waits (`tuning.chief`): its lines from made-up snapshots
and times, a snapshot of a real oracle, and real chief processes: one with no worker at all, one whose worker is
killed in the middle of a trial."""

import signal
import subprocess
import sys
import threading
import time

import keras
import keras_tuner
import pytest

from tests.helpers.experiments import write_experiment
from tests.helpers.processes import free_ports, project_env
from tuning import chief
from tuning.chief import Snapshot, Watch

# ---------------------------------------------------------------- the lines


def test_serving_line_names_the_address_and_what_the_chief_waits_for():
    assert Watch("10.0.0.1", 8000).serving_line(Snapshot(done=0, failed=0, running={}, left=4, asking=())) == (
        "Chief serving the oracle on 10.0.0.1:8000: waiting for workers to take trials (0 done, 0 running, "
        "4 left); start each worker with the same --config and --dir, its own --tuner-id, --oracle-ip 10.0.0.1 "
        "--oracle-port 8000"
    )


def test_progress_names_each_running_trial_and_the_tuner_id_holding_it():
    watch = Watch("10.0.0.1", 8000)
    watch.observe(Snapshot(1, 0, {"w2": "1"}, 3, ("w2",)), now=100.0)
    snap = Snapshot(done=2, failed=1, running={"w2": "1", "w1": "3"}, left=1, asking=("w1", "w2"))
    watch.observe(snap, now=310.0)
    assert watch.progress_line(snap, now=400.0) == (
        "Chief waiting: 2 done (1 failed), 2 running, 1 left; trial 1 on w2 for 5 min, trial 3 on w1 for 90 s"
    )
    # Hyperband sets no max_trials: nothing is said of the trials left.
    assert watch.progress_line(Snapshot(0, 0, {}, None, ()), now=400.0) == (
        "Chief waiting: 0 done, 0 running; no worker holds a trial: start one with its own --tuner-id, "
        "--oracle-ip 10.0.0.1 --oracle-port 8000"
    )
    # Every trial handed out and ended: KerasTuner's chief waits until each worker has asked once more.
    assert watch.progress_line(Snapshot(4, 0, {}, 0, ("w1",)), now=400.0) == (
        "Chief waiting: 4 done, 0 running, 0 left; the search ends when these have asked for another trial: w1 "
        "(restart one that is gone with its --tuner-id)"
    )


def test_a_trial_held_too_long_is_named_once_with_its_worker(monkeypatch):
    monkeypatch.setattr(chief, "STALE_AFTER", 600.0)
    watch = Watch("10.0.0.1", 8000)
    held = Snapshot(0, 0, {"w1": "0"}, 2, ("w1",))
    watch.observe(held, now=0.0)
    assert watch.stale_warnings(held, now=599.0) == []
    # Before any trial has ended, only STALE_AFTER tells a lost worker from a long trial.
    assert watch.stale_warnings(held, now=600.0) == [
        "warning: trial 0 has been held by w1 for 10 min without a word (no trial has ended yet): w1 may be gone; "
        "restart it with --tuner-id w1 (same --config, --dir, --oracle-ip and --oracle-port) and it takes trial 0 "
        "back"
    ]
    assert watch.stale_warnings(held, now=700.0) == []  # said once
    # Trial 0 ends after 1000 s; trial 1 is held 3000 s (STALE_FACTOR times that) before it is named.
    watch.observe(Snapshot(1, 0, {"w2": "1"}, 1, ("w1", "w2")), now=1000.0)
    held = Snapshot(1, 0, {"w2": "1"}, 1, ("w1", "w2"))
    assert watch.stale_warnings(held, now=3999.0) == []
    assert watch.stale_warnings(held, now=4000.0) == [
        "warning: trial 1 has been held by w2 for 50 min without a word (the longest trial that ended took 17 min): "
        "w2 may be gone; restart it with --tuner-id w2 (same --config, --dir, --oracle-ip and --oracle-port) and "
        "it takes trial 1 back"
    ]


def test_durations_read_in_the_unit_that_fits():
    assert [chief.duration(s) for s in (0, 119, 120, 7199, 7200, 12600)] == [
        "0 s", "119 s", "2 min", "120 min", "2.0 h", "3.5 h"]


# ---------------------------------------------------------------- a real oracle


def test_snapshot_of_a_real_oracle_and_the_trial_it_hands_back(tmp_path):
    def build(hp):
        hp.Float("dropout", 0.1, 0.9)
        return keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])

    oracle = keras_tuner.RandomSearch(build, objective="loss", max_trials=3, directory=tmp_path,
                                      project_name="search").oracle
    oracle.verbose = 0  # no trial tables
    assert chief.snapshot(oracle) == Snapshot(done=0, failed=0, running={}, left=3, asking=())
    taken = oracle.create_trial("w1")
    assert chief.snapshot(oracle) == Snapshot(done=0, failed=0, running={"w1": taken.trial_id}, left=2,
                                              asking=("w1",))
    # The advice to restart a lost worker with its --tuner-id holds: KerasTuner hands it the trial it held.
    assert oracle.create_trial("w1").trial_id == taken.trial_id
    taken.status = "FAILED"
    oracle.end_trial(taken)
    assert chief.snapshot(oracle) == Snapshot(done=1, failed=1, running={}, left=2, asking=("w1",))


# ---------------------------------------------------------------- real chief processes

# The chief's command with the reporting periods cut to test length; argv: STALE_AFTER, then the command's.
QUICK_CHIEF = """
import sys
from tuning import chief, search
chief.REPORT_EVERY, chief.POLL, chief.STALE_AFTER = 1.0, 0.2, float(sys.argv[1])
sys.exit(search.main(sys.argv[2:]))
"""


class Output:
    """A process's stdout and stderr (one pipe), read as it comes."""

    def __init__(self, process):
        self.process = process
        self.lines = []
        self.reader = threading.Thread(target=lambda: self.lines.extend(iter(process.stdout.readline, "")),
                                       daemon=True)
        self.reader.start()

    @property
    def text(self):
        return "".join(self.lines)

    def wait_for(self, pattern, timeout=120):
        """The first line holding `pattern`, once it comes; fails if the process ends or time runs out first."""
        deadline = time.monotonic() + timeout
        while True:
            found = [line for line in list(self.lines) if pattern in line]
            if found:
                return found[0]
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.reader.join(timeout=5)
                raise AssertionError(f"no line with {pattern!r} (exit {self.process.poll()}):\n{self.text[-3000:]}")
            time.sleep(0.05)

    def end(self, sig, timeout=30):
        """Sends `sig`; the seconds until the process ended."""
        sent = time.monotonic()
        self.process.send_signal(sig)
        self.process.wait(timeout=timeout)
        self.reader.join(timeout=5)
        return time.monotonic() - sent


def start_tuner(experiment, search_dir, tuner_id, port, stale_after=3600):
    """Starts QUICK_CHIEF's command (a chief or a worker, as tuner_id says) on 127.0.0.1:port."""
    argv = [sys.executable, "-c", QUICK_CHIEF, str(stale_after), "--config", str(experiment), "--dir",
            str(search_dir), "--tuner-id", tuner_id, "--oracle-ip", "127.0.0.1", "--oracle-port", str(port)]
    process = subprocess.Popen(argv, cwd=search_dir.parent, env=project_env(TF_CPP_MIN_LOG_LEVEL="3"),
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return Output(process)


@pytest.mark.slow
def test_a_chief_without_workers_says_where_it_serves_and_what_it_waits_for_and_ends_on_ctrl_c(tmp_path):
    experiment = write_experiment(tmp_path)
    (port,) = free_ports()
    chief_process = start_tuner(experiment, tmp_path / "search", "chief", port)
    try:
        assert chief_process.wait_for("Chief serving") == (
            f"Chief serving the oracle on 127.0.0.1:{port}: waiting for workers to take trials (0 done, 0 running, "
            f"3 left); start each worker with the same --config and --dir, its own --tuner-id, --oracle-ip "
            f"127.0.0.1 --oracle-port {port}\n"
        )
        started = time.monotonic()
        assert chief_process.wait_for("Chief waiting", timeout=10) == (
            "Chief waiting: 0 done, 0 running, 3 left; no worker holds a trial: start one with its own --tuner-id, "
            f"--oracle-ip 127.0.0.1 --oracle-port {port}\n"
        )
        assert time.monotonic() - started < 3  # REPORT_EVERY is 1 s here
        assert chief_process.end(signal.SIGINT) < 10
    finally:
        if chief_process.process.poll() is None:
            chief_process.process.kill()
    assert chief_process.process.returncode == 130
    assert chief_process.text.endswith("error: interrupted: run the same command again to resume where it stopped\n")


@pytest.mark.slow
def test_the_chief_names_the_worker_killed_in_the_middle_of_its_trial(tmp_path):
    # Trials of 500 one-step epochs: far longer than the test.
    experiment = write_experiment(tmp_path, tune={"epochs": 500})
    (port,) = free_ports()
    chief_process = start_tuner(experiment, tmp_path / "search", "chief", port, stale_after=4)
    worker = start_tuner(experiment, tmp_path / "search", "w1", port)
    try:
        chief_process.wait_for("on w1 for")  # the chief's progress line: trial 0 on w1 for N s
        worker.end(signal.SIGKILL)
        assert chief_process.wait_for("warning: trial").startswith(
            "warning: trial 0 has been held by w1 for ")
        assert chief_process.wait_for("warning: trial").endswith(
            " without a word (no trial has ended yet): w1 may be gone; restart it with --tuner-id w1 (same --config, "
            "--dir, --oracle-ip and --oracle-port) and it takes trial 0 back\n")
        assert chief_process.end(signal.SIGINT) < 10
    finally:
        for output in (chief_process, worker):
            if output.process.poll() is None:
                output.process.kill()
    assert chief_process.process.returncode == 130
