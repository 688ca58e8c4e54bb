"""Encoded image bytes -> model input, decoding only what the crop needs.

Photographs arrive as JPEG (rarely PNG, GIF or BMP, whatever the file name
says). The paper's training view is a random 224 window of the central 256
square of the photo rescaled to shorter side 256 (section 4.1). Instead of
decoding the whole photo, rescaling it and then cropping, the window is mapped
back into source pixels and only that part is decoded (`decode_and_crop_jpeg`)
and resized. The result is the same view up to resampling, at a fraction of
the cost.

`is_decodable` is a cheap guard that never raises: empty files, non-images and
JPEGs cut short (no end-of-image marker) are recognised before decoding, so the
pipeline can skip them by name instead of failing on them (`skip_undecodable`,
which also names files gone since the folder was listed, and counts each
skipped file once).
"""

import os
import sys
import threading

import numpy as np
import tensorflow as tf

from pipeline.console.text import printable

# Leading bytes of the formats tf.io.decode_image reads.
_MAGIC = (b"\xff\xd8\xff", b"\x89PNG", b"GIF8", b"BM")
# A JPEG ends with FF D9; some writers append a few padding bytes after it.
_JPEG_TAIL = 64


def is_decodable(data):
    """True for bytes that look like a complete JPEG, or a PNG, GIF or BMP.

    Args:
        data: scalar tf.string of file contents.

    Returns:
        scalar tf.bool. Never raises, whatever the bytes.
    """
    head = tf.strings.substr(data, 0, 4)
    known = tf.reduce_any([tf.strings.substr(head, 0, len(m)) == m for m in _MAGIC])
    length = tf.strings.length(data)

    def jpeg_complete():
        start = tf.maximum(length - _JPEG_TAIL, 0)
        tail = tf.io.decode_raw(tf.strings.substr(data, start, _JPEG_TAIL), tf.uint8)
        return tf.reduce_any(tf.logical_and(tf.equal(tail[:-1], 0xFF), tf.equal(tail[1:], 0xD9)))

    is_jpeg = tf.logical_and(length > 3, tf.strings.substr(head, 0, 3) == _MAGIC[0])
    return tf.logical_and(
        tf.logical_and(length > 8, known),
        tf.cond(is_jpeg, jpeg_complete, lambda: tf.constant(True)),
    )


def _little_endian(data, offset, size, big=False):
    """The unsigned integer in bytes [offset, offset + size) of `data` (zero past its end)."""
    padded = tf.strings.join([data, tf.constant(b"\0" * (offset + size))])
    raw = tf.cast(tf.io.decode_raw(tf.strings.substr(padded, offset, size), tf.uint8), tf.int64)
    weights = tf.constant([256**i for i in (reversed(range(size)) if big else range(size))], tf.int64)
    return tf.reduce_sum(raw * weights)


def whole_decode_pixels(data):
    """Pixels (height x width) of a PNG, GIF or BMP, read from its header; 0 for a JPEG or unknown bytes.

    These formats are decoded whole wherever they appear, so their size is
    checked against a cap (`data.max_pixels`) before decoding. A JPEG decodes
    only its crop window, at a reduced scale when the window is large, so it
    needs no cap. Never raises, whatever the bytes.

    Args:
        data: scalar tf.string of file contents.

    Returns:
        scalar tf.int64.
    """
    head = tf.strings.substr(tf.strings.join([data, tf.constant(b"\0" * 4)]), 0, 4)
    png = head == _MAGIC[1]
    gif = tf.strings.substr(head, 0, 4) == _MAGIC[2]
    bmp = tf.strings.substr(head, 0, 2) == _MAGIC[3]
    # PNG: IHDR width and height, big-endian, at bytes 16 and 20. GIF: the logical screen,
    # little-endian 16-bit, at 6 and 8. BMP: 32-bit signed, little-endian, at 18 and 22
    # (a negative height means top-down rows).
    png_pixels = _little_endian(data, 16, 4, big=True) * _little_endian(data, 20, 4, big=True)
    gif_pixels = _little_endian(data, 6, 2) * _little_endian(data, 8, 2)

    def signed(value):
        return tf.abs(tf.where(value >= 2**31, value - 2**32, value))

    bmp_pixels = signed(_little_endian(data, 18, 4)) * signed(_little_endian(data, 22, 4))
    zero = tf.constant(0, tf.int64)
    return tf.where(png, png_pixels, tf.where(gif, gif_pixels, tf.where(bmp, bmp_pixels, zero)))


