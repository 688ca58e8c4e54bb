"""`python -m tuning.search` on tiny synthetic data: checks before any trial, a real search, resume, distributed
tuning. The search directory, the results table and best.yaml, and the distributed environment have their own
tests (test_searchdir.py, test_results.py, test_distributed.py)."""

import contextlib
import io
import json
import os
import pathlib
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import types

import keras
import pytest
import tensorflow as tf
import yaml
from tensorboard.plugins.hparams import plugin_data_pb2

from pipeline.config import config_fingerprint, load_config
from pipeline.errors import ConfigError
from tests.helpers.experiments import write_experiment
from tests.helpers.processes import free_ports
from tests.helpers.runs import project_env, scalars
from tuning import search
from tuning.space import override_tree


def trials(search_dir):
    """trial id -> the trial.json KerasTuner wrote."""
    return {p.parent.name.removeprefix("trial_"): json.loads(p.read_text())
            for p in sorted(pathlib.Path(search_dir).glob("trial_*/trial.json"))}


def oracle_state(search_dir):
    return json.loads((pathlib.Path(search_dir) / "oracle.json").read_text())


def train_event_files(search_dir, trial_id):
    """Event files of a trial's training logs: one per time the trial ran."""
    return list((pathlib.Path(search_dir) / "logs" / trial_id / "execution0" / "train").glob("events.out.tfevents.*"))


def run_main(argv):
    """main(argv) with its stdout and stderr captured."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = search.main(argv)
    return code, out.getvalue(), err.getvalue()


def subprocess_env():
    """project_env (no KerasTuner or TF_CONFIG variables of this process) with TensorFlow's logging off."""
    return project_env(TF_CPP_MIN_LOG_LEVEL="3")


# ---------------------------------------------------------------- checks before any trial


def test_logged_metrics_follow_the_class_count():
    assert search.logged_metrics(10) == [
        "loss", "top1_error", "top5_error", "val_loss", "val_top1_error", "val_top5_error"]
    assert search.logged_metrics(5) == ["loss", "top1_error", "val_loss", "val_top1_error"]


def test_objective_must_be_logged():
    search.check_objective("val_top5_error", 10)
    search.check_objective("loss", None)
    with pytest.raises(ConfigError, match=r"^tune\.objective: 'val_accuracy' is not a metric training logs"):
        search.check_objective("val_accuracy", None)
    with pytest.raises(ConfigError, match=r"^tune\.objective: 'val_top5_error' is not logged with 5 classes"):
        search.check_objective("val_top5_error", 5)


@pytest.mark.parametrize(
    "override, key",
    [
        ("tune.objective=val_accuracy", "tune.objective"),
        ("data.num_classes=5", "tune.objective"),  # the default val_top5_error needs more than 5 classes
        ("tune.learning_rate={min: 0.1, max: 0.001, sampling: log}", "tune.learning_rate"),
        ("tune.tuner=grid", "tune.tuner"),
        ("tune.dropout={min: 0.5, max: 1.0}", "tune.dropout"),
        ("train.strategy=multi_worker", "train.strategy"),
    ],
)
def test_bad_input_exits_2_naming_the_key_before_any_trial(tmp_path, override, key):
    experiment = write_experiment(tmp_path)
    search_dir = tmp_path / "search"
    code, out, err = run_main(["--config", str(experiment), "--set", override, "--dir", str(search_dir)])
    assert code == 2
    assert err.startswith(f"error: {key}")
    assert not search_dir.exists()


# ---------------------------------------------------------------- a real search


