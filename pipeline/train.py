"""Train AlexNet from a declarative experiment config.

    python -m pipeline.train                                   # configs/quickstart.yaml
    python -m pipeline.train --config configs/imagenet2012.yaml
    python -m pipeline.train --config a.yaml --config b.yaml --set train.epochs=3
    python -m pipeline.train --worker-hosts a:2222,b:2222 --task-index 0   # on host a (1 on host b)

The run directory (runs/<name> by default) receives config.yaml before
training, TensorBoard logs, the backup of the training state, model.keras,
saved_model/, labels.txt and metrics.json. The same command on an unfinished
run resumes it (after a kill, too); on a finished run it refuses unless
--overwrite is given. Under multi-worker training only the chief (worker 0)
writes the run directory.
"""

import contextlib
import functools
import math
import pathlib
import shutil
import sys
import tempfile
import warnings

from pipeline import cli
from pipeline.config import ConfigError, load_config

DEFAULT_RUNS = pathlib.Path("runs")


def parse_args(argv=None):
    parser = cli.ArgumentParser(prog="python -m pipeline.train", description=__doc__.split("\n")[0])
    parser.add_argument("--config", action="append", default=[], metavar="YAML",
                        help="experiment file; repeat to layer files (later ones win). Default: configs/quickstart.yaml")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override one dotted key, e.g. --set train.optimizer.learning_rate=0.005")
    parser.add_argument("--run-dir", type=pathlib.Path, help="run directory (default: runs/<name>)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the run in the run directory (only a run directory of this project)")
    parser.add_argument("--worker-hosts", metavar="HOST:PORT,...",
                        help="multi-worker training: every worker's host:port, the same list on every worker "
                             "(worker 0 is the chief); stands for the TF_CONFIG environment variable")
    parser.add_argument("--task-index", type=int, metavar="I", help="with --worker-hosts: this worker's position")
    return parser.parse_args(argv)


@contextlib.contextmanager
def dtype_policy(name):
    """Sets Keras' global dtype policy for the enclosed block, then restores the previous one.

    Layers take the global policy when they are created, so a model built
    inside the block keeps it; the global itself must not leak into other
    models of the process (tests, the tuner).

    Args:
        name: "float32", "mixed_float16" or "mixed_bfloat16".
    """
    import keras

    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(name)
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)


def build_model(config, num_classes):
    """The AlexNet described by `config.model` and `config.data` (uncompiled).

    The model carries no weight-decay penalty: `compile_model`'s optimizer
    applies `train.optimizer.weight_decay` inside its update (`PaperSGD`).

    Args:
        config: the run's `Config`; `train.precision` sets the layers' dtype
            policy (fc8's logits stay float32, LRN computes in float32).
        num_classes: width of fc8.

    Returns:
        An uncompiled `keras.Model` with logits out.
    """
    from model_defs.alexnet import build_alexnet

    m = config.model
    with dtype_policy(config.train.precision):
        return build_alexnet(
            num_classes=num_classes,
            input_size=config.data.image_size,
            dropout=m.dropout,
            lrn=m.lrn,
            lrn_k=m.lrn_k,
            lrn_n=m.lrn_n,
            lrn_alpha=m.lrn_alpha,
            lrn_beta=m.lrn_beta,
            groups=m.groups,
            widths=m.widths,
            fc_units=m.fc_units,
            init=m.init,
            mean=m.mean,
            std=m.std,
            seed=config.seed,
        )


def compile_model(model, config, num_classes, learning_rate=None):
    """Compiles with the paper's SGD, cross-entropy on logits, and top-1/top-5 error.

    The optimizer is `PaperSGD`: momentum with the weight decay added to each
    kernel's gradient inside the update, as in the paper's update rule. The
    reported loss is therefore the cross-entropy alone, without an L2 term.

    Under mixed_float16 Keras wraps the optimizer in a LossScaleOptimizer
    itself (dynamic loss scaling); the loss is computed on float32 logits.

    Args:
        model: from `build_model` (inside the strategy's scope when distributed).
        config: the run's `Config`.
        num_classes: for the top-5 metric (only with more than 5 classes).
        learning_rate: initial rate; None takes `train.optimizer.learning_rate`
            after `train.lr_scaling`.

    Returns:
        The same model, compiled.
    """
    import keras

    from pipeline.distribute import scaled_learning_rate
    from pipeline.metrics import error_metrics
    from model_defs.optimizers import PaperSGD

    opt = config.train.optimizer
    model.compile(
        optimizer=PaperSGD(
            learning_rate=learning_rate or scaled_learning_rate(config.train),
            momentum=opt.momentum,
            nesterov=opt.nesterov,
            coupled_weight_decay=opt.weight_decay,
        ),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=error_metrics(num_classes),
        jit_compile=config.train.jit_compile,
    )
    return model


