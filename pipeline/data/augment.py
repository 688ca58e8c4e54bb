"""Per-image transforms for tf.data, as Keras layers over tf.image.

The layers work on ONE image (height, width, 3) at a time inside `Dataset.map`,
before batching, so every image gets its own crop (keras.layers.RandomCrop
crops a whole batch at one offset). Randomness is stateless: each call takes a
`seed` tensor of shape [2], so a pipeline is reproducible whatever the
parallelism, and each layer derives its own stream with `fold_in`.

Pixel values are float32 in [0, 255]; the model subtracts the mean itself.
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


def _fold(seed, salt):
    return tf.random.experimental.stateless_fold_in(tf.cast(seed, tf.int64), salt)


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


class RandomHorizontalFlip(keras.layers.Layer):
    """Mirrors an image left-right with probability 1/2 (section 4.1); never up-down."""

    def call(self, image, seed):
        return tf.image.stateless_random_flip_left_right(image, seed=_fold(seed, 2))


class PCAColorNoise(keras.layers.Layer):
    """The paper's colour augmentation (section 4.1).

    Adds [p1, p2, p3] @ [a1 * l1, a2 * l2, a3 * l3] to every pixel, where p_i and
    l_i are the eigenvectors and eigenvalues of the RGB covariance and each
    a_i ~ N(0, std) is drawn once per image. Eigenvalues are in [0, 1] pixel
    units, so the shift is scaled by 255 for [0, 255] images.

    Args:
        std: standard deviation of the alphas (paper: 0.1).
        eigval, eigvec: the decomposition (default: ImageNet's).
    """

    def __init__(self, std=0.1, eigval=None, eigvec=None, **kwargs):
        super().__init__(**kwargs)
        self.std = float(std)
        self.eigval = np.asarray(IMAGENET_EIGVAL if eigval is None else eigval, np.float32)
        self.eigvec = np.asarray(IMAGENET_EIGVEC if eigvec is None else eigvec, np.float32)

    def rgb_shift(self, seed):
        """The per-image RGB offset, in [0, 255] units, for this seed."""
        alpha = tf.random.stateless_normal([3], seed=_fold(seed, 3), stddev=self.std)
        return 255.0 * tf.linalg.matvec(tf.constant(self.eigvec), alpha * tf.constant(self.eigval))

    def call(self, image, seed):
        return image + self.rgb_shift(seed)

    def get_config(self):
        return {
            **super().get_config(),
            "std": self.std,
            "eigval": self.eigval.tolist(),
            "eigvec": self.eigvec.tolist(),
        }


def _crop_resized(image, window, image_size, fast_idct=False):
    """Crops `window` out of an encoded (tf.string) or decoded image and resizes it."""
    if image.dtype == tf.string:
        return decode.decode_resized(image, window, image_size, fast_idct=fast_idct)
    return decode.resize_to(tf.slice(image, [window[0], window[1], 0], [window[2], window[3], 3]), image_size)


def _shape(image):
    return decode.image_shape(image) if image.dtype == tf.string else tf.shape(image)[:2]


class TrainTransform(keras.layers.Layer):
    """Image -> training input: the paper's section 4.1 pipeline.

    Takes one image, decoded ([H, W, 3] uint8) or encoded (scalar tf.string,
    of which only the crop window is decoded). The view is a random image_size
    window of the central resize x resize square of the image rescaled to
    shorter side `resize`; then a random horizontal flip and PCA colour noise.
    Each step can be switched off. `crop="center"` takes the central window
    instead; `crop="inception"` a random-resized crop (min_area-100 % of the area,
    aspect 3/4-4/3) of the whole image. Images smaller than the window are
    upscaled.

    Args:
        image_size: output height and width.
        resize: shorter side before cropping (paper: 256).
        crop: "random", "inception" or "center".
        min_area: the smallest share of the image an inception crop takes.
        flip: random horizontal flips.
        pca_noise: std of the PCA colour-noise alphas; 0 disables it.
    """

    def __init__(self, image_size, resize=256, crop="random", flip=True, pca_noise=0.1, min_area=0.08, **kwargs):
        super().__init__(**kwargs)
        self.image_size = int(image_size)
        self.resize = int(resize)
        self.crop = crop
        self.flip = bool(flip)
        self.pca_noise = float(pca_noise)
        self.min_area = float(min_area)
        self.mirror = RandomHorizontalFlip()
        self.lighting = PCAColorNoise(self.pca_noise)

    def build(self, *args):
        # The sublayers hold no weights; nothing to build.
        self.built = True

    def window(self, shape, seed):
        """[top, left, height, width] of this image's crop, in its own pixels."""
        if self.crop == "inception":
            return decode.inception_window(shape, seed, self.min_area)
        if self.crop == "random":
            return decode.paper_train_window(shape, self.image_size, self.resize, seed)
        return decode.center_window(shape, self.image_size, self.resize)

    def call(self, image, seed):
        seed = tf.cast(seed, tf.int64)
        # The fast inverse DCT: within a few pixel levels, which the colour noise exceeds.
        image = _crop_resized(image, self.window(_shape(image), seed), self.image_size, fast_idct=True)
        if self.flip:
            image = self.mirror(image, seed)
        if self.pca_noise > 0:
            image = self.lighting(image, seed)
        return tf.ensure_shape(image, [self.image_size, self.image_size, 3])

    def get_config(self):
        return {
            **super().get_config(),
            "image_size": self.image_size,
            "resize": self.resize,
            "crop": self.crop,
            "flip": self.flip,
            "pca_noise": self.pca_noise,
            "min_area": self.min_area,
        }


class EvalTransform(keras.layers.Layer):
    """Image -> evaluation input: shorter side to `resize`, central image_size crop.

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
