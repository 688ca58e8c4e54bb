"""Measure the training input pipeline alone, beside a plain reference pipeline.

    python -m pipeline.benchmark --input                       # synthetic 500x375 JPEGs
    python -m pipeline.benchmark --input --images path/to/jpegs --repeats 5

Five pipelines read the same images and produce batches of 224x224x3 float32:
    reference  decode_jpeg -> resize shorter side to 256 -> centre 256 -> random
               224 crop -> flip; parallel map, prefetch (the plain published recipe)
    project    the training pipeline of pipeline.data (decodes only the crop
               window, adds PCA colour noise; skips bad files)
    prepared   the project pipeline reading TFRecords that `pipeline.prepare`
               wrote once: JPEGs at shorter side 256
    square     ... the paper's central 256x256 square as JPEG (prepare --square)
    raw        ... the central square as raw uint8 pixels (prepare --format raw):
               no decoding
Each figure is the median of --repeats timings of --passes epochs after a
warm-up batch, the pipelines taking turns, with the spread (min-max), in
images/s and images/s per CPU core, and the cores the process kept busy.
"""

import os
import pathlib
import statistics
import tempfile
import time

from pipeline.console import cli
from pipeline.errors import ConfigError

# Training images/s of the paper's network on one fast GPU (an H200, bfloat16: about 21,700): the rate an
# input pipeline must keep up with.
GPU_RATE = 20_000


def parse_args(argv=None):
    parser = cli.ArgumentParser(prog="python -m pipeline.benchmark --input", description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=pathlib.Path, help="a folder of JPEGs (default: synthetic 500x375 JPEGs)")
    parser.add_argument("--count", type=int, default=512, help="synthetic JPEGs to write")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5, help="timings per pipeline, taken in turns")
    parser.add_argument("--passes", type=int, default=3, help="passes over the files per timing")
    args = parser.parse_args(argv)
    for name in ("count", "batch_size", "repeats", "passes"):
        cli.check_range(f"--{name.replace('_', '-')}", getattr(args, name), 1)
    return args


def write_synthetic_jpegs(folder, count, height=375, width=500, seed=0):
    """Photo-like JPEGs (smooth colour fields with grain) of ImageNet's typical size."""
    import numpy as np
    import tensorflow as tf

    rng = np.random.default_rng(seed)
    (folder / "c0").mkdir(parents=True, exist_ok=True)
    for i in range(count):
        base = tf.image.resize(rng.uniform(0, 255, (6, 8, 3)), [height, width]).numpy()
        image = np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
        (folder / "c0" / f"{i:05d}.JPEG").write_bytes(tf.io.encode_jpeg(image, quality=90).numpy())


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


def measure(pipelines, repeats, passes):
    """images/s of each pipeline: `repeats` timings of `passes` epochs each, taken in turns.

    The pipelines take turns (reference, project, prepared, reference, ...),
    so a slow spell of the machine falls on all of them alike.

    Args:
        pipelines: {name: function returning the batched dataset}.
        repeats: timings per pipeline.
        passes: epochs per timing.

    Returns:
        {name: (list of images/s, cores used)}: cores are CPU time over wall time.
    """
    from pipeline.bench.timing import CoreMeter

    datasets = {name: make().repeat(passes) for name, make in pipelines.items()}
    for make in pipelines.values():
        next(iter(make()))  # warm-up: graph tracing, file cache
    rates = {name: [] for name in pipelines}
    meters = {name: CoreMeter() for name in pipelines}
    for _ in range(repeats):
        for name, dataset in datasets.items():
            count = 0
            with meters[name].measure():
                start = time.perf_counter()
                for images, _ in dataset:
                    count += int(images.shape[0])
                rates[name].append(count / (time.perf_counter() - start))
    return {name: (rates[name], meters[name].cores) for name in pipelines}


def main(argv=None):
    """Measures the input pipelines and prints the table (`python -m pipeline.benchmark --input`)."""
    args = parse_args(argv)
    import tensorflow as tf

    from pipeline.config import load_config
    from pipeline.data import records
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
        # A flat folder of JPEGs becomes one class.
        if not any(p.is_dir() for p in folder.iterdir()):
            linked = tmp / "linked" / "c0"
            linked.mkdir(parents=True)
            for path in folder.iterdir():
                (linked / path.name).symlink_to(path.resolve())
            folder = linked.parent
        paths = sorted(str(p) for p in folder.rglob("*") if p.is_file())
        common = [
            "data.image_size=224", "data.resize=256", "data.cache=false", "data.validation_fraction=0.01",
            "data.augment.crop=random", "data.augment.flip=true", "data.augment.pca_noise=0.1",
        ]  # fmt: skip
        config = load_config([], [f"data.source=folder:{folder}", *common])
        forms = {"prepared": {}, "square": {"square": True}, "raw": {"image_format": "raw"}}
        prepared = {}
        for name, options in forms.items():
            records.prepare(load_source(config.data), config, tmp / name, **options)
            prepared[name] = load_config([], [f"data.source=records:{tmp / name}", *common])

        pipelines = {
            "reference": lambda: reference_pipeline(paths, args.batch_size),
            "project": lambda: build_datasets(config.data, args.batch_size).train,
        }
        for name in forms:
            pipelines[name] = lambda name=name: build_datasets(prepared[name].data, args.batch_size).train
        results = measure(pipelines, args.repeats, args.passes)
    print(f"\nInput pipeline, {len(paths)} files, batch {args.batch_size}, {cores} CPU cores, TF {tf.__version__}")
    print(f"{'pipeline':<10} {'images/s':>9} {'per core':>9} {'spread':>15} {'cores used':>11} {'vs reference':>13}"
          f" {'cores for 20k/s':>16}")
    reference = statistics.median(results["reference"][0])
    for name, (rates, used) in results.items():
        median = statistics.median(rates)
        # Per core of those the pipeline kept busy; the cores a GPU at 20,000 images/s needs from this pipeline.
        per_core = median / max(used, 1e-9)
        print(
            f"{name:<10} {median:9.0f} {per_core:9.0f} {min(rates):7.0f}-{max(rates):<7.0f} "
            f"{used:11.2f} {median / reference:12.2f}x {GPU_RATE / per_core:16.1f}"
        )
    print("per core: images/s over the cores the pipeline kept busy (CPU time / wall time)")

