"""One training run, start to end: run directory, data, model, the training core, exports, figures.

A run ends in this order (see `pipeline.storage.rundir`): last epoch backed up,
exports written, metrics.json written, backup deleted; the same command
resumes an unfinished run from its backup. Under multi-worker training only
the chief writes the run directory; the others write a temporary one.
"""

import contextlib
import pathlib
import shutil
import tempfile

from pipeline.errors import ConfigError
from pipeline.storage.rundir import BACKUP_DIR, LOGS_DIR, RunDir


def _summary(figures, run_path):
    """The closing lines of a run: its errors beside the paper's (ten-crop ones too, when logged)."""
    from pipeline.evaluation import references

    views = [("", figures.get("val_top1_error"), figures.get("val_top5_error"))]
    if figures.get("val_10crop_top1_error") is not None:
        views = [
            (" (centre crop)", *views[0][1:]),
            (" (ten crops)", figures["val_10crop_top1_error"], figures.get("val_10crop_top5_error")),
        ]
    lines = [
        "",
        f"Finished {figures['epochs']} epochs in {figures['wall_seconds']:.0f} s "
        f"({figures['images_per_second']:.1f} training images/s).",
    ]
    width = max(len(label) for label, _, _ in views)
    for i, (label, top1, top5) in enumerate(views):
        # The paper's figures are ten-crop ones: they go beside the last view.
        last = i == len(views) - 1
        paper1 = f"   paper, one CNN: {references.PAPER_ONE_CNN_TOP1:.1%}" if last else ""
        lines.append(f"  validation top-1 error{label:<{width}}  {top1:7.2%}   (accuracy {1 - top1:.2%}){paper1}")
        if top5 is not None:
            paper5 = (
                f"                       paper, one CNN: {references.PAPER_ONE_CNN_TOP5:.1%}; "
                f"2012 winning ensemble: {references.PAPER_ENSEMBLE_TOP5:.1%}" if last else ""
            )
            lines.append(f"  validation top-5 error{label:<{width}}  {top5:7.2%}{paper5}")
    if figures.get("skipped_images"):
        lines.append(f"  {figures['skipped_images']} undecodable image files skipped (named in the warnings above)")
    lines += [
        "  (the paper's figures are ILSVRC-2012, ten crops; compare like with like)",
        f"Run directory: {run_path}",
        f"  tensorboard --logdir {run_path / LOGS_DIR}",
    ]
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
            where += f" (backed up after step {backup_state['step']} of it; the epoch restarts from its first batch)"
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


def train(config, run_dir, overwrite=False, tf_config=None, loop="auto"):
    """Trains, evaluates and exports one run.

    Args:
        config: a validated `Config`.
        run_dir: the run directory.
        overwrite: replace a finished run there (only a run directory of this project).
        tf_config: multi-worker cluster as a TF_CONFIG dict (None: the
            TF_CONFIG environment variable, if any).
        loop: "auto" (`model.fit`; the `strategy.run` loop under
            multi_worker), "fit" or "custom" to force one.

    Returns:
        The final figures (also written to metrics.json).

    Raises:
        DirectoryError: the run directory is finished, busy, holds another
            config, or is not a run directory.
        TrainingDiverged: the loss became NaN or infinite.
    """
    from pipeline.training.strategy import make_cluster

    # Before any other TensorFlow work: multi-worker collectives are configured at start-up.
    cluster = make_cluster(config.train, tf_config)
    _check_validation_crops(config, cluster)  # before the run directory is written
    with _run_directory(run_dir, config, cluster, overwrite) as run:
        import keras

        from pipeline.training import core
        from pipeline.training.backup import RunBackup
        from pipeline.training.multiworker import sync_from_chief

        t = config.train
        backup = RunBackup(run.sub(BACKUP_DIR), save_freq=t.backup_every_steps or "epoch")
        keras.utils.set_random_seed(config.seed)
        data, model, plan, callbacks, rate = _start(config, run, cluster, backup)
        print(_description(config, data, model, cluster, rate))
        core.fit(
            model, plan, cluster, callbacks, t.epochs, verbose=t.verbose if cluster.is_chief else 0, loop=loop,
            on_train_begin=lambda: sync_from_chief(cluster, model, backup),
        )  # fmt: skip
        return _finish(config, run, cluster, model, data, backup)


