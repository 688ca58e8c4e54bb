"""Search the experiment's training settings with KerasTuner.

    python -m tuning.search --config configs/tune_quickstart.yaml
    python -m tuning.search --config configs/imagenet2012.yaml --config my_tune.yaml --set tune.max_trials=20
    python -m pipeline.train --config configs/tune_quickstart.yaml --config runs/tune_quickstart_search/best.yaml
    python -m tuning.search --config X.yaml --dir /shared/search --tuner-id chief --oracle-ip 10.0.0.1 --oracle-port 8000

The `tune` section of the config is the search space, the tuner, the budget and
the objective; every trial trains through the trainer's own core
(`tuning.hypermodel`). The search directory (`tuning.searchdir`), resuming,
distributed tuning (`tuning.distributed`; what the chief says while it waits:
`tuning.chief`) and the results (`tuning.results`) are described in the
README's Tuning section.
"""

import contextlib
import os
import pathlib
import shlex
import sys
import time

from model_defs import keras_private
from pipeline.config import DEFAULT_CONFIG, load_config
from pipeline.console import cli
from pipeline.data.memory import keep_freed_memory
from pipeline.errors import ConfigError, RunFailed
from pipeline.evaluation.references import has_top5
from pipeline.storage.rundir import DEFAULT_RUNS
from pipeline.training import run as training_run
from pipeline.training.strategy import make_cluster, scaled_learning_rate
from tuning import chief, distributed
from tuning.results import SearchResult, format_table, trial_rows, write_best
from tuning.searchdir import BEST_FILE, LOG_DIR, SearchDir
from tuning.space import apply_values, check_search_space, search_ranges

MAX_CONSECUTIVE_FAILED_TRIALS = 10


def parse_args(argv=None):
    parser = cli.ArgumentParser(prog="python -m tuning.search", description=__doc__)
    cli.add_config_options(parser, set_example="tune.max_trials=4")
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


def build_tuner(config, hypermodel, search_dir, strategy=None):
    """The KerasTuner tuner named by `config.tune`, with the search directory as its project.

    Args:
        config: the validated experiment `Config`.
        hypermodel: a `keras_tuner.HyperModel`.
        search_dir: the search directory (KerasTuner's project directory).
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
        overwrite=False,  # an existing search is reloaded; --overwrite has emptied it (`SearchDir.begin`)
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
            used, the data cannot be read, or the directory is busy or holds a
            search with another config. Raised before any trial runs.
    """
    search_dir = pathlib.Path(search_dir)
    role = distributed.role()
    check_search_space(config)
    check_objective(config.tune.objective, _known_num_classes(config.data))
    if role == "worker":  # the chief owns the shared directory
        search_dir.parent.mkdir(parents=True, exist_ok=True)
        return _run_search(config, search_dir, role, None, command_args)
    with SearchDir(search_dir, config, overwrite=overwrite) as opened:
        return _run_search(config, search_dir, role, opened, command_args)


def _run_search(config, search_dir, role, opened, command_args):
    tuner, data, strategy_line = _open_search(config, search_dir, opened)
    tuned = list(search_ranges(config.tune))
    print(
        f"{config.name}: {config.tune.tuner} search over {', '.join(tuned)}; "
        f"{data.train_size} training / {data.validation_size} validation images, {data.num_classes} classes; "
        f"objective {config.tune.objective} (min); {search_dir} [{role}]\n{strategy_line}"
    )
    start = time.perf_counter()
    stopped = _search(tuner, config, search_dir, role)
    wall = time.perf_counter() - start
    if role == "worker":
        print(f"Worker {os.environ['KERASTUNER_TUNER_ID']} finished after {wall:.0f} s; the chief reports the results.")
        return None
    result = _report(tuner, config, search_dir, tuned, command_args, wall)
    if stopped:
        raise RunFailed(
            f"{MAX_CONSECUTIVE_FAILED_TRIALS} trials in a row failed (see the table above), so KerasTuner stopped "
            "the search: move the ranges (lower tune.learning_rate's max if they diverged), then start again with "
            "--overwrite or another --dir"
        )
    return result


