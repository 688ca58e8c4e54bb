"""One training run, start to end: run directory, data, model, the training core, exports, figures.

A run ends in this order (see `pipeline.storage.rundir`): last epoch backed up,
exports written, metrics.json written, backup deleted; the same command
resumes an unfinished run from its backup, at the step it stopped. SIGINT or
SIGTERM stops training at the next step boundary with a backup there
(`pipeline.console.signals`, `pipeline.training.loop`). Under multi-worker
training only the chief writes the run directory; the others write a
temporary one.
"""

import contextlib
import functools
import pathlib
import shutil
import signal
import tempfile

from pipeline.config import comparable
from pipeline.console.signals import StopAtStep
from pipeline.data import identity
from pipeline.data.listing import shared_listings
from pipeline.data.preview import first_training_batch
from pipeline.errors import ConfigError, Stopped, signal_name
from pipeline.evaluation.references import comparison_table
from pipeline.serving.saved_model import export_run
from pipeline.storage.rundir import (
    BACKUP_DIR,
    BEST_CHECKPOINT,
    CHECKPOINTS_DIR,
    ENVIRONMENT_FILE,
    HISTORY_FILE,
    LOGS_DIR,
    RunDir,
)
from pipeline.training import core
from pipeline.training.hardware import replica_devices, resolve
from pipeline.training.model import build_model, compile_model, precision_note
from pipeline.training.multiworker import agree_on_data, sync_from_chief, weights_digest
from pipeline.training.strategy import make_cluster, scaled_learning_rate


def _summary(metrics, run_path):
    """The closing lines of a run: its errors beside the paper's (ten-crop ones too, when logged), the best epoch."""

    errors = {1: (metrics.get("val_top1_error"), metrics.get("val_top5_error"))}
    if metrics.get("val_10crop_top1_error") is not None:
        errors[10] = (metrics["val_10crop_top1_error"], metrics.get("val_10crop_top5_error"))
    lines = ["", f"Finished {metrics['epochs']} epochs in {metrics['wall_seconds']:.0f} s "
                 f"({metrics['images_per_second']:.1f} training images/s).",
             *comparison_table("validation", errors, accuracy=True)]  # fmt: skip
    if metrics.get("skipped_images"):
        skipped = metrics["skipped_images"]
        lines.append(f"  {skipped} image file{'' if skipped == 1 else 's'} skipped (gone or undecodable, named in the "
                     "warnings above)")
    if metrics.get("best_epoch") is not None:
        best = run_path / CHECKPOINTS_DIR / BEST_CHECKPOINT
        where = best if best.is_file() else f"{best} is gone (deleted since it was written)"
        lines.append(f"Best epoch {metrics['best_epoch']} of {metrics['epochs']} by {metrics['best_monitor']} "
                     f"({metrics['best_value']:.4g}): {where}")
    lines += [f"Run directory: {run_path} (history.csv: one row per epoch)",
              f"  tensorboard --logdir {run_path / LOGS_DIR}"]
    return "\n".join(lines)


@contextlib.contextmanager
def _run_directory(run_dir, config, cluster, overwrite):
    """The chief's run directory, or a temporary one for the other workers."""
    if cluster.is_chief:
        with RunDir(run_dir, config, overwrite=overwrite, begin=False) as run:
            yield run
        return
    # Other workers go through the same motions (saving may need every
    # worker) in a directory nobody reads, deleted at the end.
    scratch = pathlib.Path(tempfile.mkdtemp(prefix=f"{config.name}-worker{cluster.task_index}-"))
    try:
        with RunDir(scratch / "run", config, begin=False) as run:
            yield run
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _announce_resume(run, backup_state, epochs):
    if not run.resumed:
        return
    if backup_state is None:
        print(f"{run.path} holds an unfinished run that stopped before its first backup: training it from the start.")
        run.discard_attempt()
    elif backup_state["epoch"] >= epochs:
        print(f"Resuming the unfinished run in {run.path}: all {epochs} epochs are trained; exporting.")
    else:
        where = f"from epoch {backup_state['epoch'] + 1} of {epochs}"
        if backup_state["step"]:
            where += f", step {backup_state['step'] + 1} (the {backup_state['step']:,} steps before it are trained)"
        print(f"Resuming the unfinished run in {run.path} {where}")


