"""Write a dataset once as sharded TFRecords of images at shorter side 256.

    python -m pipeline.prepare --config configs/imagenet2012.yaml --output data/imagenet256
    python -m pipeline.prepare --config configs/imagenet2012.yaml --output data/imagenet256sq --square
    python -m pipeline.prepare --config configs/imagenet2012.yaml --output data/imagenet256raw --format raw
    python -m pipeline.train --config configs/imagenet2012.yaml --set data.source=records:data/imagenet256

The paper down-sampled every image to 256 on the shorter side and kept the
central 256x256 square (section 2); doing the same once, up front, makes every
later epoch decode small JPEGs instead of full-size photos, which is several
times cheaper per core. Three forms (`python -m pipeline.benchmark --input`
measures them):

    --format jpeg           JPEGs at shorter side --size, the whole image (default: the
                            inception crop and other views outside the central square
                            need the sides). Images already smaller are kept at their size.
    --format jpeg --square  the paper's central --size square as a JPEG (a quarter fewer
                            bytes for a 4:3 photo; the same training and evaluation views).
    --format raw            the central square as raw uint8 pixels, every image exactly
                            --size x --size (smaller ones upscaled): no decoding at all
                            during training, at 196 KB an image at 256 (ImageNet: 251 GB).

Undecodable files (and PNG, GIF or BMP files larger than data.max_pixels) are
skipped (named on stderr) and counted in prepared.json.

Layout written:
    DIR/train-00000-of-000NN.tfrecord ...   tf.train.Example: image (JPEG or raw bytes), label (int64), name (bytes)
    DIR/validation-00000-of-000NN.tfrecord ...
    DIR/labels.txt                          class names in index order
    DIR/prepared.json                       the manifest: counts per split, size, format, quality (written last)

Nothing is touched until every argument is checked. The dataset is written
into a staging folder beside DIR (`.DIR.tmp`) and swapped in whole at the end
(`pipeline.rundir.replace_directory`), so a killed prepare leaves the previous
dataset as it was; the next prepare removes the leftovers. A lock beside DIR
(`.DIR.lock`) refuses a second prepare into the same folder.
"""

import json
import pathlib
import sys

from pipeline import cli
from pipeline.config import ConfigError, load_config
from model_defs.geometry import MIN_INPUT_SIZE

FEATURES = ("image", "label", "name")
FORMATS = ("jpeg", "raw")
MANIFEST = "prepared.json"
# Everything a prepared dataset holds (glob patterns): --overwrite replaces only such a folder.
DATASET_ENTRIES = ("train-*.tfrecord", "validation-*.tfrecord", "labels.txt", MANIFEST)
MAX_SHARDS = 100_000


def parse_args(argv=None):
    parser = cli.ArgumentParser(prog="python -m pipeline.prepare", description=__doc__.split("\n")[0])
    parser.add_argument("--config", action="append", default=[], metavar="YAML", help="experiment file(s)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
    parser.add_argument("--output", type=pathlib.Path, required=True, help="directory to write")
    parser.add_argument("--size", type=int, default=256,
                        help=f"shorter side of the stored JPEGs (paper: 256; at least {MIN_INPUT_SIZE})")
    parser.add_argument("--quality", type=int, default=90, help="JPEG quality of the stored images, 1-100")
    parser.add_argument("--format", choices=FORMATS, default="jpeg",
                        help="jpeg (default) or raw uint8 pixels of the central square (no decoding; 196 KB an image)")
    parser.add_argument("--square", action="store_true",
                        help="jpeg: store only the central --size square, as the paper did (raw always does)")
    parser.add_argument("--shards", type=int, default=0,
                        help="shards per split (default 0: about 1,000 images each)")
    parser.add_argument("--overwrite", action="store_true", help="replace a prepared dataset in --output")
    args = parser.parse_args(argv)
    cli.check_range("--size", args.size, MIN_INPUT_SIZE)
    cli.check_range("--quality", args.quality, 1, 100)
    cli.check_range("--shards", args.shards, 0, MAX_SHARDS)
    return args


def _stored(size, quality, image_format="jpeg", square=False):
    """(bytes, label, name) -> (stored bytes, label, name): the image as a record holds it."""
    import tensorflow as tf

    from pipeline.augment import center_crop, resize_shorter_side

    def to_uint8(image):
        return tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8)

    def encode(data, label, name):
        image = tf.io.decode_image(data, channels=3, expand_animations=False)
        shape = tf.shape(image)
        shorter = tf.minimum(shape[0], shape[1])
        if image_format == "raw":
            # Every record exactly size x size (smaller images upscaled); written out as its bytes.
            return center_crop(to_uint8(resize_shorter_side(image, size)), size), label, name
        image = tf.cond(shorter > size, lambda: to_uint8(resize_shorter_side(image, size)), lambda: image)
        if square:
            image = center_crop(image, tf.minimum(size, shorter))
        return tf.io.encode_jpeg(image, quality=quality), label, name

    return encode