@pytest.fixture(scope="module")
def tiny_search(tmp_path_factory):
    """Three 1-epoch trials via main(), in runs/tiny_search under a fresh working directory.

    --train-best is given; the trainer is replaced by a recorder (the trainer
    has its own tests), and keras.backend.clear_session is counted.
    """
    root = tmp_path_factory.mktemp("tune")
    experiment = write_experiment(root)
    trained, clears = [], []
    real_clear = keras.backend.clear_session

    def counting_clear(*args, **kwargs):
        clears.append(1)
        return real_clear(*args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        mp.setattr(keras.backend, "clear_session", counting_clear)
        mp.setattr("pipeline.training.run.train", lambda config, run_dir, overwrite=False: trained.append((config, run_dir)))
        code, out, err = run_main(["--config", str(experiment), "--train-best"])
    return types.SimpleNamespace(root=root, experiment=experiment, dir=root / "runs" / "tiny_search",
                                 code=code, out=out, err=err, trained=trained, clears=len(clears))


def best_trial(found):
    return min(found.values(), key=lambda t: (t["score"], t["trial_id"]))


@pytest.mark.slow
def test_search_runs_every_trial_and_prints_them_best_first(tiny_search):
    assert tiny_search.code == 0, tiny_search.err
    found = trials(tiny_search.dir)
    assert sorted(found) == ["0", "1", "2"]
    assert {t["status"] for t in found.values()} == {"COMPLETED"}
    assert len({t["hyperparameters"]["values"]["learning_rate"] for t in found.values()}) == 3
    by_score = sorted(found.values(), key=lambda t: (t["score"], t["trial_id"]))
    table = tiny_search.out[tiny_search.out.index("trial  dropout"):].splitlines()
    assert table[0] == "trial  dropout  learning_rate  val_top5_error  status"
    assert [line.split()[0] for line in table[1:4]] == [t["trial_id"] for t in by_score]
    for line, t in zip(table[1:4], by_score):
        assert line.split()[3] == f"{t['score']:.4f}"
        assert line.split()[4] == "COMPLETED"


@pytest.mark.slow
def test_best_yaml_holds_only_the_best_trials_tuned_keys(tiny_search):
    best = best_trial(trials(tiny_search.dir))
    values = best["hyperparameters"]["values"]
    written = yaml.safe_load((tiny_search.dir / "best.yaml").read_text())
    assert written == {"model": {"dropout": values["dropout"]}, "train": {"optimizer": {"learning_rate": values["learning_rate"]}}}
    assert written == override_tree(values)


@pytest.mark.slow
def test_best_yaml_round_trip_into_training(tiny_search):
    values = best_trial(trials(tiny_search.dir))["hyperparameters"]["values"]
    config = load_config([tiny_search.experiment, tiny_search.dir / "best.yaml"])
    assert config.model.dropout == values["dropout"]
    assert config.train.optimizer.learning_rate == values["learning_rate"]
    assert config.name == "tiny" and config.train.epochs == 90  # the experiment's own training budget
    # --train-best trained exactly that config, in runs/<name>_best.
    [(trained, run_dir)] = tiny_search.trained
    assert config_fingerprint(trained) == config_fingerprint(config)
    assert pathlib.Path(run_dir) == pathlib.Path("runs") / "tiny_best"
    # The comment in best.yaml is the command that does the same.
    command = (tiny_search.dir / "best.yaml").read_text().splitlines()[1]
    assert command == f"# Train it:  python -m pipeline.train --config {tiny_search.experiment} --config runs/tiny_search/best.yaml"


@pytest.mark.slow
def test_every_trial_is_in_tensorboard_with_its_hparams(tiny_search):
    for trial_id, t in trials(tiny_search.dir).items():
        log_dir = tiny_search.dir / "logs" / trial_id / "execution0"
        hparams = None
        for path in log_dir.glob("events.out.tfevents.*"):
            for event in tf.compat.v1.train.summary_iterator(str(path)):
                for value in event.summary.value:
                    if value.metadata.plugin_data.plugin_name == "hparams":
                        data = plugin_data_pb2.HParamsPluginData.FromString(value.metadata.plugin_data.content)
                        if data.HasField("session_start_info"):
                            hparams = {k: v.number_value for k, v in data.session_start_info.hparams.items()}
        values = t["hyperparameters"]["values"]
        assert hparams == pytest.approx({"dropout": values["dropout"], "learning_rate": values["learning_rate"]})
        assert len(list((log_dir / "validation").glob("events.out.tfevents.*"))) == 1


@pytest.mark.slow
def test_keras_session_is_cleared_before_every_trial(tiny_search):
    assert tiny_search.clears == 3


@pytest.mark.slow
def test_a_larger_budget_runs_only_the_new_trials(tiny_search, tmp_path):
    search_dir = tmp_path / "search"
    shutil.copytree(tiny_search.dir, search_dir)
    before = trials(search_dir)
    code, out, err = run_main(["--config", str(tiny_search.experiment), "--dir", str(search_dir), "--set", "tune.max_trials=4"])
    assert code == 0, err
    after = trials(search_dir)
    assert sorted(after) == ["0", "1", "2", "3"]
    assert {k: after[k] for k in before} == before  # finished trials untouched
    assert oracle_state(search_dir)["run_times"] == {"0": 1, "1": 1, "2": 1, "3": 1}
    assert "Resuming the search" in out and "3 trial(s) completed" in out


@pytest.mark.slow
def test_diverged_trials_carry_the_searchs_advice_not_trains(tmp_path):
    # Learning rates no network survives: the loss is NaN at the second step (the first, of one or two an epoch,
    # leaves the weights non-finite).
    experiment = write_experiment(tmp_path, tune={"max_trials": 2, "epochs": 2,
                                                  "learning_rate": {"min": 1e29, "max": 1e30}})
    search_dir = tmp_path / "search"
    code, out, err = run_main(["--config", str(experiment), "--dir", str(search_dir)])
    assert code == 1
    assert {t["status"] for t in trials(search_dir).values()} == {"FAILED"}
    advice = ("the trial is recorded as FAILED and the search goes on; if many trials diverge, lower "
              "tune.learning_rate's max (now 1e+30) or add train.schedule.warmup_epochs")
    # Met at a step, or at the end of the epoch whose last update made the weights non-finite.
    diverged = (r"the (training|validation) loss became nan (at epoch \d, step \d|at the end of epoch \d) "
                r"\(learning rate [0-9.e+]+\); " + re.escape(advice))
    # Said when each trial fails (KerasTuner prints the trial's exception), in the table, in each trial's record.
    printed = [line for line in err.splitlines() if line.startswith("tuning.hypermodel.TrialDiverged")]
    assert len(printed) == 2 and all(re.fullmatch(f"tuning.hypermodel.TrialDiverged: {diverged}", line)
                                     for line in printed), err
    for trial_id in ("0", "1"):
        line = next(line for line in out.splitlines() if line.startswith(f"trial {trial_id}: "))
        assert re.fullmatch(rf"trial {trial_id}: tuning.hypermodel.TrialDiverged: {diverged}", line), line
        assert trials(search_dir)[trial_id]["message"].endswith(f"; {advice}\n")
    assert err.endswith("\nerror: no trial of the search completed (see the table above): widen or move the ranges\n")
    assert "--overwrite" not in out + err + "".join(t["message"] for t in trials(search_dir).values())


@pytest.mark.slow
def test_a_search_that_keras_tuner_stops_for_failures_in_a_row_ends_in_one_line(tmp_path, monkeypatch):
    monkeypatch.setattr(search, "MAX_CONSECUTIVE_FAILED_TRIALS", 2)
    experiment = write_experiment(tmp_path, tune={"max_trials": 3, "epochs": 2,
                                                  "learning_rate": {"min": 1e29, "max": 1e30}})
    code, out, err = run_main(["--config", str(experiment), "--dir", str(tmp_path / "search")])
    assert code == 1
    table = out[out.index("2 trial(s), best first"):].splitlines()
    assert [line.split()[-1] for line in table[2:4]] == ["FAILED", "FAILED"]  # the third never ran
    assert err.endswith(
        "\nerror: 2 trials in a row failed (see the table above), so KerasTuner stopped the search: move the ranges "
        "(lower tune.learning_rate's max if they diverged), then start again with --overwrite or another --dir\n"
    )
    assert "RuntimeError" not in err


# ---------------------------------------------------------------- kill -9 and resume


@pytest.mark.slow
def test_a_killed_search_resumes_without_repeating_finished_trials(tmp_path):
    experiment = write_experiment(tmp_path)
    search_dir = tmp_path / "search"
    command = [sys.executable, "-m", "tuning.search", "--config", str(experiment), "--dir", str(search_dir)]
    env = subprocess_env()
    process = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        # Kill once the oracle has recorded the first finished trial.
        deadline = time.monotonic() + 120
        ended = []
        while not ended and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.05)
            with contextlib.suppress(FileNotFoundError, json.JSONDecodeError):
                ended = oracle_state(search_dir)["end_order"]
        assert process.poll() is None, process.stdout.read().decode()  # still searching: the kill interrupts it
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert len(ended) == 1 and len(ended) < 3
    finished_first = ended[0]
    assert len(train_event_files(search_dir, finished_first)) == 1

    rerun = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert "Resuming the search" in rerun.stdout
    found = trials(search_dir)
    assert sorted(found) == ["0", "1", "2"]
    assert {t["status"] for t in found.values()} == {"COMPLETED"}
    state = oracle_state(search_dir)
    assert sorted(state["end_order"]) == ["0", "1", "2"]
    assert state["run_times"] == {"0": 1, "1": 1, "2": 1}
    # The finished trial was not trained again (a second run would add an event file).
    assert len(train_event_files(search_dir, finished_first)) == 1
    assert (search_dir / "best.yaml").is_file()