def _check_validation_crops(config, cluster):
    """Refuses what the ten-crop validation (train.validation_crops) cannot serve.

    Raises:
        ConfigError: validation_crops 10 under multi-worker training, or a
            plateau schedule monitoring a val_10crop_ figure that is not logged.
    """
    t = config.train
    if t.validation_crops == 10 and cluster.multi_worker:
        raise ConfigError(
            "train.validation_crops: 10 is not supported with multi-worker training; set it to 1 and "
            "run python -m pipeline.evaluate --crops 10 on the finished run"
        )
    if t.validation_crops != 10 and t.schedule.name == "plateau" and t.schedule.monitor.startswith("val_10crop_"):
        raise ConfigError(
            f"train.schedule.monitor: {t.schedule.monitor} is logged only with train.validation_crops: 10"
        )


def train(config, run_dir, overwrite=False, tf_config=None):
    """Trains, evaluates and exports one run.

    Args:
        config: a validated `Config`.
        run_dir: the run directory.
        overwrite: replace a finished run there (only a run directory of this project).
        tf_config: multi-worker cluster as a TF_CONFIG dict (None: the
            TF_CONFIG environment variable, if any).

    Returns:
        The final figures (also written to metrics.json).

    Raises:
        DirectoryError: the run directory is finished, busy, holds another
            config, is not a run directory, or its backup is damaged.
        TrainingDiverged: the loss became NaN or infinite.
        RunFailed: a worker of the cluster was lost.
        Stopped: SIGINT or SIGTERM (on any worker) stopped training at a
            step boundary, backed up there.
    """

    # Before any other TensorFlow work: multi-worker collectives are configured at start-up.
    # The workers of a cluster compare their configs before it starts (presentation keys may differ).
    cluster = make_cluster(config.train, tf_config, agreement=comparable(config))
    _check_validation_crops(config, cluster)  # before the run directory is written
    check_monitor(config, "train.checkpoint_monitor", checkpoint_monitor(config.train))
    # The saved config keeps "auto"; the run trains with what auto chose on these devices.
    resolved, choices = resolve(config, replica_devices(cluster.devices))
    with _run_directory(run_dir, config, cluster, overwrite) as run:
        import keras

        from pipeline.training.backup import RunBackup

        t = resolved.train
        history = run.sub(HISTORY_FILE) if cluster.is_chief else None
        backup = RunBackup(run.sub(BACKUP_DIR), save_freq=t.backup_every_steps or "epoch", history_file=history)
        keras.utils.set_random_seed(config.seed)
        data, model, plan, callbacks = _start(resolved, run, cluster, backup, choices)
        with StopAtStep() as stop, cluster.peers_watched(lambda: backup.position.describe(t.epochs, plan.steps_per_epoch)):
            core.fit(
                model, plan, cluster, callbacks, t.epochs, start=lambda: backup.position, stop=stop,
                on_stop=backup.save_at, on_train_begin=lambda: sync_from_chief(cluster, model, backup),
            )  # fmt: skip
        return _finish(resolved, run, cluster, model, data, backup, callbacks)


def checkpoint_monitor(train_config):
    """The figure that picks checkpoints/best.keras: train.checkpoint_monitor, auto meaning schedule.monitor."""
    monitor = train_config.checkpoint_monitor
    return train_config.schedule.monitor if monitor == "auto" else monitor


def check_monitor(config, key, monitor, num_classes=None):
    """Refuses a monitored figure that training does not log (a typo would only show after an epoch).

    Raises:
        ConfigError: naming `key` and the figures that are logged.
    """
    if monitor is None:
        return
    names = ["loss", "top1_error"] + (["top5_error"] if num_classes is None or num_classes > 5 else [])
    names += [f"val_{name}" for name in names]
    if config.train.validation_crops == 10:
        names += ["val_10crop_top1_error"] + (["val_10crop_top5_error"] if num_classes is None or num_classes > 5 else [])
    if monitor not in names:
        raise ConfigError(f"{key}: {monitor!r} is not a figure training logs; choose one of {', '.join(names)}")


