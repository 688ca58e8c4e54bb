"""The errors a user can cause, raised by every layer; `pipeline.console.cli` turns them into exit statuses.

    UserError            the user can fix it; the message says what happened and what to do
      ConfigError        a config, argument or input that cannot be used (exit status 2)
      RunFailed          the run started and could not finish (exit status 1)
        DiskFull         a file could not be written for want of disk space (exit status 1)

Messages read "<what>: <what to do>"; the command prints them as one `error:` line.
This module imports nothing of the project, nor TensorFlow.
"""

import errno


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