def build_callbacks(
    config,
    log_dir,
    images_per_epoch,
    steps_per_epoch,
    learning_rate,
    backup,
    verbose=1,
    first_batch=None,
    class_names=None,
):
    """The callbacks of a training run, in the order they must run.

    With train.validation_crops: 10 they include `TenCropValidation`, which
    adds the ten-crop validation errors to each epoch's logs. The chief also
    gets the TensorBoard pictures: the augmented first batch
    (`AugmentedImageGrid`) and conv1's kernels at the start, every few
    epochs and after the last (`Conv1Kernels`).

    Args:
        config: the run's `Config`.
        log_dir: TensorBoard directory.
        images_per_epoch: training images in one epoch (throughput).
        steps_per_epoch: training steps in one epoch (schedules).
        learning_rate: the base rate (after lr_scaling).
        backup: the run's `RunBackup`; it goes last and is told about the
            callbacks whose state it must save.
        verbose: 0 silences the plateau schedule's messages.
        first_batch: the first training batch (images, labels), or a function
            returning it, for the TensorBoard picture of the augmented input
            (`AugmentedImageGrid`); None (other workers than the chief) draws
            none, nor conv1's kernels. A run that resumes from a backup does
            not draw the batch or the initial kernels again (nor call the
            function).
        class_names: label -> class name, for the picture's description.

    Returns:
        A list of Keras callbacks.
    """
    from pipeline.callbacks import (
        AugmentedImageGrid,
        Conv1Kernels,
        EpochStats,
        ReferenceLines,
        ReleaseValidationIterator,
        RunTensorBoard,
        StopOnNaN,
        TenCropValidation,
    )
    from pipeline.schedules import PlateauSchedule, schedule_callbacks

    t = config.train
    schedule = schedule_callbacks(t.schedule, learning_rate, t.epochs, steps_per_epoch, verbose=1 if verbose else 0)
    plateau = [c for c in schedule if isinstance(c, PlateauSchedule)]
    per_step = [c for c in schedule if not isinstance(c, PlateauSchedule)]
    backup.stateful.update({"plateau": c for c in plateau})
    log_dir = str(log_dir)
    # first_batch is None on the workers other than the chief: they draw no pictures.
    chief = first_batch is not None
    # A backup means that an earlier session of this run started at epoch 0 and drew the pictures of that start.
    fresh = backup.read_state() is None
    draw = chief and fresh
    # Both open the data source now, while `train` shares the folder listing
    # between the pipelines (`pipeline.data.shared_listings`).
    if draw and callable(first_batch):
        first_batch = first_batch()
    picture = [AugmentedImageGrid(log_dir, first_batch, class_names)] if draw else []
    if chief:
        picture.append(Conv1Kernels(log_dir, epochs=t.epochs, groups=config.model.groups, at_start=fresh))
    ten_crop = (
        [TenCropValidation(config.data, t.batch_size, seed=config.seed, validation_steps=t.validation_steps)]
        if t.validation_crops == 10
        else []
    )
    for callback in ten_crop:
        callback.dataset()
    return [
        StopOnNaN(),
        *per_step,
        *ten_crop,  # before the logging and the plateau schedule: it adds val_10crop_* to the logs they read
        EpochStats(images_per_epoch),  # before TensorBoard: it adds to the logs TensorBoard writes
        RunTensorBoard(log_dir, write_graph=False, profile_batch=0),
        ReferenceLines(log_dir),
        *picture,  # image summaries only: they read the weights and write nothing the others read
        ReleaseValidationIterator(),
        *plateau,  # after the logging: the logged rate is the one this epoch used
        backup,  # last: it records what the others wrote and restores state after their resets
    ]


def precision_note(precision, has_gpu):
    """A warning line when a mixed precision will be slower than float32, else None.

    On a CPU, half-precision convolutions are fast only with hardware support
    (AVX512_BF16 or AMX for bfloat16, AVX512_FP16 or AMX-FP16 for float16);
    without it TensorFlow converts and falls back to slow paths (measured:
    mixed_bfloat16 about 9x slower than float32 on an AVX2 CPU).

    Args:
        precision: `train.precision`.
        has_gpu: whether training runs on GPUs.
    """
    if precision == "float32" or has_gpu:
        return None
    try:
        flags = set(pathlib.Path("/proc/cpuinfo").read_text().split())
    except OSError:
        return None
    wanted = {"mixed_bfloat16": {"avx512_bf16", "amx_bf16"}, "mixed_float16": {"avx512_fp16", "amx_fp16"}}[precision]
    if flags & wanted:
        return None
    return (
        f"warning: train.precision={precision} on a CPU without {' or '.join(sorted(wanted))}: expect it to be "
        "several times slower than float32 (half-precision convolutions fall back to slow paths)"
    )