def _example(image, label, name):
    import tensorflow as tf

    return tf.train.Example(
        features=tf.train.Features(
            feature={
                "image": tf.train.Feature(bytes_list=tf.train.BytesList(value=[image])),
                "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[label])),
                "name": tf.train.Feature(bytes_list=tf.train.BytesList(value=[name])),
            }
        )
    ).SerializeToString()


def write_split(dataset, output, split, count, shards, size, quality, counter, max_pixels=None, image_format="jpeg",
                square=False):
    """Writes one split's (bytes, label, name) triples as sharded TFRecords; returns images written."""
    import tensorflow as tf

    from pipeline.data import skip_undecodable
    from pipeline.progress import Progress

    shards = shards or max(1, -(-count // 1000))
    triples = skip_undecodable(dataset, counter, keep_name=True, max_pixels=max_pixels)
    triples = triples.map(_stored(size, quality, image_format, square), num_parallel_calls=tf.data.AUTOTUNE)
    writers = [
        tf.io.TFRecordWriter(str(output / f"{split}-{i:05d}-of-{shards:05d}.tfrecord")) for i in range(shards)
    ]
    written = 0
    progress = Progress(f"{split} split", total=count)
    try:
        for image, label, name in triples.as_numpy_iterator():
            data = image.tobytes() if image_format == "raw" else image
            writers[written % shards].write(_example(data, int(label), name))
            written += 1
            progress.update()
    finally:
        for writer in writers:
            writer.close()
    progress.done()
    return written


def check_output(output, overwrite):
    """Refuses an --output that is a file, holds a dataset without --overwrite, or holds anything else.

    Raises:
        ConfigError (exit status 2): naming the folder and what is in it.
    """
    from pipeline.rundir import check_ours

    if not output.exists():
        return
    if not output.is_dir():
        raise ConfigError(f"--output {output} is a file: choose a folder")
    if not any(output.iterdir()):
        return
    if (output / MANIFEST).is_file() and not overwrite:
        raise ConfigError(f"{output} already holds a prepared dataset: pass --overwrite to replace it")
    check_ours(output, DATASET_ENTRIES, "prepared dataset", config_file=None)
    if not overwrite:
        raise ConfigError(f"{output} holds an unfinished prepared dataset: pass --overwrite to replace it")


def prepare(config, output, size=256, quality=90, shards=0, overwrite=False, image_format="jpeg", square=False):
    """Writes the configured source's train and validation splits as a dataset in `output`.

    Args:
        config: the validated `Config` (its data.source is read).
        output: the dataset folder; replaced atomically at the end.
        size, quality, shards, image_format, square: see the command-line options.
        overwrite: replace a prepared dataset in `output`.

    Returns:
        The summary written to prepared.json.

    Raises:
        ConfigError: the output cannot be used, or the source is in memory.
        RunDirError: another prepare writes into `output`.
    """
    from pipeline.rundir import locked, recover_directory, replace_directory, staging_path

    output = pathlib.Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    busy = f"{output} is being written by another prepare: wait for it, or choose another --output"
    with locked(output.parent / f".{output.name}.lock", busy):
        repaired = recover_directory(output)
        if repaired:
            print(f"{output}: {repaired}")
        check_output(output, overwrite)
        staging = staging_path(output)
        staging.mkdir()
        summary = _write_dataset(config, staging, size, quality, shards, image_format, square)
        replace_directory(staging, output)
    return summary


def _write_dataset(config, folder, size, quality, shards, image_format="jpeg", square=False):
    import tensorflow as tf

    from pipeline.data import load_source
    from pipeline.rundir import atomic_write_text

    source = load_source(config.data, config.seed)
    if not source.encoded:
        raise ConfigError(
            f"data.source {config.data.source!r} is in memory already: prepare folder: or tfds: sources"
        )
    counter = tf.Variable(0, dtype=tf.int64, trainable=False)
    summary = {
        "source": config.data.source, "size": size, "format": image_format,
        "square": square or image_format == "raw", "quality": quality if image_format == "jpeg" else None,
        "splits": {},
    }  # fmt: skip
    for split, dataset, count in (
        ("train", source.train, source.train_size),
        ("validation", source.validation, source.validation_size),
    ):
        before = int(counter.numpy())
        written = write_split(
            dataset, folder, split, count, shards, size, quality, counter, max_pixels=config.data.max_pixels,
            image_format=image_format, square=square,
        )
        summary["splits"][split] = {"images": written, "skipped": int(counter.numpy()) - before}
        print(f"{split}: {written} images written, {summary['splits'][split]['skipped']} skipped")
    atomic_write_text(folder / "labels.txt", "".join(f"{name}\n" for name in source.class_names))
    # The manifest last: a folder with prepared.json is complete.
    atomic_write_text(folder / MANIFEST, json.dumps(summary, indent=2) + "\n")
    return summary


@cli.command
def main(argv=None):
    args = parse_args(argv)
    config = load_config(args.config, args.set)
    check_output(args.output, args.overwrite)  # before the data source is opened
    prepare(config, args.output, args.size, args.quality, args.shards, overwrite=args.overwrite,
            image_format=args.format, square=args.square)
    print(f"Prepared {args.output}: train with --set data.source=records:{args.output}")


if __name__ == "__main__":
    sys.exit(main())
