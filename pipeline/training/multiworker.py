"""Multi-worker training: a loop over `strategy.run`, and the chief's state handed to every worker.

Keras 3.15's `model.fit` fails under MultiWorkerMirroredStrategy
(keras-team/keras#20585), so `fit_distributed` runs the same model, optimizer,
loss, metrics and callbacks in a loop over `strategy.run(model.train_step)` -
the step function `model.fit` itself runs - and the trainer uses it there.
Only the chief worker writes the run directory; the others write to a
temporary directory, and on a (re)start take the chief's weights and state
(`sync_from_chief`), so no shared file system is needed.
"""

import hashlib
import json

import numpy as np

from model_defs import keras_private


def broadcast_from_chief(strategy, values):
    """Every worker's copy of `values` becomes the chief's.

    Args:
        strategy: the strategy (any; a single-worker one returns the values).
        values: a list of tensors or variables, the same shapes on every worker.

    Returns:
        A list of tensors holding the chief's (replica 0's) values.
    """
    import tensorflow as tf

    if strategy.num_replicas_in_sync == 1:
        return [tf.convert_to_tensor(v) for v in values]

    @tf.function
    def gather():
        def replica_fn():
            context = tf.distribute.get_replica_context()
            first = tf.equal(context.replica_id_in_sync_group, 0)
            tensors = [tf.convert_to_tensor(v) for v in values]
            out = [None] * len(tensors)
            # One all-reduce per dtype (a batched all-reduce packs its inputs together).
            for dtype in {t.dtype for t in tensors}:
                picked = [i for i, t in enumerate(tensors) if t.dtype == dtype]
                # A sum in which only replica 0 contributes: x + 0 == x exactly.
                masked = [tf.where(first, tensors[i], tf.zeros_like(tensors[i])) for i in picked]
                for i, value in zip(picked, context.all_reduce(tf.distribute.ReduceOp.SUM, masked)):
                    out[i] = value
            return out

        return strategy.experimental_local_results(strategy.run(replica_fn))[0]

    return list(gather())


def broadcast_json(strategy, obj, is_chief):
    """The chief's JSON-serialisable `obj`, on every worker (others pass anything).

    Args:
        strategy: the strategy.
        obj: the chief's value.
        is_chief: whether this process is the chief.

    Returns:
        The chief's value.
    """
    import tensorflow as tf

    if strategy.num_replicas_in_sync == 1:
        return obj
    data = np.frombuffer(json.dumps(obj).encode(), np.uint8).astype(np.int32) if is_chief else np.zeros(0, np.int32)
    (length,) = broadcast_from_chief(strategy, [tf.constant([len(data)], tf.int32)])
    buffer = np.zeros(int(length[0]), np.int32)
    if is_chief:
        buffer[:] = data
    (received,) = broadcast_from_chief(strategy, [tf.constant(buffer)])
    return json.loads(received.numpy().astype(np.uint8).tobytes().decode())


def sync_from_chief(cluster, model, backup):
    """Gives every worker the chief's weights, optimizer state and backup state.

    Called after the backup's `on_train_begin`: the chief has restored its
    backup (if any); the others hold fresh variables and no backup.

    Args:
        cluster: the `Cluster`.
        model: the compiled model, optimizer built.
        backup: the `pipeline.training.backup.RunBackup` of this process.
    """
    if not cluster.multi_worker:
        return
    variables = list(model.weights) + list(model.optimizer.variables)
    for variable, value in zip(variables, broadcast_from_chief(cluster.strategy, [v.value for v in variables])):
        variable.assign(value)
    state = broadcast_json(cluster.strategy, backup.current_state(), cluster.is_chief)
    if not cluster.is_chief:
        backup.apply_state(state)


def weights_digest(model):
    """A short SHA-256 of the model's weights: equal on every worker after training."""


    digest = hashlib.sha256()
    for weight in model.get_weights():
        digest.update(np.ascontiguousarray(weight).tobytes())
    return digest.hexdigest()[:16]


