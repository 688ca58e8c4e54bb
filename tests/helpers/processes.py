"""Real processes for the tests: the environment a command runs in, starting it, waiting on it, killing it."""

import os
import pathlib
import signal
import socket
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[2]


def project_env(**extra):
    """os.environ for a subprocess that imports the project from this checkout, as a user's shell has it; plus extra.

    TF_CPP_MIN_LOG_LEVEL is left unset (the test process sets it for itself), so
    that the command filters TensorFlow's start-up notices as it does for users.
    """
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    for key in ("TF_CPP_MIN_LOG_LEVEL", "TF_CONFIG", "KERASTUNER_TUNER_ID", "KERASTUNER_ORACLE_IP",
                "KERASTUNER_ORACLE_PORT"):
        env.pop(key, None)
    env.update(extra)
    return env


def command(module, *argv):
    """The argv of `python -m module argv...` with this interpreter."""
    return [sys.executable, "-m", module, *map(str, argv)]


def start(argv, cwd=None, env=None):
    """Starts `argv` with stdout and stderr together in one text pipe."""
    return subprocess.Popen(argv, cwd=cwd, env=env or project_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def run(argv, cwd=None, env=None, timeout=300):
    """Runs `argv` to its end: a CompletedProcess with stdout and stderr apart."""
    return subprocess.run(argv, cwd=cwd, env=env or project_env(), capture_output=True, text=True, timeout=timeout)


def wait_until(condition, process=None, timeout=180, interval=0.05):
    """Waits until condition() is true; fails the test if `process` ends first (with its output) or time runs out."""
    deadline = time.monotonic() + timeout
    while not condition():
        if process is not None and process.poll() is not None:
            raise AssertionError(f"the process ended ({process.returncode}) first:\n{process.communicate()[0][-3000:]}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s")
        time.sleep(interval)


def kill(process, sig=signal.SIGKILL):
    """Sends `sig` (default SIGKILL), waits for the end; returns the output."""
    if process.poll() is None:
        process.send_signal(sig)
    return process.communicate(timeout=120)[0]


def finish(process, timeout=300):
    """Waits for the end of `process`; returns (exit status, output)."""
    try:
        output = process.communicate(timeout=timeout)[0]
    except subprocess.TimeoutExpired:
        process.kill()
        raise
    return process.returncode, output


def free_ports(count=1):
    """`count` TCP ports on 127.0.0.1 that were free a moment ago."""
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports
