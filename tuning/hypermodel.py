"""The search space of `config.tune` as a KerasTuner hypermodel (`tuning.space` maps values onto the config).

The model is built and compiled by the trainer's own `build_model` and
`compile_model`, and trained by the trainer's own core
(`pipeline.training.core`): a trial trains exactly the network and optimizer
that `python -m pipeline.train` would train with those values, with the same
epoch plan, callbacks and loop. A trial that diverges fails with the search's
advice (`TrialDiverged`), not the trainer's.
"""

import keras_tuner

from pipeline.training import core
from pipeline.training.callbacks import TrainingDiverged
from pipeline.training.core import plan_epochs
from pipeline.training.model import build_model, compile_model
from pipeline.training.strategy import scaled_learning_rate
from tuning.space import apply_values, declare


class TrialDiverged(keras_tuner.errors.FailedTrialError):
    """A trial's training loss became NaN or infinite: KerasTuner records the trial as FAILED (no retry: the same
    values diverge again) and the search goes on."""


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

        self.config = config
        self.data = data
        self.cluster = cluster
        self.plan = plan_epochs(config.train, data, cluster, in_memory=config.data.in_memory)

    @property
    def num_classes(self):
        return self.data.num_classes

    def trial_config(self, hp):
        """The experiment config with the values `hp` holds."""
        return apply_values(self.config, declare(hp, self.config.tune))

    def build(self, hp):
        """Returns the model for the values `hp` holds, compiled as the trainer compiles it."""

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

        Raises:
            TrialDiverged: the training loss became NaN or infinite. KerasTuner
                prints it with its traceback when it happens and keeps it in the
                trial's record; the search's table ends with it.
        """

        trial_config = self.trial_config(hp)
        verbose = self.config.train.verbose
        trial_callbacks = core.build_callbacks(
            trial_config, self.plan, scaled_learning_rate(trial_config.train), logging=list(callbacks),
            epochs=self.config.tune.epochs, verbose=verbose,
        )  # fmt: skip
        try:
            return core.fit(
                model, self.plan, self.cluster, trial_callbacks, epochs or self.config.tune.epochs,
                initial_epoch=initial_epoch,
            )  # fmt: skip
        except TrainingDiverged as exc:
            # The trainer's advice (start again with --overwrite) is not a search's.
            raise TrialDiverged(f"{exc.what}; {self.divergence_advice()}") from None

    def divergence_advice(self):
        """What to do about trials that diverge, in a search."""
        tuned = self.config.tune.learning_rate
        lower = (f"tune.learning_rate's max (now {tuned.max:g})" if tuned is not None
                 else f"train.optimizer.learning_rate (now {self.config.train.optimizer.learning_rate:g})")
        return (f"the trial is recorded as FAILED and the search goes on; if many trials diverge, lower {lower} "
                "or add train.schedule.warmup_epochs")
