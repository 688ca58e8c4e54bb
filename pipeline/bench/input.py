"""Measure the training input pipeline alone, beside a plain reference pipeline.

    python -m pipeline.benchmark --input                       # synthetic 500x375 JPEGs
    python -m pipeline.benchmark --input --images path/to/jpegs --repeats 5

Six pipelines read the same images; all but `decode` produce batches of 224x224x3:
    reference  decode_jpeg -> resize shorter side to 256 -> centre 256 -> random
               224 crop -> flip; parallel map, prefetch (the plain published
               recipe; float32)
    project    the training pipeline of pipeline.data (decodes only the crop
               window, flips and adds PCA colour noise a batch at a time; skips
               bad files; uint8, as the model takes it)
    prepared   the project pipeline reading TFRecords that `pipeline.prepare`
               wrote once: JPEGs at shorter side 256
    decode     tf.io.decode_jpeg alone over the `prepared` records, the same
               reading and parallelism, the pixels dropped: the ceiling for
               JPEG records
    square     ... the paper's central 256x256 square as JPEG (prepare --square)
    raw        ... the central square as raw uint8 pixels (prepare --format raw):
               no decoding; batches are cut straight out of the records
Every pipeline runs with --threads tf.data threads (its private thread pool),
each count in turn. Each figure is the median of --repeats timings of
--passes epochs, the pipelines taking turns, with the spread (min-max), in
images/s and images/s per CPU core, and the cores the process kept busy.
Each turn builds one iterator over the pipeline's repeated epochs (only its
threads run while it is timed), takes as many batches untimed as it then
times, so that the timing starts in the steady state with its buffers
emptied as fast as they fill, and times batches taken in a TensorFlow loop
(as model.fit's training step takes them, not in a Python loop). So a
timing counts the pipeline's steady work, not the ~0.2 s of building an
iterator, which model.fit pays once an epoch (0.02 ms a batch over an
ImageNet epoch, a quarter of a timing here). The process's malloc keeps
freed memory for the next batch, in a few heaps, for every pipeline alike
(`pipeline.data.memory`; MALLOC_ARENA_MAX=16 in the environment measures
with glibc's own heap limit on 2 cores).
"""

import functools
import os
import pathlib
import statistics
import tempfile
import time

import numpy as np

from pipeline.bench.timing import CoreMeter
from pipeline.config import load_config
from pipeline.console import cli
from pipeline.data import records
from pipeline.data.memory import keep_freed_memory
from pipeline.data.records import parse_jpeg_record
from pipeline.errors import ConfigError

# Training images/s of the paper's network on one fast GPU, in round figures (one H200, bfloat16, this project's
# model on JAX: 30,844; benchmarks/gpu/results/h200-2026-11-30): the rate an input pipeline must keep up with.
GPU_RATE = 20_000
# The training views every pipeline makes: the paper's 224 crops of the central 256 square, flips, colour noise.
TRAINING_VIEW = [
    "data.image_size=224", "data.resize=256", "data.cache=false", "data.validation_fraction=0.01",
    "data.augment.crop=random", "data.augment.flip=true", "data.augment.pca_noise=0.1",
]  # fmt: skip
# Shards of the prepared records (pipeline.prepare writes 1,000 images a shard: two for the images here).
SHARDS = 8


def parse_args(argv=None):
    parser = cli.ArgumentParser(prog="python -m pipeline.benchmark --input", description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=pathlib.Path, help="a folder of JPEGs (default: synthetic 500x375 JPEGs)")
    # 12 batches an epoch: a pipeline that works a batch at a time idles a thread at each epoch's end (its
    # last batch, the shuffle buffer filling anew), which an epoch of 4 batches makes a quarter of the work and
    # ImageNet's 10,000 batches nothing.
    parser.add_argument("--count", type=int, default=1536, help="synthetic JPEGs to write")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5, help="timings per pipeline, taken in turns")
    parser.add_argument("--passes", type=int, default=1, help="passes over the files per timing")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2],
                        help="tf.data thread-pool sizes to measure each pipeline with (default: 1 2)")
    args = parser.parse_args(argv)
    for name in ("count", "batch_size", "repeats", "passes"):
        cli.check_range(f"--{name.replace('_', '-')}", getattr(args, name), 1)
    for threads in args.threads:
        cli.check_range("--threads", threads, 1)
    return args


