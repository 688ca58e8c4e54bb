"""Top-1 / top-5 error of a trained run, with one centre crop or the paper's ten crops, and the paper's pictures.

    python -m pipeline.evaluate runs/quickstart
    python -m pipeline.evaluate runs/imagenet2012 --crops 10 --batch-size 16
    python -m pipeline.evaluate runs/x --set data.source=folder:/data/other   # another dataset, same classes
    python -m pipeline.evaluate runs/x --no-figures                           # the errors only

Rebuilds the split from the run's config.yaml, loads its model.keras, streams
the images through it batch by batch (memory does not grow with the split),
prints the errors beside the paper's, and writes them to
<run>/eval_<split>_<crops>.json and to TensorBoard under <run>/logs/eval.
Data whose class names differ from the run's is refused; when the split's
files are not those the run recorded (data_identity.json), a note says how
many it did not see and how many it saw are gone.

It also draws the pictures of `pipeline.evaluation.pictures` (conv1's kernels, top-5
predictions, nearest training images in fc7 space, per-class error, the
confusion matrix, the most confident mistakes) into <run>/figures/*.png and
as TensorBoard images under <run>/logs/eval. For them it keeps running counts
and a few images only: eight images spread over the classes (the same ones for
the same run) and a bounded heap of the most confident mistakes; the nearest
neighbours of the first five are searched among the first
--neighbour-pool training images (evaluation preprocessing, no augmentation).

With --crops 10 every image is seen as the four corner and the centre patches
of its central resize x resize square, and their mirror images; the ten
softmax outputs are averaged (paper, section 4.1). Exit status 2 on a usage
error (no such run, unfinished run, bad option).
"""

import pathlib
import sys

from pipeline.console import cli
from pipeline.errors import ConfigError
from pipeline.evaluation.evaluator import SPLITS, evaluate_run
from pipeline.evaluation.pictures import NEIGHBOUR_POOL
from pipeline.evaluation.scoring import format_table
from pipeline.storage.rundir import EVAL_LOGS_DIR, LOGS_DIR, eval_result_path, lock_run


def parse_args(argv=None):
    """The command line of `python -m pipeline.evaluate` (argv: None reads sys.argv)."""
    parser = cli.ArgumentParser(prog="python -m pipeline.evaluate", description=__doc__)
    parser.add_argument("run_dir", type=pathlib.Path, help="the run directory, e.g. runs/quickstart")
    parser.add_argument("--split", choices=SPLITS, default="validation", help="default: validation")
    parser.add_argument("--crops", type=int, choices=(1, 10), default=1,
                        help="1: centre crop; 10: corners, centre and mirrors, softmax averaged (paper)")
    parser.add_argument("--batch-size", type=int, metavar="N",
                        help="images per step (default: train.batch_size / crops)")
    parser.add_argument("--set", action="append", default=[], metavar="data.KEY=VALUE",
                        help="change the run's data config, e.g. to evaluate another dataset with the same classes")
    parser.add_argument("--no-figures", dest="pictures", action="store_false",
                        help="skip the pictures (conv1 kernels, top-5, neighbours, per-class error, confusion "
                             "matrix, confident mistakes) written to <run>/figures and TensorBoard")
    parser.add_argument("--neighbour-pool", type=int, default=NEIGHBOUR_POOL, metavar="N",
                        help=f"training images searched for the nearest neighbours (default: {NEIGHBOUR_POOL:,})")
    args = parser.parse_args(argv)
    if args.batch_size is not None:
        cli.check_range("--batch-size", args.batch_size, 1)
    cli.check_range("--neighbour-pool", args.neighbour_pool, 1)
    return args


@cli.command
def main(argv=None):
    """Evaluates a run, prints the table and writes the results and pictures.

    Args:
        argv: command-line arguments (None: sys.argv).

    Returns:
        The exit status (`pipeline.console.cli`): 0, or 2 for a usage error or a damaged run.
    """

    args = parse_args(argv)
    if not args.run_dir.is_dir():
        raise ConfigError(f"run directory not found: {args.run_dir}")
    # It writes into the run (results, pictures, logs): one process at a time, as for training and export.
    with lock_run(args.run_dir, what="run directory"):
        results = evaluate_run(
            args.run_dir, args.split, args.crops, args.batch_size, args.set,
            pictures=args.pictures, neighbour_pool=args.neighbour_pool,
        )
    print(format_table(results))
    print(f"Wrote {eval_result_path(args.run_dir, args.split, args.crops)} and {args.run_dir / LOGS_DIR / EVAL_LOGS_DIR}")
    for name in results["figure_files"]:
        print(f"Wrote {args.run_dir / name}")


if __name__ == "__main__":
    sys.exit(main())
