"""Re-export a run's SavedModel from its saved Keras model.

    python -m pipeline.export runs/<name>                       # re-export saved_model/ from model.keras
    python -m pipeline.export runs/<name> --model other.keras   # ... from another saved Keras model

The SavedModel is written beside the old one and swapped in atomically; its
signatures are described in `pipeline.serving.saved_model`.
"""

import pathlib

from pipeline.console import cli
from pipeline.errors import ConfigError
from pipeline.serving.run_model import load_run_model, read_labels
from pipeline.serving.saved_model import ENDPOINTS, export_saved_model
from pipeline.storage.rundir import SAVED_MODEL_DIR


def parse_args(argv=None):
    """The command line of `python -m pipeline.export` (argv: None reads sys.argv)."""
    parser = cli.ArgumentParser(
        prog="python -m pipeline.export", description="Re-export a run's SavedModel from its saved Keras model."
    )
    parser.add_argument("run_dir", type=pathlib.Path, help="the run directory, e.g. runs/quickstart")
    parser.add_argument("--model", type=pathlib.Path, help="a .keras file to export instead of <run>/model.keras")
    return parser.parse_args(argv)


@cli.command
def main(argv=None):
    """Re-exports a run's SavedModel.

    Args:
        argv: command-line arguments (None: sys.argv).

    Returns:
        The exit status (`pipeline.console.cli`): 0, or 2 for a missing, unfinished or damaged run.
    """
    args = parse_args(argv)
    config, model = load_run_model(args.run_dir, args.model)
    class_names = read_labels(args.run_dir)
    try:
        path = export_saved_model(
            model, args.run_dir / SAVED_MODEL_DIR, class_names, config.data.image_size, config.data.resize,
            config.data.max_pixels,
        )
    except ValueError as exc:  # the model does not match the run's classes or input size
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(f"{exc}: export a model of this run (--model)") from None
    print(f"Wrote {path} ({len(class_names)} classes; signatures: {', '.join(ENDPOINTS)})")


if __name__ == "__main__":
    raise SystemExit(main())