def write_synthetic_jpegs(folder, count, height=375, width=500, seed=0):
    """Photo-like JPEGs (smooth colour fields with grain) of ImageNet's typical size."""
    import tensorflow as tf

    rng = np.random.default_rng(seed)
    for i in range(count):
        base = tf.image.resize(rng.uniform(0, 255, (6, 8, 3)), [height, width]).numpy()
        image = np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
        path = folder / f"c{i % 2}" / f"{i:05d}.JPEG"  # two classes: a classifier's data
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(tf.io.encode_jpeg(image, quality=90).numpy())


def reference_pipeline(paths, batch_size, seed=0):
    """The plain pipeline to beat: full decode, full resize, then crop."""
    import tensorflow as tf

    from pipeline.data.augment import center_crop, resize_shorter_side

    def load(path):
        image = tf.io.decode_jpeg(tf.io.read_file(path), channels=3)
        image = center_crop(resize_shorter_side(image, 256), 256)
        image = tf.image.random_crop(image, [224, 224, 3], seed=seed)
        return tf.image.random_flip_left_right(image, seed=seed), 0

    dataset = tf.data.Dataset.from_tensor_slices(paths).shuffle(len(paths), seed=seed)
    return dataset.map(load, num_parallel_calls=tf.data.AUTOTUNE).batch(batch_size).prefetch(tf.data.AUTOTUNE)


def decode_pipeline(records, batch_size):
    """tf.io.decode_jpeg alone over prepared JPEG records: read, parse and decode as training does, pixels dropped.

    Decoded images differ in size, so each leaves the parallel map as its
    shape, which is batched and counted: the decoder's work is all there is.
    """
    import tensorflow as tf


    def decode(record):
        return tf.shape(tf.io.decode_jpeg(parse_jpeg_record(record)[0], channels=3))

    dataset = records.map(decode, num_parallel_calls=tf.data.AUTOTUNE)
    return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def with_threads(dataset, threads):
    """The dataset run by a private pool of `threads` tf.data threads, one thread inside each op."""
    import tensorflow as tf

    options = tf.data.Options()
    options.threading.private_threadpool_size = threads
    options.threading.max_intra_op_parallelism = 1
    return dataset.with_options(options)


def count_batches(dataset):
    """Batches in one epoch of a dataset of batches."""
    return int(dataset.reduce(np.int64(0), lambda total, _: total + 1))


@functools.cache
def _take_function():
    import tensorflow as tf

    @tf.function
    def take(iterator, batches):
        total = tf.constant(0, tf.int64)
        for _ in tf.range(batches):
            total += tf.cast(tf.shape(tf.nest.flatten(next(iterator))[0])[0], tf.int64)
        return total

    return take


def take_images(iterator, batches):
    """Takes `batches` batches from an iterator in a TensorFlow loop (no Python per batch, as in model.fit).

    Returns:
        The images those batches held.
    """
    import tensorflow as tf

    return int(_take_function()(iterator, tf.constant(batches, tf.int64)))


def measure(pipelines, repeats, passes, threads=(1, 2)):
    """images/s of each pipeline at each thread count: `repeats` timings of `passes` epochs each, taken in turns.

    The pipelines take turns (reference, project, prepared, reference, ...),
    so a slow spell of the machine falls on all of them alike.

    Args:
        pipelines: {name: function returning the batched dataset}.
        repeats: timings per pipeline.
        passes: epochs per timing.
        threads: tf.data thread-pool sizes.

    Returns:
        {(name, threads): (list of images/s, cores used)}: cores are CPU time over wall time.
    """

    keys = [(name, count) for name in pipelines for count in threads]
    datasets = {(name, count): with_threads(pipelines[name](), count) for name, count in keys}
    # Warm-up: a whole epoch of the very dataset timed (its traced functions, XLA for every batch shape, the
    # file cache); a dataset built anew would compile its XLA kernels anew.
    batches = {key: count_batches(dataset) * passes for key, dataset in datasets.items()}
    rates = {key: [] for key in keys}
    meters = {key: CoreMeter() for key in keys}
    for _ in range(repeats):
        for key, dataset in datasets.items():
            # One iterator a turn, so that no other pipeline's threads run during a timing; the batches
            # taken untimed first bring it to its steady state (buffers emptied as fast as they fill).
            iterator = iter(dataset.repeat())
            take_images(iterator, batches[key])
            with meters[key].measure():
                start = time.perf_counter()
                count = take_images(iterator, batches[key])
                rates[key].append(count / (time.perf_counter() - start))
            del iterator
    return {key: (rates[key], meters[key].cores) for key in keys}


