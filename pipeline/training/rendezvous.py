"""The multi-worker handshake: every worker meets the others, in Python, before TensorFlow does.

MultiWorkerMirroredStrategy waits inside C++ while a peer has not started:
silently, for ever, deaf to Ctrl-C and SIGTERM. `gather` runs first, on the
host:port that TensorFlow's gRPC server binds right after it: it says who is
missing, gives up after train.cluster_timeout seconds, stops on Ctrl-C, and
catches two workers with one --task-index or workers with different --worker-hosts.

    payloads = gather(hosts, task_index, config_tree, timeout=config.train.cluster_timeout)
    # payloads[i] is worker i's config tree: compare them, then
    strategy = tf.distribute.MultiWorkerMirroredStrategy()

Every worker but the chief (worker 0) connects to the chief and sends one JSON
line, {"index", "hosts", "payload"}. The chief answers with JSON lines:
{"missing": [...], "left": seconds} each time the set of missing workers
changes (a worker that has joined waits as long as the chief does), then
{"payloads": [...]} once all have joined, or {"error": text, "failed": bool},
which every worker raises as it is.

This module does not import TensorFlow.
"""

import errno
import json
import select
import socket
import time

from pipeline.errors import ConfigError, RunFailed, UserError

# A wait shorter than this is not announced: workers started together find each other within a few polls.
QUIET = 0.5
# Seconds between two reminders of a wait that goes on.
REMIND = 60.0
# The most seconds one exchange with a peer may take: a connect, a send, the wait for its hang-up.
PEER_TIMEOUT = 2.0


def _print(line):
    print(line, flush=True)  # flushed: a log file must show the wait while it lasts


def gather(hosts, task_index, payload, timeout, say=_print, poll=0.2):
    """Meets every worker of the cluster before TensorFlow does; returns every worker's payload, in worker order.

    Args:
        hosts: "host:port" of every worker, the same list on every worker (as
            `strategy.tf_config` checks it); worker 0 is the chief.
        task_index: this process's position in `hosts`.
        payload: any JSON-serialisable object this worker shows the others.
        timeout: seconds to wait for the whole cluster (train.cluster_timeout).
        say: called with one line when a wait begins (once it has lasted QUIET
            seconds), and with a reminder every REMIND seconds while it lasts;
            by default printed, and flushed.
        poll: seconds between two looks at the clock, and between two tries
            to reach the chief.

    Returns:
        The list of every worker's payload, index 0 the chief's.

    Raises:
        ConfigError: this worker's port is in use, or the chief met two workers
            with one task index or a worker with another host list (then every
            worker that joined raises the same message).
        RunFailed: the cluster was not complete within `timeout` seconds.
    """
    hosts = list(hosts)  # a tuple would never equal the list a worker sends
    if len(hosts) == 1:
        return [payload]
    wait = _Wait(hosts, task_index, timeout, say)
    # Every call below that blocks is a Python socket call (or sleep) with a timeout of at most PEER_TIMEOUT:
    # Ctrl-C interrupts it at once, and the clock is looked at every `poll` seconds.
    # Listening on our own port from the start catches a busy port now, not in TensorFlow's server.
    with _listen(hosts, task_index) as listener:
        if task_index == 0:
            return _chief(listener, hosts, payload, wait, poll)
        return _worker(hosts, task_index, payload, wait, poll)


def _address(host):
    name, _, port = host.rpartition(":")
    return name, int(port)


def _listen(hosts, task_index):
    """A socket listening on this worker's port, on every interface as gRPC does; ConfigError if the port is taken."""
    listener = socket.socket()
    # TensorFlow's server sets SO_REUSEADDR too: neither needs the other's connections to be gone.
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind(("", _address(hosts[task_index])[1]))
        listener.listen()
    except OSError as exc:
        listener.close()
        if exc.errno == errno.EADDRINUSE:
            raise ConfigError(
                f"{hosts[task_index]} (worker {task_index} of {len(hosts)}) is in use by another process: "
                "stop that process, or give this worker another port in --worker-hosts"
            ) from None
        raise
    return listener


