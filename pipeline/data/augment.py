"""Training and evaluation views, as Keras layers over tf.image.

The training view (paper, section 4.1) is made in two stages:
    per image   `TrainTransform.crop_view`: the crop window of one image (for a
                JPEG only that window is decoded), resized to image_size when
                it is not that size already. Images of varied size need it.
    per batch   `BatchAugment`: the horizontal flip and the PCA colour noise of
                a whole batch, and, for a batch of equal-size images (raw
                records, the synthetic source), the crop as well. One XLA
                kernel; no per-image tf.data work.
Pixels stay uint8 from the decoder to the model, which normalises them itself
(`model_defs.layers.ChannelNormalization`): no float32 copy of a batch on the
CPU, a quarter of the bytes to move.

Randomness is stateless and per image: each image has its own `seed` [2]
(int64), and every draw (crop offsets, flip, colour) is a hash of that seed
and a salt, computed alike one image at a time or a batch at a time. So an
image and its seed give the same view whichever path, batch or position
makes it, in eager code and inside tf.data.
"""

import keras
import numpy as np
import tensorflow as tf

from pipeline.data import decode

# Eigen-decomposition of the RGB covariance over ImageNet training pixels, in
# [0, 1] pixel units (the values fb.resnet.torch and others published for the
# paper's section 4.1 "PCA on the set of RGB pixel values"). Columns are
# eigenvectors.
IMAGENET_EIGVAL = np.array([0.2175, 0.0188, 0.0045], np.float32)
IMAGENET_EIGVEC = np.array(
    [
        [-0.5675, 0.7192, 0.4009],
        [-0.5808, -0.0045, -0.8140],
        [-0.5836, -0.6948, 0.4203],
    ],
    np.float32,
)

# Salts: one independent stream of draws per decision.
CROP_SALT, FLIP_SALT, COLOUR_SALT = 1, 2, 3
_GOLDEN = 0x9E3779B97F4A7C15  # 2^64 / golden ratio: the splitmix64 increment


def _mix(z):
    """splitmix64's finaliser: a bijection of uint64 whose every output bit depends on every input bit."""
    z = tf.bitwise.bitwise_xor(z, tf.bitwise.right_shift(z, tf.constant(30, tf.uint64))) * tf.constant(
        0xBF58476D1CE4E5B9, tf.uint64)
    z = tf.bitwise.bitwise_xor(z, tf.bitwise.right_shift(z, tf.constant(27, tf.uint64))) * tf.constant(
        0x94D049BB133111EB, tf.uint64)
    return tf.bitwise.bitwise_xor(z, tf.bitwise.right_shift(z, tf.constant(31, tf.uint64)))


def seed_bits(seeds, salt, count):
    """`count` random uint64 per seed: a counter-based hash of (seed, salt, k).

    Args:
        seeds: [..., 2] integer seeds, one per image.
        salt: a Python int naming the stream (CROP_SALT, ...).
        count: draws per seed.

    Returns:
        [..., count] tf.uint64, the same for a seed wherever it is computed.
    """
    seeds = tf.bitcast(tf.cast(seeds, tf.int64), tf.uint64)
    key = _mix(tf.bitwise.bitwise_xor(seeds[..., 0], _mix(seeds[..., 1] + tf.constant(salt * _GOLDEN % 2**64,
                                                                                         tf.uint64))))
    steps = tf.range(1, count + 1, dtype=tf.int64)
    return _mix(key[..., None] + tf.bitcast(steps, tf.uint64) * tf.constant(_GOLDEN, tf.uint64))


def seed_uniform(seeds, salt, count):
    """[..., count] float32 uniform in [0, 1) from the top 24 bits of `seed_bits` (exact in float32)."""
    top = tf.bitwise.right_shift(seed_bits(seeds, salt, count), tf.constant(40, tf.uint64))
    return tf.cast(top, tf.float32) * (1.0 / 2**24)


