"""The multi-worker handshake: real sockets on 127.0.0.1, every worker a thread (a process for Ctrl-C)."""

import pathlib
import signal
import socket
import sys
import threading
import time

import pytest

from pipeline.errors import ConfigError, RunFailed
from pipeline.training import rendezvous
from pipeline.training.rendezvous import gather
from tests.helpers.processes import finish, free_ports, start

# What TensorFlow's gRPC server wrote to a connection that sent it a hello (HTTP/2 SETTINGS frames), then closed it.
GRPC_GREETING = (b"\x00\x00\x18\x04\x00\x00\x00\x00\x00\x00\x04\x00@\x00\x00\x00\x05\x00@\x00\x00\x00\x06\x00\x00@"
                 b"\x00\xfe\x03\x00\x00\x00\x01\x00\x00\x04\x08\x00\x00\x00\x00\x00\x00?\x00\x01")


def cluster(count):
    return [f"127.0.0.1:{port}" for port in free_ports(count)]


def port(host):
    return int(host.rpartition(":")[2])


def meet(hosts, workers, timeout=10):
    """Runs `gather` in one thread per (task index, seconds before it starts, its hosts or None for `hosts`).

    Returns:
        (what each worker got: its payloads or its exception; the lines each said; seconds until all ended),
        the first two in the order of `workers`.
    """
    results, said = [None] * len(workers), [[] for _ in workers]

    def work(n, index, delay, own_hosts=None):
        time.sleep(delay)
        try:
            results[n] = gather(own_hosts or hosts, index, {"worker": index}, timeout, say=said[n].append, poll=0.05)
        except Exception as exc:
            results[n] = exc

    threads = [threading.Thread(target=work, args=(n, *worker)) for n, worker in enumerate(workers)]
    begun = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout + 10)
    assert not any(thread.is_alive() for thread in threads)
    return results, said, time.monotonic() - begun


def test_a_single_worker_gets_its_own_payload_at_once_without_touching_its_port():
    hosts = cluster(1)
    with socket.create_server(("127.0.0.1", port(hosts[0]))):
        assert gather(hosts, 0, {"a": 1}, timeout=1, say=pytest.fail) == [{"a": 1}]


def test_workers_started_together_get_every_payload_in_worker_order_and_say_nothing():
    results, said, seconds = meet(cluster(3), [(2, 0), (0, 0), (1, 0)])
    assert results == [[{"worker": 0}, {"worker": 1}, {"worker": 2}]] * 3
    assert said == [[], [], []] and seconds < 1


def test_the_waiting_line_names_exactly_the_worker_that_is_missing():
    hosts = cluster(3)
    results, said, _ = meet(hosts, [(0, 0), (2, 0), (1, 1.2)])
    assert results == [[{"worker": 0}, {"worker": 1}, {"worker": 2}]] * 3
    # Worker 2 has joined the chief, which tells it who is still missing.
    assert said == [[f"waiting for worker 1 of 3 at {hosts[1]}"]] * 2 + [[]]


def test_several_missing_workers_are_named_together_and_a_late_chief_is_named_as_such():
    hosts = cluster(4)
    results, said, _ = meet(hosts, [(1, 0), (0, 0.8), (2, 1.6), (3, 1.6)])
    assert results == [[{"worker": i} for i in range(4)]] * 4
    assert said[:2] == [[f"waiting for the chief (worker 0 of 4) at {hosts[0]}"],
                        [f"waiting for workers 2, 3 of 4 at {hosts[2]}, {hosts[3]}"]]


def test_a_missing_worker_fails_every_waiting_worker_with_one_line_naming_it():
    hosts = cluster(3)
    # Worker 2's own timeout comes first; it waits for the chief's, to end with the chief's message.
    results, said, seconds = meet(hosts, [(0, 0.2), (2, 0)], timeout=1)
    assert [type(r) for r in results] == [RunFailed, RunFailed] and seconds < 2
    assert str(results[0]) == str(results[1]) == (
        f"worker 1 of 3 ({hosts[1]}) did not join within 1 s (train.cluster_timeout): "
        "start it with the same command and --task-index 1, or raise train.cluster_timeout")
    assert said == [[f"waiting for worker 1 of 3 at {hosts[1]}"]] * 2


