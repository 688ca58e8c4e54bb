"""A search's results (`tuning.results`): the trials as a table, completed ones by objective and then the rest,
with an epochs column when the tuner varies them; and best.yaml, the best values as a config override headed by the
command that trains them."""

import types

import keras_tuner
import yaml

from pipeline.config import load_config
from tests.helpers.experiments import write_experiment
from tuning import results
from tuning.results import TrialRow


def test_table_lists_completed_trials_by_objective_then_the_rest():
    def trial(trial_id, status, score, **values):
        hp = keras_tuner.HyperParameters()
        hp.values.update(values)
        t = keras_tuner.engine.trial.Trial(hp, trial_id=trial_id, status=status)
        t.score = score
        if status == "FAILED":
            t.message = "Traceback ...\nValueError: boom"
        return t

    oracle = types.SimpleNamespace(trials={t.trial_id: t for t in [
        trial("0", "COMPLETED", 0.5, dropout=0.31, learning_rate=0.0101),
        trial("1", "FAILED", None, dropout=0.62, learning_rate=0.0002),
        trial("2", "COMPLETED", 0.25, dropout=0.45, learning_rate=0.00123456),
        trial("3", "RUNNING", None, dropout=0.5, learning_rate=0.05),
    ]})
    rows = results.trial_rows(oracle)
    assert [r.trial_id for r in rows] == ["2", "0", "1", "3"]
    assert results.format_table(rows, ["dropout", "learning_rate"], "val_top5_error").splitlines() == [
        "trial  dropout  learning_rate  val_top5_error  status",
        "2      0.45     0.001235       0.2500          COMPLETED",
        "0      0.31     0.0101         0.5000          COMPLETED",
        "1      0.62     0.0002         -               FAILED",
        "3      0.5      0.05           -               RUNNING",
        "trial 1: ValueError: boom",
    ]


def test_a_tuner_that_varies_the_epochs_gets_an_epochs_column():
    rows = [TrialRow("0001", {"dropout": 0.5}, 3, 0.125, "COMPLETED"),
            TrialRow("0002", {"dropout": 0.25}, None, None, "RUNNING")]
    assert results.format_table(rows, ["dropout", "learning_rate"], "loss").splitlines() == [
        "trial  dropout  learning_rate  epochs  loss    status",
        "0001   0.5      -              3       0.1250  COMPLETED",
        "0002   0.25     -              -       -       RUNNING",
    ]


def test_best_yaml_is_the_best_values_as_an_override_headed_by_its_command(tmp_path):
    config = load_config([write_experiment(tmp_path)])
    best = TrialRow("2", {"dropout": 0.45, "learning_rate": 0.00123}, None, 0.25, "COMPLETED")
    path = tmp_path / "my search" / "best.yaml"
    path.parent.mkdir()
    results.write_best(path, best, config, ["--config", "tiny.yaml"], "val_top5_error")
    assert path.read_text() == (
        "# Best trial (2) of the search tiny: val_top5_error 0.2500.\n"
        f"# Train it:  python -m pipeline.train --config tiny.yaml --config '{path}'\n"
        "model:\n"
        "  dropout: 0.45\n"
        "train:\n"
        "  optimizer:\n"
        "    learning_rate: 0.00123\n"
    )
    trained = load_config([write_experiment(tmp_path), path])
    assert (trained.model.dropout, trained.train.optimizer.learning_rate) == (0.45, 0.00123)
    assert yaml.safe_load(path.read_text()) == {"model": {"dropout": 0.45}, "train": {"optimizer": {"learning_rate": 0.00123}}}
