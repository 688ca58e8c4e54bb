"""Keras callbacks of a training run: divergence, throughput, learning rate, reference lines, TensorBoard,
a picture of the augmented input, pictures of conv1's kernels.

They serve both training loops (`model.fit` and the multi-worker loop in
`pipeline.training.multiworker`), which call them through one
`keras.callbacks.CallbackList`; `pipeline.training.core.build_callbacks`
puts them in order. The backup is in `pipeline.training.backup`, the ten-crop
validation in `pipeline.evaluation.ten_crop`.
"""

import math
import os
import time

import keras
import numpy as np
import tensorflow as tf

from model_defs import keras_private
from pipeline.data.splits import DataError
from pipeline.errors import RunFailed
from pipeline.evaluation import references
from pipeline.evaluation.drawing import render_kernels, rgb_array
from pipeline.evaluation.images import image_grid

# TensorBoard image tag of the first training batch (in the `train` run).
AUGMENTED_BATCH_TAG = "augmented_batch"
# TensorBoard image tag of conv1's kernels during training (in the `train` run), and the epochs between
# two pictures: 90 ImageNet epochs give 19 pictures, enough to watch the kernels form.
CONV1_KERNELS_TAG = "conv1_kernels"
CONV1_KERNELS_EVERY = 5

# TensorBoard run name -> the value drawn on the validation top-5 error chart.
REFERENCE_LINES = {
    "reference_ensemble_15.3pct": references.PAPER_ENSEMBLE_TOP5,
    "reference_one_cnn_18.2pct": references.PAPER_ONE_CNN_TOP5,
}


class EpochStats(keras.callbacks.Callback):
    """Adds `learning_rate` and `images_per_second` to each epoch's logs.

    Put it before the TensorBoard callback: the logs dict is shared, so both
    figures are then written with the metrics (as epoch_learning_rate and
    epoch_images_per_second). Throughput counts the training part of the epoch
    only, not validation; an epoch resumed at a step counts the steps it ran.

    Args:
        images_per_epoch: training images in one epoch.
        steps_per_epoch: training steps in one epoch.
    """

    def __init__(self, images_per_epoch, steps_per_epoch=1):
        super().__init__()
        self.images_per_epoch = images_per_epoch
        self.steps_per_epoch = max(1, steps_per_epoch)
        self._start = None
        self._train_seconds = None
        self._share = 1.0

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()
        self._train_seconds = None
        first = (logs or {}).get("first_step", 0)
        self._share = max(0.0, 1.0 - first / self.steps_per_epoch)

    def on_test_begin(self, logs=None):
        if self._start is not None and self._train_seconds is None:
            self._train_seconds = time.perf_counter() - self._start

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        seconds = self._train_seconds or (time.perf_counter() - self._start)
        logs["images_per_second"] = self.images_per_epoch * self._share / seconds
        logs["learning_rate"] = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))


def logged_epochs(log_dir):
    """The epochs (0-based, as TensorBoard's step) whose figures `log_dir`'s train run holds already.

    A run killed after its epoch's figures reached TensorBoard but before
    its backup committed that epoch trains the epoch again when it resumes;
    its logging callbacks skip the epochs found here (`skip_through`), so
    that TensorBoard holds each step once.

    Returns:
        The highest epoch logged, or -1 when none is.
    """
    import glob

    from tensorboard.compat.proto.event_pb2 import Event

    last = -1
    for path in sorted(glob.glob(os.path.join(str(log_dir), "train", "events.out.tfevents.*"))):
        try:
            for record in tf.data.TFRecordDataset(path).as_numpy_iterator():
                event = Event.FromString(record)
                if any(value.tag.startswith("epoch_") for value in event.summary.value):
                    last = max(last, int(event.step))
        except tf.errors.DataLossError:
            continue  # a file cut short by the kill: the events before the cut were read
    return last