def report(results, threads, out=print):
    """Prints the table: per pipeline, images/s at each thread count and per busy core.

    Per core and the cores for 20k/s come from the fewest threads (one
    worker's worth: what a core does); the ratios to the reference and to
    `decode`, and the spread, from the most threads.
    """
    names = list(dict.fromkeys(name for name, _ in results))
    fewest, most = min(threads), max(threads)
    median = {key: statistics.median(rates) for key, (rates, _) in results.items()}
    head = "".join(f" {f'{count} thr img/s':>12} {'cores':>5}" for count in threads)
    out(f"{'pipeline':<10}{head} {'per core':>9} {'spread':>13} {'vs reference':>13} {'vs decode':>10}"
        f" {'cores for 20k/s':>16}")
    for name in names:
        cells = "".join(f" {median[name, count]:12.0f} {results[name, count][1]:5.2f}" for count in threads)
        # Per core of those the pipeline kept busy; the cores a GPU at 20,000 images/s needs from this pipeline.
        per_core = median[name, fewest] / max(results[name, fewest][1], 1e-9)
        rates = results[name, most][0]
        decode = median.get(("decode", most))
        versus = f"{median[name, most] / decode:9.2f}x" if decode else f"{'-':>10}"
        out(f"{name:<10}{cells} {per_core:9.0f} {min(rates):6.0f}-{max(rates):<6.0f} "
            f"{median[name, most] / median['reference', most]:12.2f}x {versus} {GPU_RATE / per_core:16.1f}")
    out(f"per core: images/s with {fewest} thread(s) over the cores the pipeline kept busy (CPU time / wall time); "
        f"spread and ratios at {most} threads")


def main(argv=None):
    """Measures the input pipelines and prints the table (`python -m pipeline.benchmark --input`)."""
    args = parse_args(argv)
    print(keep_freed_memory())  # before TensorFlow loads
    import tensorflow as tf

    from pipeline.data.pipelines import build_datasets
    from pipeline.data.sources import load_source

    cores = len(os.sched_getaffinity(0))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = pathlib.Path(tmp)
        folder = args.images
        if folder is not None and not folder.is_dir():
            raise ConfigError(f"--images {folder} is not a folder: give a folder of JPEG files")
        if folder is None:
            folder = tmp / "jpegs"
            write_synthetic_jpegs(folder, args.count)
            print(f"Wrote {args.count} synthetic 500x375 JPEGs")
        # A flat folder of JPEGs becomes two classes, every other file each.
        if not any(p.is_dir() for p in folder.iterdir()):
            for i, path in enumerate(sorted(folder.iterdir())):
                linked = tmp / "linked" / f"c{i % 2}" / path.name
                linked.parent.mkdir(parents=True, exist_ok=True)
                linked.symlink_to(path.resolve())
            folder = tmp / "linked"
        paths = sorted(str(p) for p in folder.rglob("*") if p.is_file())
        config = load_config([], [f"data.source=folder:{folder}", *TRAINING_VIEW])
        forms = {"prepared": {}, "square": {"square": True}, "raw": {"image_format": "raw"}}
        prepared = {}
        for name, options in forms.items():
            # In several shards, so that reading is parallel, as over ImageNet's 1,282 training shards.
            records.prepare(load_source(config.data), config, tmp / name, shards=min(SHARDS, len(paths)), **options)
            prepared[name] = load_config([], [f"data.source=records:{tmp / name}", *TRAINING_VIEW])

        pipelines = {
            "reference": lambda: reference_pipeline(paths, args.batch_size),
            "project": lambda: build_datasets(config.data, args.batch_size).train,
            "prepared": lambda: build_datasets(prepared["prepared"].data, args.batch_size).train,
            "decode": lambda: decode_pipeline(load_source(prepared["prepared"].data).train_records, args.batch_size),
        }
        for name in ("square", "raw"):
            pipelines[name] = lambda name=name: build_datasets(prepared[name].data, args.batch_size).train
        results = measure(pipelines, args.repeats, args.passes, args.threads)
    print(f"\nInput pipeline, {len(paths)} files, batch {args.batch_size}, {cores} CPU cores, TF {tf.__version__}")
    report(results, args.threads)
