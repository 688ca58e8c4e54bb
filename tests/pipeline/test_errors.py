"""pipeline.errors: the error classes' places and is_disk_full's reading of OSError, h5py and TensorFlow messages."""

import errno

import pytest

from pipeline.errors import ConfigError, DiskFull, RunFailed, UserError, is_disk_full


def test_the_hierarchy_the_exit_statuses_follow():
    assert issubclass(ConfigError, UserError) and issubclass(ConfigError, ValueError)
    assert issubclass(RunFailed, UserError) and issubclass(RunFailed, RuntimeError)
    assert issubclass(DiskFull, RunFailed) and not issubclass(DiskFull, ConfigError)


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT])
def test_an_oserror_for_a_full_disk_or_quota(code):
    assert is_disk_full(OSError(code, "whatever the platform says"))


@pytest.mark.parametrize(
    "exc",
    [
        # h5py wraps the C library's errno in its text.
        OSError("Can't write data (file write failed: time = ..., errno = 28, error message = 'No space left')"),
        RuntimeError("Can't write data (errno = 122, error message = 'Disk quota exceeded')"),
        # TensorFlow's file system raises its own error classes with the strerror text.
        Exception("/tmp/run/saved_model/variables/variables.data-00000-of-00001; No space left on device"),
    ],
)
def test_a_wrapped_full_disk_message(exc):
    assert is_disk_full(exc)


@pytest.mark.parametrize(
    "exc",
    [
        OSError(errno.EACCES, "Permission denied"),
        OSError(errno.ENOMEM, "Cannot allocate memory"),
        MemoryError(),
        RuntimeError("errno = 2, error message = 'No such file or directory'"),
    ],
)
def test_other_failures_are_not_a_full_disk(exc):
    assert not is_disk_full(exc)
