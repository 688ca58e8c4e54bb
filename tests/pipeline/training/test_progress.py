"""Progress for people and log files: known epoch lengths, plain lines at most every ~30 s, the run's time left."""

import io

import pytest

from pipeline.training.progress import TrainingProgress, progress_mode


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def drive(progress, clock, epochs, steps, step_seconds, validation_seconds=0.0, start=0):
    """Runs the callback through `epochs` epochs of `steps` steps, each `step_seconds` long."""
    progress.on_train_begin()
    for epoch in range(start, start + epochs):
        progress.on_epoch_begin(epoch)
        for step in range(steps):
            clock.now += step_seconds
            progress.on_train_batch_end(step, {"loss": 2.0 - 0.01 * step, "top1_error": 0.5})
        progress.on_test_begin()
        clock.now += validation_seconds
        progress.on_test_end()
        progress.on_epoch_end(epoch, {"loss": 1.5, "top1_error": 0.4, "val_top1_error": 0.45,
                                      "images_per_second": 32.0, "learning_rate": 0.01})


def test_log_lines_come_every_thirty_seconds_and_at_each_epoch_end_without_carriage_returns():
    clock, out = Clock(), io.StringIO()
    progress = TrainingProgress(steps_per_epoch=100, batch_size=32, epochs=3, mode=2, stream=out, clock=clock)
    # 100 steps of 1 s: lines after 30, 60 and 90 s of each epoch, then the epoch's end.
    drive(progress, clock, epochs=2, steps=100, step_seconds=1.0, validation_seconds=10.0)
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue() and len(lines) == 8
    # Epoch 1 at step 30: 70 steps of 1 s left, no validation measured yet; the run's other two
    # epochs extrapolated from this one (100 s each).
    assert lines[0] == ("epoch 1/3  step 30/100  32 images/s  loss 1.71  top1_error 0.5  epoch left 1 min 10 s  "
                        "run left 4 min 30 s")
    assert lines[3] == ("epoch 1/3 done in 1 min 50 s; 32 images/s; loss 1.5  top1_error 0.4; val_top1_error 0.45; "
                        "run left 3 min 40 s")
    # Epoch 2 at step 30: 70 s of steps and 10 s of validation left, then one epoch as long as the first (110 s).
    assert lines[4].endswith("epoch left 1 min 20 s  run left 3 min 10 s")
    assert lines[7].startswith("epoch 2/3 done in 1 min 50 s;") and lines[7].endswith("run left 1 min 50 s")


def test_the_last_epoch_says_so_and_a_resumed_run_counts_from_its_epoch():
    clock, out = Clock(), io.StringIO()
    progress = TrainingProgress(steps_per_epoch=10, batch_size=8, epochs=5, mode=2, stream=out, clock=clock)
    drive(progress, clock, epochs=2, steps=10, step_seconds=1.0, start=3)  # resumed at epoch 4 of 5
    lines = out.getvalue().splitlines()
    assert lines == [
        "epoch 4/5 done in 10 s; 32 images/s; loss 1.5  top1_error 0.4; val_top1_error 0.45; run left 10 s",
        "epoch 5/5 done in 10 s; 32 images/s; loss 1.5  top1_error 0.4; val_top1_error 0.45; the last epoch",
    ]


def test_an_estimated_epoch_length_says_about():
    clock, out = Clock(), io.StringIO()
    progress = TrainingProgress(steps_per_epoch=100, batch_size=8, epochs=1, mode=2, exact=False, stream=out,
                                clock=clock)
    drive(progress, clock, epochs=1, steps=31, step_seconds=1.0)
    assert out.getvalue().splitlines()[0].startswith("epoch 1/1  step 30/about 100  8 images/s")


def test_the_bar_redraws_one_line_in_place_and_ends_each_epoch_with_a_newline():
    clock, out = Clock(), io.StringIO()
    progress = TrainingProgress(steps_per_epoch=4, batch_size=8, epochs=1, mode=1, stream=out, clock=clock)
    drive(progress, clock, epochs=1, steps=4, step_seconds=1.0)
    text = out.getvalue()
    redraws = text.split("\n")[0].split("\r\033[K")[1:]
    assert len(redraws) == 5  # each step (0.5 s apart at least), then the epoch's end
    assert redraws[1].startswith("epoch 1/1  step [============>...........] 2/4  8 images/s")
    assert redraws[-1].startswith("epoch 1/1  step [========================] 4/4")
    assert text.split("\n")[1].startswith("epoch 1/1 done in 4 s;")


@pytest.mark.parametrize("verbose, terminal, mode", [
    ("auto", True, 1), ("auto", False, 2), (0, True, 0), (1, False, 1), (2, True, 2),
])
def test_auto_picks_the_bar_on_a_terminal_and_lines_otherwise(verbose, terminal, mode):
    class Stream(io.StringIO):
        def isatty(self):
            return terminal

    assert progress_mode(verbose, Stream()) == mode
