"""The paper's augmentation, checked eagerly and inside tf.data (the two can differ)."""

import numpy as np
import pytest
import tensorflow as tf

from pipeline.data import decode
from pipeline.data.augment import (
    IMAGENET_EIGVAL,
    IMAGENET_EIGVEC,
    EvalTransform,
    PCAColorNoise,
    RandomHorizontalFlip,
    TrainTransform,
    ten_crops,
)

SEED = tf.constant([3, 7], tf.int64)


def ramp(height, width):
    """An image whose pixel (y, x) holds (y, x, 0): crops reveal where they came from."""
    y, x = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    return np.stack([y, x, np.zeros_like(y)], -1).astype(np.float32)


def in_dataset(fn, *tensors):
    """Runs fn once inside Dataset.map (graph mode) and returns its output."""
    dataset = tf.data.Dataset.from_tensors(tensors).map(fn)
    return next(iter(dataset))


def test_flip_mirrors_left_right_only():
    image = tf.constant(ramp(4, 5), tf.float32)
    flip = RandomHorizontalFlip()
    outcomes = {tuple(np.asarray(flip(image, tf.constant([s, 0], tf.int64)))[0, :, 1]) for s in range(20)}
    assert outcomes == {(0, 1, 2, 3, 4), (4, 3, 2, 1, 0)}  # both happen; rows never swap
    for s in range(20):
        out = np.asarray(flip(image, tf.constant([s, 0], tf.int64)))
        np.testing.assert_array_equal(out[:, :, 0], np.asarray(image)[:, :, 0])


def test_pca_noise_has_the_papers_covariance():
    layer = PCAColorNoise(std=0.1)
    shifts = np.stack([layer.rgb_shift(tf.constant([i, 1], tf.int64)).numpy() for i in range(4000)])
    # shift = 255 * P diag(lambda) alpha, alpha ~ N(0, 0.1^2 I)  =>  cov = 255^2 0.01 P diag(lambda)^2 P^T
    expected = 255.0**2 * 0.01 * IMAGENET_EIGVEC @ np.diag(IMAGENET_EIGVAL**2) @ IMAGENET_EIGVEC.T
    np.testing.assert_allclose(np.cov(shifts.T), expected, rtol=0.1, atol=0.05)
    assert np.abs(shifts.mean(0)).max() < 0.3
    image = tf.fill([2, 2, 3], 100.0)
    out = layer(image, SEED).numpy()
    np.testing.assert_allclose(out - 100.0, np.broadcast_to(layer.rgb_shift(SEED).numpy(), (2, 2, 3)), atol=1e-4)


def test_train_crop_is_a_window_of_the_central_square():
    # 300x400 photo -> shorter side 256 is a 3/4 scale; central square is columns 50..350.
    image = ramp(300, 400)
    transform = TrainTransform(224, resize=256, crop="random", flip=False, pca_noise=0.0)
    for s in range(10):
        out = transform(tf.constant(image), tf.constant([s, 0], tf.int64)).numpy()
        assert out.shape == (224, 224, 3)
        rows, cols = out[:, :, 0], out[:, :, 1]
        assert rows.min() >= -1 and rows.max() <= 300  # inside the photo (1 px of resampling)
        assert cols.min() >= 49 and cols.max() <= 351  # inside the central square
        assert rows.max() - rows.min() == pytest.approx(224 * 300 / 256, abs=3)


def test_train_transform_is_deterministic_per_seed_and_same_in_tf_data():
    image = tf.constant(np.random.default_rng(0).integers(0, 255, (90, 120, 3)), tf.uint8)
    transform = TrainTransform(64, resize=72)
    eager = transform(image, SEED).numpy()
    np.testing.assert_array_equal(eager, transform(image, SEED).numpy())
    graph = in_dataset(lambda x, s: transform(x, s), image, SEED).numpy()
    np.testing.assert_allclose(eager, graph, atol=1e-4)
    assert not np.array_equal(eager, transform(image, tf.constant([4, 7], tf.int64)).numpy())


def test_encoded_jpeg_decodes_only_the_window_yet_matches_the_decoded_path():
    image = np.random.default_rng(1).integers(0, 255, (150, 200, 3)).astype(np.uint8)
    image = tf.image.resize(image, [300, 400]).numpy().astype(np.uint8)  # smooth: JPEG-friendly
    data = tf.io.encode_jpeg(image, quality=100)
    decoded = tf.io.decode_jpeg(data, channels=3)
    transform = TrainTransform(224, resize=256, flip=False, pca_noise=0.0)
    from_bytes = transform(data, SEED).numpy()
    from_pixels = transform(decoded, SEED).numpy()
    assert np.abs(from_bytes - from_pixels).mean() < 2.0  # the same view, JPEG DCT-block rounding aside
    evaluate = EvalTransform(224, resize=256)
    assert np.abs(evaluate(data).numpy() - evaluate(decoded).numpy()).mean() < 2.0


def test_inception_crop_shape_and_center_crop():
    image = tf.constant(ramp(100, 160))
    out = TrainTransform(64, resize=72, crop="inception", flip=False, pca_noise=0)(image, SEED)
    assert out.shape == (64, 64, 3)
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
    image = ramp(256, 512)  # already shorter side 256: centre 224 is rows 16..239, cols 144..367
    out = EvalTransform(224, resize=256)(tf.constant(image)).numpy()
    assert (out[0, 0, 0], out[0, 0, 1]) == pytest.approx((16, 144), abs=0.6)
    assert (out[-1, -1, 0], out[-1, -1, 1]) == pytest.approx((239, 367), abs=0.6)


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
