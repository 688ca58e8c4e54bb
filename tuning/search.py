"""Search the experiment's training settings with KerasTuner.

    python -m tuning.search --config configs/tune_quickstart.yaml
    python -m tuning.search --config configs/imagenet2012.yaml --config my_tune.yaml --set tune.max_trials=20
    python -m pipeline.train --config configs/tune_quickstart.yaml --config runs/tune_quickstart_search/best.yaml

The `tune` section of the config is the search space (a range for dropout,
learning rate and optionally momentum and weight decay), the tuner (random,
bayesian, hyperband), the budget (max_trials, epochs per trial, Hyperband's
factor), the objective (a metric training logs, minimised) and the seed.
Every trial builds and compiles the model with the trainer's own functions
(`tuning.hypermodel`) and trains on data built once for the whole search.

The search directory (runs/<name>_search by default, --dir to choose) holds:

    config.yaml      the resolved experiment config of the search
    oracle.json, tuner0.json, trial_<id>/trial.json, trial_<id>/checkpoint.weights.h5
                     KerasTuner's state: values, scores and best weights of each trial
    logs/<id>/execution0/
                     TensorBoard per trial, with the HParams dashboard
                     (tensorboard --logdir runs/<name>_search/logs)
    best.yaml        the best trial's values as a config override

A trial's score is the objective at its best epoch (KerasTuner's rule). At
the end a table of the trials, best first, is printed and best.yaml is
written; --train-best then trains and exports the winner in runs/<name>_best.
KerasTuner clears the Keras session before each trial, so memory does not grow
from trial to trial; the disk does, by one weights file per trial.
Running the same command again on an interrupted search (even after kill -9)
resumes it: finished trials are kept, the interrupted one is run again, and
the budget counts them all. A finished search only prints its table again;
raising tune.max_trials extends it. Any other config change is refused;
--overwrite starts afresh.

Distributed tuning: one chief process runs the oracle (it trains nothing) and
any number of workers take trials from it over gRPC. Start every process with
the same config and --dir, a directory all of them see (Hyperband's later
rounds load the weights of earlier trials), the chief's address, and a tuner
id: `chief` for the chief, a distinct name for each worker (without "chief"
in it: KerasTuner takes any such id for the chief).

    python -m tuning.search --config X.yaml --dir /shared/search --tuner-id chief --oracle-ip 10.0.0.1 --oracle-port 8000
    python -m tuning.search --config X.yaml --dir /shared/search --tuner-id worker0 --oracle-ip 10.0.0.1 --oracle-port 8000
    python -m tuning.search --config X.yaml --dir /shared/search --tuner-id worker1 --oracle-ip 10.0.0.1 --oracle-port 8000

The flags set KERASTUNER_TUNER_ID, KERASTUNER_ORACLE_IP and
KERASTUNER_ORACLE_PORT for the life of the tuner (setting those variables
yourself works the same). Workers wait for the chief; the chief returns once
every trial has ended, then prints the table and writes best.yaml.
"""

import contextlib
import dataclasses
import os
import pathlib
import shlex
import sys
import time

import yaml

from pipeline.config import build_config, load_config, load_yaml
from pipeline.console import cli
from pipeline.errors import ConfigError, RunFailed
from pipeline.storage.rundir import changed_keys
from tuning.hypermodel import (
    TUNED_KEYS,
    check_search_space,
    override_tree,
    search_ranges,
)

DEFAULT_RUNS = pathlib.Path("runs")
CONFIG_FILE = "config.yaml"
BEST_FILE = "best.yaml"
LOG_DIR = "logs"

# Keys that may change between a search and its resumption: the budget can
# grow, and progress output is not part of the experiment.
RESUMABLE_CHANGES = ("tune.max_trials", "train.verbose")
# Everything a search writes into its directory (glob patterns; KerasTuner's state is
# oracle.json, <tuner id>.json and trial_<id>/): --overwrite replaces only such a directory.
SEARCH_ENTRIES = (CONFIG_FILE, BEST_FILE, "*.json", "trial_*", LOG_DIR, ".*.tmp")
MAX_CONSECUTIVE_FAILED_TRIALS = 10


