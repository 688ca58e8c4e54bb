"""The search space of `config.tune` as a KerasTuner hypermodel.

Each non-null range in `config.tune` becomes one `hp.Float` of the same name,
and its value replaces one key of the experiment config:

    tune.dropout        -> model.dropout
    tune.learning_rate  -> train.optimizer.learning_rate
    tune.momentum       -> train.optimizer.momentum
    tune.weight_decay   -> train.optimizer.weight_decay

The model is then built and compiled by the trainer's own `build_model` and
`compile_model`, and trained by the trainer's own core
(`pipeline.training.core`): a trial trains exactly the network and optimizer
that `python -m pipeline.train` would train with those values, with the same
epoch plan, callbacks and loop.
"""

import keras_tuner

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


class AlexNetHyperModel(keras_tuner.HyperModel):
    """Builds and trains the experiment's AlexNet with one trial's values, through the trainer's core.

    Args:
        config: the validated experiment `Config`; its `tune` section is the
            search space.
        data: the `pipeline.data.pipelines.Datasets` every trial reads (built
            once for the search).
        cluster: the `pipeline.training.strategy.Cluster` each trial trains under.
    """

    def __init__(self, config, data, cluster):
        super().__init__(name="alexnet")
        from pipeline.training.core import plan_epochs

        self.config = config
        self.data = data
        self.cluster = cluster
        self.plan = plan_epochs(config.train, data, cluster)

    @property
    def num_classes(self):
        return self.data.num_classes

    def trial_config(self, hp):
        """The experiment config with the values `hp` holds."""
        return apply_values(self.config, declare(hp, self.config.tune))

    def build(self, hp):
        """Returns the model for the values `hp` holds, compiled as the trainer compiles it."""
        from pipeline.training.model import build_model, compile_model

        trial_config = self.trial_config(hp)
        return compile_model(build_model(trial_config, self.num_classes), trial_config, self.num_classes)

    def fit(self, hp, model, *args, callbacks=(), epochs=None, initial_epoch=0, **kwargs):
        """Trains one trial with the trainer's core: its epoch plan, callbacks in order, and loop.

        KerasTuner's callbacks (the trial's TensorBoard with the HParams
        dashboard, the best-epoch checkpoint) take the place of the run's
        logging. The schedule spans `tune.epochs`, the longest a trial trains
        (Hyperband resumes a trial at its `initial_epoch`, where the schedule
        continues). Progress output follows `train.verbose`.

        Returns:
            The `History` of the trial's training.
        """
        from pipeline.training import core
        from pipeline.training.strategy import scaled_learning_rate

        trial_config = self.trial_config(hp)
        verbose = self.config.train.verbose
        trial_callbacks = core.build_callbacks(
            trial_config, self.plan, scaled_learning_rate(trial_config.train), logging=list(callbacks),
            epochs=self.config.tune.epochs, verbose=verbose,
        )  # fmt: skip
        return core.fit(
            model, self.plan, self.cluster, trial_callbacks, epochs or self.config.tune.epochs,
            initial_epoch=initial_epoch, verbose=verbose,
        )  # fmt: skip
