"""The one training core: the epoch plan, the ordered callbacks, and `fit` or the multi-worker loop.

`pipeline.train` (through `pipeline.training.run`), every KerasTuner trial
(`tuning.hypermodel`) and the benchmark's real-fit figure (it runs
`pipeline.training.run.train`) train through these three functions, so a fix
made here reaches all of them:

    plan = plan_epochs(config.train, data, cluster)     # what each epoch reads
    callbacks = build_callbacks(config, plan, rate, logging=[...], backup=...)
    history = fit(model, plan, cluster, callbacks, epochs=config.train.epochs)
"""

import dataclasses
import functools
import math

from pipeline.training.loop import Position, TrainingLoop


@dataclasses.dataclass(frozen=True)
class EpochPlan:
    """What each epoch of training reads, as the loop gets it.

    Attributes:
        train_for: (epoch, first_step) -> the batched training dataset of that
            epoch from that step on, a function of the seed and the epoch
            alone (`pipeline.data.pipelines.Datasets.train_for`): a resumed
            run reads what an uninterrupted one reads.
        validation: the batched validation dataset, truncated to
            train.validation_steps batches.
        steps_per_epoch: training steps in one epoch.
        images_per_epoch: training images in one epoch (throughput).
        repeated: whether an epoch is `steps_per_epoch` steps of a stream
            that repeats the data (train.steps_per_epoch), or one pass.
        exact: whether `steps_per_epoch` is exact; False when undecodable
            files, skipped as they are met, may shorten a pass over files.
        element_spec: the training batches' (images, labels) spec.
    """

    train_for: object
    validation: object
    steps_per_epoch: int
    images_per_epoch: int
    repeated: bool
    exact: bool = True
    element_spec: object = None

    def train_stream(self, epoch, first_step, epochs):
        """The batches of epochs `epoch` (from `first_step`) to `epochs` - 1 in one dataset, each batch carrying its
        epoch as a third component: the training loop reads a session through one iterator (`loop._Passes`)."""
        parts = [_marked(self.train_for(e, first_step if e == epoch else 0), e) for e in range(epoch, epochs)]
        return functools.reduce(lambda stream, part: stream.concatenate(part), parts)

    def validation_stream(self, passes):
        """`passes` passes over `validation` in one dataset, each batch carrying the index of its pass."""
        import tensorflow as tf

        return tf.data.Dataset.range(passes).flat_map(lambda index: _marked(self.validation, index))


def plan_epochs(train_config, data, cluster, in_memory=False):
    """The epoch plan of `data` (`pipeline.data.pipelines.Datasets`) under `train_config` and `cluster`.

    `in_memory` (`DataConfig.in_memory`): the source has no files to skip, so
    a pass over it has exactly the planned steps.
    """
    import tensorflow as tf

    repeated = bool(train_config.steps_per_epoch)
    batch = train_config.batch_size
    validation_ds = data.validation
    if train_config.validation_steps:
        # The first batches, every epoch.
        validation_ds = validation_ds.take(train_config.validation_steps)
    policy = None
    # Examples each worker's pipeline yields for one step: the global batch, or its share when the
    # workers read data of their own (a folder's files split between them, or record files).
    per_step = batch
    if cluster.multi_worker:
        if data.split_by_files or data.train_sharded:
            per_step = batch // cluster.workers
        if not data.split_by_files:
            # No record files to split between workers (in memory, or a list of
            # image files in one op): every worker runs the pipeline and keeps its
            # share of each batch. A folder's training files are already split
            # (`build_datasets(shard=...)`), so each worker decodes only its own.
            # tfds: and records: sources keep tf.data's AUTO policy, which gives
            # each worker its own record files.
            kind = tf.data.experimental.AutoShardPolicy
            policy = kind.OFF if data.train_sharded else kind.DATA
            validation_ds = _shard_policy(validation_ds, kind.DATA)
    steps = train_config.steps_per_epoch or math.ceil(data.train_size / batch)

    def train_for(epoch, first_step=0):
        # A repeated stream is cut to the epoch's steps, so that the epoch's iterator ends with its last batch.
        count = (steps - first_step) * per_step if repeated else None
        dataset = data.train_for(epoch, first_step * per_step, repeat=repeated, count=count)
        return _shard_policy(dataset, policy) if policy is not None else dataset

    images = steps * batch if repeated else data.train_size
    return EpochPlan(train_for, validation_ds, steps, images, repeated, exact=repeated or in_memory,
                     element_spec=data.validation.element_spec)


def _marked(dataset, index):
    """Batches (images, labels) -> (images, labels, `index` a label): the pass each batch belongs to."""
    import tensorflow as tf

    return dataset.map(lambda images, labels: (images, labels, tf.fill(tf.shape(labels)[:1], tf.cast(index, tf.int64))))


