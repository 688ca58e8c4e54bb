"""Distribution: which tf.distribute strategy a run uses, and the multi-worker training loop.

`train.strategy` picks the strategy:

    auto          MultiWorkerMirroredStrategy when TF_CONFIG names two or more
                  workers; else MirroredStrategy over all GPUs when there are
                  two or more; else the default (one-device) strategy.
    mirrored      MirroredStrategy over `train.devices` (default: all GPUs).
    multi_worker  MultiWorkerMirroredStrategy, configured by TF_CONFIG (which
                  `python -m pipeline.train --worker-hosts ... --task-index i`
                  writes). Every worker uses all of its local GPUs.
    one_device    OneDeviceStrategy on `train.devices[0]` (default: the first
                  GPU, else the CPU).

`train.batch_size` is the global batch: each step, the replicas share it
equally (per-replica batch = batch_size / replicas) and their gradients are
summed, so one step is one SGD step on the whole batch, whatever the replica
count. `train.lr_scaling: linear` scales the learning rate by
batch_size / lr_reference_batch (Goyal et al., 2017); the paper's batch of 128
at 0.01 needs none.

Keras 3.15's `model.fit` fails under MultiWorkerMirroredStrategy
(keras-team/keras#20585), so `fit_distributed` runs the same model, optimizer,
loss, metrics and callbacks in a loop over `strategy.run(model.train_step)` -
the step function `model.fit` itself runs - and the trainer uses it there.
Only the chief worker writes the run directory; the others write to a
temporary directory, and on a (re)start take the chief's weights and state
(`sync_from_chief`), so no shared file system is needed.
"""

import dataclasses
import json
import os
import re

from pipeline.config import ConfigError

# The strategy must exist before TensorFlow initialises its devices (collective
# ops are configured at start-up): callers create it before any other TF work.


@dataclasses.dataclass(frozen=True)
class Cluster:
    """The strategy of a run and this process's place in it.

    Attributes:
        strategy: the `tf.distribute.Strategy`.
        kind: "default", "one_device", "mirrored" or "multi_worker".
        replicas: replicas in sync, over all workers.
        workers: worker processes (1 unless multi_worker).
        task_index: this worker's index (0 unless multi_worker).
        is_chief: whether this process writes the run directory.
        devices: the devices of this worker's replicas.
    """

    strategy: object
    kind: str
    replicas: int
    workers: int
    task_index: int
    is_chief: bool
    devices: tuple

    @property
    def multi_worker(self):
        return self.kind == "multi_worker"

    def describe(self, global_batch, learning_rate, train_config):
        """One log line: strategy, replicas, global and per-replica batch, learning rate."""
        where = f"{self.replicas} replica{'s' if self.replicas != 1 else ''}"
        if self.multi_worker:
            where += f" on {self.workers} workers (this is worker {self.task_index}{', the chief' if self.is_chief else ''})"
        else:
            where += f" ({', '.join(self.devices)})"
        per_replica = global_batch / self.replicas
        per_replica = f"{per_replica:g}" if per_replica == int(per_replica) else f"about {per_replica:.1f} (uneven)"
        rate = f"learning rate {learning_rate:g}"
        if train_config.lr_scaling == "linear":
            rate += (
                f" (linear scaling: {train_config.optimizer.learning_rate:g} x {global_batch}"
                f" / {train_config.lr_reference_batch})"
            )
        return (
            f"Strategy {self.kind}: {where}; global batch {global_batch} = "
            f"{self.replicas} x {per_replica} per replica; {rate}"
        )


def tf_config(worker_hosts, task_index):
    """The TF_CONFIG of one worker of a multi-worker cluster.

    Args:
        worker_hosts: "host:port" of every worker, the same list (and order)
            on every worker; worker 0 is the chief.
        task_index: this worker's position in the list.

    Returns:
        The TF_CONFIG dict (`json.dumps` of it is what the TF_CONFIG
        environment variable would hold).

    Raises:
        ConfigError: a malformed host, a repeated host, or an index out of range.
    """
    hosts = [host.strip() for host in worker_hosts]
    for host in hosts:
        if not re.fullmatch(r"[^\s:,]+:\d{1,5}", host):
            raise ConfigError(f"--worker-hosts: {host!r} is not host:port")
    if len(set(hosts)) != len(hosts):
        raise ConfigError("--worker-hosts: a host:port appears twice")
    if not 0 <= task_index < len(hosts):
        raise ConfigError(f"--task-index must be between 0 and {len(hosts) - 1} for {len(hosts)} workers, got {task_index}")
    return {"cluster": {"worker": hosts}, "task": {"type": "worker", "index": task_index}}


def _tf_config_workers(config):
    """Number of workers a TF_CONFIG dict (None: the environment variable) describes."""
    if config is None:
        try:
            config = json.loads(os.environ.get("TF_CONFIG") or "{}")
        except json.JSONDecodeError:
            raise ConfigError("the TF_CONFIG environment variable is not valid JSON") from None
    cluster = config.get("cluster", {})
    return len(cluster.get("worker", [])) + len(cluster.get("chief", []))


