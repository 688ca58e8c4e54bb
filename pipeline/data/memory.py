"""The C allocator of a process that streams batches: freed memory kept for the next batch.

An input pipeline allocates and frees the same large buffers over and over
(a 256x256 raw record is 196 KB, a batch of 128 of them 25 MB). glibc's
malloc hands freed memory at the top of its heap back to the kernel and asks
for it again a moment later, and every page asked for anew is a page fault
and a page of zeros written: on raw records that was a third of the
pipeline's CPU time. `keep_freed_memory` sets glibc's M_TOP_PAD, the memory
malloc keeps (and asks for in advance) at the top of its heap, to
TOP_PAD_BYTES, as the environment variable MALLOC_TOP_PAD_ would at start-up.
The process's resident memory may stay that much above what it uses.

`pipeline.data.pipelines.build_datasets` calls it, so training, tuning and
the benchmark get it. MALLOC_TOP_PAD_ in the environment is left to rule:
`MALLOC_TOP_PAD_=131072 python -m pipeline.benchmark --input` measures with
glibc's default (128 KiB).
"""

import ctypes
import ctypes.util
import os
import platform

M_TOP_PAD = -2  # mallopt's parameter number (malloc.h)
TOP_PAD_BYTES = 256 << 20
ENVIRONMENT = "MALLOC_TOP_PAD_"

_state = {"applied": None}


def keep_freed_memory():
    """Sets glibc's M_TOP_PAD to TOP_PAD_BYTES once per process; returns a line saying what was done.

    Leaves malloc alone where the C library is not glibc, or where
    MALLOC_TOP_PAD_ is set in the environment (the user's choice wins).
    """
    if _state["applied"] is None:
        _state["applied"] = _apply()
    return _state["applied"]


def _apply():
    if os.environ.get(ENVIRONMENT):
        return f"malloc: {ENVIRONMENT}={os.environ[ENVIRONMENT]} from the environment"
    if platform.libc_ver()[0] != "glibc":
        return "malloc: not glibc, left as it is"
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        done = libc.mallopt(M_TOP_PAD, TOP_PAD_BYTES)
    except (OSError, AttributeError):
        return "malloc: mallopt not found, left as it is"
    if done != 1:
        return "malloc: mallopt(M_TOP_PAD) refused, left as it is"
    return f"malloc: M_TOP_PAD {TOP_PAD_BYTES >> 20} MiB (freed memory kept for the next batch)"


def applied():
    """The line `keep_freed_memory` returned, or None if it has not run in this process."""
    return _state["applied"]