def _start(config, run, cluster, backup, choices):
    """Data, the compiled model, the epoch plan and the callbacks of a run; the folder is listed once."""

    from pipeline.data.pipelines import build_datasets
    from pipeline.training.record import BestCheckpoint, environment, record_environment

    t = config.train
    # The folder is listed once for the trainer's pipelines, the picture and ten-crop validation.
    with shared_listings():
        shard = (cluster.workers, cluster.task_index) if cluster.multi_worker else None
        data = build_datasets(config.data, t.batch_size, seed=config.seed, shard=shard)
        check_monitor(config, "train.checkpoint_monitor", checkpoint_monitor(t), data.num_classes)
        # Every worker found the data the chief found, and a resumed run the data it began with: refused here,
        # before the run directory receives anything.
        agree_on_data(cluster, data.identity)
        data_notes = identity.check_resume(run.path, data.identity) if run.resumed and cluster.is_chief else []
        picture = None  # the chief's picture of the first batch: the batch, or a function drawing it
        if cluster.is_chief:
            picture = functools.partial(first_training_batch, config.data, t.batch_size, config.seed, shard)
            if backup.read_state() is None:
                # Drawn now, a fresh run's first batch: a split in which nothing decodes stops here.
                picture = picture()
        # The data is there: only now does the run directory receive anything.
        run.begin()
        if cluster.is_chief:
            record_environment(run.sub(ENVIRONMENT_FILE), environment(cluster.devices, choices))
        _announce_resume(run, backup.read_state(), t.epochs)
        for line in data_notes:
            print(line)
        if data.train_sharded:
            print(f"Worker {cluster.task_index} reads {data.train_size // cluster.workers} of the "
                  f"{data.train_size} training images each epoch")
        if not run.resumed:
            # Once, as the run begins: a resumed run keeps the classes and the record of the data it began with.
            run.write_labels(data.class_names)
            identity.record(run.path, data.identity)
        elif cluster.is_chief and identity.read(run.path) is None:
            identity.record(run.path, data.identity)  # a run begun before data was recorded: from now on
        rate = scaled_learning_rate(t)
        with cluster.strategy.scope():
            model = compile_model(build_model(config, data.num_classes), config, data.num_classes, rate)
            # Built here, in the scope, so its variables are distributed like the
            # model's, and a backup can be loaded into them.
            model.optimizer.build(model.trainable_variables)
        print(_description(config, data, model, cluster, rate, choices))
        plan = core.plan_epochs(t, data, cluster, in_memory=config.data.in_memory)
        logging = logging_callbacks(config, run.sub(LOGS_DIR), backup, picture, data.class_names)
        monitor = checkpoint_monitor(t)
        best = BestCheckpoint(run.sub(CHECKPOINTS_DIR) / BEST_CHECKPOINT, monitor) if monitor else None
        callbacks = core.build_callbacks(config, plan, rate, logging=logging, backup=backup,
                                         verbose=t.verbose if cluster.is_chief else 0, checkpoint=best)
    return data, model, plan, callbacks