def _start(config, run, cluster, backup):
    """Data, the compiled model, the epoch plan and the callbacks of a run; the folder is listed once."""
    import functools

    from pipeline.data.listing import shared_listings
    from pipeline.data.pipelines import build_datasets
    from pipeline.training import core
    from pipeline.data.preview import first_training_batch
    from pipeline.training.model import build_model, compile_model
    from pipeline.training.strategy import scaled_learning_rate

    t = config.train
    # The folder is listed once for the trainer's pipelines, the picture and ten-crop validation.
    with shared_listings():
        shard = (cluster.workers, cluster.task_index) if cluster.multi_worker else None
        data = build_datasets(config.data, t.batch_size, seed=config.seed, shard=shard)
        # The data is there: only now does the run directory receive anything.
        run.begin()
        _announce_resume(run, backup.read_state(), t.epochs)
        if data.train_sharded:
            print(f"Worker {cluster.task_index} reads {data.train_size // cluster.workers} of the "
                  f"{data.train_size} training images each epoch")
        run.write_labels(data.class_names)
        rate = scaled_learning_rate(t)
        with cluster.strategy.scope():
            model = compile_model(build_model(config, data.num_classes), config, data.num_classes, rate)
            # Built here, in the scope, so its variables are distributed like the
            # model's, and a backup can be loaded into them.
            model.optimizer.build(model.trainable_variables)
        plan = core.plan_epochs(t, data, cluster)
        first_batch = functools.partial(first_training_batch, config.data, t.batch_size, config.seed, shard)
        logging = logging_callbacks(
            config, run.sub(LOGS_DIR), backup, first_batch if cluster.is_chief else None, data.class_names
        )
        callbacks = core.build_callbacks(config, plan, rate, logging=logging, backup=backup, verbose=t.verbose)
    return data, model, plan, callbacks, rate


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
    )

    log_dir = str(log_dir)
    callbacks = [RunTensorBoard(log_dir, write_graph=False, profile_batch=0), ReferenceLines(log_dir)]
    if first_batch is None:
        return callbacks
    fresh = backup.read_state() is None
    if fresh:
        # Opens the data source now, while the folder listing is shared.
        batch = first_batch() if callable(first_batch) else first_batch
        callbacks.append(AugmentedImageGrid(log_dir, batch, class_names))
    callbacks.append(Conv1Kernels(log_dir, epochs=config.train.epochs, groups=config.model.groups, at_start=fresh))
    return callbacks


def _description(config, data, model, cluster, rate):
    """The lines printed before training: data, model, strategy, and a precision warning where due."""
    from pipeline.training.model import precision_note

    t = config.train
    text = (
        f"{config.name}: {data.train_size} training / {data.validation_size} validation images, "
        f"{data.num_classes} classes, {config.data.image_size}x{config.data.image_size} input, "
        f"{model.count_params():,} parameters, precision {t.precision}\n"
        + cluster.describe(t.batch_size, rate, t)
    )
    note = precision_note(t.precision, any("GPU" in d.upper() for d in cluster.devices))
    return text + (f"\n{note}" if note else "")


def _finish(config, run, cluster, model, data, backup):
    """The figures of the whole run, the exports, metrics.json, the backup's removal; returns the figures."""
    from pipeline.serving.saved_model import export_run
    from pipeline.training.multiworker import weights_digest

    # The figures of the whole run, earlier sessions included (the backup keeps them).
    last = backup.history[-1] if backup.history else {}
    figures = {"epochs": len(backup.history), "wall_seconds": backup.train_seconds(), **dict(sorted(last.items()))}
    figures.setdefault("images_per_second", float("nan"))
    figures["skipped_images"] = int(data.skipped.numpy()) if data.skipped is not None else 0
    if cluster.is_chief and figures["skipped_images"]:
        import tensorflow as tf

        # Undecodable files met in this session, each already named on stderr.
        with tf.summary.create_file_writer(str(run.sub(LOGS_DIR) / "train")).as_default():
            tf.summary.scalar("skipped_images", figures["skipped_images"], step=len(backup.history))
    if cluster.multi_worker:
        print(f"Worker {cluster.task_index} of {cluster.workers}: final weights {weights_digest(model)}")
    # Order matters for resuming: exports, then metrics.json (the run is
    # finished), then the backup goes. See pipeline/storage/rundir.py.
    export_run(model, run.path, config, data.class_names)
    run.write_metrics(figures)
    backup.delete()
    if cluster.is_chief:
        print(_summary(figures, run.path))
    return figures
