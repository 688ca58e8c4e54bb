"""The pictures of an evaluation: fc7 nearest neighbours searched over a training pool, six PNGs and
TensorBoard images (computed by `pipeline.evaluation.analysis`, drawn by `pipeline.evaluation.drawing`)."""

import os
import pathlib

import numpy as np

from pipeline.errors import ConfigError
from pipeline.evaluation import drawing
from pipeline.evaluation.analysis import NEIGHBOUR_QUERIES, NEIGHBOURS, NeighbourSearch
from pipeline.evaluation.drawing import encode_png, rgb_array
from pipeline.serving.run_model import read_labels
from pipeline.storage.rundir import EVAL_LOGS_DIR, FIGURES_DIR, LOGS_DIR

# The pictures an evaluation writes, in order: <run>/figures/<name>.png, and the TensorBoard tag.
PICTURES = (
    "conv1_kernels",
    "top5_predictions",
    "nearest_neighbours",
    "per_class_error",
    "confusion_matrix",
    "confident_mistakes",
)
# Training images searched for the nearest neighbours: enough to find look-alikes, few enough for ImageNet.
NEIGHBOUR_POOL = 5000
# The layer whose activations (after its ReLU) the paper compares between images (section 6.1).
FEATURE_LAYER = "fc7"


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
        The `pipeline.evaluation.analysis.NeighbourSearch` after the whole pool.
    """

    search = NeighbourSearch(extract(queries), k)
    for images, labels in dataset:
        images = images.numpy()
        search.add(extract(images), images, labels.numpy())
    return search


def draw_pictures(model, samples, neighbours, class_names, groups, split="validation"):
    """The six pictures of an evaluation, as matplotlib figures.

    Args:
        model: the run's Keras model (conv1's kernels).
        samples: the `EvaluationSamples` of the evaluated split.
        neighbours: the `NeighbourSearch` of the first sampled images.
        class_names: class index -> name.
        groups: model.groups of the run (towers of the kernel picture).
        split: the evaluated split (the neighbour picture's title).

    Returns:
        dict picture name (`PICTURES`, in order) -> `Figure`.
    """

    images, labels, probabilities = samples.shown()
    queries = len(neighbours.queries)
    return {
        "conv1_kernels": drawing.render_kernels(model.get_layer("conv1").get_weights()[0], groups),
        "top5_predictions": drawing.render_top5(images, labels, probabilities, class_names),
        "nearest_neighbours": drawing.render_neighbours(
            images[:queries], labels[:queries], neighbours.results(), class_names, split
        ),
        "per_class_error": drawing.render_per_class_error(samples.confusion, class_names),
        "confusion_matrix": drawing.render_confusion(samples.confusion, class_names),
        "confident_mistakes": drawing.render_mistakes(samples.mistakes.items(), class_names),
    }


def write_pictures(drawn, figures_dir, log_dir, step, description):
    """Writes each picture as `<figures_dir>/<name>.png` and as a TensorBoard image (tag: the name).

    Each PNG is written through a temporary file and a rename, so a killed
    evaluation leaves the previous picture or the new one.

    Args:
        drawn: dict name -> `Figure` (`draw_pictures`).
        figures_dir: <run>/figures.
        log_dir: <run>/logs/eval.
        step: the TensorBoard step (the epochs the run trained).
        description: what was evaluated, added to each image's description.

    Returns:
        The paths of the PNG files, in the order of `drawn`.
    """
    import tensorflow as tf


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

    try:
        names = read_labels(run_dir)
    except ConfigError:
        names = []
    return names if len(names) == num_classes else list(source.class_names)


def evaluation_pictures(run_dir, config, model, source, samples, results, batch_size, neighbour_pool, verbose=1):
    """Searches the training pool for the nearest neighbours, then draws and writes the six pictures.

    Args:
        run_dir: the run directory.
        config: the run's config (with the evaluation's data overrides).
        model: the run's model.
        source: the evaluation's `pipeline.data.splits.Source`.
        samples: the `EvaluationSamples` of the evaluated split.
        results: the evaluation's results (split, crops, images), for the descriptions.
        batch_size: images per step of the pool pass.
        neighbour_pool: the first this many training images are searched.
        verbose: 1 says what is searched.

    Returns:
        The PNG paths written.
    """
    from pipeline.data.decode import skip_undecodable
    from pipeline.data.pipelines import eval_pipeline

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
        np.stack(samples.shown()[0][:NEIGHBOUR_QUERIES]),
        eval_pipeline(pool, config.data, batch_size),
        NEIGHBOURS,
    )
    views = "ten crops (the centre one shown)" if results["crops"] == 10 else "centre crop"
    description = (
        f"{results['images']:,} {results['split']} images of {config.data.source}, {views}; "
        f"nearest neighbours among {neighbours.pool_size:,} training images; model after {config.train.epochs} epochs."
    )
    class_names = class_names_of(run_dir, source, model.output_shape[-1])
    drawn = draw_pictures(model, samples, neighbours, class_names, config.model.groups, results["split"])
    return write_pictures(drawn, run_dir / FIGURES_DIR, run_dir / LOGS_DIR / EVAL_LOGS_DIR, config.train.epochs,
                         description)