class _Wait:
    """The clock of one wait: the line when it begins, the reminders, the timeout."""

    def __init__(self, hosts, task_index, timeout, say):
        self.hosts, self.task_index, self.timeout, self.say = hosts, task_index, timeout, say
        self.start = time.monotonic()
        self.deadline = self.start + timeout
        self.said = None  # seconds into the wait of the last line said

    def follow(self, left):
        """Ends this wait when the chief's does, `left` seconds from now (plus the time its error takes to come)."""
        self.deadline = time.monotonic() + left + PEER_TIMEOUT

    def check(self, missing):
        """Says what the wait is for when due; raises RunFailed once it has lasted `timeout` seconds."""
        now = time.monotonic()
        elapsed = now - self.start
        who, where = self._who(missing)
        if now >= self.deadline:
            if missing == [0] and self.task_index:
                raise RunFailed(
                    f"{who} at {where} did not answer within {self.timeout:g} s (train.cluster_timeout): start it "
                    "with the same command and --task-index 0, check that this host can reach that address, "
                    "or raise train.cluster_timeout"
                )
            indices = " and ".join(map(str, missing))
            raise RunFailed(
                f"{who} ({where}) did not join within {self.timeout:g} s (train.cluster_timeout): "
                f"start {'it' if len(missing) == 1 else 'them'} with the same command and --task-index {indices}, "
                "or raise train.cluster_timeout"
            )
        if self.said is None and elapsed >= QUIET:
            self.say(f"waiting for {who} at {where}")
            self.said = elapsed
        elif self.said is not None and elapsed - self.said >= REMIND:
            self.say(f"still waiting for {who} at {where} after {elapsed:.0f} s "
                     f"(train.cluster_timeout: {self.timeout:g} s)")
            self.said = elapsed

    def _who(self, missing):
        """("worker 1 of 2", "h:p") or ("workers 1, 3 of 4", "a:1, b:2"), or the chief's name for [0]."""
        where = ", ".join(self.hosts[i] for i in missing)
        of = f"of {len(self.hosts)}"
        if missing == [0]:
            return f"the chief (worker 0 {of})", where
        if len(missing) == 1:
            return f"worker {missing[0]} {of}", where
        return f"workers {', '.join(map(str, missing))} {of}", where


def _line(message):
    return (json.dumps(message) + "\n").encode()


def _chief(listener, hosts, payload, wait, poll):
    """The chief's side: accepts every worker's hello, then answers them all at once."""
    connections = {}  # every accepted connection -> the address it came from; all closed on the way out
    buffers = {}  # connection -> what it sent before its hello line was whole
    joined = {}  # connection -> (its hello, its address)
    try:
        told = None
        while True:
            present = {hello["index"] for hello, _ in joined.values()}
            missing = [i for i in range(1, len(hosts)) if i not in present]
            if not missing:
                break
            if missing != told:
                _send(joined, {"missing": missing, "left": wait.deadline - time.monotonic()})
                told = missing
            wait.check(missing)
            readable, _, _ = select.select([listener, *connections], [], [], poll)
            for conn in readable:
                if conn is listener:
                    conn, (address, *_) = listener.accept()
                    conn.settimeout(PEER_TIMEOUT)
                    connections[conn] = address
                    buffers[conn] = b""
                    continue
                data = _receive(conn)
                if not data:  # a worker went away before the end; it may come back
                    del connections[conn]
                    buffers.pop(conn, None)
                    joined.pop(conn, None)
                    conn.close()
                elif conn in buffers:
                    buffers[conn] += data
                    if b"\n" in buffers[conn]:
                        hello = _hello(buffers.pop(conn))
                        if hello is not None:  # else not one of ours: ignored until the end
                            joined[conn] = (hello, connections[conn])
                            _check(conn, joined, hosts)
        by_index = {hello["index"]: hello["payload"] for hello, _ in joined.values()}
        payloads = [payload] + [by_index[i] for i in range(1, len(hosts))]
        _answer(joined, {"payloads": payloads}, poll)
        return payloads
    except UserError as exc:
        _answer(joined, {"error": str(exc), "failed": isinstance(exc, RunFailed)}, poll)
        raise
    finally:
        for conn in connections:
            conn.close()


