"""Top-1 / top-5 error of a trained run, with one centre crop or the paper's ten crops.

    python -m pipeline.evaluate runs/quickstart
    python -m pipeline.evaluate runs/imagenet2012 --crops 10 --batch-size 16
    python -m pipeline.evaluate runs/x --set data.source=folder:/data/other   # another dataset, same classes

Rebuilds the split from the run's config.yaml, loads its model.keras, streams
the images through it batch by batch (memory does not grow with the split),
prints the errors beside the paper's figures, and writes them to
<run>/eval_<split>_<crops>.json and to TensorBoard under <run>/logs/eval.

With --crops 10 every image is seen as the four corner and the centre patches
of its central resize x resize square, and their mirror images; the ten
softmax outputs are averaged (paper, section 4.1). Exit status 2 on a usage
error (no such run, unfinished run, bad option).
"""

import json
import math
import pathlib
import sys
import time

from pipeline import cli, metrics
from pipeline.config import ConfigError

# torchvision's AlexNet, one centre crop, ILSVRC-2012 validation (fractions).
TORCHVISION_TOP1 = 0.435
TORCHVISION_TOP5 = 0.209
SPLITS = ("validation", "train")
LOG_SUBDIR = "eval"


def result_path(run_dir, split, crops):
    """Where one evaluation's figures go: <run>/eval_<split>_<crops>.json."""
    return pathlib.Path(run_dir) / f"eval_{split}_{crops}.json"


def batch_probabilities(model, dataset, crops):
    """Streams class probabilities, one batch at a time.

    Args:
        model: a Keras model with logits out and [N, S, S, 3] input.
        dataset: batches of (images, labels) from `pipeline.data.eval_pipeline`:
            images [B, S, S, 3], or [B, 10, S, S, 3] with ten crops.
        crops: 1 or 10.

    Yields:
        (probabilities, labels): NumPy float32 [B, classes] and int [B]. With
        ten crops a row is the mean of the softmax outputs of the ten views.
    """
    import tensorflow as tf

    image_spec = dataset.element_spec[0]
    view_shape = tuple(image_spec.shape[-3:])

    # The signature's batch dimension is None: one trace serves the smaller last batch too.
    @tf.function(input_signature=[tf.TensorSpec(image_spec.shape, tf.float32)])
    def scores(images):
        views = tf.reshape(images, (-1,) + view_shape)  # [B * crops, S, S, 3]
        probabilities = tf.nn.softmax(tf.cast(model(views, training=False), tf.float32), axis=-1)
        return tf.reduce_mean(tf.reshape(probabilities, [tf.shape(images)[0], crops, -1]), axis=1)

    for images, labels in dataset:
        yield scores(tf.cast(images, tf.float32)).numpy(), labels.numpy()


def top_k_hits(probabilities, labels, k):
    """How many labels are among the k highest scores of their row.

    A label tied with the k-th score counts as a hit, as in `tf.math.in_top_k`.

    Args:
        probabilities: [B, classes] scores.
        labels: [B] class indices.
        k: how many of the highest scores count.

    Returns:
        The number of hits (int).
    """
    import numpy as np

    own = probabilities[np.arange(len(labels)), labels]
    rank = (probabilities > own[:, None]).sum(axis=1)
    return int((rank < k).sum())


def evaluate_model(model, dataset, crops, num_classes, num_batches=None, verbose=1):
    """Top-1 and top-5 error of a model on a batched evaluation dataset.

    Only running counts are kept, so memory does not grow with the dataset.

    Args:
        model: a Keras model with logits out.
        dataset: batches from `pipeline.data.eval_pipeline(..., crops=crops)`.
        crops: 1 or 10.
        num_classes: the model's classes; with 5 or fewer top-5 error is None.
        num_batches: length of the progress bar (None: unknown).
        verbose: 1 shows a progress bar, 0 is silent.

    Returns:
        dict: images, top1_error, top5_error, seconds, images_per_second.

    Raises:
        ConfigError: when the dataset holds no images.
    """
    import keras

    # stateful: the bar shows the running error as given, not an average of running errors.
    progress = keras.utils.Progbar(num_batches, verbose=verbose, stateful_metrics=["top1_error"], unit_name="batch")
    images = top1 = top5 = step = 0
    start = time.perf_counter()
    for step, (probabilities, labels) in enumerate(batch_probabilities(model, dataset, crops), 1):
        images += len(labels)
        top1 += top_k_hits(probabilities, labels, 1)
        top5 += top_k_hits(probabilities, labels, 5)
        progress.update(step, [("top1_error", 1.0 - top1 / images)], finalize=step == num_batches)
    seconds = time.perf_counter() - start
    if images == 0:
        raise ConfigError("the split holds no images")
    if step != num_batches:
        progress.update(step, finalize=True)
    return {
        "images": images,
        "top1_error": 1.0 - top1 / images,
        "top5_error": 1.0 - top5 / images if num_classes > 5 else None,
        "seconds": seconds,
        "images_per_second": images / seconds,
    }


