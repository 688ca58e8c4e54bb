"""Write a dataset once as sharded TFRecords of JPEGs at shorter side 256.

    python -m pipeline.prepare --config configs/imagenet2012.yaml --output data/imagenet256
    python -m pipeline.train --config configs/imagenet2012.yaml --set data.source=records:data/imagenet256

The paper down-sampled every image to 256 on the shorter side before training
(section 2); doing the same once, up front, makes every later epoch decode
small JPEGs instead of full-size photos, which is several times cheaper per
core. Undecodable files are skipped (named on stderr) and counted in
prepared.json. Images whose shorter side is already at most `--size` are
re-encoded at their own size (never upscaled).

Layout written:
    DIR/train-00000-of-000NN.tfrecord ...   tf.train.Example: image (JPEG bytes), label (int64), name (bytes)
    DIR/validation-00000-of-000NN.tfrecord ...
    DIR/labels.txt                          class names in index order
    DIR/prepared.json                       counts per split, size, quality
"""

import argparse
import json
import pathlib
import sys

from pipeline.config import ConfigError, load_config

FEATURES = ("image", "label", "name")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="python -m pipeline.prepare", description=__doc__.split("\n")[0])
    parser.add_argument("--config", action="append", default=[], metavar="YAML", help="experiment file(s)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
    parser.add_argument("--output", type=pathlib.Path, required=True, help="directory to write")
    parser.add_argument("--size", type=int, default=256, help="shorter side of the stored JPEGs (paper: 256)")
    parser.add_argument("--quality", type=int, default=90, help="JPEG quality of the stored images")
    parser.add_argument("--shards", type=int, default=0, help="shards per split (default: ~1,000 images each)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output directory")
    return parser.parse_args(argv)


def _downsized_jpeg(size, quality):
    import tensorflow as tf

    from pipeline.augment import resize_shorter_side

    def encode(data, label, name):
        image = tf.io.decode_image(data, channels=3, expand_animations=False)
        shape = tf.shape(image)
        shorter = tf.minimum(shape[0], shape[1])
        image = tf.cond(
            shorter > size,
            lambda: tf.cast(tf.clip_by_value(tf.round(resize_shorter_side(image, size)), 0, 255), tf.uint8),
            lambda: image,
        )
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


def write_split(dataset, output, split, count, shards, size, quality, counter):
    """Writes one split's (bytes, label, name) triples as sharded TFRecords; returns images written."""
    import tensorflow as tf

    from pipeline.data import skip_undecodable

    shards = shards or max(1, -(-count // 1000))
    triples = skip_undecodable(dataset, counter, keep_name=True)
    triples = triples.map(_downsized_jpeg(size, quality), num_parallel_calls=tf.data.AUTOTUNE)
    writers = [
        tf.io.TFRecordWriter(str(output / f"{split}-{i:05d}-of-{shards:05d}.tfrecord")) for i in range(shards)
    ]
    written = 0
    try:
        for image, label, name in triples.as_numpy_iterator():
            writers[written % shards].write(_example(image, int(label), name))
            written += 1
    finally:
        for writer in writers:
            writer.close()
    return written


def prepare(config, output, size=256, quality=90, shards=0):
    """Writes the configured source's train and validation splits under `output`.

    Returns:
        The summary written to prepared.json.
    """
    import tensorflow as tf

    from pipeline.data import load_source

    source = load_source(config.data, config.seed)
    if not source.encoded:
        raise ConfigError(f"data.source {config.data.source!r} is in memory already; prepare folder: or tfds: sources")
    output.mkdir(parents=True, exist_ok=True)
    for old in output.glob("*.tfrecord"):
        old.unlink()
    counter = tf.Variable(0, dtype=tf.int64, trainable=False)
    summary = {"source": config.data.source, "size": size, "quality": quality, "splits": {}}
    for split, dataset, count in (
        ("train", source.train, source.train_size),
        ("validation", source.validation, source.validation_size),
    ):
        before = int(counter.numpy())
        written = write_split(dataset, output, split, count, shards, size, quality, counter)
        summary["splits"][split] = {"images": written, "skipped": int(counter.numpy()) - before}
        print(f"{split}: {written} images written, {summary['splits'][split]['skipped']} skipped")
    (output / "labels.txt").write_text("".join(f"{name}\n" for name in source.class_names))
    (output / "prepared.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def main(argv=None):
    args = parse_args(argv)
    try:
        config = load_config(args.config, args.set)
        if (args.output / "prepared.json").exists() and not args.overwrite:
            raise ConfigError(f"{args.output} already holds a prepared dataset; pass --overwrite to replace it")
        prepare(config, args.output, args.size, args.quality, args.shards)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"Prepared {args.output}: train with --set data.source=records:{args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