def parse_args(argv=None):
    parser = cli.ArgumentParser(prog="python -m tuning.search", description=__doc__.split("\n")[0])
    parser.add_argument("--config", action="append", default=[], metavar="YAML",
                        help="experiment file; repeat to layer files (later ones win). Default: configs/quickstart.yaml")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override one dotted key, e.g. --set tune.max_trials=4")
    parser.add_argument("--dir", type=pathlib.Path, help="search directory (default: runs/<name>_search)")
    parser.add_argument("--overwrite", action="store_true",
                        help="delete the search directory's trials and start afresh (only a search directory of "
                             "this project)")
    parser.add_argument("--train-best", action="store_true",
                        help="then train and export the best trial's config in runs/<name>_best")
    dist = parser.add_argument_group("distributed tuning (all three, or none)")
    dist.add_argument("--tuner-id", help="'chief' for the process that runs the oracle; a distinct name per worker")
    dist.add_argument("--oracle-ip", help="address of the chief")
    dist.add_argument("--oracle-port", type=int, help="port of the chief")
    args = parser.parse_args(argv)
    given = [args.tuner_id is not None, args.oracle_ip is not None, args.oracle_port is not None]
    if any(given) and not all(given):
        parser.error("distributed tuning needs --tuner-id, --oracle-ip and --oracle-port together")
    return args


def logged_metrics(num_classes):
    """The metrics a training run logs, by the names Keras gives them.

    Args:
        num_classes: classes of the data; top-5 error is logged only above 5.

    Returns:
        The metric names, training ones first, then their `val_` versions.
    """
    from pipeline.evaluation.references import has_top5

    names = ["loss", "top1_error"] + (["top5_error"] if has_top5(num_classes) else [])
    return names + [f"val_{name}" for name in names]


def check_objective(objective, num_classes=None):
    """Checks that the objective is a metric the trials log.

    Args:
        objective: `tune.objective`.
        num_classes: classes of the data, or None when not yet known (then
            only the name is checked).

    Raises:
        ConfigError: naming tune.objective and the metrics that are logged.
    """
    known = logged_metrics(1000)  # every name, whatever the class count
    if objective not in known:
        raise ConfigError(
            f"tune.objective: {objective!r} is not a metric training logs; choose one of {', '.join(known)}"
        )
    if num_classes is not None and objective not in logged_metrics(num_classes):
        raise ConfigError(
            f"tune.objective: {objective!r} is not logged with {num_classes} classes (top-5 error needs more than 5); "
            f"choose one of {', '.join(logged_metrics(num_classes))}"
        )


def _known_num_classes(data_config):
    """The class count when the config alone tells it, else None."""
    if data_config.source_kind == "digits":
        return 10
    if data_config.source_kind == "synthetic":
        return data_config.num_classes
    return None


def trial_strategy(train_config):
    """The single-host strategy each trial trains under, as `train.strategy` says.

    Args:
        train_config: `pipeline.config.TrainConfig`.

    Returns:
        (cluster, description): the `pipeline.training.strategy.Cluster` and a log line.

    Raises:
        ConfigError: the strategy is multi-worker (KerasTuner runs each trial
            on one host; distributed tuning spreads trials over hosts), or
            `pipeline.training.strategy.make_cluster` refuses the config.
    """
    from pipeline.training.strategy import make_cluster, scaled_learning_rate

    refusal = (
        "train.strategy: multi-worker training cannot run inside a KerasTuner trial; use mirrored or auto "
        "(without TF_CONFIG), and spread trials over hosts with --tuner-id/--oracle-ip/--oracle-port"
    )
    if train_config.strategy == "multi_worker":
        raise ConfigError(refusal)
    cluster = make_cluster(train_config)
    if cluster.multi_worker:
        raise ConfigError(refusal)
    description = cluster.describe(train_config.batch_size, scaled_learning_rate(train_config), train_config)
    return cluster, description


