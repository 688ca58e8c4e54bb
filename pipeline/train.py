"""Train AlexNet from a declarative experiment config.

    python -m pipeline.train                                   # configs/quickstart.yaml
    python -m pipeline.train --config configs/imagenet2012.yaml
    python -m pipeline.train --config a.yaml --config b.yaml --set train.epochs=3
    python -m pipeline.train --worker-hosts a:2222,b:2222 --task-index 0   # on host a (1 on host b)

The run directory (runs/<name> by default) receives config.yaml before
training, TensorBoard logs, the backup of the training state, model.keras,
saved_model/, labels.txt and metrics.json. The same command on an unfinished
run resumes it (after a kill, too); on a finished run it refuses unless
--overwrite is given. Under multi-worker training only the chief (worker 0)
writes the run directory.
"""

import pathlib
import sys

from pipeline.config import load_config
from pipeline.console import cli
from pipeline.errors import ConfigError

DEFAULT_RUNS = pathlib.Path("runs")


def parse_args(argv=None):
    parser = cli.ArgumentParser(prog="python -m pipeline.train", description=__doc__.split("\n")[0])
    parser.add_argument("--config", action="append", default=[], metavar="YAML",
                        help="experiment file; repeat to layer files (later ones win). Default: configs/quickstart.yaml")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override one dotted key, e.g. --set train.optimizer.learning_rate=0.005")
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
    from pipeline.training.run import train
    from pipeline.training.strategy import tf_config as make_tf_config

    args = parse_args(argv)
    tf_config = None
    if args.worker_hosts is not None or args.task_index is not None:
        if args.worker_hosts is None or args.task_index is None:
            raise ConfigError("--worker-hosts and --task-index go together: give both, or neither")
        tf_config = make_tf_config(args.worker_hosts.split(","), args.task_index)
    config = load_config(args.config, args.set)
    if tf_config and config.train.strategy not in ("auto", "multi_worker"):
        raise ConfigError(
            f"--worker-hosts needs train.strategy auto or multi_worker, not {config.train.strategy}"
        )
    run_dir = args.run_dir or DEFAULT_RUNS / config.name
    train(config, run_dir, overwrite=args.overwrite, tf_config=tf_config)


if __name__ == "__main__":
    sys.exit(main())
