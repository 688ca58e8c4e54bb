"""The search directory: its layout, safe against clobbering and concurrent use (as `pipeline.storage.rundir`).

runs/<name>_search/
    config.yaml      the resolved experiment config of the search
    oracle.json, <tuner id>.json, trial_<id>/{trial.json, build_config.json, checkpoint.weights.h5}
                     KerasTuner's state: values, scores and best weights of each trial
    logs/<id>/execution0/
                     TensorBoard per trial, with the HParams dashboard
    best.yaml        the best trial's values as a config override
"""

import pathlib

from pipeline.config import PRESENTATION_KEYS, build_config, comparable, load_yaml
from pipeline.errors import ConfigError
from pipeline.storage.files import (
    CONFIG_FILE,
    FILE,
    TEMPORARY,
    atomic_write_text,
    remove_entries,
    tensorboard_tree,
)
from pipeline.storage.locks import DirectoryLock, OwnedDirectory
from pipeline.storage.rundir import changed_keys

BEST_FILE = "best.yaml"
LOG_DIR = "logs"

# Keys that may change between a search and its resumption: the budget can
# grow, and progress output is not part of the experiment.
RESUMABLE_CHANGES = ("tune.max_trials", *PRESENTATION_KEYS)
# Everything a search writes into its directory, at every depth: --overwrite replaces only such a directory.
SEARCH_TREE = {
    CONFIG_FILE: FILE, BEST_FILE: FILE, "*.json": FILE, **TEMPORARY,
    "trial_*": {"trial.json": FILE, "build_config.json": FILE, "checkpoint*": FILE, **TEMPORARY},
    LOG_DIR: tensorboard_tree(),
}  # fmt: skip


def check_resumable(search_dir, config):
    """Refuses to resume a search that was started with another config.

    KerasTuner reloads its search space and trials from the directory and
    would silently keep the old ranges, so any difference other than
    `RESUMABLE_CHANGES` is an error.

    Raises:
        ConfigError: naming the keys that differ.
    """
    path = pathlib.Path(search_dir) / CONFIG_FILE
    if not path.is_file():
        return
    try:
        saved = build_config(load_yaml(path))
    except ConfigError as exc:
        raise ConfigError(f"{path} is not a config of this project ({exc}); choose another --dir") from None
    old, new = comparable(saved, RESUMABLE_CHANGES), comparable(config, RESUMABLE_CHANGES)
    if old != new:
        raise ConfigError(
            f"{search_dir} holds a search with another config (differs in: {', '.join(changed_keys(old, new))}); "
            "pass --overwrite to start afresh, or choose another --dir"
        )


class SearchDir(OwnedDirectory):
    """A search directory opened by the process that owns it (a single search, or the chief's).

    Use as a context manager: entering locks the directory itself (a second
    search on it, under any path or symbolic link, is refused; `--overwrite`
    cannot delete a live search) and checks what it holds, writing nothing.
    `begin()`, called once the data has been found, deletes the old search
    (with `overwrite`) and writes config.yaml. Workers of a distributed search
    share the chief's directory and do not open it.

    Args:
        path: the directory.
        config: the experiment `Config`.
        overwrite: start afresh, deleting a search of this project there.
    """

    kind, tree = "search", SEARCH_TREE

    def __init__(self, path, config, overwrite=False):
        lock = DirectoryLock(path, f"{path} is in use by another search: wait for it to finish, or choose another --dir")
        super().__init__(path, config, overwrite, lock)

    def _check_saved(self):
        check_resumable(self.path, self.config)

    def begin(self):
        """Makes the directory this search's: the old search deleted (with overwrite), config.yaml written."""
        if self.overwrite:
            remove_entries(self.path, SEARCH_TREE)
        atomic_write_text(self.path / CONFIG_FILE, self.config.to_yaml())
        self.begun = True