def build_tuner(config, hypermodel, search_dir, overwrite=False, strategy=None):
    """The KerasTuner tuner named by `config.tune`, with the search directory as its project.

    Args:
        config: the validated experiment `Config`.
        hypermodel: a `keras_tuner.HyperModel`.
        search_dir: the search directory (KerasTuner's project directory).
        overwrite: delete an existing search there first; otherwise it is reloaded.
        strategy: a `tf.distribute.Strategy` for each trial, or None. Passed
            to the tuner, which opens its scope around each build (opening it
            here as well would fail).

    Returns:
        A `keras_tuner.Tuner`.
    """
    import keras_tuner

    tune = config.tune
    search_dir = pathlib.Path(search_dir)
    common = dict(
        hypermodel=hypermodel,
        objective=keras_tuner.Objective(tune.objective, direction="min"),  # every logged metric is an error or a loss
        # KerasTuner replaces a seed of 0 by a random one; shifting keeps every tune.seed reproducible.
        seed=tune.seed + 1,
        directory=str(search_dir.parent),
        project_name=search_dir.name,
        overwrite=overwrite,
        distribution_strategy=strategy,
        # Over a learning-rate range some trials diverge (StopOnNaN fails them);
        # that is a finding, not a broken search, so allow more than KerasTuner's 3 in a row.
        max_consecutive_failed_trials=MAX_CONSECUTIVE_FAILED_TRIALS,
    )
    if tune.tuner == "hyperband":
        return keras_tuner.Hyperband(max_epochs=tune.epochs, factor=tune.hyperband_factor, **common)
    if tune.tuner == "bayesian":
        return keras_tuner.BayesianOptimization(max_trials=tune.max_trials, **common)
    return keras_tuner.RandomSearch(max_trials=tune.max_trials, **common)


@contextlib.contextmanager
def _environ(updates):
    """Sets environment variables for the duration of the block, then restores them."""
    saved = {key: os.environ.get(key) for key in updates}
    os.environ.update(updates)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _distributed_env(args):
    if args.tuner_id is None:
        return {}
    return {
        "KERASTUNER_TUNER_ID": args.tuner_id,
        "KERASTUNER_ORACLE_IP": args.oracle_ip,
        "KERASTUNER_ORACLE_PORT": str(args.oracle_port),
    }


def _role():
    """'single', 'chief' or 'worker', from KerasTuner's environment variables."""
    if "KERASTUNER_ORACLE_IP" not in os.environ:
        return "single"
    return "chief" if "chief" in os.environ.get("KERASTUNER_TUNER_ID", "") else "worker"


def _comparable(config):
    tree = config.to_dict()
    for key in RESUMABLE_CHANGES:
        section, leaf = key.split(".")
        tree[section].pop(leaf)
    return tree


def check_resumable(search_dir, config):
    """Refuses to resume a search that was started with another config.

    KerasTuner reloads its search space and trials from the directory and
    would silently keep the old ranges, so any difference other than
    `RESUMABLE_CHANGES` is an error.

    Raises:
        ConfigError: naming the keys that differ.
    """
    path = pathlib.Path(search_dir) / CONFIG_FILE
    if not path.is_file():
        return
    try:
        saved = build_config(load_yaml(path))
    except ConfigError as exc:
        raise ConfigError(f"{path} is not a config of this project ({exc}); choose another --dir") from None
    old, new = _comparable(saved), _comparable(config)
    if old != new:
        raise ConfigError(
            f"{search_dir} holds a search with another config (differs in: {', '.join(changed_keys(old, new))}); "
            "pass --overwrite to start afresh, or choose another --dir"
        )


def check_search_dir(search_dir, config, overwrite):
    """Refuses a search directory that is a file, not ours, or (without --overwrite) another search.

    Raises:
        DirectoryError / ConfigError (exit status 2), naming the path.
    """
    from pipeline.storage.files import DirectoryError, check_ours

    if search_dir.exists() and not search_dir.is_dir():
        raise DirectoryError(f"{search_dir} is a file, not a search directory: choose another --dir")
    if not search_dir.exists() or not any(search_dir.iterdir()):
        return
    if overwrite:
        check_ours(search_dir, SEARCH_ENTRIES, "search")  # KerasTuner then deletes it whole
        return
    if not (search_dir / CONFIG_FILE).is_file():
        raise DirectoryError(
            f"{search_dir} is not empty and holds no {CONFIG_FILE}: it is not a search directory of this project; "
            "choose another --dir"
        )
    check_resumable(search_dir, config)


@dataclasses.dataclass(frozen=True)
class TrialRow:
    """One line of the results table."""

    trial_id: str
    values: dict  # tuned name -> value
    epochs: int  # epochs trained (Hyperband varies them), None when not recorded
    score: float  # the objective, None when the trial did not complete
    status: str
    message: str = ""