def seed_normal(seeds, salt, count, stddev=1.0):
    """[..., count] float32 normal draws N(0, stddev^2) (Box-Muller on `seed_uniform` pairs)."""
    uniform = seed_uniform(seeds, salt, 2 * count)
    radius = tf.sqrt(-2.0 * tf.math.log(1.0 - uniform[..., :count]))  # 1 - u in (0, 1]: log is finite
    return stddev * radius * tf.cos(2.0 * np.pi * uniform[..., count:])


def crop_offsets(seeds, room):
    """[..., 2] int32 (top, left) of a crop, each uniform in [0, room]."""
    bits = tf.bitwise.right_shift(seed_bits(seeds, CROP_SALT, 2), tf.constant(32, tf.uint64))
    return tf.cast(bits % tf.cast(room + 1, tf.uint64), tf.int32)


def flip_draws(seeds):
    """[...] bool: mirror this image (probability 1/2)."""
    bit = tf.bitwise.right_shift(seed_bits(seeds, FLIP_SALT, 1)[..., 0], tf.constant(63, tf.uint64))
    return tf.equal(bit, tf.constant(1, tf.uint64))


def resize_shorter_side(image, size):
    """Resizes so the shorter side is `size`, keeping the aspect ratio (bilinear, antialiased)."""
    shape = tf.shape(image)
    height, width = tf.cast(shape[0], tf.float32), tf.cast(shape[1], tf.float32)
    scale = tf.cast(size, tf.float32) / tf.minimum(height, width)
    new_h = tf.maximum(size, tf.cast(tf.round(height * scale), tf.int32))
    new_w = tf.maximum(size, tf.cast(tf.round(width * scale), tf.int32))
    return tf.image.resize(image, [new_h, new_w], antialias=True)


def center_crop(image, size):
    """The central size x size window of an image at least that large."""
    shape = tf.shape(image)
    top = (shape[0] - size) // 2
    left = (shape[1] - size) // 2
    return image[top : top + size, left : left + size, :]


class PCAColorNoise(keras.layers.Layer):
    """The paper's colour augmentation (section 4.1), on uint8 images.

    Adds [p1, p2, p3] @ [a1 * l1, a2 * l2, a3 * l3] to every pixel, where p_i and
    l_i are the eigenvectors and eigenvalues of the RGB covariance and each
    a_i ~ N(0, std) is drawn once per image from its seed. Eigenvalues are in
    [0, 1] pixel units, so the shift is scaled by 255.

    Against adding the shift to float pixels, two departures, both below what
    the images carry: the shift is rounded to whole pixel levels (at most half
    a level off; its spread is about 5.5 levels along the first component), and
    the result saturates at 0 and 255 instead of leaving that range.

    Args:
        std: standard deviation of the alphas (paper: 0.1).
        eigval, eigvec: the decomposition (default: ImageNet's).
    """

    def __init__(self, std=0.1, eigval=None, eigvec=None, **kwargs):
        super().__init__(**kwargs)
        self.std = float(std)
        self.eigval = np.asarray(IMAGENET_EIGVAL if eigval is None else eigval, np.float32)
        self.eigvec = np.asarray(IMAGENET_EIGVEC if eigvec is None else eigvec, np.float32)

    def rgb_shift(self, seeds):
        """The RGB offset, in [0, 255] units: [..., 3] float32 for seeds [..., 2]."""
        alpha = seed_normal(seeds, COLOUR_SALT, 3, stddev=self.std)
        return 255.0 * tf.linalg.matvec(tf.constant(self.eigvec), alpha * tf.constant(self.eigval))

    def level_shift(self, seeds):
        """`rgb_shift` rounded to whole pixel levels: [..., 3] int32."""
        return tf.cast(tf.round(self.rgb_shift(seeds)), tf.int32)

    def call(self, images, seeds):
        """uint8 images [N, H, W, 3] and their seeds [N, 2] -> uint8, shifted with saturation."""
        return batch_view(images, shift=self.level_shift(seeds))

    def get_config(self):
        return {
            **super().get_config(),
            "std": self.std,
            "eigval": self.eigval.tolist(),
            "eigvec": self.eigvec.tolist(),
        }