def reference_rows():
    """The published figures to print beside a result: (label, top-1, top-5), None where not reported."""
    return [
        ("paper, one CNN, 10 crops (val)", metrics.PAPER_ONE_CNN_TOP1, metrics.PAPER_ONE_CNN_TOP5),
        ("paper, 7-CNN ensemble (test)", None, metrics.PAPER_ENSEMBLE_TOP5),
        ("torchvision AlexNet, 1 crop (val)", TORCHVISION_TOP1, TORCHVISION_TOP5),
    ]


def format_table(figures):
    """The result beside the paper's and torchvision's figures.

    Args:
        figures: the dict written to eval_<split>_<crops>.json.

    Returns:
        The table as text.
    """
    crops = figures["crops"]
    label = f"this run, {crops} crop{'s' if crops > 1 else ''} ({figures['split']})"
    rows = [(label, figures["top1_error"], figures["top5_error"])] + reference_rows()
    width = max(len(row[0]) for row in rows)

    def cell(value):
        return f"{'-':>11}" if value is None else f"{value:11.2%}"

    lines = [
        f"{figures['run']}: {figures['images']:,} {figures['split']} images ({figures['data_source']}) "
        f"in {figures['seconds']:.1f} s ({figures['images_per_second']:.1f} images/s)",
        f"  {'':<{width}}  {'top-1 error':>11}  {'top-5 error':>11}",
    ]
    lines += [f"  {name:<{width}}  {cell(top1)}  {cell(top5)}" for name, top1, top5 in rows]
    lines.append("  (the reference figures are ILSVRC-2012, 1000 classes; compare like with like)")
    return "\n".join(lines)


def write_tensorboard(log_dir, figures, step):
    """Writes the errors as scalars `<split>_<crops>crop_top1_error` / `_top5_error` at `step`.

    Args:
        log_dir: <run>/logs/eval.
        figures: the evaluation's figures.
        step: the x position (the epochs the run trained), so the point sits at
            the end of the training curves.
    """
    import tensorflow as tf

    prefix = f"{figures['split']}_{figures['crops']}crop"
    writer = tf.summary.create_file_writer(str(log_dir))
    with writer.as_default():
        for name in ("top1_error", "top5_error"):
            if figures[name] is not None:
                tf.summary.scalar(f"{prefix}_{name}", figures[name], step=step)
    writer.close()


