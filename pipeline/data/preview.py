"""A look at what training will see: the first augmented batch, from a pipeline of its own."""

from pipeline.data.splits import DataError


def first_training_batch(data_config, batch_size, seed, shard=None):
    """The first batch of the first epoch of the training pipeline: (images, labels) as NumPy arrays.

    Taken from a second pipeline built like the trainer's (`build_datasets`
    with the same config and seed; without the cache, which changes no value),
    so the trainer's own pipeline, its reshuffling and augmentation seeds stay
    as they are. The batch holds images of the trainer's first epoch; their
    order can differ a little, as parallel augmentation hands images on as
    they are finished.

    Costs what opening the source and the first batch of an epoch cost: listing
    the files (folder source; see `pipeline.data.listing.shared_listings`),
    filling the shuffle buffer and augmenting one batch.

    Args:
        data_config: `pipeline.config.DataConfig` of the run.
        batch_size: global batch size.
        seed: the run's seed.
        shard: the trainer's (workers, index) under multi-worker training, so
            that the batch comes from this worker's share of a folder.

    Raises:
        DataError: no training image could be decoded.
    """
    from pipeline.data.pipelines import build_datasets

    data = build_datasets(data_config.derive({"cache": False}), batch_size, seed=seed, shard=shard)
    for images, labels in data.train.take(1):
        return images.numpy(), labels.numpy()
    raise DataError(
        f"data.source {data_config.source}: no training image could be decoded (the undecodable files are named "
        "in the warnings above): replace them, or point data.source at images"
    )
