"""Synthetic images, encoded image bytes and files written from them for the tests."""

import io
import pathlib
import struct

import numpy as np
import tensorflow as tf
from PIL import Image

# A 1x1 GIF whose only pixel is pure red.
RED_GIF = (
    b"GIF89a\x01\x00\x01\x00\x80\x00\x00\xff\x00\x00\x00\x00\x00"
    b",\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;"
)


def photo(height=60, width=80, seed=0):
    """A smooth uint8 RGB image (an 8x8 random image resized), so JPEG keeps it close."""
    rng = np.random.default_rng(seed)
    return tf.image.resize(rng.integers(0, 255, (8, 8, 3)), [height, width]).numpy().astype(np.uint8)


def jpeg_bytes(height=60, width=80, seed=0):
    return tf.io.encode_jpeg(photo(height, width, seed)).numpy()


def pil_bytes(fmt, mode="RGB", size=(40, 30)):
    """`photo` of size (width, height) in PIL format `fmt` and colour mode `mode`."""
    buffer = io.BytesIO()
    Image.fromarray(photo(size[1], size[0])).convert(mode).save(buffer, format=fmt)
    return buffer.getvalue()


def random_image(height, width, seed=0):
    """Uniform uint8 RGB noise."""
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def bmp_bytes(image):
    """An uncompressed 24-bit BMP of a uint8 RGB image (rows bottom-up, BGR, padded to 4 bytes)."""
    height, width, _ = image.shape
    row_size = (3 * width + 3) // 4 * 4
    rows = b"".join(
        image[y, :, ::-1].tobytes() + b"\0" * (row_size - 3 * width) for y in range(height - 1, -1, -1)
    )
    header = struct.pack("<2sIHHI", b"BM", 54 + len(rows), 0, 0, 54)
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, len(rows), 2835, 2835, 0, 0)
    return header + info + rows


def write_tree(root, layout):
    """layout: {relative path: bytes}."""
    for rel, data in layout.items():
        path = pathlib.Path(root) / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def epoch_images(dataset):
    """The images of one pass over a batched dataset, each as uint8 bytes (as the grid shows them).

    Which images an epoch holds is fixed by the seed; their order is not
    (parallel augmentation hands images on as they are finished, so one can
    move to a neighbouring batch), hence a set.
    """
    images = np.concatenate([batch[0].numpy() for batch in dataset])
    return {image.tobytes() for image in np.clip(np.rint(images), 0, 255).astype(np.uint8)}
