"""Which tf.distribute strategy a run uses, and its place in a cluster.

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

Before a multi-worker cluster starts, its workers meet in pure Python
(`pipeline.training.rendezvous`): each says what it waits for, gives up after
train.cluster_timeout, answers Ctrl-C, and all of them refuse to start when
their configs differ. TensorFlow's own start that follows blocks in C++,
deaf to signals, so it runs under a watchdog (`_watchdog`). A worker lost
during training ends the others in one line (`Cluster.peers_watched`).

The chief's broadcast of its state lives in `pipeline.training.multiworker`.
"""

import contextlib
import dataclasses
import json
import os
import re
import select
import signal
import sys
import threading

from pipeline.console import signals
from pipeline.errors import ConfigError, RunFailed, signal_name

# The strategy must exist before TensorFlow initialises its devices (collective
# ops are configured at start-up): callers create it before any other TF work.


# What TensorFlow says when a peer's process is gone: its heartbeats stopped, its connection dropped.
_PEER_GONE = re.compile(r"unhealthy|stopped sending heartbeats|Socket closed|Connection reset|failed to connect|"
                        r"Connection refused|heartbeat", re.IGNORECASE)


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
    hosts: tuple = ()  # multi-worker: every worker's host:port, worker 0 first

    @property
    def multi_worker(self):
        return self.kind == "multi_worker"

    def worker_name(self, index):
        """"worker 1 of 2 (10.0.0.2:2222)"; the chief is "the chief, worker 0 of 2 (10.0.0.1:2222)"."""
        where = f" ({self.hosts[index]})" if index < len(self.hosts) else ""
        text = f"worker {index} of {self.workers}{where}"
        return f"the chief, {text}" if index == 0 else text

    @contextlib.contextmanager
    def peers_watched(self, position=None):
        """Turns the error of a collective whose peer is gone into one line naming the worker lost (exit 1).

        TensorFlow notices a worker that died (its heartbeats stop, or its
        connection drops) within seconds and aborts the collectives of the
        others with UnavailableError and kin, whose text names the task.

        Args:
            position: a function returning where training stood, for the message.
        """
        if not self.multi_worker:
            yield
            return
        import tensorflow as tf

        try:
            yield
        except (tf.errors.UnavailableError, tf.errors.AbortedError, tf.errors.CancelledError,
                tf.errors.DeadlineExceededError, tf.errors.InternalError, tf.errors.UnknownError) as exc:
            if not (isinstance(exc, tf.errors.UnavailableError) or _PEER_GONE.search(exc.message or "")):
                raise  # a collective that failed for another reason: a bug, with its traceback
            named = sorted({int(i) for i in re.findall(r"/job:(?:worker|chief)(?:/replica:\d+)?/task:(\d+)", exc.message or "")}
                           - {self.task_index})
            if not named and self.workers == 2:
                named = [1 - self.task_index]
            lost = ", ".join(self.worker_name(i) for i in named) or "another worker"
            where = f" at {position()}" if position is not None else ""
            lines = [line.strip() for line in (exc.message or "").splitlines() if line.strip()]
            # TensorFlow's first line is "Graph execution error:"; the line that says what happened names the peer.
            detail = next((line for line in lines if _PEER_GONE.search(line)), lines[0] if lines else "")
            raise RunFailed(
                f"{lost} was lost{where} ({type(exc).__name__}: {detail[:200]}); the chief's last backup is kept: "
                "start every worker again with the same command to resume"
            ) from None

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


