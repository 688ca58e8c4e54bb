"""How each initialisation starts on real photos: activations of conv1..fc8 before any training.

    python studies/init_probe.py DIR [--count 16]      # DIR: photos (any depth), e.g. ImageNet JPEGs

For each `model.init`, prints per layer the mean activation (after ReLU; fc8's logits as they are) and the
standard deviation across images (the part that depends on the image), and fc8's step factor
lr * ||fc7||^2 at lr 0.01: one SGD step moves the logits by that factor times (softmax - one-hot), and
heavy-ball momentum 0.9 is stable only while factor * lambda < 3.8, lambda <= 1/2 (see README, "The
paper's initialisation on real photos").
"""

import argparse
import pathlib

import numpy as np

# isort: off
import model_defs  # noqa: F401  (first: TensorFlow's start-up quiet, oneDNN on)
import keras
import tensorflow as tf

# isort: on

from model_defs.alexnet import build_alexnet

LAYERS = ["conv1", "conv3", "conv5", "fc6", "fc7", "fc8"]
INITS = {"paper": None, "caffe": None, "he_normal": [58.4, 57.1, 57.4], "glorot_uniform": [58.4, 57.1, 57.4]}


def load(folder, count, size=224):
    files = sorted(p for p in pathlib.Path(folder).rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    if not files:
        raise SystemExit(f"error: no .jpg, .jpeg or .png under {folder}")
    images = [tf.image.resize(tf.io.decode_image(tf.io.read_file(str(f)), channels=3, expand_animations=False),
                              (size, size)) for f in files[:count]]
    return np.stack([image.numpy() for image in images])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("folder")
    parser.add_argument("--count", type=int, default=16)
    args = parser.parse_args(argv)
    images = load(args.folder, args.count)
    print(f"{len(images)} images at 224x224; per layer: mean activation / std across images")
    for init, std in INITS.items():
        model = build_alexnet(init=init, seed=0, **({"std": std} if std else {}))
        probe = keras.Model(model.input, [model.get_layer(name).output for name in LAYERS])
        cells = []
        for name, out in zip(LAYERS, probe(images, training=False)):
            # conv1..fc7 carry their ReLU (activation="relu"), so these are the activations after it;
            # fc8 gives the logits.
            out = np.asarray(out).reshape(len(images), -1)
            cells.append(f"{name} {out.mean():.3g}/{out.std(axis=0).mean():.3g}")
            if name == "fc7":
                factor = 0.01 * float(np.mean(np.sum(out**2, axis=1)))
        print(f"{init:15s} " + "  ".join(cells) + f"  fc8 step factor {factor:.3g}")


if __name__ == "__main__":
    main()
