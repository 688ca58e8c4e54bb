"""Train AlexNet from a declarative experiment config.

    python -m pipeline.train                                   # the shipped quickstart (alexnet-train does the same)
    python -m pipeline.train --config cifar10 --set data.source=folder:/data/cifar10
    python -m pipeline.train --config imagenet2012 --set data.source=records:/data/imagenet256 > train.log
    python -m pipeline.train --config a.yaml --config b.yaml --set train.epochs=3
    python -m pipeline.train --config imagenet2012 --print-config      # the resolved config; nothing written
    python -m pipeline.train --worker-hosts a:2222,b:2222 --task-index 0   # on host a (1 on host b)

The run directory (runs/<name> by default) receives config.yaml once the data
is found, then TensorBoard logs, history.csv, checkpoints/best.keras, the
backup of the training state, model.keras, saved_model/, labels.txt and
metrics.json (README: "What a run directory keeps"). The same command on an
unfinished run resumes it (after a kill, too); on a finished run it refuses
unless --overwrite is given. Under multi-worker training only the chief
(worker 0) writes the run directory.
"""

import pathlib
import sys

from pipeline.config import load_config
from pipeline.console import cli
from pipeline.data.memory import keep_freed_memory
from pipeline.errors import ConfigError
from pipeline.storage.rundir import DEFAULT_RUNS
from pipeline.training import run as training_run
from pipeline.training.strategy import tf_config as make_tf_config


def parse_args(argv=None):
    parser = cli.ArgumentParser(prog="python -m pipeline.train", description=__doc__)
    cli.add_config_options(parser)
    parser.add_argument("--run-dir", type=pathlib.Path, help="run directory (default: runs/<name>)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the run in the run directory (only a run directory of this project)")
    parser.add_argument("--worker-hosts", metavar="HOST:PORT,...",
                        help="multi-worker training: every worker's host:port, the same list on every worker "
                             "(worker 0 is the chief); stands for the TF_CONFIG environment variable")
    parser.add_argument("--task-index", type=int, metavar="I", help="with --worker-hosts: this worker's position")
    return parser.parse_args(argv)


@cli.command
def main(argv=None):
    """Trains the configured run; returns the exit status (`pipeline.console.cli`)."""
    args = parse_args(argv)
    tf_config = None
    if args.worker_hosts is not None or args.task_index is not None:
        if args.worker_hosts is None or args.task_index is None:
            raise ConfigError("--worker-hosts and --task-index go together: give both, or neither")
        tf_config = make_tf_config(args.worker_hosts.split(","), args.task_index)
    config = load_config(args.config, args.set)
    if args.print_config:
        print(config.to_yaml(), end="")
        return
    if tf_config and config.train.strategy not in ("auto", "multi_worker"):
        raise ConfigError(
            f"--worker-hosts needs train.strategy auto or multi_worker, not {config.train.strategy}"
        )
    run_dir = args.run_dir or DEFAULT_RUNS / config.name
    keep_freed_memory()  # before TensorFlow loads (pipeline.data.memory)
    training_run.train(config, run_dir, overwrite=args.overwrite, tf_config=tf_config)


if __name__ == "__main__":
    sys.exit(main())