@pytest.mark.slow
def test_a_live_search_cannot_be_joined_or_overwritten_through_a_symlink(tmp_path):
    from tests.helpers.processes import command, kill, run, start, wait_until

    experiment = write_experiment(tmp_path, tune={"max_trials": 50, "epochs": 2})
    search_dir = tmp_path / "search"
    process = start(command("tuning.search", "--config", experiment, "--dir", search_dir), cwd=tmp_path,
                    env=subprocess_env())
    try:
        wait_until(lambda: (search_dir / "oracle.json").exists(), process)
        before = sorted(p.name for p in search_dir.iterdir())
        (tmp_path / "link").symlink_to(search_dir)
        for extra in ([], ["--overwrite"]):
            done = run(command("tuning.search", "--config", experiment, "--dir", tmp_path / "link", *extra),
                       cwd=tmp_path, env=subprocess_env(), timeout=120)
            assert (done.returncode, done.stderr) == (2, (
                f"error: {tmp_path / 'link'} is in use by another search: wait for it to finish, or choose another "
                "--dir\n"
            ))
        assert process.poll() is None and set(before) <= {p.name for p in search_dir.iterdir()}
    finally:
        kill(process)


# ---------------------------------------------------------------- distributed tuning


@pytest.mark.slow
def test_chief_and_two_workers_split_the_trials(tmp_path):
    experiment = write_experiment(tmp_path, tune={"max_trials": 4})
    search_dir = tmp_path / "search"
    (port,) = map(str, free_ports())
    env = subprocess_env()

    def start(tuner_id):
        command = [sys.executable, "-m", "tuning.search", "--config", str(experiment), "--dir", str(search_dir),
                   "--tuner-id", tuner_id, "--oracle-ip", "127.0.0.1", "--oracle-port", port]
        return subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    processes = {name: start(name) for name in ("chief", "worker0", "worker1")}
    outputs = {}
    try:
        for name, process in processes.items():
            outputs[name] = process.communicate(timeout=300)[0]
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.kill()
                process.wait()
    for name, process in processes.items():
        assert process.returncode == 0, f"{name}:\n{outputs[name]}"

    found = trials(search_dir)
    assert sorted(found) == ["0", "1", "2", "3"]
    assert {t["status"] for t in found.values()} == {"COMPLETED"}
    state = oracle_state(search_dir)
    assert state["run_times"] == {"0": 1, "1": 1, "2": 1, "3": 1}  # none ran twice
    # A worker writes its state file at the end of each trial it ran: both ran trials.
    assert (search_dir / "worker0.json").is_file() and (search_dir / "worker1.json").is_file()
    for name in ("worker0", "worker1"):
        assert "the chief reports the results" in outputs[name]
        assert "trial  dropout" not in outputs[name]
    # The chief reports all four, best first, and writes best.yaml.
    best = best_trial(found)
    assert "4 trial(s), best first" in outputs["chief"]
    assert f"Best: trial {best['trial_id']}, val_top5_error {best['score']:.4f}" in outputs["chief"]
    assert yaml.safe_load((search_dir / "best.yaml").read_text()) == override_tree(best["hyperparameters"]["values"])