class ReferenceLines(keras.callbacks.Callback):
    """Draws the paper's top-5 error figures on the validation top-5 chart.

    TensorBoard has no reference lines, so each figure is written as a constant
    under the same tag (`epoch_top5_error`) in a run of its own, named after
    what it is: the 2012 winning ensemble (15.3 %) and one CNN (18.2 %).

    Args:
        log_dir: the TensorBoard log directory of the run.
        skip_through: epochs up to this one are logged already (`logged_epochs`).
    """

    def __init__(self, log_dir, tag="epoch_top5_error", skip_through=-1):
        super().__init__()
        self.log_dir = log_dir
        self.tag = tag
        self.skip_through = skip_through
        self._writers = {}

    def on_train_begin(self, logs=None):
        for run, _ in REFERENCE_LINES.items():
            self._writers[run] = tf.summary.create_file_writer(os.path.join(self.log_dir, run))

    def on_epoch_end(self, epoch, logs=None):
        if epoch <= self.skip_through:
            return
        for run, value in REFERENCE_LINES.items():
            with self._writers[run].as_default():
                tf.summary.scalar(self.tag, value, step=epoch)
                self._writers[run].flush()

    def on_train_end(self, logs=None):
        for writer in self._writers.values():
            writer.close()
        self._writers = {}


class AugmentedImageGrid(keras.callbacks.Callback):
    """Shows in TensorBoard what the network sees: the first training batch after augmentation, as one image.

    At the start of training it writes one image summary, tag
    `augmented_batch`, step 0, to the `train` run of the log directory (next
    to the Keras TensorBoard callback's scalars): the first `max_images`
    images of the batch tiled by `image_grid`, with their class names, row by
    row, in the summary's description. It writes nothing else and keeps no
    writer open.

    Give it to a run that starts at epoch 0 only: a resumed run already wrote
    its picture.

    Args:
        log_dir: the TensorBoard log directory of the run.
        batch: (images, labels), images [N, H, W, 3] on the 0-255 scale, or a
            function of no arguments returning them (called at the start of
            training), e.g. `pipeline.data.preview.first_training_batch`.
        class_names: label -> class name; None leaves the names out.
        max_images: images in the grid (16: a 4 x 4 grid).
    """

    def __init__(self, log_dir, batch, class_names=None, max_images=16):
        super().__init__()
        self.log_dir = log_dir
        self.batch = batch
        self.class_names = class_names
        self.max_images = max_images

    def description(self, labels, batch_size):
        """The summary's description: how many images are shown and, with class names, which classes."""
        shown = len(labels)
        text = f"The first training batch of the first epoch after augmentation: {shown} of its {batch_size} images"
        if self.class_names is None:
            return text + "."
        names = ", ".join(str(self.class_names[int(label)]) for label in labels)
        return f"{text}, row by row: {names}."

    def on_train_begin(self, logs=None):
        images, labels = self.batch() if callable(self.batch) else self.batch
        images, labels = np.asarray(images), np.asarray(labels).reshape(-1)
        grid = image_grid(images, self.max_images)
        writer = tf.summary.create_file_writer(os.path.join(self.log_dir, "train"))
        try:
            with writer.as_default():
                tf.summary.image(
                    AUGMENTED_BATCH_TAG,
                    grid[None],
                    step=0,
                    max_outputs=1,
                    description=self.description(labels[: self.max_images], len(images)),
                )
        finally:
            writer.close()


class Conv1Kernels(keras.callbacks.Callback):
    """Shows in TensorBoard how conv1's kernels develop: the paper's Figure 3, during training.

    Writes the kernel picture of `pipeline.evaluation.drawing.render_kernels` (one block
    per tower) as an image summary, tag `conv1_kernels`, to the `train` run of
    the log directory. The step is the number of finished epochs: step 0 at
    the start of training (the initial kernels, before any update), then after
    every `every`-th epoch and after the last one. It keeps no writer open.

    Args:
        log_dir: the TensorBoard log directory of the run.
        every: epochs between pictures.
        epochs: the run's train.epochs, so that the last epoch is drawn too
            (None: only every `every` epochs).
        groups: the model's groups (model.groups): blocks of the picture.
        at_start: draw the initial kernels at step 0; False for a run that
            resumes from a backup (its first session drew them).
        skip_through: epochs up to this one are logged already (`logged_epochs`).
    """

    def __init__(self, log_dir, every=CONV1_KERNELS_EVERY, epochs=None, groups=2, at_start=True, skip_through=-1):
        super().__init__()
        if every < 1:
            raise ValueError(f"every must be at least 1, got {every}")
        self.log_dir = log_dir
        self.every = every
        self.epochs = epochs
        self.groups = groups
        self.at_start = at_start
        self.skip_through = skip_through

    def draw(self, step):
        """Writes the picture of the model's current conv1 kernels at `step`."""

        kernel = keras.ops.convert_to_numpy(self.model.get_layer("conv1").kernel)
        title = f"conv1 kernels after {step} epoch{'' if step == 1 else 's'}"
        image = rgb_array(render_kernels(kernel, self.groups, title=title))
        writer = tf.summary.create_file_writer(os.path.join(self.log_dir, "train"))
        try:
            with writer.as_default():
                tf.summary.image(CONV1_KERNELS_TAG, image[None], step=step, max_outputs=1,
                                 description="conv1's kernels, each scaled to [0, 1] by its own minimum and maximum, "
                                             "one block per tower (paper, Figure 3); step: finished epochs.")
        finally:
            writer.close()

    def on_train_begin(self, logs=None):
        if self.at_start:
            self.draw(0)

    def on_epoch_end(self, epoch, logs=None):
        finished = epoch + 1
        if epoch > self.skip_through and (finished % self.every == 0 or finished == self.epochs):
            self.draw(finished)


