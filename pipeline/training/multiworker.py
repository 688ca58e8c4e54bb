"""Multi-worker training: the chief's state handed to every worker, and a digest to compare their weights.

Only the chief worker writes the run directory; the others write to a
temporary directory, and on a (re)start take the chief's weights and state
(`sync_from_chief`), so no shared file system is needed. The training loop
itself (`pipeline.training.loop`) is the same for one worker and many.
"""

import hashlib
import json

import numpy as np


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
    backup (if any); the others hold fresh variables and no backup. They take
    the chief's weights and optimizer state, then its backup's position,
    history, random state and running metrics (`RunBackup.apply_state`).

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
    # The chief's backup as read, not as its variables hold it now: reading the running metrics is an
    # all-reduce over every worker, which only the chief would enter here.
    state = broadcast_json(cluster.strategy, backup.restored, cluster.is_chief)
    if not cluster.is_chief and state is not None:
        backup.apply_state(state)


def agree_on_data(cluster, identity):
    """Refuses, on every worker at once, a cluster whose workers found other data than the chief's.

    Workers on other hosts read their own copy of the data: other class
    folders, or other files, would train a model whose outputs mean nothing
    (the workers' gradients are summed). Every worker compares the chief's
    `pipeline.data.identity.DataIdentity` digests with its own; one all-reduce
    tells all of them which workers differ, so all of them stop together.

    Args:
        cluster: the `Cluster`.
        identity: this worker's `DataIdentity` (of the whole splits, before its share is taken).

    Raises:
        DataError: some worker's classes or files differ from the chief's.
    """
    import tensorflow as tf

    from pipeline.data.identity import class_change
    from pipeline.data.splits import DataError

    if not cluster.multi_worker:
        return
    mine = {"classes": list(identity.class_names),
            "splits": {split: [part.count, part.digest] for split, part in sorted(identity.splits.items())}}
    chiefs = broadcast_json(cluster.strategy, mine, cluster.is_chief)
    classes = class_change(chiefs["classes"], mine["classes"], now="on this worker", then="on the chief")
    files = [split for split in mine["splits"] if mine["splits"][split] != chiefs["splits"].get(split)]
    flags = np.zeros(cluster.workers, np.int32)
    flags[cluster.task_index] = bool(classes or files)

    def differ():
        context = tf.distribute.get_replica_context()
        return context.all_reduce(tf.distribute.ReduceOp.SUM, tf.identity(tf.constant(flags)))

    summed = cluster.strategy.experimental_local_results(cluster.strategy.run(tf.function(differ)))[0].numpy()
    others = [index for index, flag in enumerate(summed) if flag]
    if not others:
        return
    if classes or files:
        what = classes or f"its {' and '.join(files)} files are not the chief's"
        raise DataError(f"this worker's data is not the chief's ({what}): give every worker the same data.source")
    raise DataError(f"worker {', '.join(map(str, others))} found other data than the chief's (see its output): "
                    "give every worker the same data.source")


def weights_digest(model):
    """A short SHA-256 of the model's weights: equal on every worker after training."""


    digest = hashlib.sha256()
    for weight in model.get_weights():
        digest.update(np.ascontiguousarray(weight).tobytes())
    return digest.hexdigest()[:16]
