"""The published errors this project's results are set beside, the table that sets them side by side, and when
top-5 error means anything.

Importable without TensorFlow (the config checks use `has_top5`).
"""

# ILSVRC-2012 reference errors (paper, Table 2), as fractions.
PAPER_ONE_CNN_TOP1 = 0.407  # one CNN, validation set
PAPER_ONE_CNN_TOP5 = 0.182
PAPER_ENSEMBLE_TOP5 = 0.153  # 7 CNNs with extra pre-training, test set (the winning entry)
# torchvision's AlexNet, one centre crop, ILSVRC-2012 validation.
TORCHVISION_TOP1 = 0.435
TORCHVISION_TOP5 = 0.209

# The rows printed under a result: (label, top-1 error, top-5 error), None where not reported.
REFERENCE_ROWS = (
    ("paper, one CNN, 10 crops (val)", PAPER_ONE_CNN_TOP1, PAPER_ONE_CNN_TOP5),
    ("paper, 7-CNN ensemble (test)", None, PAPER_ENSEMBLE_TOP5),
    ("torchvision AlexNet, 1 crop (val)", TORCHVISION_TOP1, TORCHVISION_TOP5),
)


def has_top5(num_classes):
    """Whether top-5 error means anything: with 5 classes or fewer every label is in the top 5."""
    return num_classes > 5


def comparison_table(split, errors, accuracy=False):
    """A run's errors beside the paper's and torchvision's, as lines of text.

    Args:
        split: the split the errors were measured on, e.g. "validation".
        errors: {crops: (top-1 error, top-5 error or None)}, one row each, in
            this order: "this run, <crops> crop(s) (<split>)".
        accuracy: add a top-1 accuracy column (1 - top-1 error).

    Returns:
        A list of lines: the column heads, the run's rows, `REFERENCE_ROWS`
        and a note, each indented by two spaces; "-" where a value is None.
    """
    rows = [(f"this run, {crops} crop{'s' if crops > 1 else ''} ({split})", top1, top5)
            for crops, (top1, top5) in errors.items()]  # fmt: skip
    rows += REFERENCE_ROWS
    heads = ["top-1 error", "top-5 error"] + (["top-1 accuracy"] if accuracy else [])
    width = max(len(row[0]) for row in rows)

    def cells(values):
        return "".join(f"  {'-' if v is None else format(v, '.2%'):>{len(h)}}" for v, h in zip(values, heads))

    lines = [f"  {'':<{width}}" + "".join(f"  {head}" for head in heads)]
    for label, top1, top5 in rows:
        lines.append(f"  {label:<{width}}" + cells([top1, top5, None if top1 is None else 1.0 - top1]))
    lines.append("  (the reference errors are ILSVRC-2012's, 1000 classes; compare like with like)")
    return lines
