"""The search space: hp.* values land in the right config keys, and nowhere else."""

import keras_tuner
import numpy as np
import pytest

from pipeline.config import load_config
from pipeline.errors import ConfigError
from tuning.space import (
    apply_values,
    check_search_space,
    declare,
    override_tree,
    search_ranges,
)

TINY = [
    "data.source=synthetic",
    "data.image_size=64",
    "data.resize=64",
    "data.num_examples=32",
    "model.fc_units=32",
    "train.batch_size=16",
    "train.verbose=0",
]


def tiny_config(*extra):
    return load_config(overrides=TINY + list(extra))


def fixed_hp(**values):
    """HyperParameters that hold the given values, as a trial's do."""
    hp = keras_tuner.HyperParameters()
    hp.values.update(values)
    return hp


def test_default_space_is_dropout_and_log_learning_rate():
    config = tiny_config()
    hp = keras_tuner.HyperParameters()
    declare(hp, config.tune)
    space = {p.name: p.get_config() for p in hp.space}
    assert list(space) == ["dropout", "learning_rate"]
    assert (space["dropout"]["min_value"], space["dropout"]["max_value"], space["dropout"]["sampling"]) == (0.3, 0.7, "linear")
    assert (space["learning_rate"]["min_value"], space["learning_rate"]["max_value"]) == (1e-4, 1e-1)
    assert space["learning_rate"]["sampling"] == "log"


def test_log_sampling_puts_the_median_at_the_geometric_mean():
    config = tiny_config("tune.momentum={min: 0.5, max: 0.9}")
    hp = keras_tuner.HyperParameters()
    declare(hp, config.tune)
    lr, momentum = hp.space[1], hp.space[2]
    # Log: the middle of the unit interval maps to sqrt(1e-4 * 1e-1); linear: to the midpoint.
    assert lr.prob_to_value(0.5) == pytest.approx(10**-2.5, rel=1e-12)
    assert lr.prob_to_value(1 / 3) == pytest.approx(1e-3, rel=1e-12)
    assert momentum.prob_to_value(0.5) == pytest.approx(0.7, rel=1e-12)
    samples = np.array([lr.random_sample(seed) for seed in range(2000)])
    assert samples.min() >= 1e-4 and samples.max() <= 1e-1
    # A third of log-uniform draws fall in each decade.
    assert abs(np.mean(samples < 1e-3) - 1 / 3) < 0.04
    assert abs(np.mean(samples < 1e-2) - 2 / 3) < 0.04


def test_values_land_in_their_config_keys():
    config = tiny_config("tune.momentum={min: 0.5, max: 0.95}", "tune.weight_decay={min: 1.0e-5, max: 1.0e-3, sampling: log}")
    values = declare(fixed_hp(dropout=0.41, learning_rate=0.0123, momentum=0.77, weight_decay=3e-4), config.tune)
    assert values == {"dropout": 0.41, "learning_rate": 0.0123, "momentum": 0.77, "weight_decay": 3e-4}
    tuned = apply_values(config, values)
    assert tuned.model.dropout == 0.41
    assert tuned.train.optimizer.learning_rate == 0.0123
    assert tuned.train.optimizer.momentum == 0.77
    assert tuned.train.optimizer.weight_decay == 3e-4
    # Nothing else changes.
    untouched = config.to_dict(), tuned.to_dict()
    for tree in untouched:
        tree["model"].pop("dropout")
        for key in ("learning_rate", "momentum", "weight_decay"):
            tree["train"]["optimizer"].pop(key)
    assert untouched[0] == untouched[1]


def test_null_ranges_are_not_searched_and_keep_the_config_value():
    config = tiny_config("tune.dropout=null", "train.optimizer.momentum=0.8")
    assert list(search_ranges(config.tune)) == ["learning_rate"]
    hp = fixed_hp(learning_rate=0.05)
    assert declare(hp, config.tune) == {"learning_rate": 0.05}
    assert [p.name for p in hp.space] == ["learning_rate"]
    tuned = apply_values(config, {"learning_rate": 0.05})
    assert (tuned.model.dropout, tuned.train.optimizer.momentum) == (0.5, 0.8)


def test_override_tree_holds_only_the_tuned_keys_in_config_shape():
    values = {"dropout": 0.41, "learning_rate": 0.0123, "tuner/epochs": 3, "tuner/trial_id": "0001"}
    assert override_tree(values) == {"model": {"dropout": 0.41}, "train": {"optimizer": {"learning_rate": 0.0123}}}
    assert override_tree({"momentum": 0.5}) == {"train": {"optimizer": {"momentum": 0.5}}}


def test_inverted_and_empty_ranges_are_config_errors():
    with pytest.raises(ConfigError, match=r"tune\.learning_rate.*inverted range"):
        tiny_config("tune.learning_rate={min: 0.1, max: 0.001}")
    with pytest.raises(ConfigError, match=r"tune\.dropout.*empty or inverted range"):
        tiny_config("tune.dropout={min: 0.5, max: 0.5}")
    with pytest.raises(ConfigError, match=r"tune\.learning_rate.*log-sampled range needs min > 0"):
        tiny_config("tune.learning_rate={min: 0.0, max: 0.1, sampling: log}")


def test_range_ends_must_be_valid_config_values():
    with pytest.raises(ConfigError, match=r"^tune\.dropout: the range end 1\.0 is not a valid model\.dropout"):
        check_search_space(tiny_config("tune.dropout={min: 0.3, max: 1.0}"))
    with pytest.raises(ConfigError, match=r"^tune\.momentum: the range end 1\.5 is not a valid train\.optimizer\.momentum"):
        check_search_space(tiny_config("tune.momentum={min: 0.5, max: 1.5}"))
    with pytest.raises(ConfigError, match=r"^tune: nothing to search"):
        check_search_space(tiny_config("tune.dropout=null", "tune.learning_rate=null"))
    check_search_space(tiny_config())  # the default space is valid