def image_shape(data):
    """[height, width] of encoded bytes; reads only the header of a JPEG."""
    return tf.cond(
        tf.io.is_jpeg(data),
        lambda: tf.io.extract_jpeg_shape(data)[:2],
        lambda: tf.shape(_decode_any(data))[:2],
    )


def _decode_any(data):
    return tf.io.decode_image(data, channels=3, expand_animations=False)


def decode_window(data, window, target=None, fast_idct=False, jpeg=False, ratios=(1, 2, 4, 8)):
    """Decodes [top, left, height, width] of an encoded image as uint8 RGB.

    JPEGs decode only the window. Given `target` (the size the window will be
    resized to), a JPEG window at least twice as large is decoded at 1/2, 1/4
    or 1/8 scale inside the decoder (DCT scaling), never below `target`: a
    fraction of the work for large photos. Other formats decode whole and are
    sliced. Grey and CMYK JPEGs come out as RGB.

    With `fast_idct` a JPEG is decoded with libjpeg's fast integer inverse DCT
    (pixel values within a few levels of the accurate one): the training view,
    which the augmentation shifts by more anyway. Evaluation and serving
    decode accurately.

    Args:
        data: scalar tf.string.
        window: [4] int32.
        target: the side the window is resized to, or None.
        fast_idct: the fast integer inverse DCT.
        jpeg: the bytes are a JPEG for certain (prepared records): no format
            check, no branch for other formats.
        ratios: the DCT scales worth trying (prepared records whose windows
            are never twice the target: (1,), no branch).
    """
    window = tf.cast(window, tf.int32)
    dct_method = "INTEGER_FAST" if fast_idct else ""

    def at(ratio):
        return tf.image.decode_and_crop_jpeg(data, window // ratio, channels=3, ratio=ratio, dct_method=dct_method)

    def decode_jpeg():
        if target is None or len(ratios) == 1:
            return at(1)
        side = tf.minimum(window[2], window[3])
        # Index into ratios: the largest ratio that keeps side / ratio >= target.
        index = tf.add_n([tf.cast(side // r >= target, tf.int32) for r in ratios[1:]])
        return tf.switch_case(index, [lambda r=r: at(r) for r in ratios])

    def other():
        return tf.slice(_decode_any(data), [window[0], window[1], 0], [window[2], window[3], 3])

    if jpeg:
        return decode_jpeg()
    return tf.cond(tf.io.is_jpeg(data), decode_jpeg, other)


def resize_to(image, size):
    """Resizes to size x size float32; antialiased only when shrinking more than 2x.

    Near 1:1 (the usual case for a 224 crop of a 256 image) bilinear is already
    alias-free and antialiasing costs 4-5x more. A window already size x size
    (a 224 crop of an image stored at 256, as `pipeline.prepare` writes them)
    is only converted: resizing it would copy it unchanged at a fifth of the
    cost of decoding it.
    """
    shape = tf.shape(image)
    shrink = tf.cast(tf.reduce_max(shape[:2]), tf.float32) / float(size)

    def resized():
        pixels = tf.cast(image, tf.float32)
        return tf.cond(
            shrink > 2.0,
            lambda: tf.image.resize(pixels, [size, size], antialias=True),
            lambda: tf.image.resize(pixels, [size, size]),
        )

    if image.shape[:2].is_fully_defined():  # known when the graph is built: no branch needed
        return tf.cast(image, tf.float32) if tuple(image.shape[:2]) == (size, size) else resized()
    same = tf.logical_and(tf.equal(shape[0], size), tf.equal(shape[1], size))
    return tf.cond(same, lambda: tf.cast(tf.reshape(image, [size, size, -1]), tf.float32), resized)


def resize_uint8(image, size):
    """A uint8 image -> size x size uint8: unchanged when it is that size already, else `resize_to`, rounded.

    A window already size x size (a 224 crop of an image stored at 256, as
    `pipeline.prepare` writes them) is passed on as it is, without a copy.
    """
    def resized():
        return tf.cast(tf.clip_by_value(tf.round(resize_to(image, size)), 0.0, 255.0), tf.uint8)

    if image.shape[:2].is_fully_defined():  # known when the graph is built: no branch needed
        return image if tuple(image.shape[:2]) == (size, size) else resized()
    shape = tf.shape(image)
    same = tf.logical_and(tf.equal(shape[0], size), tf.equal(shape[1], size))
    return tf.cond(same, lambda: tf.reshape(image, [size, size, 3]), resized)


def central_square(shape):
    """The central min(h, w) square, [top, left, side, side], of an image of `shape`."""
    side = tf.minimum(shape[0], shape[1])
    return tf.stack([(shape[0] - side) // 2, (shape[1] - side) // 2, side, side])


def paper_train_window(shape, image_size, resize, offset):
    """The paper's random training crop, in source pixels.

    The photo is (virtually) rescaled so its shorter side is `resize`, its
    central resize x resize square kept, and the image_size window at `offset`
    taken from it.

    Args:
        shape: [height, width] of the photo.
        image_size, resize: the window's side and the square's, in resized pixels.
        offset: [2] int32 (top, left) of the window in the resized square, each in
            [0, resize - image_size] (`pipeline.data.augment.crop_offsets`).

    Returns:
        [top, left, height, width] of that window in the original photo (at least 1 pixel).
    """
    square = central_square(shape)
    side = tf.cast(square[2], tf.float32)
    scale = side / float(resize)  # source pixels per resized pixel
    offset = tf.cast(offset, tf.float32)
    top = tf.cast(square[0], tf.float32) + offset[0] * scale
    left = tf.cast(square[1], tf.float32) + offset[1] * scale
    size = tf.maximum(1, tf.cast(tf.round(image_size * scale), tf.int32))
    top = tf.minimum(tf.cast(tf.round(top), tf.int32), shape[0] - size)
    left = tf.minimum(tf.cast(tf.round(left), tf.int32), shape[1] - size)
    return tf.stack([top, left, size, size])


def center_window(shape, image_size, resize):
    """The evaluation view (shorter side to `resize`, central image_size crop), in source pixels."""
    square = central_square(shape)
    size = tf.maximum(1, tf.cast(tf.round(tf.cast(square[2], tf.float32) * image_size / resize), tf.int32))
    return tf.stack([(shape[0] - size) // 2, (shape[1] - size) // 2, size, size])


def inception_window(shape, seed, min_area=0.08):
    """A random-resized ("Inception") crop: min_area-100 % of the area (default 8 %), aspect 3/4-4/3."""
    begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
        tf.concat([shape, [3]], 0),
        bounding_boxes=tf.constant([[[0.0, 0.0, 1.0, 1.0]]]),
        seed=tf.random.experimental.stateless_fold_in(seed, 4),
        min_object_covered=min_area,
        aspect_ratio_range=(3 / 4, 4 / 3),
        area_range=(min_area, 1.0),
        max_attempts=10,
        use_image_if_no_bounding_boxes=True,
    )
    return tf.stack([begin[0], begin[1], size[0], size[1]])


def decode_resized(data, window, image_size, fast_idct=False):
    """Decodes `window` of the image and resizes it to image_size x image_size float32."""
    return resize_to(decode_window(data, window, target=image_size, fast_idct=fast_idct), image_size)


class SkippedFiles:
    """The files the pipelines skipped so far: each named once on stderr and counted once, by name.

    One is shared by every pipeline that reads a dataset's files (a run's
    training split, epoch after epoch, and its validation split), so a file
    that every epoch meets is named and counted once. `count` (and `numpy()`,
    as a counter variable has it) is the number of distinct files skipped.
    Safe to use from tf.data's threads.
    """

    def __init__(self):
        self._names = set()
        self._lock = threading.Lock()

    @property
    def count(self):
        """The distinct files skipped so far."""
        return len(self._names)

    def numpy(self):
        """`count`, as a NumPy int64: `int(skipped.numpy())` reads it as it reads a counter variable."""
        return np.int64(self.count)

    def note(self, name, length, pixels, decodable, max_pixels=None):
        """Records a skipped file; the first time, names it in a warning on stderr. Returns 1 then, else 0.

        Args:
            name: the file's name (bytes).
            length: its size in bytes as read; 0 and no file of that name: it is
                gone (`pipeline.data.sources.read_if_there`).
            pixels: its pixels, as its header gives them.
            decodable: whether its bytes passed `is_decodable` (then it was too large).
            max_pixels: data.max_pixels, for the warning.
        """
        shown = printable(name)
        if not length and not os.path.lexists(name):
            line = f'warning: skipping "{shown}": the file is gone (deleted or moved since the folder was listed)'
        elif decodable:
            line = (f'warning: skipping image larger than data.max_pixels "{shown}" - {pixels} pixels, '
                    f"more than {max_pixels or 0}")
        else:
            line = f'warning: skipping undecodable image "{shown}"'
        with self._lock:  # one line at a time: tf.data's threads call this together
            if name in self._names:
                return 0
            self._names.add(name)
            sys.stderr.write(line + "\n")
            sys.stderr.flush()
        return 1


def skip_undecodable(dataset, counter=None, keep_name=False, max_pixels=None):
    """(bytes, label, name) -> (bytes, label), dropping files that cannot be decoded.

    With a `counter`, each dropped file is named in a warning on stderr and
    counted, once per distinct file however many passes meet it: a file gone
    since the listing (empty bytes and no file of that name), an undecodable
    one, or one too large. The counter is a `SkippedFiles` (shared by every
    pipeline over the dataset's files, epoch after epoch), or an int64
    `tf.Variable` (files counted once per call: the pipelines sharing it must
    see different files). Without one the files are dropped silently: for a
    second pass over data whose bad files another pipeline already reports.
    With keep_name the triples are kept whole. With `max_pixels`
    (data.max_pixels), a PNG, GIF or BMP larger than that (decoded whole, it
    could take the process's memory) is dropped the same way; its size comes
    from its header.
    """
    variable = None
    if counter is not None and not isinstance(counter, SkippedFiles):
        variable, counter = counter, SkippedFiles()

    def note(name, length, pixels, decodable):
        return np.int64(counter.note(name.numpy(), int(length.numpy()), int(pixels.numpy()), bool(decodable.numpy()),
                                     max_pixels))

    def check(data, label, name):
        decodable = is_decodable(data)
        pixels = whole_decode_pixels(data) if max_pixels else tf.constant(0, tf.int64)
        small = pixels <= (max_pixels or 0)
        ok = tf.logical_and(decodable, small)
        if counter is not None:

            def skip():
                # Python on the bad path only: good files never leave TensorFlow.
                new = tf.reshape(tf.py_function(note, [name, tf.strings.length(data), pixels, decodable], tf.int64), [])
                updates = [new] if variable is None else [variable.assign_add(new)]
                with tf.control_dependencies(updates):
                    return tf.identity(ok)

            ok = tf.cond(ok, lambda: ok, skip)
        return data, label, name, ok

    # The check (the file's header and, for a JPEG, its end) runs in a parallel
    # map, in order: tf.data's filter is sequential, so only the test of its
    # result runs there.
    dataset = dataset.map(check, num_parallel_calls=tf.data.AUTOTUNE)
    dataset = dataset.filter(lambda data, label, name, ok: ok)
    if keep_name:
        return dataset.map(lambda data, label, name, ok: (data, label, name))
    return dataset.map(lambda data, label, name, ok: (data, label))
