"""Keras callbacks the trainer adds: throughput, learning rate, paper reference lines."""

import os
import time

import keras
import tensorflow as tf

from pipeline import metrics

# TensorBoard run name -> the value drawn on the validation top-5 error chart.
REFERENCE_LINES = {
    "reference_ensemble_15.3pct": metrics.PAPER_ENSEMBLE_TOP5,
    "reference_one_cnn_18.2pct": metrics.PAPER_ONE_CNN_TOP5,
}


class EpochStats(keras.callbacks.Callback):
    """Adds `learning_rate` and `images_per_second` to each epoch's logs.

    Put it before the TensorBoard callback: the logs dict is shared, so both
    figures are then written with the metrics (as epoch_learning_rate and
    epoch_images_per_second). Throughput counts the training part of the epoch
    only, not validation.

    Args:
        images_per_epoch: training images in one epoch.
    """

    def __init__(self, images_per_epoch):
        super().__init__()
        self.images_per_epoch = images_per_epoch
        self._start = None
        self._train_seconds = None

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()
        self._train_seconds = None

    def on_test_begin(self, logs=None):
        if self._start is not None and self._train_seconds is None:
            self._train_seconds = time.perf_counter() - self._start

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        seconds = self._train_seconds or (time.perf_counter() - self._start)
        logs["images_per_second"] = self.images_per_epoch / seconds
        logs["learning_rate"] = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))


class ReferenceLines(keras.callbacks.Callback):
    """Draws the paper's top-5 error figures on the validation top-5 chart.

    TensorBoard has no reference lines, so each figure is written as a constant
    under the same tag (`epoch_top5_error`) in a run of its own, named after
    what it is: the 2012 winning ensemble (15.3 %) and one CNN (18.2 %).

    Args:
        log_dir: the TensorBoard log directory of the run.
    """

    def __init__(self, log_dir, tag="epoch_top5_error"):
        super().__init__()
        self.log_dir = log_dir
        self.tag = tag
        self._writers = {}

    def on_train_begin(self, logs=None):
        for run, _ in REFERENCE_LINES.items():
            self._writers[run] = tf.summary.create_file_writer(os.path.join(self.log_dir, run))

    def on_epoch_end(self, epoch, logs=None):
        for run, value in REFERENCE_LINES.items():
            with self._writers[run].as_default():
                tf.summary.scalar(self.tag, value, step=epoch)
                self._writers[run].flush()

    def on_train_end(self, logs=None):
        for writer in self._writers.values():
            writer.close()
        self._writers = {}