def _shard_policy(dataset, kind):
    import tensorflow as tf

    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = kind
    return dataset.with_options(options)


def build_callbacks(config, plan, learning_rate, logging=(), backup=None, epochs=None, verbose=1, checkpoint=None):
    """The callbacks of a training run, in the order they must run.

    StopOnNaN and StopOnEmptyEpoch first; the per-step learning-rate schedule;
    ten-crop validation (with train.validation_crops: 10), which adds to the
    logs the others read; EpochStats, which adds the learning rate and
    images/s; the progress lines, which show them; then `logging` (TensorBoard
    and pictures for a run, KerasTuner's callbacks for a trial); the plateau
    schedule, after the logging, so
    that the logged rate is the one the epoch used; the best checkpoint; the
    backup last: it records what the others wrote and restores state after
    their resets.

    Args:
        config: the run's (or trial's) `Config`.
        plan: its `EpochPlan`.
        learning_rate: the base rate (after lr_scaling).
        logging: callbacks that read the epoch's logs.
        backup: a `pipeline.training.backup.RunBackup`, told about the
            callbacks whose state it must save; None for none (a trial).
        epochs: the span of the schedule (None: train.epochs).
        verbose: `train.verbose` (0 silent; auto, 1 or 2: see
            `pipeline.training.progress`); 0 also silences the plateau
            schedule's messages.
        checkpoint: a `pipeline.training.record.BestCheckpoint`, or None.

    Returns:
        A list of Keras callbacks.
    """
    from pipeline.evaluation.ten_crop import TenCropValidation
    from pipeline.training.callbacks import (
        EpochStats,
        StopOnEmptyEpoch,
        StopOnNaN,
    )
    from pipeline.training.progress import TrainingProgress, progress_mode
    from pipeline.training.schedules import PlateauSchedule, schedule_callbacks

    t = config.train
    epochs = epochs or t.epochs
    mode = progress_mode(verbose)
    schedule = schedule_callbacks(t.schedule, learning_rate, epochs, plan.steps_per_epoch, verbose=1 if mode else 0)
    plateau = [c for c in schedule if isinstance(c, PlateauSchedule)]
    per_step = [c for c in schedule if not isinstance(c, PlateauSchedule)]
    ten_crop = []
    if t.validation_crops == 10:
        ten_crop = [TenCropValidation(config.data, t.batch_size, seed=config.seed, validation_steps=t.validation_steps)]
        ten_crop[0].dataset()  # opens the source now (a training run shares the folder listing at start-up)
    progress = [
        TrainingProgress(plan.steps_per_epoch, t.batch_size, epochs, mode, exact=plan.exact,
                         interval=t.log_interval if mode == 2 else None)
    ] if mode else []  # fmt: skip
    checkpoints = [checkpoint] if checkpoint is not None else []
    if backup is not None:
        backup.stateful.update({"plateau": c for c in plateau})
        backup.stateful.update({"best_checkpoint": c for c in checkpoints})
    return [
        StopOnNaN(),
        StopOnEmptyEpoch(),
        *per_step,
        *ten_crop,
        EpochStats(plan.images_per_epoch, plan.steps_per_epoch),
        *progress,
        *logging,
        *plateau,
        *checkpoints,
        *([backup] if backup is not None else []),
    ]


def fit(model, plan, cluster, callbacks, epochs, initial_epoch=0, start=None, stop=None, on_stop=None,
        on_train_begin=None):
    """Trains `model` for the plan's epochs with the training loop (`pipeline.training.loop`).

    Args:
        model: the compiled model, built in `cluster.strategy`'s scope.
        plan: the `EpochPlan`.
        cluster: the `pipeline.training.strategy.Cluster`.
        callbacks: from `build_callbacks`.
        epochs: the epoch to stop after.
        initial_epoch: the epoch to start at when `start` is None (Hyperband
            continues trials there).
        start: the `Position` to start at, or a function returning it after
            the callbacks' `on_train_begin` (a run's backup: `RunBackup.position`).
        stop: the `pipeline.console.signals.StopAtStep` the loop reads at every
            step boundary (None: none).
        on_stop: called with the `Position` every worker stops at (the backup's `save_at`).
        on_train_begin: called after the callbacks' on_train_begin (the
            chief's broadcast).

    Returns:
        The `keras.callbacks.History`.
    """
    loop = TrainingLoop(model, cluster.strategy, plan, callbacks)
    return loop.run(epochs, start=start or Position(initial_epoch, 0), stop=stop, on_stop=on_stop,
                    on_train_begin=on_train_begin)
