"""Images in, batches out: sources (`sources`, `listing`, `records`), decoding (`decode`), the paper's
augmentation as Keras layers (`augment`), and the batched tf.data pipelines (`pipelines`)."""
