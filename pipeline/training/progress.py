"""A run's progress for people and for log files: each epoch's steps, images/s, and the time the run has left.

    train.verbose: 1  a bar redrawn in place on one line (a terminal)
    train.verbose: 2  plain lines, no carriage returns: one at most every LOG_INTERVAL
                      seconds and one at every epoch's end (a log file, nohup, a scheduler)
    train.verbose: auto   1 when stdout is a terminal, else 2

Every line says where the epoch stands (step s of S, known before the first
epoch starts; "about" when undecodable files may shorten it), the images/s so
far, the epoch's time left and the whole run's. Keras' own progress bar is off.
"""

import sys
import time

import keras

from pipeline.console.progress import duration, is_terminal

LOG_INTERVAL = 30.0  # seconds between two lines in a log file
BAR_INTERVAL = 0.5  # seconds between two redraws of the bar
BAR_WIDTH = 24
# Logged figures shown on a progress line, in this order, when present.
SHOWN = ("loss", "top1_error", "top5_error")


def progress_mode(verbose, stream=None):
    """0 (silent), 1 (bar) or 2 (lines) for `train.verbose`, auto by whether `stream` (stdout) is a terminal."""
    if verbose == "auto":
        return 1 if is_terminal(stream) else 2
    return int(verbose)


def _figures(logs, names):
    return "  ".join(f"{name} {float(logs[name]):.4g}" for name in names if name in logs)


class TrainingProgress(keras.callbacks.Callback):
    """Progress lines (or a bar) with the epoch's and the whole run's time left.

    Args:
        steps_per_epoch: training steps in one epoch (the epoch plan's).
        batch_size: images per step (global batch).
        epochs: the epoch the run ends after.
        mode: 1 a bar redrawn in place, 2 plain lines.
        exact: whether `steps_per_epoch` is exact (False: undecodable files may shorten an epoch).
        stream: where to write (default: sys.stdout).
        clock: a time function (tests pass a fake one).
        interval: seconds between two lines (default: LOG_INTERVAL for lines, BAR_INTERVAL for a bar).
    """

    def __init__(self, steps_per_epoch, batch_size, epochs, mode=2, exact=True, stream=None, clock=time.monotonic,
                 interval=None):
        super().__init__()
        self.steps = steps_per_epoch
        self.batch_size = batch_size
        self.epochs = epochs
        self.mode = mode
        self.exact = exact
        self.stream = stream
        self.clock = clock
        self.interval = interval if interval is not None else (BAR_INTERVAL if mode == 1 else LOG_INTERVAL)
        self._epoch_seconds = []  # whole epochs (training, validation, callbacks) of this session
        self._validation_seconds = 0.0
        self._epoch = 0
        self._step = 0
        self._logs = {}

    @property
    def _out(self):
        return self.stream or sys.stdout

    def _write(self, text, redraw=False):
        self._out.write(("\r\033[K" + text) if redraw else text + "\n")
        self._out.flush()

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch
        self._step = 0
        self._logs = {}
        self._start = self._last = self.clock()
        self._test_start = None

    def on_train_batch_end(self, batch, logs=None):
        self._step = batch + 1
        self._logs = logs or {}
        now = self.clock()
        if now - self._last >= self.interval:
            self._last = now
            self._write(self.line(now), redraw=self.mode == 1)

    def on_test_begin(self, logs=None):
        self._test_start = self.clock()

    def on_test_end(self, logs=None):
        if self._test_start is not None:
            self._validation_seconds = self.clock() - self._test_start

    def on_epoch_end(self, epoch, logs=None):
        now = self.clock()
        seconds = now - self._start
        self._epoch_seconds.append(seconds)
        logs = logs or {}
        if self.mode == 1:
            self._write(self.line(now), redraw=True)
            self._out.write("\n")
        train = _figures(logs, SHOWN)
        validation = _figures(logs, [f"val_{name}" for name in SHOWN] + ["val_10crop_top1_error", "val_10crop_top5_error"])
        rate = f"{logs['images_per_second']:,.0f} images/s" if "images_per_second" in logs else ""
        left = self.epochs - epoch - 1
        parts = [f"epoch {epoch + 1}/{self.epochs} done in {duration(seconds)}", rate, train, validation,
                 f"run left {duration(left * self._epoch_estimate())}" if left else "the last epoch"]
        self._write("; ".join(part for part in parts if part))

    def _epoch_estimate(self, now=None):
        """Seconds one whole epoch takes: this session's mean, or the current epoch extrapolated."""
        if self._epoch_seconds:
            return sum(self._epoch_seconds) / len(self._epoch_seconds)
        elapsed = (now or self.clock()) - self._start
        return elapsed / max(self._step, 1) * self.steps + self._validation_seconds

    def line(self, now=None):
        """The progress text as it stands in the current epoch."""
        now = now or self.clock()
        elapsed = max(now - self._start, 1e-9)
        steps = f"{self._step:,}/{'' if self.exact else 'about '}{self.steps:,}"
        if self.mode == 1:
            done = min(self._step / max(self.steps, 1), 1.0)
            filled = int(done * BAR_WIDTH)
            steps = "[" + "=" * filled + (">" if filled < BAR_WIDTH else "") + "." * (BAR_WIDTH - filled - 1) + "] " + steps
        rate = self._step * self.batch_size / elapsed
        epoch_left = max(self.steps - self._step, 0) * elapsed / max(self._step, 1) + self._validation_seconds
        run_left = epoch_left + (self.epochs - self._epoch - 1) * self._epoch_estimate(now)
        parts = [f"epoch {self._epoch + 1}/{self.epochs}", f"step {steps}", f"{rate:,.0f} images/s",
                 _figures(self._logs, SHOWN), f"epoch left {duration(epoch_left)}", f"run left {duration(run_left)}"]
        return "  ".join(part for part in parts if part)
