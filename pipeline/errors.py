"""The errors a user can cause, raised by every layer; `pipeline.console.cli` turns them into exit statuses.

    UserError            the user can fix it; the message says what happened and what to do
      ConfigError        a config, argument or input that cannot be used (exit status 2)
      RunFailed          the run started and could not finish (exit status 1)
        DiskFull         a file could not be written for want of disk space (exit status 1)
    Stopped              SIGINT or SIGTERM ended the command (exit status 128 + the signal's number);
                         a BaseException, like KeyboardInterrupt, so that no `except Exception` swallows it

Messages read "<what>: <what to do>"; the command prints them as one `error:` line.
This module imports nothing of the project, nor TensorFlow.
"""

import errno
import signal


class UserError(Exception):
    """A failure the user can fix; the message says what happened and what to do."""


class ConfigError(UserError, ValueError):
    """A config, argument or input that cannot be used; the message names the dotted key, argument or path."""


class RunFailed(UserError, RuntimeError):
    """The run started and could not finish."""


class DiskFull(RunFailed):
    """A file could not be written: the disk (or the quota) is full. The message names the file."""


_DISK_FULL_TEXT = ("No space left on device", "Disk quota exceeded", "errno = 28", "errno = 122")


def is_disk_full(exc):
    """Whether an exception (an OSError, h5py's or TensorFlow's) says that the disk or the quota is full."""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    return any(text in str(exc) for text in _DISK_FULL_TEXT)


class Stopped(BaseException):
    """SIGINT or SIGTERM ended the command; `message` says where it stopped and how to go on.

    Args:
        signum: the signal (its name is `signame`, the exit status `status`).
        message: the line the command prints (default: stopped, run the same command again).
    """

    def __init__(self, signum, message=None):
        self.signum = int(signum)
        self.message = message or f"stopped by {signal_name(signum)}: run the same command again to go on"
        super().__init__(self.message)

    @property
    def status(self):
        """128 + the signal's number: 130 for SIGINT, 143 for SIGTERM, as a shell reports a process it ended."""
        return 128 + self.signum


def signal_name(signum):
    """"SIGTERM" for signal.SIGTERM (and so on)."""
    return signal.Signals(signum).name
