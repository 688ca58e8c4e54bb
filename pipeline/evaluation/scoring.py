"""Scoring a model on an evaluation split: probabilities batch by batch, top-1 and top-5 error, the table.

Only running counts are kept, so memory does not grow with the split. With ten
crops a row of probabilities is the mean of the softmax outputs of the ten
views (paper, section 4.1).
"""

import sys
import time

import numpy as np

from pipeline.console.progress import Progress
from pipeline.errors import ConfigError
from pipeline.evaluation import references

# View of a ten-crop stack shown in the pictures: the centre patch (`pipeline.data.augment.ten_crops`).
CENTRE_VIEW = 4


def batch_probabilities(model, dataset, crops, with_images=False):
    """Streams class probabilities, one batch at a time.

    Args:
        model: a Keras model with logits out and [N, S, S, 3] input.
        dataset: batches of (images, labels) from `pipeline.data.pipelines.eval_pipeline`:
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

    own = probabilities[np.arange(len(labels)), labels]
    rank = (probabilities > own[:, None]).sum(axis=1)
    return int((rank < k).sum())


def evaluate_model(model, dataset, crops, num_classes, num_batches=None, verbose=1, samples=None):
    """Top-1 and top-5 error of a model on a batched evaluation dataset.

    Only running counts are kept, so memory does not grow with the dataset.

    Args:
        model: a Keras model with logits out.
        dataset: batches from `pipeline.data.pipelines.eval_pipeline(..., crops=crops)`.
        crops: 1 or 10.
        num_classes: the model's classes; with 5 or fewer top-5 error is None.
        num_batches: length of the progress bar (None: unknown).
        verbose: 1 shows the progress (a line redrawn on a terminal; in a log file a
            line every 30 s and one at the end, no carriage returns), 0 is silent.
        samples: a `pipeline.evaluation.analysis.EvaluationSamples` given every batch's
            (centre-view) images, labels and probabilities; None: none.

    Returns:
        dict: images, top1_error, top5_error, seconds, images_per_second.

    Raises:
        ConfigError: when the dataset holds no images.
    """
    images = top1 = top5 = step = 0
    # A line redrawn on a terminal; in a log file a line every 30 s and one at the end.
    progress = Progress("evaluating", total=num_batches, unit="batches", stream=sys.stdout, delay=None,
                        detail=lambda: f"top-1 error so far {1.0 - top1 / max(images, 1):.2%}") if verbose else None
    start = time.perf_counter()
    for step, batch in enumerate(batch_probabilities(model, dataset, crops, with_images=samples is not None), 1):
        probabilities, labels = batch[:2]
        if samples is not None:
            samples.add(batch[2], labels, probabilities)
        images += len(labels)
        top1 += top_k_hits(probabilities, labels, 1)
        top5 += top_k_hits(probabilities, labels, 5)
        if progress is not None:
            progress.update()
    seconds = time.perf_counter() - start
    if images == 0:
        raise ConfigError("the split holds no images")
    if progress is not None:
        progress.done(always=True)
    return {
        "images": images,
        "top1_error": 1.0 - top1 / images,
        "top5_error": 1.0 - top5 / images if references.has_top5(num_classes) else None,
        "seconds": seconds,
        "images_per_second": images / seconds,
    }


def format_table(results):
    """The evaluation's errors beside the paper's and torchvision's (`references.comparison_table`).

    Args:
        results: the dict written to eval_<split>_<crops>.json.

    Returns:
        The table as text, under a line saying what was evaluated and how fast.
    """
    heading = (
        f"{results['run']}: {results['images']:,} {results['split']} images ({results['data_source']}) "
        f"in {results['seconds']:.1f} s ({results['images_per_second']:.1f} images/s)"
    )
    errors = {results["crops"]: (results["top1_error"], results["top5_error"])}
    return "\n".join([heading, *references.comparison_table(results["split"], errors)])


def write_tensorboard(log_dir, results, step):
    """Writes the errors as scalars `<split>_<crops>crop_top1_error` / `_top5_error` at `step`.

    Args:
        log_dir: <run>/logs/eval.
        results: the evaluation's results.
        step: the x position (the epochs the run trained), so the point sits at
            the end of the training curves.
    """
    import tensorflow as tf

    prefix = f"{results['split']}_{results['crops']}crop"
    writer = tf.summary.create_file_writer(str(log_dir))
    with writer.as_default():
        for name in ("top1_error", "top5_error"):
            if results[name] is not None:
                tf.summary.scalar(f"{prefix}_{name}", results[name], step=step)
    writer.close()