def test_a_worker_without_its_chief_says_the_chief_did_not_answer():
    hosts = cluster(2)
    (result,), said, seconds = meet(hosts, [(1, 0)], timeout=1)
    assert isinstance(result, RunFailed) and seconds < 2
    assert str(result) == (
        f"the chief (worker 0 of 2) at {hosts[0]} did not answer within 1 s (train.cluster_timeout): start it "
        "with the same command and --task-index 0, check that this host can reach that address, "
        "or raise train.cluster_timeout")
    assert said == [[f"waiting for the chief (worker 0 of 2) at {hosts[0]}"]]


def test_a_long_wait_is_recalled_every_remind_seconds_with_its_length(monkeypatch):
    monkeypatch.setattr(rendezvous, "REMIND", 0.5)
    hosts = cluster(2)
    (result,), (said,), _ = meet(hosts, [(0, 0)], timeout=1.8)
    assert isinstance(result, RunFailed)
    # Said after 0.5 s (QUIET), then 1 and 1.5 s; the next would be after the timeout.
    assert said == [f"waiting for worker 1 of 2 at {hosts[1]}"] + [
        f"still waiting for worker 1 of 2 at {hosts[1]} after {seconds} s (train.cluster_timeout: 1.8 s)"
        for seconds in (1, 2)]


@pytest.mark.parametrize("index", [0, 1])
def test_a_port_in_use_is_a_config_error_naming_the_worker_and_its_port(index):
    hosts = cluster(2)
    with socket.create_server(("127.0.0.1", port(hosts[index]))):
        with pytest.raises(ConfigError) as error:
            gather(hosts, index, {}, timeout=5)
    assert str(error.value) == (
        f"{hosts[index]} (worker {index} of 2) is in use by another process: "
        "stop that process, or give this worker another port in --worker-hosts")


def test_two_processes_with_one_task_index_fail_alike_with_the_chief(monkeypatch):
    listen = rendezvous._listen
    # As if every worker had a host of its own: two index-1 workers on one host would share a port.
    monkeypatch.setattr(rendezvous, "_listen",
                        lambda hosts, index: listen(hosts, 0) if index == 0 else listen(["127.0.0.1:0"], 0))
    results, _, seconds = meet(cluster(3), [(0, 0), (1, 0), (1, 0.3)])
    assert all(isinstance(r, ConfigError) for r in results) and seconds < 2
    assert {str(r) for r in results} == {
        "two processes claim --task-index 1 (from 127.0.0.1 and 127.0.0.1): "
        "start each worker with its own --task-index, from 0 to 2"}


def test_a_worker_with_other_hosts_fails_alike_with_the_chief():
    hosts = cluster(3)
    results, _, seconds = meet(hosts[:2], [(0, 0), (1, 0, hosts)])
    assert all(isinstance(r, ConfigError) for r in results) and seconds < 2
    assert {str(r) for r in results} == {
        f"worker 1 was started with --worker-hosts {','.join(hosts)}, the chief with {','.join(hosts[:2])}: "
        "start every worker with the same --worker-hosts"}


def test_a_worker_that_joined_and_went_away_is_missing_again():
    hosts = cluster(3)

    def join_and_die():
        while True:
            try:
                conn = socket.create_connection(("127.0.0.1", port(hosts[0])))
                break
            except ConnectionRefusedError:
                time.sleep(0.05)
        with conn:
            conn.sendall(rendezvous._line({"index": 1, "hosts": hosts, "payload": {}}))
            assert conn.makefile().readline().startswith('{"missing": [2]')

    killed = threading.Thread(target=join_and_die)
    killed.start()
    results, _, _ = meet(hosts, [(0, 0), (2, 0.3)], timeout=1)
    killed.join()
    assert [type(r) for r in results] == [RunFailed, RunFailed]
    assert str(results[0]).startswith(f"worker 1 of 3 ({hosts[1]}) did not join")


