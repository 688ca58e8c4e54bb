"""Learning-rate schedules: the paper's plateau rule, step, cosine, and linear warm-up.

The paper (section 5) starts at 0.01 and divides the learning rate by 10 "when
the validation error rate stopped improving with the current learning rate",
three times in all, over roughly 90 epochs. That is `PlateauSchedule`. `step`
and `cosine` are the usual fixed alternatives; any schedule may start with
`warmup_epochs` of linear warm-up (Goyal et al., 2017), which large global
batches with `lr_scaling: linear` need.

Both callbacks write the optimizer's learning-rate variable, so the current
rate is part of every backup (`pipeline.training.backup.RunBackup`) and survives a
restart; `PlateauSchedule` also hands its counters to the backup.
"""

import math

import keras


def learning_rate_at(schedule, base_lr, epochs, epoch, step, steps_per_epoch):
    """The learning rate of one training step under a fixed (step-driven) schedule.

    Args:
        schedule: `pipeline.config.ScheduleConfig`.
        base_lr: the rate after warm-up (already scaled for the batch size).
        epochs: epochs in the whole run.
        epoch: the current epoch, from 0.
        step: the current step within the epoch, from 0.
        steps_per_epoch: training steps in one epoch.

    Returns:
        The rate as a float, or None when the schedule is not driven by steps
        (plateau after its warm-up: `PlateauSchedule` owns the rate then).
    """
    steps_per_epoch = max(1, steps_per_epoch)
    done = epoch + (step + 1) / steps_per_epoch  # epochs completed at the end of this step
    warmup = schedule.warmup_epochs
    if warmup and epoch < warmup:
        # Linear from base/(warmup*steps) at the first step to base at the last warm-up step.
        return base_lr * min(1.0, done / warmup)
    name = schedule.name
    if name == "constant":
        return base_lr
    if name == "plateau":
        return None
    if name == "step":
        # Milestones are epoch numbers counted from 0: epochs 0..m-1 run at the
        # base rate, epoch m onwards at base * factor (torch's MultiStepLR).
        reductions = sum(1 for milestone in schedule.milestones if milestone <= epoch)
        return base_lr * schedule.factor**reductions
    if name == "cosine":
        span = max(1, epochs - warmup)
        progress = min(1.0, (epoch - warmup + step / steps_per_epoch) / span)
        low = schedule.min_learning_rate
        return low + (base_lr - low) * 0.5 * (1.0 + math.cos(math.pi * progress))
    raise ValueError(f"unknown schedule {name!r}")


class ScheduledLearningRate(keras.callbacks.Callback):
    """Sets the optimizer's learning rate before every training step.

    Drives `constant`, `step` and `cosine`, and the warm-up of every schedule
    (including `plateau`, which takes over after it).

    Args:
        schedule: `pipeline.config.ScheduleConfig`.
        base_lr: the rate after warm-up.
        epochs: epochs in the whole run.
        steps_per_epoch: training steps in one epoch.
    """

    def __init__(self, schedule, base_lr, epochs, steps_per_epoch):
        super().__init__()
        self.schedule = schedule
        self.base_lr = base_lr
        self.epochs = epochs
        self.steps_per_epoch = steps_per_epoch
        self._epoch = 0
        self._current = None

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch
        self._current = None  # re-read: a restore or the plateau rule may have changed it

    def on_train_batch_begin(self, batch, logs=None):
        if batch >= self.steps_per_epoch:
            # model.fit probes a dataset of unknown length one step past its end;
            # that step never trains, and its rate must not be the one logged.
            return
        rate = learning_rate_at(self.schedule, self.base_lr, self.epochs, self._epoch, batch, self.steps_per_epoch)
        if rate is not None and rate != self._current:
            self.model.optimizer.learning_rate = rate
            self._current = rate


def plateau_mode(monitor):
    """'min' for errors and losses, 'max' for accuracies.

    Explicit because Keras' "auto" mode asks the metric, and the top-k error
    metric inherits "higher is better" from the accuracy it derives from.
    """
    return "max" if "accuracy" in monitor or monitor.endswith("acc") else "min"


class PlateauSchedule(keras.callbacks.ReduceLROnPlateau):
    """The paper's rule: divide by 1/factor when `monitor` stops improving, `max_reductions` times.

    Differs from `keras.callbacks.ReduceLROnPlateau` in three ways: it counts
    its reductions (Keras' `min_lr` clamps the rate instead, which with a
    rounding margin allows a spurious extra step), it waits for the warm-up
    to end, and it can save and restore its counters (`get_state`,
    `set_state`) so a resumed run keeps its patience and its count.

    Args:
        monitor: the logged quantity, e.g. "val_top1_error".
        factor: multiplier of each reduction (paper: 0.1).
        patience: epochs without improvement before a reduction.
        max_reductions: reductions in all (paper: 3).
        warmup_epochs: epochs at the start that neither count nor reduce.
        verbose: 1 prints each reduction.
    """

    def __init__(self, monitor, factor, patience, max_reductions, warmup_epochs=0, verbose=1):
        super().__init__(monitor=monitor, factor=factor, patience=patience, mode=plateau_mode(monitor), verbose=verbose)
        self.max_reductions = max_reductions
        self.warmup_epochs = warmup_epochs
        self.reductions = 0

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        self.reductions = 0

    def on_epoch_end(self, epoch, logs=None):
        if epoch < self.warmup_epochs or self.reductions >= self.max_reductions:
            return
        before = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
        super().on_epoch_end(epoch, logs)
        if float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)) < before:
            self.reductions += 1

    def get_state(self):
        """The counters a resumed run needs, as plain JSON values."""
        return {
            "best": None if self.best is None else float(self.best),
            "wait": int(self.wait),
            "cooldown_counter": int(self.cooldown_counter),
            "reductions": int(self.reductions),
        }

    def set_state(self, state):
        """Restores what `get_state` returned."""
        self.best = state["best"]
        self.wait = state["wait"]
        self.cooldown_counter = state["cooldown_counter"]
        self.reductions = state["reductions"]


def schedule_callbacks(schedule, base_lr, epochs, steps_per_epoch, verbose=1):
    """The callbacks that carry out `schedule`.

    Args:
        schedule: `pipeline.config.ScheduleConfig`.
        base_lr: the rate after warm-up (already scaled for the batch size).
        epochs: epochs in the whole run.
        steps_per_epoch: training steps in one epoch.
        verbose: 1 prints each plateau reduction.

    Returns:
        A list of callbacks (empty for a constant rate without warm-up).
    """
    callbacks = []
    if schedule.name != "constant" or schedule.warmup_epochs:
        callbacks.append(ScheduledLearningRate(schedule, base_lr, epochs, steps_per_epoch))
    if schedule.name == "plateau":
        callbacks.append(
            PlateauSchedule(
                schedule.monitor,
                schedule.factor,
                schedule.patience,
                schedule.max_reductions,
                warmup_epochs=schedule.warmup_epochs,
                verbose=verbose,
            )
        )
    return callbacks