class TrainingDiverged(RunFailed):
    """The training loss became NaN or infinite (exit status 1).

    Args:
        what: the facts, e.g. "the training loss became nan at epoch 2, step 5 (learning rate 0.1)";
            a search words its own advice after them (`tuning.hypermodel`).
    """

    def __init__(self, what):
        self.what = what
        super().__init__(
            f"{what}. Lower train.optimizer.learning_rate or add train.schedule.warmup_epochs and start again "
            "with --overwrite, or check the input data (the run's backup, if any, holds the last epoch that "
            "ended with a finite loss)."
        )


class StopOnNaN(keras.callbacks.TerminateOnNaN):
    """Stops training with `TrainingDiverged` at the first non-finite training loss.

    Raising (rather than Keras' default of setting `stop_training`) matters for
    resuming: the epoch does not end, so the backup keeps the last good state
    instead of saving diverged weights as a finished epoch. The epoch's loss
    is checked too, before the others see the epoch end: a step's loss is
    computed before its update, so the update of an epoch's last step shows
    only there.
    """

    def __init__(self):
        super().__init__(raise_error=True)
        self._epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_batch_end(self, batch, logs=None):
        self._check((logs or {}).get("loss"), f"at epoch {self._epoch + 1}, step {batch + 1}")

    def on_epoch_end(self, epoch, logs=None):
        for key in ("loss", "val_loss"):
            self._check((logs or {}).get(key), f"at the end of epoch {epoch + 1}", key)

    def _check(self, loss, where, key="loss"):
        if loss is None or math.isfinite(float(loss)):
            return
        rate = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
        what = "training loss" if key == "loss" else "validation loss"
        raise TrainingDiverged(f"the {what} became {float(loss)} {where} (learning rate {rate:g})")


class StopOnEmptyEpoch(keras.callbacks.Callback):
    """Stops training with `DataError` when an epoch ends without a single training batch.

    A training split whose every file is undecodable is skipped file by file
    (each named in a warning) and leaves nothing to train on; the epoch would
    end with no figures at all. Placed before the backup, it stops the run
    before an empty epoch is recorded. An epoch resumed at a step counts the
    steps an earlier session trained.
    """

    def on_epoch_begin(self, epoch, logs=None):
        self._batches = (logs or {}).get("first_step", 0)

    def on_train_batch_end(self, batch, logs=None):
        self._batches += 1

    def on_epoch_end(self, epoch, logs=None):
        if self._batches == 0:
            raise DataError(
                f"epoch {epoch + 1} had no training batch: no training image could be decoded (the files are "
                "named in the warnings above), or the training split is empty; check data.source"
            )


class RunTensorBoard(keras.callbacks.TensorBoard):
    """`keras.callbacks.TensorBoard` that flushes its event files at the end of every epoch, and logs no epoch twice.

    Event writers buffer for up to two minutes; after a kill, the epochs a
    backup has committed must already be on disk, or the resumed run's charts
    would have holes. Put it before `RunBackup`. Epochs up to `skip_through`
    are in the event files already (`logged_epochs`): a resumed run trains
    such an epoch again and logs nothing for it.

    Args:
        log_dir: the TensorBoard log directory.
        skip_through: the last epoch already logged (-1: none).
        **kwargs: `keras.callbacks.TensorBoard`'s.
    """

    def __init__(self, log_dir, skip_through=-1, **kwargs):
        super().__init__(log_dir, **kwargs)
        self.skip_through = skip_through

    def on_epoch_end(self, epoch, logs=None):
        if epoch <= self.skip_through:
            return
        super().on_epoch_end(epoch, logs)
        for writer in keras_private.summary_writers(self).values():
            writer.flush()
