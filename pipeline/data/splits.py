"""What every data source hands on: the unbatched train and validation splits of one dataset."""

from __future__ import (
    annotations,  # the fields name tf.data.Dataset; TensorFlow loads only where one is built
)

import dataclasses
from typing import Callable, Optional

import numpy as np

from pipeline.errors import ConfigError

SPLITS = ("train", "validation")


class DataError(ConfigError):
    """The configured data cannot be found or read; the message says what to do."""


@dataclasses.dataclass(frozen=True)
class SplitContents:
    """What one split holds, as far as its source can tell; `pipeline.data.identity` compares data by it.

    A folder source knows its files: `name_hashes` holds a 64-bit hash of each
    file's name relative to the split's root (`pipeline.data.identity.name_hashes`),
    in any order, for all of the split's files (before any multi-worker
    sharding, so that every worker has the same). Other sources describe a
    split by `digest` alone: a hex digest of what defines it (a TFDS name,
    version and split; a prepared dataset's manifest and shards; in-memory
    data's arrays or parameters).
    """

    count: int  # files (folder sources) or examples
    name_hashes: Optional[np.ndarray] = None  # uint64, one a file
    digest: Optional[str] = None  # when there are no name hashes


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
    # (seed, skip=0, repeat=False) -> the training split as `train` holds it, in the order of `seed`: a
    # source with an order of its own (file names, shards). With `shuffled`, all of its examples shuffled,
    # the first `skip` left out before anything is read, and with `repeat` pass after pass. None: in-memory
    # data, one order (`train`), which the pipeline shuffles. `pipeline.data.pipelines.train_pipeline` calls
    # it once an epoch with the epoch's seed.
    train_epoch: Optional[Callable] = None
    # {"train": SplitContents, "validation": SplitContents}: what each whole split holds (see
    # SplitContents); None where unknown.
    contents: Optional[dict] = None

    @property
    def num_classes(self):
        return len(self.class_names)