def _summary(figures, run_path):
    """The closing lines of a run: its errors beside the paper's (ten-crop ones too, when logged)."""
    from pipeline import metrics

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
        paper1 = f"   paper, one CNN: {metrics.PAPER_ONE_CNN_TOP1:.1%}" if last else ""
        lines.append(f"  validation top-1 error{label:<{width}}  {top1:7.2%}   (accuracy {1 - top1:.2%}){paper1}")
        if top5 is not None:
            paper5 = (
                f"                       paper, one CNN: {metrics.PAPER_ONE_CNN_TOP5:.1%}; "
                f"2012 winning ensemble: {metrics.PAPER_ENSEMBLE_TOP5:.1%}" if last else ""
            )
            lines.append(f"  validation top-5 error{label:<{width}}  {top5:7.2%}{paper5}")
    if figures.get("skipped_images"):
        lines.append(f"  {figures['skipped_images']} undecodable image files skipped (named in the warnings above)")
    lines += [
        "  (the paper's figures are ILSVRC-2012, ten crops; compare like with like)",
        f"Run directory: {run_path}",
        f"  tensorboard --logdir {run_path / 'logs'}",
    ]
    return "\n".join(lines)


@contextlib.contextmanager
def _run_directory(run_dir, config, cluster, overwrite):
    """The chief's run directory, or a temporary one for the other workers."""
    from pipeline.rundir import RunDir

    if cluster.is_chief:
        with RunDir(run_dir, config, overwrite=overwrite) as run:
            yield run
        return
    # Other workers go through the same motions (saving may need every
    # worker) in a directory nobody reads, deleted at the end.
    scratch = pathlib.Path(tempfile.mkdtemp(prefix=f"{config.name}-worker{cluster.task_index}-"))
    try:
        with RunDir(scratch / "run", config) as run:
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