def _saturating_add(images, shift):
    """uint8 images [N, H, W, 3] + int32 shift [N, 3], clipped to [0, 255]: in uint8, never widened.

    Clamping x to [max(0, -s), 255 - max(0, s)] first keeps x + s inside [0, 255],
    so the addition can wrap modulo 256 (uint8) and still give the exact sum.
    """
    shift = tf.clip_by_value(shift, -255, 255)  # beyond, every pixel saturates alike
    low = tf.cast(tf.maximum(-shift, 0), tf.uint8)[:, None, None, :]
    high = tf.cast(255 - tf.maximum(shift, 0), tf.uint8)[:, None, None, :]
    wrapped = tf.cast(tf.math.floormod(shift, 256), tf.uint8)[:, None, None, :]
    return tf.minimum(tf.maximum(images, low), high) + wrapped


@tf.function(jit_compile=True, autograph=False)
def _batch_view_kernel(pixels, offsets, flip, shift, size, row_bytes):
    # One XLA kernel: the crop, the flip and the colour shift fuse into a single
    # pass over the batch. TensorFlow's own kernels take one pass each, and its
    # reverse and broadcasting adds of uint8 run several times slower than a copy.
    if row_bytes is not None:  # windows cut from raw records: row_bytes per image row, the last row short
        padded = tf.pad(pixels, [[0, 0], [0, row_bytes - size * 3]])
        images = tf.reshape(tf.reshape(padded, [-1, size, row_bytes])[:, :, : size * 3], [-1, size, size, 3])
    elif offsets is not None:  # equal-size images: every image its own window
        rows = offsets[:, :1] + tf.range(size)[None, :]
        columns = offsets[:, 1:] + tf.range(size)[None, :]
        images = tf.gather(tf.gather(pixels, rows, axis=1, batch_dims=1), columns, axis=2, batch_dims=1)
    else:
        images = pixels
    if flip is not None:
        images = tf.where(flip[:, None, None, None], tf.reverse(images, [2]), images)
    if shift is not None:
        images = _saturating_add(images, shift)
    return images


def batch_view(pixels, offsets=None, flip=None, shift=None, size=None, row_bytes=None):
    """The training views of a batch, in one XLA kernel.

    Args:
        pixels: uint8 images [N, H, W, 3], or with `row_bytes` the crop
            windows of raw records, [N, (size - 1) * row_bytes + 3 * size]
            (`pipeline.data.records.RawLayout.windows`).
        offsets: [N, 2] int32 (top, left) of each image's size x size window,
            for images larger than `size`; None: images are cropped already.
        flip: [N] bool, mirror left-right; None: no flip.
        shift: [N, 3] int32 colour shift in pixel levels; None: no shift.
        size: the output side (needed with offsets or row_bytes).
        row_bytes: bytes of one image row in a raw record (side * 3).

    Returns:
        uint8 [N, size, size, 3].
    """
    if offsets is None and row_bytes is None and flip is None and shift is None:
        return pixels
    return _batch_view_kernel(pixels, offsets, flip, shift, size, row_bytes)