def _receive(conn):
    try:
        return conn.recv(65536)
    except OSError:  # reset by a worker that died: the same as its hang-up
        return b""


def _hello(data):
    """A worker's hello from its first line, or None if the line is not one."""
    try:
        hello = json.loads(data.partition(b"\n")[0])
    except ValueError:
        return None
    if not isinstance(hello, dict) or not isinstance(hello.get("index"), int):
        return None
    return hello if isinstance(hello.get("hosts"), list) and "payload" in hello else None


def _check(conn, joined, hosts):
    """Raises ConfigError when the worker that has just joined on `conn` has other hosts, or another's task index."""
    hello, address = joined[conn]
    index = hello["index"]
    if hello["hosts"] != hosts:
        raise ConfigError(
            f"worker {index} was started with --worker-hosts {','.join(map(str, hello['hosts']))}, "
            f"the chief with {','.join(hosts)}: start every worker with the same --worker-hosts"
        )
    for other, (other_hello, other_address) in joined.items():
        if other is not conn and other_hello["index"] == index:
            raise ConfigError(
                f"two processes claim --task-index {index} (from {other_address} and {address}): "
                f"start each worker with its own --task-index, from 0 to {len(hosts) - 1}"
            )


def _send(joined, message):
    for conn in joined:
        try:
            conn.sendall(_line(message))
        except OSError:
            pass  # gone: select sees its hang-up next


def _answer(joined, message, poll):
    """Sends the last message, then waits (briefly) for every worker to hang up first.

    TensorFlow's server binds the chief's port next. The side that closes a
    connection first keeps it in TIME_WAIT for a minute: let that be each
    worker's ephemeral port, and leave nothing of ours on the chief's port.
    """
    _send(joined, message)
    waiting = list(joined)
    deadline = time.monotonic() + PEER_TIMEOUT
    while waiting and time.monotonic() < deadline:
        readable, _, _ = select.select(waiting, [], [], poll)
        for conn in readable:
            if not _receive(conn):
                waiting.remove(conn)


def _worker(hosts, task_index, payload, wait, poll):
    """A worker's side: connects to the chief until it answers, then waits for the answer."""
    hello = _line({"index": task_index, "hosts": hosts, "payload": payload})
    while True:
        wait.check([0])
        try:
            conn = socket.create_connection(_address(hosts[0]), timeout=PEER_TIMEOUT)
        except OSError:  # refused, unreachable, not resolvable yet: the chief has not started
            time.sleep(poll)
            continue
        # The `with` closes the connection before `gather` returns: this worker hangs up first (see _answer).
        with conn:
            payloads = _talk(conn, hello, hosts, wait, poll)
        if payloads is not None:
            return payloads
        time.sleep(poll)  # the chief went away mid-handshake: connect again until the timeout


def _talk(conn, hello, hosts, wait, poll):
    """Sends the hello and reads the chief's lines: the payloads, or None if the chief went away."""
    missing, buffer = [0], b""
    try:
        conn.sendall(hello)
    except OSError:
        return None
    conn.settimeout(poll)
    while True:
        wait.check(missing)
        try:
            data = conn.recv(65536)
        except TimeoutError:
            continue
        except OSError:
            data = b""
        if not data:
            if buffer:
                raise _stranger(hosts)
            return None
        buffer += data
        while b"\n" in buffer:
            line, _, buffer = buffer.partition(b"\n")
            try:
                message = json.loads(line)
            except ValueError:
                raise _stranger(hosts) from None
            if not isinstance(message, dict) or not message.keys() & {"payloads", "error", "missing"}:
                raise _stranger(hosts)
            if "payloads" in message:
                return message["payloads"]
            if "error" in message:
                raise (RunFailed if message.get("failed") else ConfigError)(message["error"])
            # The chief's clock rules from now on: all workers time out together, with its message.
            missing = message["missing"]
            wait.follow(message["left"])


def _stranger(hosts):
    """The error of a worker whose chief's address answers, but not as a chief (a cluster already training?)."""
    return ConfigError(
        f"{hosts[0]} (the chief, worker 0 of {len(hosts)}) answers, but not as a chief waiting for its workers "
        "(is a cluster already training there?): stop what runs there and start every worker again"
    )
