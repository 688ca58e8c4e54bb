"""SIGINT and SIGTERM: every command ends on them in one line, and training stops at its next step with a backup.

Two ways a signal is handled, both restored to what they replaced when their block ends:

    terminate_raises()   every command (`pipeline.console.cli.command`): SIGTERM raises `Stopped`
                         where the program is, as Ctrl-C raises KeyboardInterrupt, so `finally`
                         blocks run, locks are released and the command prints one line (exit 143).
    StopAtStep()         the training loop (`pipeline.training.loop`): the first SIGINT or SIGTERM
                         is only noted; the loop backs up at the next step boundary and stops. A
                         second signal stops at once, as `terminate_raises` does.

A scheduler sends SIGTERM, then SIGKILL after a grace period (Kubernetes: 30 s, SageMaker spot:
120 s); a step boundary comes within one step's time. Python runs a handler only between two
bytecodes of the main thread, so a signal that arrives while TensorFlow computes a step is
handled when the step returns. Signal handlers can be set only in the main thread; elsewhere
(a test's worker thread) both blocks change nothing.

This module does not import TensorFlow.
"""

import contextlib
import signal
import sys
import threading

from pipeline.errors import Stopped, signal_name

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _in_main_thread():
    return threading.current_thread() is threading.main_thread()


def stop_now(signum, frame=None):
    """A signal handler that ends the program where it is: KeyboardInterrupt for SIGINT, `Stopped` otherwise."""
    if signum == signal.SIGINT:
        raise KeyboardInterrupt
    raise Stopped(signum)


@contextlib.contextmanager
def handlers(mapping):
    """Installs {signal: handler} for the block (main thread only), then puts back what was there."""
    if not _in_main_thread():
        yield
        return
    previous = {signum: signal.signal(signum, handler) for signum, handler in mapping.items()}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)


def terminate_raises():
    """For the block, SIGTERM raises `Stopped` (exit status 143) instead of killing the process silently."""
    return handlers({signal.SIGTERM: stop_now})


def reclaim():
    """Puts Python's handlers back in charge of SIGINT and SIGTERM at the operating system's level.

    TensorFlow's multi-worker runtime installs a C++ SIGTERM handler of its own
    when the cluster starts ("SIGTERM caught", then nothing), behind Python's
    back: Python still reports its own handler. Setting that handler again
    takes the signal back.
    """
    if not _in_main_thread():
        return
    for signum in STOP_SIGNALS:
        handler = signal.getsignal(signum)
        if callable(handler):
            signal.signal(signum, handler)


class StopAtStep:
    """Notes the first SIGINT or SIGTERM for the training loop, which stops at its next step boundary.

    Use as a context manager around the loop. `signum` is the signal
    received (None while none was); the loop reads it at every step boundary.
    A second signal stops at once (`stop_now`), for a user who does not want
    to wait for the step.

    Args:
        say: where the one line acknowledging the first signal goes (default: stderr).
    """

    def __init__(self, say=None):
        self.signum = None
        self._say = say or (lambda text: print(text, file=sys.stderr, flush=True))
        self._handlers = None

    def _handle(self, signum, frame):
        if self.signum is not None:
            stop_now(signum, frame)
        self.signum = signum
        self._say(f"{signal_name(signum)} received: stopping after the current step with a backup "
                  "(send it again to stop at once)")

    def __enter__(self):
        # A signal the process was started to ignore (a shell's background job ignores SIGINT) stays ignored.
        heard = [signum for signum in STOP_SIGNALS
                 if not _in_main_thread() or signal.getsignal(signum) is not signal.SIG_IGN]
        self._handlers = handlers({signum: self._handle for signum in heard})
        self._handlers.__enter__()
        return self

    def __exit__(self, *exc):
        return self._handlers.__exit__(*exc)
