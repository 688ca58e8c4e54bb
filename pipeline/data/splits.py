"""What every data source hands on: the unbatched train and validation splits of one dataset."""

from __future__ import (
    annotations,  # the fields name tf.data.Dataset; TensorFlow loads only where one is built
)

import dataclasses
from typing import Optional

from pipeline.errors import ConfigError


class DataError(ConfigError):
    """The configured data cannot be found or read; the message says what to do."""


@dataclasses.dataclass(frozen=True)
class Source:
    """Unbatched splits of one dataset, plus what the model and export need."""

    train: tf.data.Dataset  # noqa: F821 (a string under the future import)
    validation: tf.data.Dataset  # noqa: F821
    class_names: list
    train_size: int
    validation_size: int
    encoded: bool = False  # elements are (bytes, label, name) rather than (image, label)
    shuffled: bool = False  # train comes in a new full random order every epoch already
    sharded: bool = False  # train holds this worker's share only (multi-worker, see folder_source)
    # Bytes the training split takes as its elements are stored (encoded files, or uint8 arrays);
    # None when unknown. Decides data.cache: auto.
    train_bytes: Optional[int] = None

    @property
    def num_classes(self):
        return len(self.class_names)
