"""The published figures this project's results are set beside, and when top-5 error means anything.

Importable without TensorFlow (the config checks use `has_top5`).
"""

# ILSVRC-2012 reference figures (paper, Table 2), as fractions.
PAPER_ONE_CNN_TOP1 = 0.407  # one CNN, validation set
PAPER_ONE_CNN_TOP5 = 0.182
PAPER_ENSEMBLE_TOP5 = 0.153  # 7 CNNs with extra pre-training, test set (the winning entry)
# torchvision's AlexNet, one centre crop, ILSVRC-2012 validation.
TORCHVISION_TOP1 = 0.435
TORCHVISION_TOP5 = 0.209


def has_top5(num_classes):
    """Whether top-5 error means anything: with 5 classes or fewer every label is in the top 5."""
    return num_classes > 5
