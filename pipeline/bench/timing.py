"""Timing on a shared machine: medians with their spread, the cores a timing kept busy, the matmul ceiling."""

import contextlib
import os
import statistics
import time


def median_spread(values):
    """(median, minimum, maximum) of a list of timings."""
    return statistics.median(values), min(values), max(values)


def fmt(values, unit, digits=1):
    """Timings as text: "<median> <unit> (spread <min>-<max>, <n> runs)", with `digits` decimals."""
    median, low, high = median_spread(values)
    return f"{median:.{digits}f} {unit} (spread {low:.{digits}f}-{high:.{digits}f}, {len(values)} runs)"


class CoreMeter:
    """Cores this process kept busy (CPU time / wall time) over the timings it wraps."""

    def __init__(self):
        self.cpu = self.wall = 0.0

    @contextlib.contextmanager
    def measure(self):
        cpu, wall = time.process_time(), time.perf_counter()
        try:
            yield
        finally:
            self.cpu += time.process_time() - cpu
            self.wall += time.perf_counter() - wall

    @property
    def cores(self):
        return self.cpu / self.wall if self.wall else float("nan")

    def describe(self, what="", warn=True):
        available = len(os.sched_getaffinity(0))
        note = "  <- other load on the machine? (see --help)" if warn and self.cores < 0.8 * available else ""
        return f"  used {self.cores:.2f} of {available} cores{what}{note}"


def matmul_rate(dtype="float32", size=2048, repeats=3, per_repeat=4):
    """Measured dense matmul rate of the default device.

    Args:
        dtype: "float32", "float16" or "bfloat16".
        size: square matrix size.
        repeats: timings.
        per_repeat: matmuls per timing.

    Returns:
        A list of GFLOP/s, one per timing.
    """
    import tensorflow as tf

    a = tf.random.uniform((size, size), dtype=tf.float32)
    a, b = tf.cast(a, dtype), tf.cast(tf.transpose(a), dtype)
    # Eager calls, one op each: inside a tf.function, identical matmuls of
    # constants would be merged or folded by the graph optimiser.
    tf.matmul(a, b).numpy()  # warm up (kernel selection, allocation)
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(per_repeat):
            product = tf.matmul(a, b)
        product.numpy()
        rates.append(2 * size**3 * per_repeat / (time.perf_counter() - start) / 1e9)
    return rates


# Matrix size -> matmuls per timing: the same work per timing at both sizes.
MATMUL_SIZES = {2048: 8, 4096: 1}


def best_matmul(dtype, repeats, out, sizes=None):
    """The matmul rate at 2048 and at 4096 (the same work per timing); prints both, returns the faster size's list.

    Which size runs closer to the peak depends on the kernels and caches
    (Eigen here is faster at 2048, oneDNN at 4096), so the ceiling is the
    better of the two; `sizes[dtype]` is set to it.
    """
    best = None
    for size, per_repeat in MATMUL_SIZES.items():
        rates = matmul_rate(dtype, size=size, repeats=repeats, per_repeat=per_repeat)
        out(f"matmul {dtype:<8} {size:>4}    {fmt(rates, 'GFLOP/s')}")
        if best is None or statistics.median(rates) > statistics.median(best):
            best = rates
            if sizes is not None:
                sizes[dtype] = size
    return best