def test_a_chief_whose_port_is_taken_exits_2_naming_the_address(tmp_path):
    experiment = write_experiment(tmp_path)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, out, err = run_main(["--config", str(experiment), "--dir", str(tmp_path / "search"), "--tuner-id",
                                   "chief", "--oracle-ip", "127.0.0.1", "--oracle-port", str(port)])
    assert (code, err) == (2, (
        f"error: 127.0.0.1:{port} cannot be served (the port is in use, or the address is not this host's): choose "
        "another --oracle-port, or check --oracle-ip\n"
    ))
    assert "Chief serving" not in out  # something answered on the port, but not the chief


MIRRORED_SEARCH = """
import sys
import tensorflow as tf

# Two logical devices on the one CPU: before TensorFlow initialises them.
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from tuning import search
sys.exit(search.main(sys.argv[1:]))
"""


@pytest.mark.slow
def test_trials_under_mirrored_strategy_with_the_whole_validation_split_as_validation_steps(tmp_path):
    # 32 synthetic images, 20 % held out: 6 validation images, one batch of 16. validation_steps reaching the
    # end of the validation data made Keras' fit raise StopIteration in every trial's second epoch under a
    # strategy; the trials train through the trainer's core, which truncates the dataset instead.
    experiment = write_experiment(
        tmp_path, train={"strategy": "mirrored", "devices": ["/cpu:0", "/cpu:1"], "validation_steps": 1},
        tune={"max_trials": 1, "epochs": 2},
    )
    done = subprocess.run(
        [sys.executable, "-c", MIRRORED_SEARCH, "--config", str(experiment), "--dir", str(tmp_path / "search")],
        env=subprocess_env(), capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    found = trials(tmp_path / "search")
    assert len(found) == 1
    assert {trial["status"] for trial in found.values()} == {"COMPLETED"}
    assert "Strategy mirrored: 2 replicas" in done.stdout
    assert "Your input ran out of data" not in done.stderr
    for trial_id in found:
        assert len(scalars(tmp_path / "search" / "logs" / trial_id / "execution0" / "validation",
                              "epoch_top1_error")) == 2