def test_ctrl_c_stops_a_waiting_chief_at_once():
    hosts = cluster(2)
    code = ("import sys; from pipeline.training.rendezvous import gather; "
            "assert 'tensorflow' not in sys.modules, 'imports TensorFlow'; "
            f"gather({hosts!r}, 0, {{}}, timeout=30)")
    process = start([sys.executable, "-c", code])
    assert process.stdout.readline() == f"waiting for worker 1 of 2 at {hosts[1]}\n"
    process.send_signal(signal.SIGINT)
    begun = time.monotonic()
    status, output = finish(process, timeout=10)
    assert status != 0 and time.monotonic() - begun < 2
    assert output.rstrip().endswith("KeyboardInterrupt")


TCP_STATES = pathlib.Path("/proc/net/tcp")


def states(port_number):
    """The TCP states (hex codes) of the sockets on 127.0.0.1 or 0.0.0.0 with this local port (Linux)."""
    rows = [line.split() for line in TCP_STATES.read_text().splitlines()[1:]]
    return {row[3] for row in rows if int(row[1].rpartition(":")[2], 16) == port_number}


@pytest.mark.skipif(not TCP_STATES.exists(), reason="needs Linux's /proc/net/tcp")
def test_every_port_can_be_bound_again_at_once_and_the_chief_keeps_no_closed_connection(monkeypatch):
    talk = rendezvous._talk

    def slow_to_hang_up(*args):  # a loaded worker: the chief must still let it hang up first
        payloads = talk(*args)
        time.sleep(0.3)
        return payloads

    monkeypatch.setattr(rendezvous, "_talk", slow_to_hang_up)
    hosts = cluster(2)
    results, _, _ = meet(hosts, [(0, 0), (1, 0)])
    assert results == [[{"worker": 0}, {"worker": 1}]] * 2
    # TensorFlow's server binds each worker's port next, with SO_REUSEADDR, as here.
    for host in hosts:
        with socket.socket() as again:
            again.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            again.bind(("", port(host)))
            again.listen()
    # FIN_WAIT1, FIN_WAIT2, TIME_WAIT: the chief would have hung up first, and kept the closing on its port.
    assert not states(port(hosts[0])) & {"04", "05", "06"}


def serve_once(host, reply):
    """A server on `host` that answers one connection with `reply`, then closes it and stops listening."""
    server = socket.create_server(("127.0.0.1", port(host)))

    def answer():
        with server:
            conn, _ = server.accept()
            with conn:
                conn.recv(65536)
                conn.sendall(reply)

    thread = threading.Thread(target=answer)
    thread.start()
    return thread


def test_a_worker_whose_chief_went_away_mid_handshake_waits_for_the_next_one():
    hosts = cluster(2)
    server = serve_once(hosts[0], b"")  # a chief that dies before it answers
    results, said, _ = meet(hosts, [(1, 0), (0, 0.8)])
    server.join()
    assert results == [[{"worker": 0}, {"worker": 1}]] * 2
    assert said == [[f"waiting for the chief (worker 0 of 2) at {hosts[0]}"], []]


def test_a_worker_that_meets_tensorflow_at_the_chiefs_address_stops_at_once():
    hosts = cluster(2)
    server = serve_once(hosts[0], GRPC_GREETING)  # the cluster has gone on without this worker
    (result,), _, seconds = meet(hosts, [(1, 0)])
    server.join()
    assert isinstance(result, ConfigError) and seconds < 1
    assert str(result) == (
        f"{hosts[0]} (the chief, worker 0 of 2) answers, but not as a chief waiting for its workers "
        "(is a cluster already training there?): stop what runs there and start every worker again")
