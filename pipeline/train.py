"""Train AlexNet from a declarative experiment config.

    python -m pipeline.train                                   # configs/quickstart.yaml
    python -m pipeline.train --config configs/imagenet2012.yaml
    python -m pipeline.train --config a.yaml --config b.yaml --set train.epochs=3

The run directory (runs/<name> by default) receives config.yaml before
training, TensorBoard logs, BackupAndRestore state, model.keras, saved_model/,
labels.txt and metrics.json. The same command on an unfinished run resumes it;
on a finished run it refuses unless --overwrite is given.
"""

import argparse
import pathlib
import sys
import time

from pipeline.config import ConfigError, load_config

DEFAULT_RUNS = pathlib.Path("runs")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="python -m pipeline.train", description=__doc__.split("\n")[0])
    parser.add_argument("--config", action="append", default=[], metavar="YAML",
                        help="experiment file; repeat to layer files (later ones win). Default: configs/quickstart.yaml")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override one dotted key, e.g. --set train.optimizer.learning_rate=0.005")
    parser.add_argument("--run-dir", type=pathlib.Path, help="run directory (default: runs/<name>)")
    parser.add_argument("--overwrite", action="store_true", help="replace a finished run in the run directory")
    return parser.parse_args(argv)


def build_model(config, num_classes):
    """The AlexNet described by `config.model` and `config.data` (uncompiled)."""
    from model_defs.alexnet import build_alexnet

    m = config.model
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
        weight_decay=config.train.optimizer.weight_decay,
        mean=m.mean,
        std=m.std,
        seed=config.seed,
    )


def compile_model(model, config, num_classes, learning_rate=None):
    """Compiles with the paper's SGD, cross-entropy on logits, and top-1/top-5 error."""
    import keras

    from pipeline.metrics import error_metrics

    opt = config.train.optimizer
    model.compile(
        optimizer=keras.optimizers.SGD(
            learning_rate=learning_rate or opt.learning_rate, momentum=opt.momentum, nesterov=opt.nesterov
        ),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=error_metrics(num_classes),
        jit_compile=config.train.jit_compile,
    )
    return model


def _callbacks(config, run, images_per_epoch):
    import keras

    from pipeline.callbacks import EpochStats, ReferenceLines

    log_dir = str(run.sub("logs"))
    callbacks = [
        keras.callbacks.BackupAndRestore(str(run.sub("backup")), save_freq="epoch", delete_checkpoint=True),
        keras.callbacks.TerminateOnNaN(),
    ]
    schedule = config.train.schedule
    if schedule.name == "plateau":
        callbacks.append(
            keras.callbacks.ReduceLROnPlateau(
                monitor=schedule.monitor,
                factor=schedule.factor,
                patience=schedule.patience,
                min_lr=config.train.optimizer.learning_rate * schedule.factor**schedule.max_reductions * 0.999,
                verbose=1,
            )
        )
    callbacks += [
        EpochStats(images_per_epoch),  # before TensorBoard: it adds to the logs TensorBoard writes
        keras.callbacks.TensorBoard(log_dir, write_graph=False, profile_batch=0),
        ReferenceLines(log_dir),
    ]
    return callbacks


def _summary(figures, run_path):
    from pipeline import metrics

    top1 = figures.get("val_top1_error")
    top5 = figures.get("val_top5_error")
    lines = [
        "",
        f"Finished {figures['epochs']} epochs in {figures['wall_seconds']:.0f} s "
        f"({figures['images_per_second']:.1f} training images/s).",
        f"  validation top-1 error  {top1:7.2%}   (accuracy {1 - top1:.2%})   paper, one CNN: {metrics.PAPER_ONE_CNN_TOP1:.1%}",
    ]
    if top5 is not None:
        lines.append(
            f"  validation top-5 error  {top5:7.2%}                       paper, one CNN: "
            f"{metrics.PAPER_ONE_CNN_TOP5:.1%}; 2012 winning ensemble: {metrics.PAPER_ENSEMBLE_TOP5:.1%}"
        )
    lines += [
        "  (the paper's figures are ILSVRC-2012; compare like with like)",
        f"Run directory: {run_path}",
        f"  tensorboard --logdir {run_path / 'logs'}",
    ]
    return "\n".join(lines)


def train(config, run_dir, overwrite=False):
    """Trains, evaluates and exports one run.

    Args:
        config: a validated `Config`.
        run_dir: the run directory.
        overwrite: replace a finished run there.

    Returns:
        The final figures (also written to metrics.json).

    Raises:
        RunDirError: the run directory is finished, busy or holds another config.
    """
    from pipeline.rundir import RunDir

    with RunDir(run_dir, config, overwrite=overwrite) as run:
        import keras

        from pipeline.data import build_datasets
        from pipeline.export import export_run

        if run.resumed:
            print(f"Resuming the unfinished run in {run.path}")
        keras.utils.set_random_seed(config.seed)
        t = config.train
        data = build_datasets(config.data, t.batch_size, seed=config.seed)
        run.write_labels(data.class_names)
        model = compile_model(build_model(config, data.num_classes), config, data.num_classes)

        train_ds = data.train
        if t.steps_per_epoch:
            train_ds = train_ds.repeat()
            images_per_epoch = t.steps_per_epoch * t.batch_size
        else:
            images_per_epoch = data.train_size
        print(
            f"{config.name}: {data.train_size} training / {data.validation_size} validation images, "
            f"{data.num_classes} classes, {config.data.image_size}x{config.data.image_size} input, "
            f"{model.count_params():,} parameters, batch {t.batch_size}"
        )
        start = time.perf_counter()
        history = model.fit(
            train_ds,
            validation_data=data.validation,
            epochs=t.epochs,
            steps_per_epoch=t.steps_per_epoch,
            validation_steps=t.validation_steps,
            callbacks=_callbacks(config, run, images_per_epoch),
            verbose=t.verbose,
            shuffle=False,  # the dataset shuffles itself
        )
        wall = time.perf_counter() - start
        if model.stop_training and len(history.epoch) and history.epoch[-1] + 1 < t.epochs:
            raise RuntimeError(
                "training stopped early: the loss became NaN or infinite. Lower "
                "train.optimizer.learning_rate, or check the input data."
            )
        final = {k: float(v[-1]) for k, v in history.history.items()} if history.epoch else {}
        figures = {
            "epochs": t.epochs,
            "wall_seconds": wall,
            **{k: final[k] for k in sorted(final)},
        }
        figures.setdefault("images_per_second", float("nan"))
        export_run(model, run.path, config, data.class_names)
        run.write_metrics(figures)
        print(_summary(figures, run.path))
        return figures


def main(argv=None):
    args = parse_args(argv)
    try:
        config = load_config(args.config, args.set)
        run_dir = args.run_dir or DEFAULT_RUNS / config.name
        train(config, run_dir, overwrite=args.overwrite)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
