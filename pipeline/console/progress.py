"""Progress of a pass over a whole dataset: count, rate and time left, on one line.

    progress = Progress("train", total=1_281_167, unit="images")
    for item in items:
        ...
        progress.update(1)
    progress.done()

On a terminal the line is redrawn in place (at most every `interval` seconds);
in a log file (stderr not a terminal) a line is written at most every
`log_interval` seconds. Nothing is printed before `delay` seconds have
passed, so a pass over a small dataset stays quiet.
"""

import sys
import time


def is_terminal(stream=None):
    """Whether `stream` (default: stdout) is a terminal, where a line can be redrawn in place."""
    stream = sys.stdout if stream is None else stream
    return hasattr(stream, "isatty") and stream.isatty()


def duration(seconds):
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


class Progress:
    """A one-line progress report on stderr.

    Args:
        what: what is being done, e.g. "train split".
        total: the count at the end, or None when unknown (no time left then).
        unit: what is counted, e.g. "images" or "files".
        interval: seconds between redraws on a terminal.
        log_interval: seconds between lines when stderr is not a terminal.
        delay: seconds before the first line (None: one interval).
        stream: where to write (default: sys.stderr).
        clock: a time function (tests pass a fake one).
        detail: a function of no arguments whose text ends each line (e.g. a running error), or None.
    """

    def __init__(self, what, total=None, unit="images", interval=0.5, log_interval=30.0, delay=3.0, stream=None,
                 clock=time.monotonic, detail=None):
        self.what = what
        self.detail = detail
        self.total = total
        self.unit = unit
        self.stream = stream or sys.stderr
        self.clock = clock
        self.interactive = is_terminal(self.stream)
        self.interval = interval if self.interactive else log_interval
        self.count = 0
        self.start = clock()
        delay = self.interval if delay is None else delay
        self._last = self.start + delay - self.interval  # the first line comes `delay` seconds in
        self._shown = False

    def line(self):
        """The progress text as it stands."""
        elapsed = max(self.clock() - self.start, 1e-9)
        rate = self.count / elapsed
        done = f"{self.count:,}" + (f" / {self.total:,}" if self.total else "")
        shown = f"{rate:,.0f}" if rate >= 10 else f"{rate:.2g}"
        text = f"{self.what}: {done} {self.unit}, {shown} {self.unit}/s"
        if self.total and rate > 0 and self.count < self.total:
            text += f", {duration((self.total - self.count) / rate)} left"
        else:
            text += f", {duration(elapsed)}"
        if self.detail is not None:
            text += f", {self.detail()}"
        return text

    def update(self, count=1):
        """Counts `count` more and redraws when it is time."""
        self.count += count
        now = self.clock()
        if now - self._last >= self.interval:
            self._last = now
            self._show()

    def _show(self, final=False):
        if self.interactive:
            self.stream.write("\r\033[K" + self.line() + ("\n" if final else ""))
        else:
            self.stream.write(self.line() + "\n")
        self.stream.flush()
        self._shown = True

    def done(self, always=False):
        """Writes the final line if anything was shown (a short pass stays silent), or in any case with always."""
        if self._shown or always:
            self._show(final=True)
