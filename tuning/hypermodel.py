"""The search space of `config.tune` as a KerasTuner hypermodel.

Each non-null range in `config.tune` becomes one `hp.Float` of the same name,
and its value replaces one key of the experiment config:

    tune.dropout        -> model.dropout
    tune.learning_rate  -> train.optimizer.learning_rate
    tune.momentum       -> train.optimizer.momentum
    tune.weight_decay   -> train.optimizer.weight_decay

The model is then built and compiled by the trainer's own `build_model` and
`compile_model`: a trial trains exactly the network and optimizer that
`python -m pipeline.train` would train with those values.
"""

import keras_tuner

from pipeline.config import ConfigError, build_config

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
        A new, validated `Config`.

    Raises:
        ConfigError: a value is not valid for the key it replaces.
    """
    tree = config.to_dict()  # a fresh plain dict, safe to change
    for name, key in TUNED_KEYS.items():
        if name in values:
            *parents, leaf = key.split(".")
            node = tree
            for part in parents:
                node = node[part]
            node[leaf] = float(values[name])
    return build_config(tree)


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
    """Builds and trains the experiment's AlexNet with one trial's values.

    Args:
        config: the validated experiment `Config`; its `tune` section is the
            search space.
        num_classes: classes of the data the trials train on.
        steps_per_epoch: training steps in one epoch (for per-step schedules).
    """

    def __init__(self, config, num_classes, steps_per_epoch=1):
        super().__init__(name="alexnet")
        self.config = config
        self.num_classes = num_classes
        self.steps_per_epoch = steps_per_epoch

    def trial_config(self, hp):
        """The experiment config with the values `hp` holds."""
        return apply_values(self.config, declare(hp, self.config.tune))

    def build(self, hp):
        """Returns the model for the values `hp` holds, compiled as the trainer compiles it."""
        from pipeline.train import build_model, compile_model

        trial_config = self.trial_config(hp)
        return compile_model(build_model(trial_config, self.num_classes), trial_config, self.num_classes)

    def fit(self, hp, model, *args, callbacks=(), **kwargs):
        """Trains one trial with the trainer's divergence check and learning-rate schedule.

        Progress output follows `train.verbose` (the tuner's own `verbose`
        only switches its per-trial summaries).

        The schedule depends on the trial's learning rate, so it is made here
        rather than passed to `search` with the callbacks every trial shares.
        It spans `tune.epochs`, the longest a trial trains (Hyperband resumes
        a trial at its `initial_epoch`, where the schedule continues).

        Returns:
            The `History` of `model.fit`.
        """
        from pipeline.callbacks import StopOnNaN
        from pipeline.distribute import scaled_learning_rate
        from pipeline.schedules import PlateauSchedule, schedule_callbacks

        trial_config = self.trial_config(hp)
        schedule = schedule_callbacks(
            trial_config.train.schedule,
            scaled_learning_rate(trial_config.train),
            self.config.tune.epochs,
            self.steps_per_epoch,
            verbose=1 if self.config.train.verbose else 0,
        )
        plateau = [c for c in schedule if isinstance(c, PlateauSchedule)]
        per_step = [c for c in schedule if not isinstance(c, PlateauSchedule)]
        # The trainer's order: divergence check and rate first, the logging in
        # between, the plateau rule after the epoch is logged.
        callbacks = [StopOnNaN(), *per_step, *callbacks, *plateau]
        kwargs["verbose"] = self.config.train.verbose
        return model.fit(*args, callbacks=callbacks, **kwargs)
