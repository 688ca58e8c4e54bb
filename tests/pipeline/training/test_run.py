"""A run's closing lines: its errors beside the paper's, both views when ten crops are logged, the best epoch."""

import pathlib

from pipeline.training import run as training_run

METRICS = {"epochs": 2, "wall_seconds": 10, "images_per_second": 5.0, "val_top1_error": 0.5, "val_top5_error": 0.25}


def test_the_summary_puts_the_runs_errors_beside_the_papers():
    lines = training_run._summary(METRICS, pathlib.Path("runs/x")).splitlines()
    assert lines == [
        "",
        "Finished 2 epochs in 10 s (5.0 training images/s).",
        "                                     top-1 error  top-5 error  top-1 accuracy",
        "  this run, 1 crop (validation)           50.00%       25.00%          50.00%",
        "  paper, one CNN, 10 crops (val)          40.70%       18.20%          59.30%",
        "  paper, 7-CNN ensemble (test)                 -       15.30%               -",
        "  torchvision AlexNet, 1 crop (val)       43.50%       20.90%          56.50%",
        "  (the reference errors are ILSVRC-2012's, 1000 classes; compare like with like)",
        "Run directory: runs/x (history.csv: one row per epoch)",
        "  tensorboard --logdir runs/x/logs",
    ]


def test_ten_crop_errors_and_the_best_epoch_get_lines_of_their_own(tmp_path):
    metrics = {**METRICS, "val_10crop_top1_error": 0.375, "val_10crop_top5_error": 0.125, "skipped_images": 3,
               "best_epoch": 1, "best_monitor": "val_top1_error", "best_value": 0.4375}
    best = tmp_path / "checkpoints" / "best.keras"
    best.parent.mkdir()
    best.write_bytes(b"the best model")
    lines = training_run._summary(metrics, tmp_path).splitlines()
    assert "  this run, 10 crops (validation)         37.50%       12.50%          62.50%" in lines
    assert "  3 image files skipped (gone or undecodable, named in the warnings above)" in lines
    assert f"Best epoch 1 of 2 by val_top1_error (0.4375): {best}" in lines
    # Deleted by the user since: the summary does not point at nothing.
    best.unlink()
    lines = training_run._summary(metrics, tmp_path).splitlines()
    assert f"Best epoch 1 of 2 by val_top1_error (0.4375): {best} is gone (deleted since it was written)" in lines
