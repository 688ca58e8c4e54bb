"""The C allocator of a process that streams batches: freed memory kept for the next batch, in a few heaps.

An input pipeline allocates and frees the same large buffers over and over
(a 256x256 raw record is 196 KB, its 224 window 150 KB, a batch of 128
windows 19 MB). glibc's malloc hands such memory back to the kernel when it
is freed and asks for it again a moment later, and every page asked for anew
is a page fault and a page of zeros written. `keep_freed_memory` sets three
of glibc's parameters, as their environment variables would at start-up:

    M_MMAP_THRESHOLD  blocks from this size up get a mapping of their own,
                      unmapped when freed: MMAP_THRESHOLD_BYTES (32 MiB, the
                      most glibc takes), so that records and batches come
                      from the heaps. glibc's default, 128 KiB, rises by
                      itself as mapped blocks are freed, but not once
                      M_TOP_PAD is set: without this setting every record
                      would be mapped anew.
    M_TOP_PAD         the free memory kept (and asked for in advance) at the
                      top of each heap: TOP_PAD_BYTES.
    M_ARENA_MAX       the heaps ("arenas") threads share: `arena_limit()`,
                      2 to 8 by the CPU count, where glibc's limit is 8 per
                      core. tf.data starts new threads every epoch, which
                      glibc may hand other heaps, each keeping its own pad
                      and its own free blocks: with 16 heaps on 2 cores the
                      raw pipeline's resident memory kept growing and its
                      speed swung (README, "Input pipeline";
                      `python -m benchmarks.malloc_heaps`). Threads that
                      share a heap take turns at its lock, so the limit grows
                      with the cores: a quarter of them, at most 8.

`pipeline.data.pipelines.build_datasets` calls it, so every user of the
pipeline gets it. Each setting's environment variable, when set, is left to
rule (`MALLOC_ARENA_MAX=16 python -m pipeline.benchmark --input` measures
with glibc's limit on 2 cores). M_ARENA_MAX bounds the heaps made from then
on, and glibc fixes its own limit once a process has made more than 8: so
the commands (`pipeline.train`, `tuning.search`, `pipeline.benchmark`) call
`keep_freed_memory` before they load TensorFlow, whose threads make heaps.
`heaps()` counts those a process has.
"""

import ctypes
import ctypes.util
import functools
import os
import platform

# mallopt's parameter numbers (malloc.h)
M_TOP_PAD, M_MMAP_THRESHOLD, M_ARENA_MAX = -2, -3, -8
MMAP_THRESHOLD_BYTES = 32 << 20
TOP_PAD_BYTES = 256 << 20
MIN_ARENAS, MAX_ARENAS = 2, 8
# Environment variable -> mallopt's parameter, in the order they are set.
SETTINGS = {"MALLOC_MMAP_THRESHOLD_": M_MMAP_THRESHOLD, "MALLOC_TOP_PAD_": M_TOP_PAD, "MALLOC_ARENA_MAX": M_ARENA_MAX}

_state = {"applied": None}


# Each looked up once: platform.libc_ver reads the interpreter's binary, find_library runs ldconfig.
@functools.cache
def _is_glibc():
    return platform.libc_ver()[0] == "glibc"


@functools.cache
def _libc():
    return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")


def malloc_info():
    """glibc's `malloc_info` report of this process's heaps (XML), or None where the C library is not glibc."""
    if not _is_glibc():
        return None
    libc = _libc()
    libc.open_memstream.restype = ctypes.c_void_p
    text, size = ctypes.c_void_p(), ctypes.c_size_t()
    stream = libc.open_memstream(ctypes.byref(text), ctypes.byref(size))
    if not stream:
        return None
    try:
        libc.malloc_info(0, ctypes.c_void_p(stream))
    finally:
        libc.fclose(ctypes.c_void_p(stream))
    report = ctypes.string_at(text, size.value).decode("ascii", "replace")
    libc.free(text)
    return report


def heaps():
    """The heaps (arenas) glibc's malloc has made in this process so far; None where it cannot tell."""
    report = malloc_info()
    return None if report is None else report.count("<heap nr=")


def arena_limit(cores=None):
    """The heaps threads share: a quarter of the CPUs this process may use, from MIN_ARENAS to MAX_ARENAS."""
    cores = cores or len(os.sched_getaffinity(0))
    return max(MIN_ARENAS, min(MAX_ARENAS, cores // 4))


def keep_freed_memory():
    """Sets glibc's M_MMAP_THRESHOLD, M_TOP_PAD and M_ARENA_MAX once per process; returns a line saying so.

    Leaves malloc alone where the C library is not glibc; a setting whose
    environment variable is set is left to it (the user's choice wins).
    """
    if _state["applied"] is None:
        _state["applied"] = _apply()
    return _state["applied"]


def _apply():
    if not _is_glibc():
        return "malloc: not glibc, left as it is"
    try:
        mallopt = _libc().mallopt
    except (OSError, AttributeError):
        return "malloc: mallopt not found, left as it is"
    arenas = arena_limit()
    wanted = {"MALLOC_MMAP_THRESHOLD_": MMAP_THRESHOLD_BYTES, "MALLOC_TOP_PAD_": TOP_PAD_BYTES,
              "MALLOC_ARENA_MAX": arenas}
    described = {"MALLOC_MMAP_THRESHOLD_": f"M_MMAP_THRESHOLD {MMAP_THRESHOLD_BYTES >> 20} MiB",
                 "MALLOC_TOP_PAD_": f"M_TOP_PAD {TOP_PAD_BYTES >> 20} MiB", "MALLOC_ARENA_MAX": f"M_ARENA_MAX {arenas}"}
    parts = []
    for name, parameter in SETTINGS.items():
        if os.environ.get(name):
            parts.append(f"{name}={os.environ[name]} from the environment")
        elif mallopt(parameter, wanted[name]) == 1:
            parts.append(described[name])
        else:
            parts.append(f"mallopt refused {described[name]}, left as it is")
    return f"malloc: {', '.join(parts)}; {heaps()} heap(s) made so far"


def applied():
    """The line `keep_freed_memory` returned, or None if it has not run in this process."""
    return _state["applied"]