def logging_callbacks(config, log_dir, backup, first_batch=None, class_names=None):
    """A run's logging callbacks: TensorBoard, the reference lines and, on the chief, the pictures.

    The pictures of a run's start (the augmented first batch, the initial
    conv1 kernels) are drawn when it starts at epoch 0; a backup means that an
    earlier session drew them. They read the weights and write nothing the
    other callbacks read.

    Args:
        config: the run's `Config`.
        log_dir: the TensorBoard directory.
        backup: the run's `RunBackup` (does the run resume?).
        first_batch: the first training batch (images, labels) or a function
            returning it (called only when the picture is drawn); None on the
            workers other than the chief, which draw no pictures.
        class_names: label -> class name, for the picture's description.

    Returns:
        A list of callbacks for `core.build_callbacks(logging=...)`.
    """
    from pipeline.training.callbacks import (
        AugmentedImageGrid,
        Conv1Kernels,
        ReferenceLines,
        RunTensorBoard,
        logged_epochs,
    )

    fresh = backup.read_state() is None
    # A resumed run may train again an epoch whose figures reached TensorBoard before its kill.
    skip = -1 if fresh else logged_epochs(log_dir)
    log_dir = str(log_dir)
    profile = tuple(config.train.profile) if config.train.profile else 0  # batches traced for the Profile tab
    callbacks = [RunTensorBoard(log_dir, skip_through=skip, write_graph=False, profile_batch=profile),
                 ReferenceLines(log_dir, skip_through=skip)]
    if first_batch is None:
        return callbacks
    if fresh:
        # Opens the data source now, while the folder listing is shared.
        batch = first_batch() if callable(first_batch) else first_batch
        callbacks.append(AugmentedImageGrid(log_dir, batch, class_names))
    callbacks.append(Conv1Kernels(log_dir, epochs=config.train.epochs, groups=config.model.groups, at_start=fresh,
                                  skip_through=skip))
    return callbacks


def _description(config, data, model, cluster, rate, choices=()):
    """The lines printed before training: data, model, strategy, what auto chose, a precision warning where due."""

    t = config.train
    lines = [
        f"{config.name}: {data.train_size} training / {data.validation_size} validation images, "
        f"{data.num_classes} classes, {config.data.image_size}x{config.data.image_size} input, "
        f"{model.count_params():,} parameters, precision {t.precision}",
        cluster.describe(t.batch_size, rate, t),
        *choices,
    ]
    note = precision_note(t.precision, any("GPU" in d.upper() for d in cluster.devices))
    return "\n".join(lines + ([note] if note else []))


def _finish(config, run, cluster, model, data, backup, callbacks):
    """The figures of the whole run, the exports, metrics.json, the backup's removal; returns the figures."""
    from pipeline.training.record import BestCheckpoint

    # The figures of the whole run, earlier sessions included (the backup keeps them).
    last = backup.history[-1] if backup.history else {}
    metrics = {"epochs": len(backup.history), "wall_seconds": backup.train_seconds(), **dict(sorted(last.items()))}
    metrics.setdefault("images_per_second", float("nan"))
    metrics["skipped_images"] = int(data.skipped.numpy()) if data.skipped is not None else 0
    best = next((c for c in callbacks if isinstance(c, BestCheckpoint)), None)
    if best is not None and best.best_epoch is not None:
        metrics.update(best_epoch=best.best_epoch, best_monitor=best.monitor, best_value=best.best)
    if cluster.is_chief and metrics["skipped_images"]:
        import tensorflow as tf

        # Undecodable files met in this session, each already named on stderr.
        with tf.summary.create_file_writer(str(run.sub(LOGS_DIR) / "train")).as_default():
            tf.summary.scalar("skipped_images", metrics["skipped_images"], step=len(backup.history))
    if cluster.multi_worker:
        print(f"Worker {cluster.task_index} of {cluster.workers}: final weights {weights_digest(model)}")
    # Order matters for resuming: history and exports, then metrics.json (the run is
    # finished), then the backup goes. See pipeline/storage/rundir.py.
    backup.write_history()
    export_run(model, run.path, config, data.class_names)
    run.write_metrics(metrics)
    try:
        backup.delete()
        if cluster.is_chief:
            print(_summary(metrics, run.path), flush=True)
    except (KeyboardInterrupt, Stopped) as exc:
        # The run is finished (metrics.json): a signal now interrupts only its closing lines.
        signum = getattr(exc, "signum", signal.SIGINT)
        raise Stopped(signum, f"{signal_name(signum)} after the run finished: {run.path} holds the finished run "
                              f"(metrics.json, its exports); python -m pipeline.evaluate {run.path} shows its figures") from None
    return metrics