def evaluate_run(run_dir, split="validation", crops=1, batch_size=None, overrides=(), verbose=1):
    """Evaluates a finished run and records the result.

    Args:
        run_dir: the run directory (config.yaml, model.keras).
        split: "validation" or "train" (evaluation preprocessing either way).
        crops: 1 (centre) or 10 (the paper's ten views, softmax averaged).
        batch_size: images per step; None: train.batch_size / crops, so a
            step holds about as many views as a training batch.
        overrides: `data.key=value` strings applied to the run's config, to
            evaluate on another dataset with the same classes.
        verbose: 1 shows a progress bar.

    Returns:
        The figures (also written to eval_<split>_<crops>.json and TensorBoard).

    Raises:
        ConfigError: no such run, unfinished run, bad override, or a dataset
            whose classes do not match the model.
    """
    from pipeline.config import load_config
    from pipeline.data import eval_pipeline, load_source, skip_undecodable
    from pipeline.export import load_run_model
    from pipeline.rundir import CONFIG_FILE, atomic_write_text

    run_dir = pathlib.Path(run_dir)
    if split not in SPLITS:
        raise ConfigError(f"unknown split {split!r}: use one of {', '.join(SPLITS)}")
    if crops not in (1, 10):
        raise ConfigError(f"crops must be 1 or 10, got {crops}")
    for text in overrides:
        if not text.partition("=")[0].strip().startswith("data."):
            raise ConfigError(f"--set {text!r}: only data.* keys can change for an evaluation")
    _, model = load_run_model(run_dir)
    config = load_config([run_dir / CONFIG_FILE], overrides)
    if batch_size is None:
        batch_size = max(1, config.train.batch_size // crops)
    elif batch_size < 1:
        raise ConfigError(f"batch size must be at least 1, got {batch_size}")
    if tuple(model.input_shape[1:3]) != (config.data.image_size,) * 2:
        raise ConfigError(f"data.image_size is {config.data.image_size}, the model takes {model.input_shape[1:3]}")

    try:
        source = load_source(config.data, config.seed)
    except (NotImplementedError, FileNotFoundError) as exc:
        raise ConfigError(f"data.source {config.data.source!r}: {exc}") from None
    num_classes = int(model.output_shape[-1])
    if source.num_classes != num_classes:
        raise ConfigError(
            f"data.source {config.data.source!r} has {source.num_classes} classes, the model {num_classes}"
        )
    if split == "validation":
        examples, size = source.validation, source.validation_size
    else:
        examples, size = source.train, source.train_size
    skipped = None
    if source.encoded:  # files: (bytes, label, name); undecodable ones are named, counted and left out
        import tensorflow as tf

        skipped = tf.Variable(0, dtype=tf.int64, trainable=False)
        examples = skip_undecodable(examples, skipped, max_pixels=config.data.max_pixels)
    # No cache: 50,000 decoded validation photos do not fit in memory.
    dataset = eval_pipeline(examples, config.data, batch_size, crops=crops)
    result = evaluate_model(
        model, dataset, crops, num_classes, num_batches=math.ceil(size / batch_size), verbose=verbose
    )
    figures = {
        "run": str(run_dir),
        "split": split,
        "crops": crops,
        "data_source": config.data.source,
        "image_size": config.data.image_size,
        "resize": config.data.resize,
        "batch_size": batch_size,
        "skipped_images": int(skipped.numpy()) if skipped is not None else 0,
        **result,
        "reference": {
            "paper_one_cnn_top1": metrics.PAPER_ONE_CNN_TOP1,
            "paper_one_cnn_top5": metrics.PAPER_ONE_CNN_TOP5,
            "paper_ensemble_top5": metrics.PAPER_ENSEMBLE_TOP5,
            "torchvision_top1": TORCHVISION_TOP1,
            "torchvision_top5": TORCHVISION_TOP5,
        },
    }
    atomic_write_text(result_path(run_dir, split, crops), json.dumps(figures, indent=2, sort_keys=True) + "\n")
    write_tensorboard(run_dir / "logs" / LOG_SUBDIR, figures, step=config.train.epochs)
    return figures


def parse_args(argv=None):
    """The command line of `python -m pipeline.evaluate` (argv: None reads sys.argv)."""
    parser = cli.ArgumentParser(prog="python -m pipeline.evaluate", description=__doc__.split("\n")[0])
    parser.add_argument("run_dir", type=pathlib.Path, help="the run directory, e.g. runs/quickstart")
    parser.add_argument("--split", choices=SPLITS, default="validation", help="default: validation")
    parser.add_argument("--crops", type=int, choices=(1, 10), default=1,
                        help="1: centre crop; 10: corners, centre and mirrors, softmax averaged (paper)")
    parser.add_argument("--batch-size", type=int, metavar="N",
                        help="images per step (default: train.batch_size / crops)")
    parser.add_argument("--set", action="append", default=[], metavar="data.KEY=VALUE",
                        help="change the run's data config, e.g. to evaluate another dataset with the same classes")
    args = parser.parse_args(argv)
    if args.batch_size is not None:
        cli.check_range("--batch-size", args.batch_size, 1)
    return args


@cli.command
def main(argv=None):
    """Evaluates a run, prints the table and writes the figures.

    Args:
        argv: command-line arguments (None: sys.argv).

    Returns:
        The exit status (`pipeline.cli`): 0, or 2 for a usage error or a damaged run.
    """
    args = parse_args(argv)
    figures = evaluate_run(args.run_dir, args.split, args.crops, args.batch_size, args.set)
    print(format_table(figures))
    print(f"Wrote {result_path(args.run_dir, args.split, args.crops)} and {args.run_dir / 'logs' / LOG_SUBDIR}")


if __name__ == "__main__":
    sys.exit(main())
