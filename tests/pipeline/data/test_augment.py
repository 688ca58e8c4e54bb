"""The paper's augmentation, checked eagerly and inside tf.data (the two can differ)."""

import numpy as np
import pytest
import tensorflow as tf

from pipeline.data import decode
from pipeline.data.augment import (
    IMAGENET_EIGVAL,
    IMAGENET_EIGVEC,
    BatchAugment,
    EvalTransform,
    PCAColorNoise,
    TrainTransform,
    batch_view,
    crop_offsets,
    flip_draws,
    seed_uniform,
    ten_crops,
)

SEED = tf.constant([3, 7], tf.int64)


def ramp(height, width):
    """A uint8 image whose pixel (y, x) holds (y, x, 0): crops reveal where they came from (sides up to 256)."""
    y, x = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    return np.stack([y, x, np.zeros_like(y)], -1).astype(np.uint8)


def seeds(count, salt=0):
    return tf.constant([[i, salt] for i in range(count)], tf.int64)


def in_dataset(fn, *tensors):
    """Runs fn once inside Dataset.map (graph mode) and returns its output."""
    dataset = tf.data.Dataset.from_tensors(tensors).map(fn)
    return next(iter(dataset))


def test_draws_are_uniform_and_the_same_one_seed_at_a_time_and_in_tf_data():
    keys = seeds(4000)
    offsets = crop_offsets(keys, 32).numpy()
    assert offsets.shape == (4000, 2) and offsets.min() == 0 and offsets.max() == 32
    counts = np.bincount(offsets.ravel(), minlength=33)
    assert counts.min() > 180 and counts.max() < 320  # 8000 draws over 33 values: 242 each on average
    assert 0.47 < flip_draws(keys).numpy().mean() < 0.53
    uniform = seed_uniform(keys, 5, 3).numpy()
    assert 0.0 <= uniform.min() and uniform.max() < 1.0 and abs(uniform.mean() - 0.5) < 0.01
    # One seed at a time, in a batch, and inside tf.data: the same draws.
    np.testing.assert_array_equal(crop_offsets(keys[7], 32).numpy(), offsets[7])
    np.testing.assert_array_equal(in_dataset(lambda k: crop_offsets(k, 32), keys[7]).numpy(), offsets[7])
    # Other seeds, other draws; the two halves of a seed both count.
    assert not np.array_equal(crop_offsets(seeds(50, 1), 32).numpy(), offsets[:50])


def test_flip_mirrors_left_right_only():
    image = tf.constant(np.stack([ramp(4, 5)] * 20))
    flips = BatchAugment(5, crop=None, flip=True, pca_noise=0.0)(image, seeds(20)).numpy()
    mirrored = flip_draws(seeds(20)).numpy()
    assert 0 < mirrored.sum() < 20  # both happen
    for out, flipped in zip(flips, mirrored):
        np.testing.assert_array_equal(out, ramp(4, 5)[:, ::-1] if flipped else ramp(4, 5))  # rows never swap


def test_pca_noise_has_the_papers_covariance():
    layer = PCAColorNoise(std=0.1)
    shifts = layer.rgb_shift(seeds(4000, 1)).numpy()
    # shift = 255 * P diag(lambda) alpha, alpha ~ N(0, 0.1^2 I)  =>  cov = 255^2 0.01 P diag(lambda)^2 P^T
    expected = 255.0**2 * 0.01 * IMAGENET_EIGVEC @ np.diag(IMAGENET_EIGVAL**2) @ IMAGENET_EIGVEC.T
    np.testing.assert_allclose(np.cov(shifts.T), expected, rtol=0.1, atol=0.05)
    assert np.abs(shifts.mean(0)).max() < 0.3
    np.testing.assert_array_equal(layer.level_shift(seeds(4000, 1)).numpy(), np.round(shifts).astype(np.int32))


