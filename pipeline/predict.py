"""Classify image files with an exported SavedModel.

    python -m pipeline.predict runs/quickstart dog.jpg cat.png photos/
    python -m pipeline.predict runs/quickstart/saved_model dog.jpg --top 3 --json

Prints, for each image, its top-k classes with their probabilities: a table,
or one JSON object per line with --json. A folder stands for the JPEG, PNG,
GIF and BMP files in it (recursively, sorted). A file that is missing or not
an image gets an error line of its own; the others are still classified, and
the exit status is 1. Status 2: no usable SavedModel or no image given.

Only TensorFlow is needed at run time: the SavedModel carries its own
preprocessing and class names (see pipeline/serving/saved_model.py).
"""

import json
import pathlib
import sys

from pipeline.console import cli
from pipeline.serving.classifier import (
    DEFAULT_BATCH,
    Classifier,
    UsageError,
    expand_inputs,
    find_saved_model,
    format_table,
)


def parse_args(argv=None):
    """The command line of `python -m pipeline.predict` (argv: None reads sys.argv)."""
    parser = cli.ArgumentParser(prog="python -m pipeline.predict", description=__doc__)
    parser.add_argument("model", type=pathlib.Path, help="a run directory or its saved_model/")
    parser.add_argument("images", nargs="+", type=pathlib.Path, help="image files or folders")
    parser.add_argument("--top", type=int, default=5, help="classes per image (default 5)")
    parser.add_argument("--json", action="store_true", help="one JSON object per line instead of a table")
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH, help="images per SavedModel call")
    args = parser.parse_args(argv)
    cli.check_range("--top", args.top, 1)
    cli.check_range("--batch-size", args.batch_size, 1)
    return args


@cli.command
def main(argv=None):
    """Classifies the given images and prints the results.

    Args:
        argv: command-line arguments (None: sys.argv).

    Returns:
        The exit status (`pipeline.console.cli`): 0, 1 when some file could not be classified, 2 for a usage error.
    """
    args = parse_args(argv)
    files = expand_inputs(args.images)
    if not files:
        raise UsageError(f"no image files in {', '.join(map(str, args.images))}: give image files or folders of them")
    classifier = Classifier(find_saved_model(args.model))
    failed = 0
    for result in classifier.classify(files, top=args.top, batch_size=args.batch_size):
        failed += "error" in result
        if args.json:
            print(json.dumps(result), flush=True)
        elif "error" in result:
            print(f"error: {result['file']}: {result['error']}", file=sys.stderr, flush=True)
        else:
            print(format_table(result), flush=True)
    if failed:
        print(f"{failed} of {len(files)} file(s) could not be classified", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