def _search(tuner, config, search_dir, role):
    """Runs `tuner.search`; True when KerasTuner stopped it for MAX_CONSECUTIVE_FAILED_TRIALS failed in a row.

    On the chief it serves the oracle until the last trial has ended, and
    `tuning.chief` says meanwhile what it waits for.
    """
    import keras

    reports = contextlib.nullcontext()
    if role == "chief":
        keras_private.quick_tuner_chief()
        reports = chief.reporting(tuner.oracle, *distributed.oracle_address())
    try:
        with reports:
            tuner.search(
                epochs=config.tune.epochs,
                # The tuner gives each trial its own copy in logs/<trial id>/ and adds the HParams
                # callback; it recognises the class by its name, so no subclass of it here.
                callbacks=[keras.callbacks.TensorBoard(str(search_dir / LOG_DIR), write_graph=False, profile_batch=0)],
                verbose=1,  # KerasTuner's per-trial summaries; the hypermodel sets Keras' own from train.verbose
            )
    except RuntimeError as exc:
        if role == "chief" and str(exc).startswith("Failed to bind"):  # gRPC's words
            ip, port = distributed.oracle_address()
            raise ConfigError(
                f"{ip}:{port} cannot be served (the port is in use, or the address is not this host's): "
                "choose another --oracle-port, or check --oracle-ip"
            ) from None
        # KerasTuner's oracle raises a RuntimeError (with the last trial's traceback) at the limit.
        if role != "worker" and _failed_in_a_row(tuner.oracle) >= MAX_CONSECUTIVE_FAILED_TRIALS:
            return True
        raise
    return False


def _failed_in_a_row(oracle):
    """The most of the oracle's ended trials that failed one after the other (as KerasTuner counts them)."""
    longest = count = 0
    for trial_id in oracle.end_order:
        count = count + 1 if oracle.trials[trial_id].status == "FAILED" else 0
        longest = max(longest, count)
    return longest


def _open_search(config, search_dir, opened):
    """The data every trial reads, the trial strategy and the tuner (its state reloaded when resuming).

    `opened` is the chief's (or a single search's) `SearchDir`, None on a worker.
    """
    import keras

    from pipeline.data.pipelines import build_datasets
    from tuning.hypermodel import AlexNetHyperModel

    cluster, strategy_line = trial_strategy(config.train)
    keras.utils.set_random_seed(config.seed)
    # Built once: every trial reads the same pipelines (and the same in-memory cache).
    data = build_datasets(config.data, config.train.batch_size, seed=config.seed)
    check_objective(config.tune.objective, data.num_classes)
    if opened is not None:
        opened.begin()  # the data is there: the old search goes (--overwrite), config.yaml is written
    tuner = build_tuner(
        config,
        AlexNetHyperModel(config, data, cluster),
        search_dir,
        strategy=None if cluster.kind == "default" else cluster.strategy,
    )
    if opened is not None:
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

    configs = args.config or [os.path.relpath(DEFAULT_CONFIG)]
    return [f"--config {shlex.quote(str(p))}" for p in configs] + [f"--set {shlex.quote(s)}" for s in args.set]


@cli.command
def main(argv=None):
    """Runs the search; returns the exit status (`pipeline.console.cli`): 1 when no trial completed."""
    args = parse_args(argv)
    config = load_config(args.config, args.set)
    if args.print_config:
        print(config.to_yaml(), end="")
        return
    search_dir = args.dir or DEFAULT_RUNS / f"{config.name}_search"
    keep_freed_memory()  # before TensorFlow loads (pipeline.data.memory)
    with distributed.environ(distributed.tuner_environment(args.tuner_id, args.oracle_ip, args.oracle_port)):
        result = search(config, search_dir, overwrite=args.overwrite, command_args=_command_args(args))
    if result is not None and result.best is None:
        raise RunFailed("no trial of the search completed (see the table above): widen or move the ranges")
    if args.train_best and result is not None:
        training_run.train(result.best_config, DEFAULT_RUNS / f"{config.name}_best", overwrite=args.overwrite)


if __name__ == "__main__":
    sys.exit(main())
