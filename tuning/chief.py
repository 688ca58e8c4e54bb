"""What the chief of a distributed search says while it serves the oracle and waits for its workers.

    with chief.reporting(tuner.oracle, "10.0.0.1", 8000):
        tuner.search(...)  # on the chief: serves the oracle until the last trial has ended

The chief trains nothing; KerasTuner's `tuner.search` serves the oracle until
the last trial has ended, and says nothing while a worker is missing. A thread
beside it prints one line once the address answers (where, and what it waits
for), then every REPORT_EVERY seconds the trials still running and the tuner id
holding each. KerasTuner's workers speak to the chief only to take a trial and
to end it, so a long silence is all the chief can see of a dead worker: a trial
held longer than STALE_AFTER and STALE_FACTOR times the longest trial that
ended is named, once, with its worker and how to take it back (KerasTuner hands
a tuner id that asks again the trial it holds: `Oracle.create_trial`).
"""

import contextlib
import dataclasses
import socket
import sys
import threading
import time

REPORT_EVERY = 60.0  # seconds between two progress lines while the chief waits
POLL = 1.0  # seconds between two looks at the oracle
# A trial held longer than both may have lost its worker: a trial's length is unknown until one ends,
# and a first trial of a long search takes hours.
STALE_AFTER = 3600.0  # seconds
STALE_FACTOR = 3  # times the longest trial that ended
# A bind that fails (the port is another process's) ends the search within this; the line waits for it.
SERVING_GRACE = 0.2


@dataclasses.dataclass(frozen=True)
class Snapshot:
    """The oracle's trials at one moment."""

    done: int  # trials that ended, failed ones included
    failed: int
    running: dict  # tuner id -> id of the trial it holds
    left: int  # trials not yet handed out; None when the tuner sets no max_trials (Hyperband)
    asking: tuple  # tuner ids that took a trial and have not yet been told that the search is over


def snapshot(oracle):
    """A `Snapshot` of a `keras_tuner.Oracle`, taken under its lock (gRPC threads change it meanwhile)."""
    import keras_tuner

    def take(oracle):
        ended = [oracle.trials[trial_id] for trial_id in oracle.end_order]
        return Snapshot(
            done=len(ended),
            failed=sum(trial.status == "FAILED" for trial in ended),
            running={tuner_id: trial.trial_id for tuner_id, trial in oracle.ongoing_trials.items()},
            left=oracle.remaining_trials(),
            asking=tuple(sorted(oracle.tuner_ids)),
        )

    return keras_tuner.synchronized(take)(oracle)


def duration(seconds):
    """'45 s', '12 min' or '3.5 h'."""
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


class Watch:
    """The chief's lines, from snapshots of the oracle and the times they were taken.

    Args:
        ip: the chief's --oracle-ip.
        port: the chief's --oracle-port.
    """

    def __init__(self, ip, port):
        self.ip = ip
        self.port = port
        self.since = {}  # (tuner id, trial id) -> when first seen held
        self.longest = None  # seconds, the longest trial seen from hand-out to end
        self.warned = set()

    def counts(self, snap):
        failed = f" ({snap.failed} failed)" if snap.failed else ""
        left = f", {snap.left} left" if snap.left is not None else ""
        return f"{snap.done} done{failed}, {len(snap.running)} running{left}"

    def serving_line(self, snap):
        return (
            f"Chief serving the oracle on {self.ip}:{self.port}: waiting for workers to take trials "
            f"({self.counts(snap)}); start each worker with the same --config and --dir, its own --tuner-id, "
            f"--oracle-ip {self.ip} --oracle-port {self.port}"
        )

    def observe(self, snap, now):
        """Records when each trial was first seen held, and how long the ones that ended took."""
        held = set(snap.running.items())
        for key in set(self.since) - held:
            took = now - self.since.pop(key)
            self.longest = took if self.longest is None else max(self.longest, took)
        for key in held:
            self.since.setdefault(key, now)

    def progress_line(self, snap, now):
        if snap.running:
            held = ", ".join(
                f"trial {trial_id} on {tuner_id} for {duration(now - self.since.get((tuner_id, trial_id), now))}"
                for tuner_id, trial_id in sorted(snap.running.items(), key=lambda item: item[1])
            )
            return f"Chief waiting: {self.counts(snap)}; {held}"
        if snap.left == 0:
            # KerasTuner's chief ends once every worker that took a trial has been told that the search is over.
            return (
                f"Chief waiting: {self.counts(snap)}; the search ends when these have asked for another trial: "
                f"{', '.join(snap.asking) or 'any worker'} (restart one that is gone with its --tuner-id)"
            )
        return (
            f"Chief waiting: {self.counts(snap)}; no worker holds a trial: start one with its own --tuner-id, "
            f"--oracle-ip {self.ip} --oracle-port {self.port}"
        )

    def stale_warnings(self, snap, now):
        """One warning for each trial held so long that its worker may be gone (each trial once)."""
        limit = max(STALE_AFTER, STALE_FACTOR * (self.longest or 0.0))
        lines = []
        for key in sorted(snap.running.items(), key=lambda item: item[1]):
            held = now - self.since.get(key, now)
            if key in self.warned or held < limit:
                continue
            self.warned.add(key)
            tuner_id, trial_id = key
            compared = ("no trial has ended yet" if self.longest is None
                        else f"the longest trial that ended took {duration(self.longest)}")
            lines.append(
                f"warning: trial {trial_id} has been held by {tuner_id} for {duration(held)} without a word "
                f"({compared}): {tuner_id} may be gone; restart it with --tuner-id {tuner_id} (same --config, "
                f"--dir, --oracle-ip and --oracle-port) and it takes trial {trial_id} back"
            )
        return lines


def _answers(ip, port):
    """Whether something accepts a TCP connection on ip:port (a wildcard address is this host)."""
    host = ip.strip("[]")
    host = "localhost" if host in ("", "0.0.0.0", "::") else host
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


class _Reporter(threading.Thread):
    """The thread that prints the `Watch`'s lines until `stop` is set."""

    def __init__(self, oracle, ip, port):
        super().__init__(name="chief-reports", daemon=True)  # never keeps an interrupted chief alive
        self.oracle = oracle
        self.watch = Watch(ip, port)
        self.stop = threading.Event()

    def run(self):
        while not _answers(self.watch.ip, self.watch.port):
            if self.stop.wait(0.1):
                return
        if self.stop.wait(SERVING_GRACE):
            return
        print(self.watch.serving_line(snapshot(self.oracle)), flush=True)
        next_report = time.monotonic() + REPORT_EVERY
        while not self.stop.wait(POLL):
            snap, now = snapshot(self.oracle), time.monotonic()
            self.watch.observe(snap, now)
            for line in self.watch.stale_warnings(snap, now):
                print(line, file=sys.stderr, flush=True)
            if now >= next_report:
                print(self.watch.progress_line(snap, now), flush=True)
                next_report = now + REPORT_EVERY


@contextlib.contextmanager
def reporting(oracle, ip, port):
    """Prints what the chief waits for while the block runs (the chief's `tuner.search`).

    Args:
        oracle: the chief's `keras_tuner.Oracle`.
        ip: the address the oracle is served on (--oracle-ip).
        port: its port (--oracle-port).
    """
    reporter = _Reporter(oracle, ip, port)
    reporter.start()
    try:
        yield reporter.watch
    finally:
        reporter.stop.set()
        reporter.join(timeout=5.0)