def trial_rows(oracle):
    """The oracle's trials, best first (completed by objective, then the rest by id).

    Args:
        oracle: a `keras_tuner.Oracle` (not a worker's client).

    Returns:
        A list of `TrialRow`.
    """
    rows = []
    for trial in oracle.trials.values():
        values = trial.hyperparameters.values
        completed = trial.status == "COMPLETED" and trial.score is not None
        rows.append(
            TrialRow(
                trial_id=trial.trial_id,
                values={name: values[name] for name in TUNED_KEYS if name in values},
                epochs=values.get("tuner/epochs"),
                score=float(trial.score) if completed else None,
                status=trial.status,
                message=(trial.message or "").strip().splitlines()[-1] if trial.message else "",
            )
        )
    done = sorted((r for r in rows if r.score is not None), key=lambda r: (r.score, r.trial_id))
    rest = sorted((r for r in rows if r.score is None), key=lambda r: r.trial_id)
    return done + rest


def format_table(rows, tuned_names, objective):
    """The results table as text, one trial a line.

    Args:
        rows: `TrialRow`s in the order to print.
        tuned_names: the tuned names, one column each.
        objective: the objective's name (its column header).
    """
    show_epochs = any(r.epochs is not None for r in rows)
    header = ["trial"] + list(tuned_names) + (["epochs"] if show_epochs else []) + [objective, "status"]
    lines = []
    for r in rows:
        cells = [r.trial_id] + [f"{r.values[n]:.4g}" if n in r.values else "-" for n in tuned_names]
        if show_epochs:
            cells.append(str(r.epochs) if r.epochs is not None else "-")
        cells += [f"{r.score:.4f}" if r.score is not None else "-", r.status]
        lines.append(cells)
    widths = [max(len(row[i]) for row in [header] + lines) for i in range(len(header))]
    text = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in [header] + lines]
    text += [f"trial {r.trial_id}: {r.message}" for r in rows if r.score is None and r.message]
    return "\n".join(text)


def write_best(path, best, config, command_args, objective):
    """Writes the best trial's values as a YAML config override.

    Args:
        path: where to write (the search directory's best.yaml).
        best: the best `TrialRow`.
        config: the experiment `Config`.
        command_args: the search's --config/--set arguments, for the comment
            that says how to train the winner.
        objective: the objective's name.
    """
    from pipeline.storage.files import atomic_write_text

    header = (
        f"# Best trial ({best.trial_id}) of the search {config.name}: {objective} {best.score:.4f}.\n"
        f"# Train it:  python -m pipeline.train {' '.join(command_args)} --config {shlex.quote(str(path))}\n"
    )
    atomic_write_text(path, header + yaml.safe_dump(override_tree(best.values), sort_keys=False))


@dataclasses.dataclass(frozen=True)
class SearchResult:
    """What a finished search found (returned by the chief or a single process)."""

    rows: list  # `TrialRow`s, best first
    best: TrialRow  # None when no trial completed
    best_config: object  # the experiment `Config` with the best values, or None
    wall_seconds: float


def search(config, search_dir, overwrite=False, command_args=()):
    """Runs (or resumes) the search and reports it.

    Args:
        config: the validated experiment `Config`; `config.tune` is the search.
        search_dir: the search directory.
        overwrite: start afresh, deleting an existing search there.
        command_args: the --config/--set arguments of the search, quoted in
            best.yaml's comment.

    Returns:
        A `SearchResult`, or None on a distributed-tuning worker (the chief
        reports).

    Raises:
        ConfigError: the search space, the objective or the strategy cannot be
            used, the data cannot be read, or the directory holds a search with
            another config. Raised before any trial runs.
    """
    search_dir = pathlib.Path(search_dir)
    role = _role()
    check_search_space(config)
    check_objective(config.tune.objective, _known_num_classes(config.data))
    if role != "worker":
        check_search_dir(search_dir, config, overwrite)
    tuner, data, strategy_line = _open_search(config, search_dir, overwrite, role)
    tuned = list(search_ranges(config.tune))
    print(
        f"{config.name}: {config.tune.tuner} search over {', '.join(tuned)}; "
        f"{data.train_size} training / {data.validation_size} validation images, {data.num_classes} classes; "
        f"objective {config.tune.objective} (min); {search_dir} [{role}]\n{strategy_line}"
    )
    start = time.perf_counter()
    import keras

    tuner.search(
        epochs=config.tune.epochs,
        # The tuner gives each trial its own copy in logs/<trial id>/ and adds the HParams
        # callback; it recognises the class by its name, so no subclass of it here.
        callbacks=[keras.callbacks.TensorBoard(str(search_dir / LOG_DIR), write_graph=False, profile_batch=0)],
        verbose=1,  # KerasTuner's per-trial summaries; the hypermodel sets Keras' own from train.verbose
    )
    wall = time.perf_counter() - start
    if role == "worker":
        print(f"Worker {os.environ['KERASTUNER_TUNER_ID']} finished after {wall:.0f} s; the chief reports the results.")
        return None
    return _report(tuner, config, search_dir, tuned, command_args, wall)


