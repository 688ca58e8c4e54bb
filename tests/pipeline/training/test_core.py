"""The training core: what an epoch reads, and an epoch that reads nothing."""

import dataclasses

import pytest

from pipeline.config import load_config
from pipeline.data.pipelines import build_datasets
from pipeline.data.splits import DataError
from pipeline.training import core
from pipeline.training.model import build_model, compile_model
from pipeline.training.strategy import make_cluster
from tests.helpers.runs import TINY


def test_an_epoch_without_a_training_batch_stops_the_run_with_one_line():
    config = load_config([], TINY)
    data = build_datasets(config.data, config.train.batch_size)
    cluster = make_cluster(config.train)
    plan = core.plan_epochs(config.train, data, cluster)
    # Every file undecodable: the pipeline drops them all and the epoch has nothing to train on.
    every_epoch = plan.train_for
    plan = dataclasses.replace(plan, train_for=lambda *at: every_epoch(*at).filter(lambda images, labels: False))
    model = compile_model(build_model(config, data.num_classes), config, data.num_classes)
    callbacks = core.build_callbacks(config, plan, 0.01, verbose=0)
    with pytest.raises(DataError, match="^epoch 1 had no training batch: no training image could be decoded"):
        core.fit(model, plan, cluster, callbacks, epochs=2)
