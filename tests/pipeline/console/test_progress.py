"""The progress line: count, rate and time left, quiet for short passes."""

import io

from pipeline.console.progress import Progress


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_a_log_gets_count_rate_and_time_left_at_intervals():
    clock, out = Clock(), io.StringIO()
    progress = Progress("train split", total=1000, stream=out, clock=clock, log_interval=10, delay=3)
    for _ in range(1000):
        clock.now += 0.0625  # 16 images/s, exact in binary
        progress.update()
    progress.done()
    assert out.getvalue().splitlines() == [
        "train split: 48 / 1,000 images, 16 images/s, 1 min 00 s left",  # 3 s in, then every 10 s
        "train split: 208 / 1,000 images, 16 images/s, 50 s left",
        "train split: 368 / 1,000 images, 16 images/s, 40 s left",
        "train split: 528 / 1,000 images, 16 images/s, 30 s left",
        "train split: 688 / 1,000 images, 16 images/s, 20 s left",
        "train split: 848 / 1,000 images, 16 images/s, 10 s left",
        "train split: 1,000 / 1,000 images, 16 images/s, 1 min 02 s",
    ]


def test_a_short_pass_prints_nothing_and_an_unknown_total_gives_elapsed_time():
    clock, out = Clock(), io.StringIO()
    quick = Progress("listing /data", unit="files", stream=out, clock=clock, delay=3)
    clock.now += 2.9
    quick.update(5000)
    quick.done()
    assert out.getvalue() == ""
    slow = Progress("listing /data", unit="files", stream=out, clock=clock, log_interval=60, delay=3)
    clock.now += 3723
    slow.update(1_281_167)
    slow.done()
    assert out.getvalue().splitlines() == ["listing /data: 1,281,167 files, 344 files/s, 1 h 02 min"] * 2


def test_a_detail_ends_each_line_and_a_closing_line_can_be_forced():
    clock, out = Clock(), io.StringIO()
    errors = iter(["50.00%", "25.00%"])
    progress = Progress("evaluating", total=4, unit="batches", stream=out, clock=clock, log_interval=30, delay=None,
                        detail=lambda: f"top-1 error so far {next(errors)}")
    for _ in range(4):
        clock.now += 10.0
        progress.update()
    progress.done(always=True)
    assert out.getvalue().splitlines() == [
        "evaluating: 3 / 4 batches, 0.1 batches/s, 10 s left, top-1 error so far 50.00%",  # one interval in
        "evaluating: 4 / 4 batches, 0.1 batches/s, 40 s, top-1 error so far 25.00%",
    ]