def _open_search(config, search_dir, overwrite, role):
    """The data every trial reads, the trial strategy and the tuner (its state reloaded when resuming)."""
    import keras

    from pipeline.data.pipelines import build_datasets
    from pipeline.storage.files import atomic_write_text
    from tuning.hypermodel import AlexNetHyperModel

    cluster, strategy_line = trial_strategy(config.train)
    keras.utils.set_random_seed(config.seed)
    # Built once: every trial reads the same pipelines (and the same in-memory cache).
    data = build_datasets(config.data, config.train.batch_size, seed=config.seed)
    check_objective(config.tune.objective, data.num_classes)
    search_dir.parent.mkdir(parents=True, exist_ok=True)
    tuner = build_tuner(
        config,
        AlexNetHyperModel(config, data, cluster),
        search_dir,
        overwrite=overwrite and role != "worker",  # only the chief may delete the shared directory
        strategy=None if cluster.kind == "default" else cluster.strategy,
    )
    if role != "worker":
        atomic_write_text(search_dir / CONFIG_FILE, config.to_yaml())
        # KerasTuner reloads a project only when the tuner's own file exists, and
        # writes it first at the end of a trial: a kill in the window between the
        # oracle's record of a finished trial and that file would restart the
        # search. Writing it now closes the window.
        tuner.save()
        done = sum(trial.status == "COMPLETED" for trial in tuner.oracle.trials.values())
        if done:
            print(f"Resuming the search in {search_dir}: {done} trial(s) completed")
    return tuner, data, strategy_line


def _report(tuner, config, search_dir, tuned, command_args, wall):
    """Prints the trials, best first, and writes best.yaml; returns the `SearchResult`."""
    from tuning.hypermodel import apply_values

    rows = trial_rows(tuner.oracle)
    print()
    print(f"{len(rows)} trial(s), best first ({wall:.0f} s in this run):")
    print(format_table(rows, tuned, config.tune.objective))
    best = rows[0] if rows and rows[0].score is not None else None
    if best is None:
        print("No trial completed; nothing written.")
        return SearchResult(rows, None, None, wall)
    best_path = search_dir / BEST_FILE
    write_best(best_path, best, config, command_args, config.tune.objective)
    print(f"Best: trial {best.trial_id}, {config.tune.objective} {best.score:.4f}; wrote {best_path}")
    print(f"  tensorboard --logdir {search_dir / LOG_DIR}     (HParams tab)")
    return SearchResult(rows, best, apply_values(config, best.values), wall)


def _command_args(args):
    """The --config and --set arguments that rebuild the experiment config."""
    from pipeline.config import DEFAULT_CONFIG

    configs = args.config or [os.path.relpath(DEFAULT_CONFIG)]
    return [f"--config {shlex.quote(str(p))}" for p in configs] + [f"--set {shlex.quote(s)}" for s in args.set]


@cli.command
def main(argv=None):
    """Runs the search; returns the exit status (`pipeline.console.cli`): 1 when no trial completed."""
    args = parse_args(argv)
    config = load_config(args.config, args.set)
    search_dir = args.dir or DEFAULT_RUNS / f"{config.name}_search"
    with _environ(_distributed_env(args)):
        result = search(config, search_dir, overwrite=args.overwrite, command_args=_command_args(args))
    if result is not None and result.best is None:
        raise RunFailed("no trial of the search completed (see the table above): widen or move the ranges")
    if args.train_best and result is not None:
        from pipeline.training.run import train

        train(result.best_config, DEFAULT_RUNS / f"{config.name}_best", overwrite=args.overwrite)


if __name__ == "__main__":
    sys.exit(main())
