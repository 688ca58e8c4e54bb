"""Top-k error, the measure the paper reports (section 6), as Keras metrics."""

import keras

from pipeline.evaluation.references import has_top5


@keras.saving.register_keras_serializable(package="alexnet")
class SparseTopKError(keras.metrics.SparseTopKCategoricalAccuracy):
    """1 - top-k accuracy: the fraction of images whose label is not among the k highest scores.

    Works on logits or probabilities alike (only the ranking matters).
    """

    def __init__(self, k=5, name=None, **kwargs):
        super().__init__(k=k, name=name or f"top{k}_error", **kwargs)
        # Lower is better: Keras callbacks in mode="auto" read this (the parent says "up").
        self._direction = "down"

    def result(self):
        return 1.0 - super().result()


def error_metrics(num_classes):
    """Top-1 and top-5 error (top-5 only where there are more than 5 classes)."""
    metrics = [SparseTopKError(1)]
    if has_top5(num_classes):
        metrics.append(SparseTopKError(5))
    return metrics
