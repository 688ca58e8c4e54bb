"""The search space of `config.tune`: which config key each tuned value replaces.

Each non-null range in `config.tune` becomes one `hp.Float` of the same name,
and its value replaces one key of the experiment config:

    tune.dropout        -> model.dropout
    tune.learning_rate  -> train.optimizer.learning_rate
    tune.momentum       -> train.optimizer.momentum
    tune.weight_decay   -> train.optimizer.weight_decay

This module imports neither KerasTuner nor TensorFlow: the search's command line
and its checks run before either loads.
"""

from pipeline.errors import ConfigError

# Tuned name -> the dotted config key its value replaces.
TUNED_KEYS = {
    "dropout": "model.dropout",
    "learning_rate": "train.optimizer.learning_rate",
    "momentum": "train.optimizer.momentum",
    "weight_decay": "train.optimizer.weight_decay",
}


def search_ranges(tune):
    """The ranges that are searched, in a fixed order.

    Args:
        tune: a `pipeline.config.TuneConfig`.

    Returns:
        A dict tuned name -> `SearchRange`, for each range that is not null.
    """
    return {name: getattr(tune, name) for name in TUNED_KEYS if getattr(tune, name) is not None}


def declare(hp, tune):
    """Declares one `hp.Float` per searched range and returns their values.

    Args:
        hp: a `keras_tuner.HyperParameters`.
        tune: a `pipeline.config.TuneConfig`.

    Returns:
        A dict tuned name -> the value `hp` holds for it in this trial.
    """
    return {
        name: hp.Float(name, min_value=r.min, max_value=r.max, sampling=r.sampling)
        for name, r in search_ranges(tune).items()
    }


def override_tree(values):
    """Tuned values as a config override in the shape of the config tree.

    Args:
        values: a dict tuned name -> value; names not in `TUNED_KEYS` (such as
            Hyperband's `tuner/epochs`) are ignored.

    Returns:
        A nested dict, e.g. {"model": {"dropout": 0.4}, "train": {"optimizer":
        {"learning_rate": 0.01}}}, holding only the tuned keys.
    """
    tree = {}
    for name, key in TUNED_KEYS.items():
        if name not in values:
            continue
        node = tree
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = float(values[name])
    return tree


def apply_values(config, values):
    """The experiment config with tuned values in place.

    Args:
        config: a validated `Config`.
        values: a dict tuned name -> value (other names are ignored).

    Returns:
        A new, validated `Config` (`Config.derive`).

    Raises:
        ConfigError: a value is not valid for the key it replaces.
    """
    return config.derive({key: float(values[name]) for name, key in TUNED_KEYS.items() if name in values})


def check_search_space(config):
    """Checks, before any trial, that every range only yields valid configs.

    Both ends of each range are applied to the config, so a range such as
    tune.dropout up to 1.0 (model.dropout must be below 1) stops here rather
    than as a failed trial.

    Raises:
        ConfigError: no range is set, or one end of a range is not a valid
            value of its config key; the message names the tune key.
    """
    ranges = search_ranges(config.tune)
    if not ranges:
        raise ConfigError(f"tune: nothing to search; set at least one of {', '.join('tune.' + n for n in TUNED_KEYS)}")
    for name, r in ranges.items():
        for end in (r.min, r.max):
            try:
                apply_values(config, {name: end})
            except ConfigError as exc:
                raise ConfigError(
                    f"tune.{name}: the range end {end!r} is not a valid {TUNED_KEYS[name]} ({exc})"
                ) from None
