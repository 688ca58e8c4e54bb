"""Top-1 / top-5 error of a trained run, with one centre crop or the paper's ten crops, and the paper's pictures.

    python -m pipeline.evaluate runs/quickstart
    python -m pipeline.evaluate runs/imagenet2012 --crops 10 --batch-size 16
    python -m pipeline.evaluate runs/x --set data.source=folder:/data/other   # another dataset, same classes
    python -m pipeline.evaluate runs/x --no-figures                           # the errors only

Rebuilds the split from the run's config.yaml, loads its model.keras, streams
the images through it batch by batch (memory does not grow with the split),
prints the errors beside the paper's figures, and writes them to
<run>/eval_<split>_<crops>.json and to TensorBoard under <run>/logs/eval.

It also draws the pictures of `pipeline.figures` (conv1's kernels, top-5
predictions, nearest training images in fc7 space, per-class error, the
confusion matrix, the most confident mistakes) into <run>/figures/*.png and
as TensorBoard images under <run>/logs/eval. For them it keeps running counts
and a few images only: the split's first images and a bounded heap of the
most confident mistakes; the nearest neighbours are searched among the first
--neighbour-pool training images (evaluation preprocessing, no augmentation).

With --crops 10 every image is seen as the four corner and the centre patches
of its central resize x resize square, and their mirror images; the ten
softmax outputs are averaged (paper, section 4.1). Exit status 2 on a usage
error (no such run, unfinished run, bad option).
"""

import json
import math
import os
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
FIGURES_SUBDIR = "figures"
# Training images searched for the nearest neighbours: enough to find look-alikes, few enough for ImageNet.
NEIGHBOUR_POOL = 5000
# The layer whose activations (after its ReLU) the paper compares between images (section 6.1).
FEATURE_LAYER = "fc7"
# View of a ten-crop stack shown in the pictures: the centre patch (`pipeline.augment.ten_crops`).
CENTRE_VIEW = 4


def result_path(run_dir, split, crops):
    """Where one evaluation's figures go: <run>/eval_<split>_<crops>.json."""
    return pathlib.Path(run_dir) / f"eval_{split}_{crops}.json"


def batch_probabilities(model, dataset, crops, with_images=False):
    """Streams class probabilities, one batch at a time.

    Args:
        model: a Keras model with logits out and [N, S, S, 3] input.
        dataset: batches of (images, labels) from `pipeline.data.eval_pipeline`:
            images [B, S, S, 3], or [B, 10, S, S, 3] with ten crops.
        crops: 1 or 10.
        with_images: also yield the batch's images (the centre view with ten crops).

    Yields:
        (probabilities, labels): NumPy float32 [B, classes] and int [B]. With
        ten crops a row is the mean of the softmax outputs of the ten views.
        With with_images, (probabilities, labels, images [B, S, S, 3]).
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
        probabilities = scores(tf.cast(images, tf.float32)).numpy()
        if with_images:
            yield probabilities, labels.numpy(), centre_view(images.numpy(), crops)
        else:
            yield probabilities, labels.numpy()


def centre_view(images, crops):
    """The view the pictures show: the images themselves, or the centre patch of each ten-crop stack.

    Args:
        images: [B, S, S, 3], or [B, 10, S, S, 3] with ten crops.
        crops: 1 or 10.

    Returns:
        [B, S, S, 3].
    """
    return images[:, CENTRE_VIEW] if crops == 10 else images


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


def evaluate_model(model, dataset, crops, num_classes, num_batches=None, verbose=1, samples=None):
    """Top-1 and top-5 error of a model on a batched evaluation dataset.

    Only running counts are kept, so memory does not grow with the dataset.

    Args:
        model: a Keras model with logits out.
        dataset: batches from `pipeline.data.eval_pipeline(..., crops=crops)`.
        crops: 1 or 10.
        num_classes: the model's classes; with 5 or fewer top-5 error is None.
        num_batches: length of the progress bar (None: unknown).
        verbose: 1 shows a progress bar, 0 is silent.
        samples: a `pipeline.figures.EvaluationSamples` given every batch's
            (centre-view) images, labels and probabilities; None: none.

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
    for step, batch in enumerate(batch_probabilities(model, dataset, crops, with_images=samples is not None), 1):
        probabilities, labels = batch[:2]
        if samples is not None:
            samples.add(batch[2], labels, probabilities)
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


def feature_extractor(model, layer=FEATURE_LAYER):
    """A function images -> the activations of `layer` (fc7, after its ReLU), as NumPy float32 [B, units].

    Args:
        model: the run's Keras model.
        layer: the layer's name.

    Returns:
        A function of a [B, S, S, 3] array on the 0-255 scale.
    """
    import keras
    import tensorflow as tf

    features = keras.Model(model.input, model.get_layer(layer).output)

    @tf.function(input_signature=[tf.TensorSpec((None,) + tuple(model.input_shape[1:]), tf.float32)])
    def extract(images):
        return tf.cast(features(images, training=False), tf.float32)

    return lambda images: extract(tf.cast(images, tf.float32)).numpy()


