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
from pipeline.storage.rundir import LABELS_FILE, SAVED_MODEL_DIR, lock_run


def parse_args(argv=None):
    """The command line of `python -m pipeline.export` (argv: None reads sys.argv)."""
    parser = cli.ArgumentParser(prog="python -m pipeline.export", description=__doc__)
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
    if not args.run_dir.is_dir():
        raise ConfigError(f"run directory not found: {args.run_dir}")
    # One process at a time writes a run: a second export, or a training run, waits its turn.
    with lock_run(args.run_dir, what="run directory"):
        config, model = load_run_model(args.run_dir, args.model)
        class_names = read_labels(args.run_dir)
        check_labels(model, class_names, args.run_dir, args.model)
        try:
            path = export_saved_model(
                model, args.run_dir / SAVED_MODEL_DIR, class_names, config.data.image_size, config.data.resize,
                config.data.max_pixels,
            )
        except ValueError as exc:  # the model's input size is not the run's data.image_size
            if isinstance(exc, ConfigError):
                raise
            raise ConfigError(f"{exc}: export a model of this run (--model)") from None
    print(f"Wrote {path} ({len(class_names)} classes; signatures: {', '.join(ENDPOINTS)})")


def check_labels(model, class_names, run_dir, model_path=None):
    """Refuses a model whose output width is not the run's class count, saying which file is at fault.

    Raises:
        ConfigError: naming labels.txt (the run's own model) or --model (another model).
    """
    outputs = int(model.output_shape[-1])
    if outputs == len(class_names):
        return
    labels = pathlib.Path(run_dir) / LABELS_FILE
    if model_path is None:
        raise ConfigError(
            f"{labels} names {len(class_names)} classes but the run's model.keras has {outputs} outputs: "
            f"{labels.name} was changed or damaged; restore it (one class name per line, in class-index order) "
            "or train the run again (--overwrite)"
        )
    raise ConfigError(
        f"--model {model_path} has {outputs} outputs but the run has {len(class_names)} classes ({labels}): "
        "export a model trained on this run's classes"
    )


if __name__ == "__main__":
    raise SystemExit(main())