class BatchAugment(keras.layers.Layer):
    """A batch of uint8 images and their seeds [N, 2] -> training views: flip and PCA colour noise per image.

    With `crop` ("random" or "center") it crops as well: for batches of equal
    size images, each the central square of its photo at shorter side
    `resize` (raw records, the synthetic source), the image_size window is
    taken at the offsets `TrainTransform` would take for the image's seed.
    Without, the images come cropped (`TrainTransform.crop_view`).

    Args:
        image_size: output side.
        crop: None, "random" or "center".
        flip: random horizontal flips (section 4.1; never up-down).
        pca_noise: std of the PCA colour-noise alphas; 0 disables it.
    """

    def __init__(self, image_size, crop=None, flip=True, pca_noise=0.1, **kwargs):
        super().__init__(**kwargs)
        self.image_size = int(image_size)
        self.crop = crop
        self.flip = bool(flip)
        self.pca_noise = float(pca_noise)
        self.lighting = PCAColorNoise(self.pca_noise)

    def build(self, *args):
        # The sublayer holds no weights; nothing to build.
        self.built = True

    def offsets(self, seeds, side):
        """[N, 2] (top, left) of each image's window in a side x side image."""
        room = side - self.image_size
        if self.crop == "center":
            return tf.fill(tf.concat([tf.shape(seeds)[:-1], [2]], 0), room // 2)
        return crop_offsets(seeds, room)

    def draws(self, seeds):
        """(flip [N] bool or None, shift [N, 3] int32 or None) for these seeds."""
        flip = flip_draws(seeds) if self.flip else None
        shift = self.lighting.level_shift(seeds) if self.pca_noise > 0 else None
        return flip, shift

    def call(self, images, seeds):
        offsets = None
        if self.crop is not None and images.shape[1] != self.image_size:
            offsets = self.offsets(seeds, images.shape[1])
        return batch_view(images, offsets, *self.draws(seeds), size=self.image_size)

    def from_windows(self, windows, seeds, row_bytes):
        """Views from raw records' crop windows (`RawLayout.windows` at `self.offsets`)."""
        return batch_view(windows, None, *self.draws(seeds), size=self.image_size, row_bytes=row_bytes)

    def get_config(self):
        return {**super().get_config(), "image_size": self.image_size, "crop": self.crop, "flip": self.flip,
                "pca_noise": self.pca_noise}


def _crop_resized(image, window, image_size, fast_idct=False):
    """Crops `window` out of an encoded (tf.string) or decoded image and resizes it (float32)."""
    if image.dtype == tf.string:
        return decode.decode_resized(image, window, image_size, fast_idct=fast_idct)
    return decode.resize_to(tf.slice(image, [window[0], window[1], 0], [window[2], window[3], 3]), image_size)


def _shape(image):
    return decode.image_shape(image) if image.dtype == tf.string else tf.shape(image)[:2]


class TrainTransform(keras.layers.Layer):
    """Image -> training input: the paper's section 4.1 pipeline, uint8 out.

    Takes one image, decoded ([H, W, 3] uint8) or encoded (scalar tf.string,
    of which only the crop window is decoded). The view is a random image_size
    window of the central resize x resize square of the image rescaled to
    shorter side `resize`; then a random horizontal flip and PCA colour noise.
    Each step can be switched off. `crop="center"` takes the central window
    instead; `crop="inception"` a random-resized crop (min_area-100 % of the area,
    aspect 3/4-4/3) of the whole image. Images smaller than the window are
    upscaled.

    In a pipeline the crop runs per image (`crop_view`) and the rest per batch
    (`self.augment`, a `BatchAugment`); calling the layer does both for one image.

    Args:
        image_size: output height and width.
        resize: shorter side before cropping (paper: 256).
        crop: "random", "inception" or "center".
        min_area: the smallest share of the image an inception crop takes.
        flip: random horizontal flips.
        pca_noise: std of the PCA colour-noise alphas; 0 disables it.
        jpeg_side: encoded images are JPEGs of shorter side at most this
            (records prepared at that size): decoded without a format check,
            and without DCT-scaling branches their windows never reach.
    """

    def __init__(self, image_size, resize=256, crop="random", flip=True, pca_noise=0.1, min_area=0.08,
                 jpeg_side=None, **kwargs):
        super().__init__(**kwargs)
        self.image_size = int(image_size)
        self.resize = int(resize)
        self.crop = crop
        self.flip = bool(flip)
        self.pca_noise = float(pca_noise)
        self.min_area = float(min_area)
        self.jpeg_side = jpeg_side
        self.augment = BatchAugment(self.image_size, crop=None, flip=self.flip, pca_noise=self.pca_noise)

    def build(self, *args):
        # The sublayers hold no weights; nothing to build.
        self.built = True

    def window(self, shape, seed):
        """[top, left, height, width] of this image's crop, in its own pixels."""
        if self.crop == "inception":
            return decode.inception_window(shape, seed, self.min_area)
        if self.crop == "random":
            offset = crop_offsets(seed, self.resize - self.image_size)
            return decode.paper_train_window(shape, self.image_size, self.resize, offset)
        return decode.center_window(shape, self.image_size, self.resize)

    def _decoding(self):
        if not self.jpeg_side:
            return {}
        # The largest window of such a JPEG: an inception crop may take all of it.
        largest = self.jpeg_side if self.crop == "inception" else -(-self.image_size * self.jpeg_side // self.resize)
        return {"jpeg": True, "ratios": tuple(r for r in (1, 2, 4, 8) if largest // r >= self.image_size) or (1,)}

    def crop_view(self, image, seed):
        """The image's crop window at image_size x image_size, uint8: the view before flip and colour."""
        seed = tf.cast(seed, tf.int64)
        window = self.window(_shape(image), seed)
        if image.dtype == tf.string:
            # The fast inverse DCT: within a few pixel levels, which the colour noise exceeds.
            view = decode.decode_window(image, window, target=self.image_size, fast_idct=True, **self._decoding())
        else:
            view = tf.slice(image, [window[0], window[1], 0], [window[2], window[3], 3])
        return tf.ensure_shape(decode.resize_uint8(view, self.image_size), [self.image_size, self.image_size, 3])

    def call(self, image, seed):
        seed = tf.cast(seed, tf.int64)
        return self.augment(self.crop_view(image, seed)[None], seed[None])[0]

    def get_config(self):
        return {
            **super().get_config(),
            "image_size": self.image_size,
            "resize": self.resize,
            "crop": self.crop,
            "flip": self.flip,
            "pca_noise": self.pca_noise,
            "min_area": self.min_area,
            "jpeg_side": self.jpeg_side,
        }


class EvalTransform(keras.layers.Layer):
    """Image -> evaluation input: shorter side to `resize`, central image_size crop (float32).

    Takes a decoded or an encoded image like `TrainTransform`. With crops=10 it
    returns the paper's ten views (section 4.1, test time): the four corner and
    the centre image_size patches of the central resize x resize square, and
    their mirror images, stacked as [10, image_size, image_size, 3].
    """

    def __init__(self, image_size, resize=256, crops=1, **kwargs):
        super().__init__(**kwargs)
        self.image_size = int(image_size)
        self.resize = int(resize)
        self.crops = int(crops)

    def call(self, image):
        shape = _shape(image)
        if self.crops == 1:
            window = decode.center_window(shape, self.image_size, self.resize)
            return tf.ensure_shape(_crop_resized(image, window, self.image_size), [self.image_size, self.image_size, 3])
        square = _crop_resized(image, decode.central_square(shape), self.resize)
        return ten_crops(square, self.image_size)

    def get_config(self):
        return {**super().get_config(), "image_size": self.image_size, "resize": self.resize, "crops": self.crops}


def ten_crops(image, size):
    """Four corners, centre, and the mirror image of each: [10, size, size, 3]."""
    shape = tf.shape(image)
    height, width = shape[0], shape[1]
    offsets = [
        (0, 0),
        (0, width - size),
        (height - size, 0),
        (height - size, width - size),
        ((height - size) // 2, (width - size) // 2),
    ]
    views = [image[top : top + size, left : left + size, :] for top, left in offsets]
    views += [tf.image.flip_left_right(view) for view in views]
    return tf.ensure_shape(tf.stack(views), [10, size, size, 3])
