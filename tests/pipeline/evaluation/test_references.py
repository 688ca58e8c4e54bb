"""The published errors and the one table that sets a run's errors beside them (training's summary, evaluate)."""

from pipeline.evaluation import references


def test_the_training_summary_rows_centre_and_ten_crops_with_accuracy():
    lines = references.comparison_table("validation", {1: (0.5, 0.25), 10: (0.375, 0.125)}, accuracy=True)
    assert lines == [
        "                                     top-1 error  top-5 error  top-1 accuracy",
        "  this run, 1 crop (validation)           50.00%       25.00%          50.00%",
        "  this run, 10 crops (validation)         37.50%       12.50%          62.50%",
        "  paper, one CNN, 10 crops (val)          40.70%       18.20%          59.30%",
        "  paper, 7-CNN ensemble (test)                 -       15.30%               -",
        "  torchvision AlexNet, 1 crop (val)       43.50%       20.90%          56.50%",
        "  (the reference errors are ILSVRC-2012's, 1000 classes; compare like with like)",
    ]


def test_the_evaluation_row_without_top5_or_accuracy():
    lines = references.comparison_table("train", {1: (0.1, None)})
    assert lines[:2] == [
        "                                     top-1 error  top-5 error",
        "  this run, 1 crop (train)                10.00%            -",
    ]
    assert lines[2:5] == [
        "  paper, one CNN, 10 crops (val)          40.70%       18.20%",
        "  paper, 7-CNN ensemble (test)                 -       15.30%",
        "  torchvision AlexNet, 1 crop (val)       43.50%       20.90%",
    ]
    assert len(lines) == 6


def test_top5_means_something_above_five_classes():
    assert [references.has_top5(n) for n in (2, 5, 6, 1000)] == [False, False, True, True]
