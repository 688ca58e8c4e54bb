"""Keras models on disk: written whole or not at all, after checking that the disk can hold them."""

import pathlib

import numpy as np

from pipeline.storage.files import atomic_output


def model_bytes(model, optimizer=True):
    """Bytes of the model's variables (and its optimizer's): about the size of its saved files.

    Args:
        model: a Keras model.
        optimizer: count the optimizer's variables too (model.keras and weights files hold them).
    """

    variables = list(model.weights)
    if optimizer and getattr(model, "optimizer", None) is not None:
        variables += list(model.optimizer.variables)
    return sum(int(np.prod(v.shape)) * np.dtype(v.dtype).itemsize for v in variables)


def save_keras(model, path):
    """`model.save(path)`, whole or not at all: through `.tmp-<name>` beside it, after a free-space check.

    Returns:
        `pathlib.Path` of the file.

    Raises:
        DiskFull: the disk cannot hold the file (nothing is left under `path` or its temporary name).
    """
    with atomic_output(path, needed=model_bytes(model)) as tmp:
        model.save(tmp)
    return pathlib.Path(path)


def save_weights(model, path):
    """`model.save_weights(path)` (weights and optimizer state), whole or not at all, like `save_keras`."""
    with atomic_output(path, needed=model_bytes(model)) as tmp:
        model.save_weights(tmp, overwrite=True)
    return pathlib.Path(path)
