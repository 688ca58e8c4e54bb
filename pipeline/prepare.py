"""Write a dataset once as sharded TFRecords of images at shorter side 256.

    python -m pipeline.prepare --config configs/imagenet2012.yaml --output data/imagenet256
    python -m pipeline.prepare --config configs/imagenet2012.yaml --output data/imagenet256sq --square
    python -m pipeline.prepare --config configs/imagenet2012.yaml --output data/imagenet256raw --format raw
    python -m pipeline.train --config configs/imagenet2012.yaml --set data.source=records:data/imagenet256

The paper down-sampled every image to 256 on the shorter side and kept the
central 256x256 square (section 2); doing it once, up front, makes every later
epoch decode small JPEGs (or nothing) instead of full-size photos. The forms
(`pipeline.data.records` describes the layout):

    --format jpeg           JPEGs at shorter side --size, the whole image (the inception
                            crop and other views outside the central square need the sides)
    --format jpeg --square  the paper's central --size square as a JPEG
    --format raw            the central square as raw uint8 pixels, every image exactly
                            --size x --size: no decoding during training (196 KB an image at 256)

Undecodable files (and PNG, GIF or BMP files larger than data.max_pixels) are
skipped, named on stderr and counted in prepared.json. The last line gives the
images/s and the images/s per busy core. Nothing is touched until every
argument is checked; the dataset is written beside DIR and swapped in whole at
the end, so a killed prepare leaves the previous dataset as it was, and a second
prepare into the same folder (under any name) is refused while one runs.
"""

import os
import pathlib
import sys
import time

from model_defs.geometry import MIN_INPUT_SIZE
from pipeline.config import load_config
from pipeline.console import cli
from pipeline.data import records


def parse_args(argv=None):
    parser = cli.ArgumentParser(prog="python -m pipeline.prepare", description=__doc__)
    cli.add_config_options(parser, set_example="data.manual_dir=/data/imagenet/manual")
    parser.add_argument("--output", type=pathlib.Path, help="directory to write (required)")
    parser.add_argument("--size", type=int, default=256,
                        help=f"shorter side of the stored JPEGs (paper: 256; at least {MIN_INPUT_SIZE})")
    parser.add_argument("--quality", type=int, default=90, help="JPEG quality of the stored images, 1-100")
    parser.add_argument("--format", choices=records.FORMATS, default="jpeg",
                        help="jpeg (default) or raw uint8 pixels of the central square (no decoding; 196 KB an image)")
    parser.add_argument("--square", action="store_true",
                        help="jpeg: store only the central --size square, as the paper did (raw always does)")
    parser.add_argument("--shards", type=int, default=0,
                        help="shards per split (default 0: about 1,000 images each)")
    parser.add_argument("--overwrite", action="store_true", help="replace a prepared dataset in --output")
    args = parser.parse_args(argv)
    if args.output is None and not args.print_config:
        parser.error("the following arguments are required: --output")
    cli.check_range("--size", args.size, MIN_INPUT_SIZE)
    cli.check_range("--quality", args.quality, 1, 100)
    cli.check_range("--shards", args.shards, 0, records.MAX_SHARDS)
    return args


def throughput(images, cpu_seconds, wall_seconds):
    """One line: images/s, and images/s per busy core (CPU time over wall time) with the cores kept busy."""
    cores = cpu_seconds / max(wall_seconds, 1e-9)
    return (f"{images} images in {wall_seconds:.1f} s: {images / max(wall_seconds, 1e-9):.1f} images/s, "
            f"{images / max(cpu_seconds, 1e-9):.1f} per busy core ({cores:.2f} of {len(os.sched_getaffinity(0))} "
            "cores busy)")


@cli.command
def main(argv=None):
    """Prepares the configured source's records; returns the exit status (`pipeline.console.cli`)."""
    args = parse_args(argv)
    config = load_config(args.config, args.set)
    if args.print_config:
        print(config.to_yaml(), end="")
        return
    records.check_output(args.output, args.overwrite)  # before the source is opened (listing can take minutes)
    from pipeline.data.sources import load_source  # TensorFlow loads here, once the arguments are checked

    source = load_source(config.data, config.seed)
    cpu, wall = time.process_time(), time.perf_counter()
    summary = records.prepare(source, config, args.output, args.size, args.quality, args.shards,
                              overwrite=args.overwrite, image_format=args.format, square=args.square)
    print(f"Prepared {args.output}: train with --set data.source=records:{args.output}")
    print(throughput(sum(split["images"] for split in summary["splits"].values()),
                     time.process_time() - cpu, time.perf_counter() - wall))


if __name__ == "__main__":
    sys.exit(main())
