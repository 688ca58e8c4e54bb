"""Where the batch's flip and colour noise should run: on the CPU in tf.data (today), or on the GPU in the step.

    KERAS_BACKEND=jax python benchmarks/gpu/augment_on_device.py [--image-size 224] [--batch-sizes 128 512]
                                                                 [--json OUT.json]

The CPU pipeline crops, flips and shifts the colour of a batch in one XLA kernel
(`pipeline.data.augment.batch_view`: ~20 us an image on one core of the CPU
measured in the README). Moving the flip and the colour shift into the
training step leaves the CPU the crop only. This times, on the device Keras
finds, the paper's network in mixed_bfloat16 (`configs/imagenet2012.yaml`,
`pipeline.bench.step`): the training step on a batch of uint8 images, against
the same step behind `DeviceAugment` (flip and saturating colour shift in
`keras.ops`, each image's draws made on the host as the CPU pipeline makes
them). Both batches are on the device before the timing, as the input
benchmark's batches are on the host.
"""

import argparse
import json
import os
import statistics

os.environ.setdefault("KERAS_BACKEND", "jax")


def device_augment_layer():
    import keras
    from keras import ops

    class DeviceAugment(keras.layers.Layer):
        """uint8 images [N, H, W, 3], flip [N] bool, shift [N, 3] int32 -> flipped, shifted uint8 images."""

        def call(self, images, flip, shift):
            images = ops.where(flip[:, None, None, None], ops.flip(images, axis=2), images)
            shifted = ops.cast(images, "int32") + shift[:, None, None, :]
            return ops.cast(ops.clip(shifted, 0, 255), "uint8")

    return DeviceAugment()


def augmented_model(base, config, image_size):
    """The compiled model: DeviceAugment in front of `base`, compiled as `bare_model` compiles."""
    import keras

    from pipeline.bench.step import compile_bare

    images = keras.Input((image_size, image_size, 3), dtype="uint8")
    flip = keras.Input((), dtype="bool")
    shift = keras.Input((3,), dtype="int32")
    return compile_bare(keras.Model([images, flip, shift], base(device_augment_layer()(images, flip, shift))), config)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[128, 512])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--fc-units", type=int, default=4096)
    parser.add_argument("--json", help="write the figures here too")
    args = parser.parse_args(argv)

    import numpy as np

    from pipeline.bench.step import bare_model, device_description, time_steps, trainer_steps
    from pipeline.config import load_config

    config = load_config(["imagenet2012"], [f"data.image_size={args.image_size}", f"model.fc_units={args.fc_units}",
                                             "train.precision=mixed_bfloat16"])  # fmt: skip
    rng = np.random.default_rng(0)
    results = {"device": device_description(), "rows": []}
    print(results["device"])
    for batch_size in args.batch_sizes:
        images = rng.integers(0, 256, (batch_size, args.image_size, args.image_size, 3), dtype=np.uint8)
        labels = rng.integers(0, 1000, batch_size).astype(np.int32)
        flip = rng.random(batch_size) < 0.5
        shift = np.round(rng.normal(0, 5.5, (batch_size, 3))).astype(np.int32)
        for where in ("cpu", "device"):
            base = bare_model(config, 1000)
            if where == "cpu":  # the step alone: the batch comes augmented
                run = trainer_steps(base, images, labels)
            else:
                run = trainer_steps(augmented_model(base, config, args.image_size), (images, flip, shift), labels)
            rates = time_steps(run, batch_size, args.steps, args.warmup, args.repeats)
            row = {"batch_size": batch_size, "augment_on": where, "images_per_second": rates}
            results["rows"].append(row)
            print(f"batch {batch_size:>4}  flip and colour on the {where:<6}  {statistics.median(rates):9.0f} images/s"
                  f"  (spread {min(rates):.0f}-{max(rates):.0f}, {len(rates)} runs)", flush=True)
            if args.json:
                with open(args.json, "w") as f:
                    json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