def search_neighbours(extract, queries, dataset, k):
    """The training images nearest to each query in fc7 space, searched batch by batch.

    Args:
        extract: `feature_extractor(model)`.
        queries: [Q, S, S, 3] query images (0-255).
        dataset: batches of (images [B, S, S, 3], labels) of the training pool.
        k: neighbours per query.

    Returns:
        The `pipeline.figures.NeighbourSearch` after the whole pool.
    """
    from pipeline.figures import NeighbourSearch

    search = NeighbourSearch(extract(queries), k)
    for images, labels in dataset:
        images = images.numpy()
        search.add(extract(images), images, labels.numpy())
    return search


def draw_figures(model, samples, neighbours, class_names, groups, split="validation"):
    """The six pictures of an evaluation, as matplotlib figures.

    Args:
        model: the run's Keras model (conv1's kernels).
        samples: the `EvaluationSamples` of the evaluated split.
        neighbours: the `NeighbourSearch` of the first samples.
        class_names: class index -> name.
        groups: model.groups of the run (towers of the kernel picture).
        split: the evaluated split (the neighbour picture's title).

    Returns:
        dict picture name (`pipeline.figures.FIGURE_NAMES`) -> `Figure`.
    """
    from pipeline import figures

    queries = len(neighbours.queries)
    mistakes = samples.mistakes.items()
    return {
        "conv1_kernels": figures.render_kernels(model.get_layer("conv1").get_weights()[0], groups),
        "top5_predictions": figures.render_top5(
            samples.first_images, samples.first_labels, samples.first_probabilities, class_names
        ),
        "nearest_neighbours": figures.render_neighbours(
            samples.first_images[:queries], samples.first_labels[:queries], neighbours.results(), class_names, split
        ),
        "per_class_error": figures.render_per_class_error(samples.confusion, class_names),
        "confusion_matrix": figures.render_confusion(samples.confusion, class_names),
        "confident_mistakes": figures.render_mistakes(mistakes, class_names),
    }


def write_figures(drawn, figures_dir, log_dir, step, description):
    """Writes each picture as `<figures_dir>/<name>.png` and as a TensorBoard image (tag: the name).

    Each PNG is written through a temporary file and a rename, so a killed
    evaluation leaves the previous picture or the new one.

    Args:
        drawn: dict name -> `Figure` (`draw_figures`).
        figures_dir: <run>/figures.
        log_dir: <run>/logs/eval.
        step: the TensorBoard step (the epochs the run trained).
        description: what was evaluated, added to each image's description.

    Returns:
        The paths of the PNG files, in the order of `drawn`.
    """
    import tensorflow as tf

    from pipeline.figures import encode_png, rgb_array

    figures_dir = pathlib.Path(figures_dir)
    figures_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    writer = tf.summary.create_file_writer(str(log_dir))
    try:
        for name, figure in drawn.items():
            image = rgb_array(figure)  # drawn once for both
            path = figures_dir / f"{name}.png"
            temporary = figures_dir / f".{name}.png.tmp"
            temporary.write_bytes(encode_png(image))
            os.replace(temporary, path)
            paths.append(path)
            with writer.as_default():
                tf.summary.image(name, image[None], step=step, max_outputs=1,
                                 description=f"{name.replace('_', ' ')}: {description}")
    finally:
        writer.close()
    return paths


def class_names_of(run_dir, source, num_classes):
    """The model's class names: the run's labels.txt, else the data source's names."""
    from pipeline.export import read_labels

    try:
        names = read_labels(run_dir)
    except ConfigError:
        names = []
    return names if len(names) == num_classes else list(source.class_names)