def test_colour_shift_saturates_in_uint8_exactly():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (6, 5, 7, 3), dtype=np.uint8)
    images[0] = 0
    images[1] = 255
    shift = np.array([[-300, 0, 300], [-1, 1, 255], [-255, 17, -17], [5, -5, 0], [128, -128, 1], [0, 0, 0]], np.int32)
    out = batch_view(tf.constant(images), shift=tf.constant(shift)).numpy()
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, np.clip(images.astype(np.int32) + shift[:, None, None, :], 0, 255))
    # The layer: the rounded shift of each image's seed, the same for that image in any batch.
    layer = PCAColorNoise(std=0.1)
    shifted = layer(tf.constant(images[2:]), seeds(4)).numpy()
    levels = layer.level_shift(seeds(4)).numpy()
    np.testing.assert_array_equal(shifted, np.clip(images[2:].astype(np.int32) + levels[:, None, None, :], 0, 255))
    np.testing.assert_array_equal(layer(tf.constant(images[3:4]), seeds(4)[1:2]).numpy(), shifted[1:2])


def test_train_crop_is_a_window_of_the_central_square():
    # 150x200 photo -> shorter side 128 is a 128/150 scale; its central square is columns 25..174.
    image = ramp(150, 200)
    transform = TrainTransform(112, resize=128, crop="random", flip=False, pca_noise=0.0)
    corners = set()
    for s in range(10):
        out = transform(tf.constant(image), tf.constant([s, 0], tf.int64)).numpy()
        assert out.shape == (112, 112, 3) and out.dtype == np.uint8
        rows, cols = out[:, :, 0].astype(int), out[:, :, 1].astype(int)
        assert rows.min() >= 0 and rows.max() <= 149  # inside the photo
        assert cols.min() >= 24 and cols.max() <= 175  # inside the central square (1 px of resampling)
        assert rows.max() - rows.min() == pytest.approx(112 * 150 / 128, abs=3)
        # The window starts at the seed's offset in the resized square, in source pixels.
        top, left = crop_offsets(tf.constant([s, 0], tf.int64), 16).numpy() * 150 / 128
        assert rows.min() == pytest.approx(top, abs=1.5) and cols.min() == pytest.approx(25 + left, abs=1.5)
        corners.add((rows.min(), cols.min()))
    assert len(corners) > 5


def test_train_view_is_the_same_per_seed_eagerly_and_in_tf_data():
    image = tf.constant(np.random.default_rng(0).integers(0, 255, (90, 120, 3)), tf.uint8)
    transform = TrainTransform(64, resize=72)
    eager = transform(image, SEED).numpy()
    assert eager.dtype == np.uint8 and eager.shape == (64, 64, 3)
    np.testing.assert_array_equal(eager, transform(image, SEED).numpy())
    np.testing.assert_array_equal(eager, in_dataset(lambda x, s: transform(x, s), image, SEED).numpy())
    assert not np.array_equal(eager, transform(image, tf.constant([4, 7], tf.int64)).numpy())


def test_a_batch_of_equal_size_images_gets_each_images_own_view():
    images = tf.constant(np.random.default_rng(1).integers(0, 256, (6, 80, 80, 3)), tf.uint8)
    keys = seeds(6, 11)
    batch = BatchAugment(64, crop="random")(images, keys).numpy()
    # One image at a time (the per-image path) gives the same pixels, whatever the batch around it.
    one_by_one = np.stack([TrainTransform(64, resize=80)(images[i], keys[i]).numpy() for i in range(6)])
    np.testing.assert_array_equal(batch, one_by_one)
    reordered = BatchAugment(64, crop="random")(tf.reverse(images, [0]), tf.reverse(keys, [0])).numpy()
    np.testing.assert_array_equal(reordered[::-1], batch)
    in_graph = in_dataset(lambda x, k: BatchAugment(64, crop="random")(x, k), images, keys).numpy()
    np.testing.assert_array_equal(in_graph, batch)
    # The crop is the seed's window: without flip and colour, exact pixels.
    plain = BatchAugment(64, crop="random", flip=False, pca_noise=0.0)(images, keys).numpy()
    for i, (top, left) in enumerate(crop_offsets(keys, 16).numpy()):
        np.testing.assert_array_equal(plain[i], images.numpy()[i, top : top + 64, left : left + 64])
    centre = BatchAugment(64, crop="center", flip=False, pca_noise=0.0)(images, keys).numpy()
    np.testing.assert_array_equal(centre, images.numpy()[:, 8:72, 8:72])


