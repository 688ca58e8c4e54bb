"""The experiment config: one typed, frozen tree loaded from YAML and overrides.

Precedence is defaults < each `--config` file in order (each on its `base:`) <
each `--set key=value`. Every field is checked (type, range, unknown keys)
before anything is written, and a bad value ends in one `ConfigError` naming
its dotted key. The tree is in `pipeline.config.schema`, the files in
`pipeline.config.files`. This package does not import TensorFlow, so a bad
config fails in a fraction of a second.
"""

import re

import yaml
from pydantic import ValidationError

from pipeline.config.files import (
    CONFIG_DIR,
    DEFAULT_CONFIG,
    MAX_CONFIG_BYTES,
    MAX_VALUES,
    config_path,
    deep_merge,
    load_layered,
    load_yaml,
    parse_override,
    read_yaml,
    shipped_configs,
)
from pipeline.config.schema import (
    LRN_MIN_BETA,
    LRN_MIN_K,
    LRN_N_RANGE,
    NAME_PATTERN,
    AugmentConfig,
    Config,
    DataConfig,
    ExportConfig,
    ModelConfig,
    OptimizerConfig,
    ScheduleConfig,
    SearchRange,
    TrainConfig,
    TuneConfig,
    format_errors,
)
from pipeline.errors import ConfigError

__all__ = [
    "CONFIG_DIR", "DEFAULT_CONFIG", "MAX_CONFIG_BYTES", "MAX_VALUES", "LRN_MIN_BETA", "LRN_MIN_K", "LRN_N_RANGE",
    "NAME_PATTERN", "PRESENTATION_KEYS", "AugmentConfig", "Config", "DataConfig", "ExportConfig", "ModelConfig",
    "OptimizerConfig", "ScheduleConfig", "SearchRange", "TrainConfig", "TuneConfig", "build_config", "comparable",
    "config_fingerprint", "config_path", "load_config", "load_layered", "load_yaml", "parse_override", "read_yaml",
    "shipped_configs",
]


def build_config(data):
    """Validates a plain dict into a `Config`.

    Raises:
        ConfigError: naming every dotted key that is unknown, mistyped or out of range.
    """
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_errors(exc)) from None


def load_config(paths=(), overrides=()):
    """Loads the experiment config.

    Args:
        paths: YAML files or names of shipped configs (`config_path`), later
            ones overriding earlier ones; none means the shipped quickstart.
        overrides: `dotted.key=value` strings applied last.

    Returns:
        A validated, frozen `Config` whose `name` is set (from the files, or
        the first file's stem).

    Raises:
        ConfigError: on a missing file, bad YAML, an unknown key, a wrong type
            or an impossible value.
    """
    paths = [config_path(p) for p in paths] or [DEFAULT_CONFIG]
    merged = {}
    for path in paths:
        merged = deep_merge(merged, load_layered(path))
    for text in overrides:
        merged = deep_merge(merged, parse_override(text))
    if merged.get("name") is None:
        # The file name, made one safe path component ("my exp.yaml" -> "my_exp").
        merged["name"] = re.sub(r"[^A-Za-z0-9._-]", "_", paths[0].stem).strip(".") or "run"
    return build_config(merged)


# Keys that say how a run reports itself or waits, not what it trains: a run (or a search) resumes with other
# values, and the workers of a cluster may differ in them.
PRESENTATION_KEYS = ("train.verbose", "train.log_interval", "train.profile", "train.cluster_timeout")


def comparable(config, ignore=PRESENTATION_KEYS):
    """The config as a nested dict without the dotted keys `ignore`, for comparing a run with its saved config."""
    tree = config.to_dict()
    for key in ignore:
        *parents, leaf = key.split(".")
        node = tree
        for part in parents:
            node = node[part]
        node.pop(leaf)
    return tree


def config_fingerprint(config, ignore=PRESENTATION_KEYS):
    """The config as a canonical string without the keys `ignore`, for comparing a run with its saved config."""
    return yaml.safe_dump(comparable(config, ignore), sort_keys=True)