def evaluate_run(
    run_dir,
    split="validation",
    crops=1,
    batch_size=None,
    overrides=(),
    verbose=1,
    pictures=True,
    neighbour_pool=NEIGHBOUR_POOL,
):
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
        pictures: also draw the pictures of `pipeline.figures` into
            <run>/figures/ and TensorBoard.
        neighbour_pool: training images searched for the nearest neighbours.

    Returns:
        The figures (also written to eval_<split>_<crops>.json and TensorBoard);
        `figure_files` lists the PNG files written, relative to the run
        directory (none without pictures).

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
    if neighbour_pool < 1:
        raise ConfigError(f"the neighbour pool must hold at least 1 image, got {neighbour_pool}")
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
    samples = None
    if pictures:
        from pipeline.figures import NEIGHBOUR_QUERIES, TOP5_IMAGES, EvaluationSamples

        samples = EvaluationSamples(num_classes, keep_first=max(TOP5_IMAGES, NEIGHBOUR_QUERIES))
    result = evaluate_model(
        model, dataset, crops, num_classes, num_batches=math.ceil(size / batch_size), verbose=verbose, samples=samples
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
        "figure_files": [],
        "reference": {
            "paper_one_cnn_top1": metrics.PAPER_ONE_CNN_TOP1,
            "paper_one_cnn_top5": metrics.PAPER_ONE_CNN_TOP5,
            "paper_ensemble_top5": metrics.PAPER_ENSEMBLE_TOP5,
            "torchvision_top1": TORCHVISION_TOP1,
            "torchvision_top5": TORCHVISION_TOP5,
        },
    }
    if samples is not None:
        paths = evaluation_figures(
            run_dir, config, model, source, samples, figures, batch_size * crops, neighbour_pool, verbose
        )
        figures["figure_files"] = [str(path.relative_to(run_dir)) for path in paths]
    atomic_write_text(result_path(run_dir, split, crops), json.dumps(figures, indent=2, sort_keys=True) + "\n")
    write_tensorboard(run_dir / "logs" / LOG_SUBDIR, figures, step=config.train.epochs)
    return figures


def evaluation_figures(run_dir, config, model, source, samples, figures, batch_size, neighbour_pool, verbose=1):
    """Searches the training pool for the nearest neighbours, then draws and writes the six pictures.

    Args:
        run_dir: the run directory.
        config: the run's config (with the evaluation's data overrides).
        model: the run's model.
        source: the evaluation's `pipeline.data.Source`.
        samples: the `EvaluationSamples` of the evaluated split.
        figures: the evaluation's figures (split, crops, images), for the descriptions.
        batch_size: images per step of the pool pass.
        neighbour_pool: the first this many training images are searched.
        verbose: 1 says what is searched.

    Returns:
        The PNG paths written.
    """
    from pipeline.data import eval_pipeline, skip_undecodable
    from pipeline.figures import NEIGHBOUR_QUERIES, NEIGHBOURS

    pool = source.train.take(neighbour_pool)
    if source.encoded:
        import tensorflow as tf

        # Named in a warning like the evaluated split's bad files, but not counted with them.
        pool = skip_undecodable(pool, tf.Variable(0, dtype=tf.int64, trainable=False),
                                max_pixels=config.data.max_pixels)
    if verbose:
        print(f"Searching {min(neighbour_pool, source.train_size):,} training images for the nearest neighbours "
              f"in {FEATURE_LAYER} space")
    neighbours = search_neighbours(
        feature_extractor(model),
        samples.first_images[:NEIGHBOUR_QUERIES],
        eval_pipeline(pool, config.data, batch_size),
        NEIGHBOURS,
    )
    views = "ten crops (the centre one shown)" if figures["crops"] == 10 else "centre crop"
    description = (
        f"{figures['images']:,} {figures['split']} images of {config.data.source}, {views}; "
        f"nearest neighbours among {neighbours.pool_size:,} training images; model after {config.train.epochs} epochs."
    )
    class_names = class_names_of(run_dir, source, model.output_shape[-1])
    drawn = draw_figures(model, samples, neighbours, class_names, config.model.groups, figures["split"])
    return write_figures(drawn, run_dir / FIGURES_SUBDIR, run_dir / "logs" / LOG_SUBDIR, config.train.epochs,
                         description)


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
    parser.add_argument("--no-figures", dest="pictures", action="store_false",
                        help="skip the pictures (conv1 kernels, top-5, neighbours, per-class error, confusion "
                             "matrix, confident mistakes) written to <run>/figures and TensorBoard")
    parser.add_argument("--neighbour-pool", type=int, default=NEIGHBOUR_POOL, metavar="N",
                        help=f"training images searched for the nearest neighbours (default: {NEIGHBOUR_POOL:,})")
    args = parser.parse_args(argv)
    if args.batch_size is not None:
        cli.check_range("--batch-size", args.batch_size, 1)
    cli.check_range("--neighbour-pool", args.neighbour_pool, 1)
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
    figures = evaluate_run(
        args.run_dir, args.split, args.crops, args.batch_size, args.set,
        pictures=args.pictures, neighbour_pool=args.neighbour_pool,
    )
    print(format_table(figures))
    print(f"Wrote {result_path(args.run_dir, args.split, args.crops)} and {args.run_dir / 'logs' / LOG_SUBDIR}")
    for name in figures["figure_files"]:
        print(f"Wrote {args.run_dir / name}")


if __name__ == "__main__":
    sys.exit(main())