def _input_pipelines(config, data, cluster):
    """(training dataset, validation dataset, steps per epoch, images per epoch) as the trainer feeds them."""
    import tensorflow as tf

    t = config.train
    train_ds, validation_ds = data.train, data.validation
    if t.steps_per_epoch:
        train_ds = train_ds.repeat()
    if t.validation_steps:
        # The first batches, every epoch. Truncating the dataset rather than
        # passing validation_steps to fit: Keras 3.15's fit under a
        # tf.distribute strategy raises StopIteration in the second epoch
        # when validation_steps reaches the end of the validation data.
        validation_ds = validation_ds.take(t.validation_steps)
    if cluster.multi_worker and config.data.source.partition(":")[0] in ("digits", "synthetic", "folder"):
        # No record files to split between workers (in memory, or a list of
        # image files in one op): every worker runs the pipeline and keeps its
        # share of each batch. A folder's training files are already split
        # (`build_datasets(shard=...)`), so each worker decodes only its own.
        # tfds: and records: sources keep tf.data's AUTO policy, which gives
        # each worker its own record files.
        def policy(dataset, kind):
            options = tf.data.Options()
            options.experimental_distribute.auto_shard_policy = kind
            return dataset.with_options(options)

        Policy = tf.data.experimental.AutoShardPolicy
        train_ds = policy(train_ds, Policy.OFF if data.train_sharded else Policy.DATA)
        validation_ds = policy(validation_ds, Policy.DATA)
    steps_per_epoch = t.steps_per_epoch or math.ceil(data.train_size / t.batch_size)
    images_per_epoch = steps_per_epoch * t.batch_size if t.steps_per_epoch else data.train_size
    return train_ds, validation_ds, steps_per_epoch, images_per_epoch


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
        overwrite: replace a finished run there.
        tf_config: multi-worker cluster as a TF_CONFIG dict (None: the
            TF_CONFIG environment variable, if any).
        loop: "auto" (`model.fit`; the `strategy.run` loop under
            multi_worker), "fit" or "custom" to force one.

    Returns:
        The final figures (also written to metrics.json).

    Raises:
        RunDirError: the run directory is finished, busy or holds another config.
        TrainingDiverged: the loss became NaN or infinite.
    """
    from pipeline import distribute

    # Before any other TensorFlow work: multi-worker collectives are configured at start-up.
    cluster = distribute.make_cluster(config.train, tf_config)
    _check_validation_crops(config, cluster)  # before the run directory is written
    with _run_directory(run_dir, config, cluster, overwrite) as run:
        import keras

        from pipeline.callbacks import RunBackup, first_training_batch
        from pipeline.data import build_datasets, shared_listings
        from pipeline.export import export_run

        t = config.train
        backup = RunBackup(run.sub("backup"), save_freq=t.backup_every_steps or "epoch")
        _announce_resume(run, backup.read_state(), t.epochs)
        keras.utils.set_random_seed(config.seed)
        # The folder is listed once for the trainer's pipelines, the picture and ten-crop validation.
        with shared_listings():
            shard = (cluster.workers, cluster.task_index) if cluster.multi_worker else None
            data = build_datasets(config.data, t.batch_size, seed=config.seed, shard=shard)
            if data.train_sharded:
                print(f"Worker {cluster.task_index} reads {data.train_size // cluster.workers} of the "
                      f"{data.train_size} training images each epoch")
            run.write_labels(data.class_names)
            learning_rate = distribute.scaled_learning_rate(t)
            with cluster.strategy.scope():
                model = compile_model(build_model(config, data.num_classes), config, data.num_classes, learning_rate)
                # Built here, in the scope, so its variables are distributed like the
                # model's, and a backup can be loaded into them.
                model.optimizer.build(model.trainable_variables)

            train_ds, validation_ds, steps_per_epoch, images_per_epoch = _input_pipelines(config, data, cluster)
            verbose = t.verbose if cluster.is_chief else 0
            callbacks = build_callbacks(
                config, run.sub("logs"), images_per_epoch, steps_per_epoch, learning_rate, backup, verbose,
                first_batch=functools.partial(first_training_batch, config.data, t.batch_size, config.seed, shard)
                if cluster.is_chief else None,
                class_names=data.class_names,
            )
        print(
            f"{config.name}: {data.train_size} training / {data.validation_size} validation images, "
            f"{data.num_classes} classes, {config.data.image_size}x{config.data.image_size} input, "
            f"{model.count_params():,} parameters, precision {t.precision}\n"
            + cluster.describe(t.batch_size, learning_rate, t)
        )
        note = precision_note(t.precision, any("GPU" in d.upper() for d in cluster.devices))
        if note:
            print(note)
        if loop == "custom" or (loop == "auto" and cluster.multi_worker):
            distribute.fit_distributed(
                model,
                cluster.strategy,
                train_ds,
                t.epochs,
                steps_per_epoch,
                validation_data=validation_ds,
                callbacks=callbacks,
                verbose=verbose,
                repeated=bool(t.steps_per_epoch),
                on_train_begin=lambda: distribute.sync_from_chief(cluster, model, backup),
            )
        else:
            with warnings.catch_warnings():
                # Keras says "Your input ran out of data; interrupting training"
                # whenever a dataset of unknown length ends, which is how each
                # of our epochs ends (undecodable files are dropped, so the
                # length is not known beforehand). It ends the epoch, not the run.
                warnings.filterwarnings("ignore", message="Your input ran out of data", category=UserWarning)
                model.fit(
                    train_ds,
                    validation_data=validation_ds,
                    epochs=t.epochs,
                    steps_per_epoch=t.steps_per_epoch,
                    callbacks=callbacks,
                    verbose=verbose,
                    shuffle=False,  # the dataset shuffles itself
                )

        # The figures of the whole run, earlier sessions included (the backup keeps them).
        last = backup.history[-1] if backup.history else {}
        figures = {"epochs": len(backup.history), "wall_seconds": backup.train_seconds(), **dict(sorted(last.items()))}
        figures.setdefault("images_per_second", float("nan"))
        figures["skipped_images"] = int(data.skipped.numpy()) if data.skipped is not None else 0
        if cluster.is_chief and figures["skipped_images"]:
            import tensorflow as tf

            # Undecodable files met in this session, each already named on stderr.
            with tf.summary.create_file_writer(str(run.sub("logs") / "train")).as_default():
                tf.summary.scalar("skipped_images", figures["skipped_images"], step=len(backup.history))
        if cluster.multi_worker:
            print(f"Worker {cluster.task_index} of {cluster.workers}: final weights {distribute.weights_digest(model)}")
        # Order matters for resuming: exports, then metrics.json (the run is
        # finished), then the backup goes. See pipeline/rundir.py.
        export_run(model, run.path, config, data.class_names)
        run.write_metrics(figures)
        backup.delete()
        if cluster.is_chief:
            print(_summary(figures, run.path))
        return figures


@cli.command
def main(argv=None):
    """Trains the configured run; returns the exit status (`pipeline.cli`)."""
    args = parse_args(argv)
    from pipeline import distribute

    tf_config = None
    if args.worker_hosts is not None or args.task_index is not None:
        if args.worker_hosts is None or args.task_index is None:
            raise ConfigError("--worker-hosts and --task-index go together: give both, or neither")
        tf_config = distribute.tf_config(args.worker_hosts.split(","), args.task_index)
    config = load_config(args.config, args.set)
    if tf_config and config.train.strategy not in ("auto", "multi_worker"):
        raise ConfigError(
            f"--worker-hosts needs train.strategy auto or multi_worker, not {config.train.strategy}"
        )
    run_dir = args.run_dir or DEFAULT_RUNS / config.name
    train(config, run_dir, overwrite=args.overwrite, tf_config=tf_config)


if __name__ == "__main__":
    sys.exit(main())