def make_cluster(train_config, tf_config=None, agreement=None):
    """Creates the strategy `train_config.strategy` asks for.

    Call it before any other TensorFlow work in the process: the multi-worker
    strategy configures collective ops, which TensorFlow allows only before
    its devices are initialised.

    Args:
        train_config: `pipeline.config.TrainConfig`.
        tf_config: the multi-worker cluster as a TF_CONFIG dict (see
            `tf_config`); None reads the TF_CONFIG environment variable.
        agreement: multi-worker only: a nested dict every worker must hold
            alike (`pipeline.config.comparable` of the config), compared
            before the cluster starts; None compares nothing.

    Returns:
        A `Cluster`.

    Raises:
        ConfigError: unknown devices, multi_worker without TF_CONFIG, a
            global batch smaller than the replica count, a busy port, or
            workers whose `agreement` differs (naming the keys).
        RunFailed: a worker did not join within train.cluster_timeout.
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
        cluster = _start_multi_worker(train_config, tf_config, agreement)
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


def _cluster_spec(tf_config):
    """(workers' host:port list, this task's index) of a TF_CONFIG dict (None: the environment variable)."""
    if tf_config is None:
        tf_config = json.loads(os.environ.get("TF_CONFIG") or "{}")
    cluster = tf_config.get("cluster", {})
    hosts = list(cluster.get("chief", [])) + list(cluster.get("worker", []))
    task = tf_config.get("task", {})
    index = int(task.get("index", 0)) + (1 if task.get("type") == "worker" and cluster.get("chief") else 0)
    return hosts, index


def _start_multi_worker(train_config, tf_config, agreement):
    """The workers meet (`rendezvous.gather`), compare `agreement`, then start TensorFlow's cluster under a watchdog."""
    import tensorflow as tf

    from pipeline.storage.rundir import changed_keys
    from pipeline.training.rendezvous import gather

    hosts, index = _cluster_spec(tf_config)
    timeout = train_config.cluster_timeout
    payloads = gather(hosts, index, agreement, timeout)
    if agreement is not None:
        for other, payload in enumerate(payloads):
            keys = changed_keys(payloads[0], payload) if payload is not None else []
            if keys:
                raise ConfigError(
                    f"worker {other}'s config differs from the chief's in {', '.join(keys[:8])}"
                    f"{f' and {len(keys) - 8} more' if len(keys) > 8 else ''}: give every worker the same "
                    "config files and --set options"
                )
    resolver = None
    if tf_config is not None:
        resolver = tf.distribute.cluster_resolver.SimpleClusterResolver(
            tf.train.ClusterSpec(tf_config["cluster"]),
            task_type=tf_config["task"]["type"],
            task_id=tf_config["task"]["index"],
            rpc_layer="grpc",
        )
    with _watchdog(timeout, f"the cluster of {len(hosts)} workers ({', '.join(hosts)}) did not start within "
                            f"{timeout:g} s (train.cluster_timeout) although every worker had joined: a worker may "
                            "have failed as it started (see its output); start every worker again"):
        try:
            strategy = tf.distribute.MultiWorkerMirroredStrategy(cluster_resolver=resolver)
        except tf.errors.UnknownError as exc:
            if "Could not start gRPC server" in (exc.message or ""):
                raise ConfigError(
                    f"worker {index} could not listen on {hosts[index]} (the port was taken just now): "
                    "choose another port in --worker-hosts"
                ) from None
            raise
    # TensorFlow's C++ SIGTERM handler replaced Python's as the cluster started: take it back.
    signals.reclaim()
    resolver = strategy.cluster_resolver
    spec = resolver.cluster_spec().as_dict()
    workers = sum(len(spec.get(job, [])) for job in ("chief", "worker"))
    # Worker 0 is the chief unless the cluster names a chief task.
    is_chief = resolver.task_type == "chief" or (
        resolver.task_type == "worker" and resolver.task_id == 0 and "chief" not in spec
    )
    task_index = int(resolver.task_id) + (1 if resolver.task_type == "worker" and "chief" in spec else 0)
    devices = tuple(strategy.extended.worker_devices)
    return Cluster(strategy, "multi_worker", strategy.num_replicas_in_sync, workers, task_index, is_chief, devices,
                   tuple(hosts))


@contextlib.contextmanager
def _watchdog(seconds, message):
    """Ends the process (one line, exit 1) if the block has not ended after `seconds`; on SIGINT/SIGTERM at once.

    For a TensorFlow call that blocks in C++, where Python's signal handlers
    cannot run: their C half still writes the signal's number to the wake-up
    descriptor (`signal.set_wakeup_fd`), which a thread watches.
    """
    done = threading.Event()
    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)
    main = threading.current_thread() is threading.main_thread()
    previous = signal.set_wakeup_fd(write_end, warn_on_full_buffer=False) if main else -1

    def watch():
        ready, _, _ = select.select([read_end], [], [], seconds)
        if done.is_set():
            return
        if ready:
            signum = os.read(read_end, 1)[0]
            print(f"stopped by {signal_name(signum)} while the cluster started: run the same command again to go on",
                  file=sys.stderr, flush=True)
            os._exit(128 + signum)
        print(f"error: {message}", file=sys.stderr, flush=True)
        os._exit(1)

    thread = threading.Thread(target=watch, name="cluster-watchdog", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        if main:
            signal.set_wakeup_fd(previous)
        os.write(write_end, b"\0")  # wakes the thread, which sees `done` and returns
        thread.join()
        os.close(read_end)
        os.close(write_end)


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