def test_encoded_jpeg_decodes_only_the_window_yet_matches_the_decoded_path():
    image = np.random.default_rng(1).integers(0, 255, (150, 200, 3)).astype(np.uint8)
    image = tf.image.resize(image, [300, 400]).numpy().astype(np.uint8)  # smooth: JPEG-friendly
    data = tf.io.encode_jpeg(image, quality=100)
    decoded = tf.io.decode_jpeg(data, channels=3)
    transform = TrainTransform(224, resize=256, flip=False, pca_noise=0.0)
    from_bytes = transform(data, SEED).numpy().astype(float)
    from_pixels = transform(decoded, SEED).numpy().astype(float)
    assert np.abs(from_bytes - from_pixels).mean() < 2.0  # the same view, JPEG DCT-block rounding aside
    # Prepared records: known JPEGs of shorter side 256 decode the same window without the branches.
    records = TrainTransform(224, resize=256, flip=False, pca_noise=0.0, jpeg_side=300)
    np.testing.assert_array_equal(records(data, SEED).numpy(), from_bytes)
    evaluate = EvalTransform(224, resize=256)
    assert np.abs(evaluate(data).numpy() - evaluate(decoded).numpy()).mean() < 2.0


def test_inception_crop_shape_and_center_crop():
    image = tf.constant(ramp(100, 160))
    out = TrainTransform(64, resize=72, crop="inception", flip=False, pca_noise=0)(image, SEED)
    assert out.shape == (64, 64, 3) and out.dtype == tf.uint8
    center = TrainTransform(64, resize=64, crop="center", flip=False, pca_noise=0)(image, SEED).numpy()
    # Central 100x100 square (columns 30..129) resized to 64.
    assert center[:, :, 1].min() == pytest.approx(30, abs=1.5) and center[:, :, 1].max() == pytest.approx(129, abs=1.5)


def test_small_images_are_upscaled():
    tiny = tf.constant(ramp(20, 30))
    assert TrainTransform(64, resize=72)(tiny, SEED).shape == (64, 64, 3)
    assert EvalTransform(64, resize=72)(tiny).shape == (64, 64, 3)
    assert EvalTransform(64, resize=72, crops=10)(tiny).shape == (10, 64, 64, 3)


def test_ten_crops_are_corners_centre_and_mirrors():
    square = tf.constant(ramp(8, 8), tf.float32)
    views = ten_crops(square, 6).numpy()
    assert views.shape == (10, 6, 6, 3)
    corners = [(0, 0), (0, 2), (2, 0), (2, 2), (1, 1)]
    for i, (top, left) in enumerate(corners):
        assert (views[i, 0, 0, 0], views[i, 0, 0, 1]) == (top, left)
        np.testing.assert_array_equal(views[i + 5], views[i][:, ::-1])


def test_eval_center_crop_of_a_photo():
    image = ramp(256, 300)  # already shorter side 256: centre 224 is rows 16..239, cols 38..261 (stored mod 256)
    out = EvalTransform(224, resize=256)(tf.constant(image)).numpy()
    assert out.dtype == np.float32
    assert (out[0, 0, 0], out[0, 0, 1]) == pytest.approx((16, 38), abs=0.6)
    assert (out[-1, -1, 0], out[-1, -1, 1]) == pytest.approx((239, 261 % 256), abs=0.6)


@pytest.mark.parametrize(
    "make, ok",
    [
        (lambda: tf.io.encode_jpeg(tf.zeros([16, 16, 3], tf.uint8)).numpy(), True),
        (lambda: tf.io.encode_png(tf.zeros([16, 16, 3], tf.uint8)).numpy(), True),
        (lambda: b"", False),
        (lambda: b"hello, this is not an image at all", False),
        (lambda: tf.io.encode_jpeg(tf.zeros([64, 64, 3], tf.uint8)).numpy()[:-200], False),  # cut short
    ],
)
def test_is_decodable(make, ok):
    assert bool(decode.is_decodable(tf.constant(make()))) is ok
    assert bool(in_dataset(decode.is_decodable, tf.constant(make()))) is ok
