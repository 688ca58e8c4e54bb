"""What a finished run hands back to be served or evaluated: its config, its Keras model, its class names."""

import pathlib

from pipeline.config import build_config, load_yaml
from pipeline.errors import ConfigError
from pipeline.storage.rundir import CONFIG_FILE, KERAS_FILE, LABELS_FILE


def read_labels(run_dir):
    """The class names of a run, from its labels.txt (one per line, in class-index order).

    Args:
        run_dir: the run directory.

    Returns:
        The list of names.

    Raises:
        ConfigError: when the run has no readable labels.txt.
    """
    path = pathlib.Path(run_dir, LABELS_FILE)
    try:
        names = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise ConfigError(
            f"{run_dir} holds no {LABELS_FILE}: the class names are unknown; it is written when a run starts "
            "training, so train the run (the same command resumes it)"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ConfigError(
            f"{path}: cannot be read ({reason}): the class names are unknown; it is written when a run "
            "starts training, so train the run (the same command resumes it)"
        ) from None
    if not names:
        raise ConfigError(f"{path} is empty: the class names are unknown; train the run again")
    return names


def load_run_model(run_dir, model_path=None):
    """The run's config and its trained Keras model.

    Args:
        run_dir: the run directory.
        model_path: a saved Keras model to load instead of `<run>/model.keras`.

    Returns:
        (`Config`, uncompiled `keras.Model`).

    Raises:
        ConfigError: the run directory, its config.yaml or the model file is
            missing, or the config is invalid.
    """

    run_dir = pathlib.Path(run_dir)
    if not run_dir.is_dir():
        raise ConfigError(f"run directory not found: {run_dir}")
    if not (run_dir / CONFIG_FILE).is_file():
        raise ConfigError(f"{run_dir} holds no {CONFIG_FILE}: it is not a run directory")
    config = build_config(load_yaml(run_dir / CONFIG_FILE))
    model_path = pathlib.Path(model_path) if model_path else run_dir / KERAS_FILE
    if not model_path.is_file():
        raise ConfigError(
            f"{model_path} not found: the run is unfinished, or was trained with export.keras=false; "
            "train it to the end first (the same command resumes it)"
        )
    import keras

    import model_defs.layers  # noqa: F401  (registers the custom layers for deserialization)

    try:
        model = keras.models.load_model(model_path, compile=False)
    except Exception as exc:  # a damaged zip, a truncated weights file, a foreign file: Keras raises many kinds
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(
            f"{model_path}: cannot be loaded as a Keras model ({reason[:200]}): the file is damaged or not a "
            "model.keras of this project; train the run again (--overwrite) or pass another --model"
        ) from None
    return config, model