def _device_names(devices, visible):
    import tensorflow as tf

    names = []
    known = {tf.DeviceSpec.from_string(d.name).to_string() for d in visible}
    for device in devices:
        spec = tf.DeviceSpec.from_string(device)
        full = tf.DeviceSpec(device_type=(spec.device_type or "").upper(), device_index=spec.device_index)
        if not any(k.endswith(full.to_string()) for k in known):
            raise ConfigError(
                f"train.devices: {device} is not a visible device "
                f"(visible: {', '.join(sorted(d.name for d in visible))})"
            )
        names.append(device)
    return names


def make_cluster(train_config, tf_config=None):
    """Creates the strategy `train_config.strategy` asks for.

    Call it before any other TensorFlow work in the process: the multi-worker
    strategy configures collective ops, which TensorFlow allows only before
    its devices are initialised.

    Args:
        train_config: `pipeline.config.TrainConfig`.
        tf_config: the multi-worker cluster as a TF_CONFIG dict (see
            `tf_config`); None reads the TF_CONFIG environment variable.

    Returns:
        A `Cluster`.

    Raises:
        ConfigError: unknown devices, multi_worker without TF_CONFIG, or a
            global batch smaller than the replica count.
    """
    import tensorflow as tf

    kind = train_config.strategy
    if kind == "auto":
        if _tf_config_workers(tf_config) >= 2:
            kind = "multi_worker"
        elif len(tf.config.list_logical_devices("GPU")) >= 2:
            kind = "mirrored"
        else:
            kind = "default"
    if kind == "multi_worker":
        if _tf_config_workers(tf_config) < 1:
            raise ConfigError(
                "train.strategy=multi_worker needs TF_CONFIG: pass --worker-hosts host:port,host:port "
                "--task-index i (or set the TF_CONFIG environment variable)"
            )
        resolver = None
        if tf_config is not None:
            resolver = tf.distribute.cluster_resolver.SimpleClusterResolver(
                tf.train.ClusterSpec(tf_config["cluster"]),
                task_type=tf_config["task"]["type"],
                task_id=tf_config["task"]["index"],
                rpc_layer="grpc",
            )
        strategy = tf.distribute.MultiWorkerMirroredStrategy(cluster_resolver=resolver)
        resolver = strategy.cluster_resolver
        spec = resolver.cluster_spec().as_dict()
        workers = sum(len(spec.get(job, [])) for job in ("chief", "worker"))
        # Worker 0 is the chief unless the cluster names a chief task.
        is_chief = resolver.task_type == "chief" or (
            resolver.task_type == "worker" and resolver.task_id == 0 and "chief" not in spec
        )
        task_index = int(resolver.task_id) + (1 if resolver.task_type == "worker" and "chief" in spec else 0)
        devices = tuple(strategy.extended.worker_devices)
        cluster = Cluster(strategy, kind, strategy.num_replicas_in_sync, workers, task_index, is_chief, devices)
    elif kind == "mirrored":
        visible = tf.config.list_logical_devices()
        devices = _device_names(train_config.devices, visible) if train_config.devices else None
        strategy = tf.distribute.MirroredStrategy(devices=devices)
        cluster = Cluster(strategy, kind, strategy.num_replicas_in_sync, 1, 0, True, tuple(strategy.extended.worker_devices))
    elif kind == "one_device":
        if train_config.devices:
            device = _device_names(train_config.devices[:1], tf.config.list_logical_devices())[0]
        else:
            device = "/gpu:0" if tf.config.list_logical_devices("GPU") else "/cpu:0"
        strategy = tf.distribute.OneDeviceStrategy(device)
        cluster = Cluster(strategy, kind, 1, 1, 0, True, (device,))
    else:
        # The default strategy: no wrapping at all, the plain Keras path.
        strategy = tf.distribute.get_strategy()
        device = "/gpu:0" if tf.config.list_logical_devices("GPU") else "/cpu:0"
        cluster = Cluster(strategy, "default", 1, 1, 0, True, (device,))
    if train_config.batch_size < cluster.replicas:
        raise ConfigError(
            f"train.batch_size ({train_config.batch_size}) is the global batch and must be at least "
            f"the number of replicas ({cluster.replicas})"
        )
    return cluster


def scaled_learning_rate(train_config):
    """The base learning rate after `train_config.lr_scaling`.

    Args:
        train_config: `pipeline.config.TrainConfig`.

    Returns:
        `optimizer.learning_rate`, times batch_size / lr_reference_batch under
        the linear rule.
    """
    rate = train_config.optimizer.learning_rate
    if train_config.lr_scaling == "linear":
        rate *= train_config.batch_size / train_config.lr_reference_batch
    return rate


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
    import numpy as np
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
        backup: the `pipeline.callbacks.RunBackup` of this process.
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
    import hashlib

    import numpy as np

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
            `model._initial_epoch`, which a backup callback sets).
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
    for epoch in range(model._initial_epoch or 0, epochs):
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
