"""What the Keras model itself says, to hold a SavedModel's answers against."""

import numpy as np
import tensorflow as tf


def keras_probabilities(model, images):
    """The model's softmax probabilities of float32 images (inference mode), as a NumPy array."""
    return tf.nn.softmax(model(np.asarray(images, np.float32), training=False)).numpy()
