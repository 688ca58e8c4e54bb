"""The raw-records training pipeline over a long stretch, with glibc's malloc limited to several numbers of heaps.

    python -m benchmarks.malloc_heaps                      # heaps 16 (glibc's default on 2 cores), 4, 2
    python -m benchmarks.malloc_heaps --heaps 16 2 --segments 10
    python -m benchmarks.malloc_heaps --heaps 2 --batch-size 512 --batches 30

Writes 1,536 synthetic 500x375 JPEGs, prepares them as raw 256x256 records in
8 shards (as `python -m pipeline.benchmark --input` does), then, for each
heap count, starts a process with MALLOC_ARENA_MAX set to it, which takes
--segments x --batches training batches (224 crops, batch --batch-size, one
tf.data thread) from one iterator and prints, per segment, the images/s per busy
core (CPU time) and the process's resident memory after it. M_MMAP_THRESHOLD
and M_TOP_PAD are this project's settings in every process
(`pipeline.data.memory`). An epoch
here is 12 batches, and the shuffle buffer holds all 1,521 training images:
every epoch drains and refills it.
"""

import argparse
import os
import pathlib
import subprocess
import sys
import tempfile
import time


def resident_gib():
    """This process's resident memory (VmRSS), GiB."""
    status = pathlib.Path("/proc/self/status").read_text()
    return int(status.split("VmRSS:")[1].split()[0]) / 2**20


def child(records, segments, batches, batch_size):
    """Runs in the measured process: per segment, images/s per busy core and resident memory."""
    from pipeline.data.memory import heaps, keep_freed_memory

    keep_freed_memory()  # M_MMAP_THRESHOLD and M_TOP_PAD; the heaps come from MALLOC_ARENA_MAX
    from pipeline.bench.input import TRAINING_VIEW, take_images, with_threads
    from pipeline.config import load_config
    from pipeline.data.pipelines import build_datasets

    config = load_config([], [f"data.source=records:{records}", *TRAINING_VIEW])
    iterator = iter(with_threads(build_datasets(config.data, batch_size).train, 1).repeat())
    cells = []
    for _ in range(segments):
        cpu = time.process_time()
        count = take_images(iterator, batches)
        cells.append(f"{count / (time.process_time() - cpu):5.0f} {resident_gib():4.1f}")
    print(f"{os.environ['MALLOC_ARENA_MAX']:>5} {heaps():>5}  " + " | ".join(cells), flush=True)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.malloc_heaps", description=__doc__.split("\n")[0])
    parser.add_argument("--heaps", type=int, nargs="+", default=[16, 4, 2], help="MALLOC_ARENA_MAX values")
    parser.add_argument("--segments", type=int, default=6)
    parser.add_argument("--batches", type=int, default=120, help="batches a segment")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--child", type=pathlib.Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child(args.child, args.segments, args.batches, args.batch_size)

    from pipeline.bench.input import SHARDS, TRAINING_VIEW, write_synthetic_jpegs
    from pipeline.config import load_config
    from pipeline.data import records
    from pipeline.data.sources import load_source

    with tempfile.TemporaryDirectory() as tmp:
        tmp = pathlib.Path(tmp)
        write_synthetic_jpegs(tmp / "jpegs", 1536)
        config = load_config([], [f"data.source=folder:{tmp / 'jpegs'}", *TRAINING_VIEW])
        records.prepare(load_source(config.data), config, tmp / "raw", shards=SHARDS, image_format="raw")
        print(f"\nraw records, 1 tf.data thread, {len(os.sched_getaffinity(0))} cores; per segment of {args.batches} "
              f"batches of {args.batch_size}: images/s per busy core, resident GiB after it")
        print(f"{'heaps':>5} {'made':>5}")
        for count in args.heaps:
            env = {**os.environ, "MALLOC_ARENA_MAX": str(count)}
            done = subprocess.run([sys.executable, "-m", "benchmarks.malloc_heaps", "--child", str(tmp / "raw"),
                                   "--segments", str(args.segments), "--batches", str(args.batches),
                                   "--batch-size", str(args.batch_size)],
                                  env=env, capture_output=True, text=True)
            if done.returncode:
                sys.exit(f"MALLOC_ARENA_MAX={count}: the measuring process failed:\n{done.stderr[-3000:]}")
            print(done.stdout, end="", flush=True)


if __name__ == "__main__":
    sys.exit(main())