def fit_distributed(
    model,
    strategy,
    train_data,
    epochs,
    steps_per_epoch,
    validation_data=None,
    callbacks=(),
    verbose=1,
    repeated=False,
    on_train_begin=None,
):
    """`model.fit` for strategies it does not support: a loop over `strategy.run(model.train_step)`.

    The same step functions as `model.fit` (`model.train_step`,
    `model.test_step`), the same callbacks through a `CallbackList` in the
    same order of calls, and the same logs: per-step figures are the mean over
    replicas, epoch figures the metrics' global results.

    Args:
        model: a compiled model, built in `strategy.scope()`.
        strategy: the `tf.distribute.Strategy`.
        train_data: batched training `tf.data.Dataset` (global batch).
        epochs: the epoch to stop after (epochs already done come from
            `model_defs.keras_private.initial_epoch`, which a backup sets).
        steps_per_epoch: training steps in one epoch.
        validation_data: batched validation dataset (all of it is used each epoch), or None.
        callbacks: Keras callbacks.
        verbose: 0 silent, 1 progress bar, 2 one line per epoch.
        repeated: whether `train_data` repeats (one iterator for the whole run,
            epochs of `steps_per_epoch` steps) or is one pass per epoch.
        on_train_begin: called after the callbacks' `on_train_begin` (e.g.
            `sync_from_chief`).

    Returns:
        The `keras.callbacks.History`.
    """
    import keras
    import tensorflow as tf

    callbacks = keras.callbacks.CallbackList(
        list(callbacks),
        add_history=True,
        add_progbar=verbose != 0,
        model=model,
        verbose=verbose,
        epochs=epochs,
        steps=steps_per_epoch,
    )

    def reduced(outputs):
        return {
            name: strategy.reduce(tf.distribute.ReduceOp.MEAN, value, axis=None) for name, value in outputs.items()
        }

    train_function = tf.function(lambda batch: reduced(strategy.run(model.train_step, args=(batch,))),
                                 jit_compile=bool(model.jit_compile), reduce_retracing=True)
    test_function = tf.function(lambda batch: reduced(strategy.run(model.test_step, args=(batch,))),
                                reduce_retracing=True)
    train_dist = strategy.experimental_distribute_dataset(train_data)
    val_dist = strategy.experimental_distribute_dataset(validation_data) if validation_data is not None else None

    model.stop_training = False
    callbacks.on_train_begin()
    if on_train_begin is not None:
        on_train_begin()
    iterator = iter(train_dist) if repeated else None
    epoch_logs = None
    for epoch in range(keras_private.initial_epoch(model), epochs):
        model.reset_metrics()
        callbacks.on_epoch_begin(epoch)
        if not repeated:
            iterator = iter(train_dist)
        for step in range(steps_per_epoch):
            try:
                batch = next(iterator)
            except StopIteration:
                break
            callbacks.on_train_batch_begin(step)
            logs = train_function(batch)
            callbacks.on_train_batch_end(step, logs)
            if model.stop_training:
                break
        # Read in cross-replica context, the metrics aggregate over all replicas of all workers.
        epoch_logs = {name: float(value) for name, value in model.get_metrics_result().items()}
        if val_dist is not None:
            model.reset_metrics()
            callbacks.on_test_begin()
            for step, batch in enumerate(val_dist):
                callbacks.on_test_batch_begin(step)
                callbacks.on_test_batch_end(step, test_function(batch))
            val_logs = {name: float(value) for name, value in model.get_metrics_result().items()}
            callbacks.on_test_end(val_logs)
            epoch_logs.update({f"val_{name}": value for name, value in val_logs.items()})
        callbacks.on_epoch_end(epoch, epoch_logs)
        if model.stop_training:
            break
    callbacks.on_train_end(epoch_logs)
    return model.history
