"""What a run keeps about itself: history.csv (a row per epoch), checkpoints/best.keras, environment.json.

history.csv is written by the backup (`pipeline.training.backup.RunBackup`)
each time it commits an epoch, from the history the backup holds, so a row is
there once the epoch is safe, a resumed run appends, and no row is repeated.
"""

import csv
import datetime
import io
import json
import math
import os
import pathlib
import platform
import subprocess
import sys

import keras
import numpy as np
import tensorflow as tf

from pipeline.data import memory
from pipeline.storage.files import atomic_write_text
from pipeline.storage.models import save_keras


def history_csv(history, times):
    """The text of history.csv: a header and one row per epoch.

    Args:
        history: each finished epoch's logs (metric -> value), in order.
        times: per epoch, {"epoch_seconds", "elapsed_seconds", "finished_at"} (may be shorter than history,
            for a backup written before times were kept).

    Returns:
        CSV text; columns: epoch, every logged figure (in the order first seen), then the times.
    """
    keys = list(dict.fromkeys(key for logs in history for key in logs))
    time_keys = ["epoch_seconds", "elapsed_seconds", "finished_at"]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["epoch", *keys, *time_keys])
    for index, logs in enumerate(history):
        stamp = times[index] if index < len(times) else {}
        writer.writerow([index + 1, *(_cell(logs.get(key)) for key in keys), *(_cell(stamp.get(k)) for k in time_keys)])
    return out.getvalue()


def _cell(value):
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else str(value)
    return str(value)


def write_history(path, history, times):
    """Writes history.csv whole (`history_csv`)."""
    atomic_write_text(path, history_csv(history, times))


def now_utc():
    """The current time as an ISO 8601 string in UTC, to the second."""
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


class BestCheckpoint(keras.callbacks.Callback):
    """Keeps the model of the best epoch so far (lowest `monitor`) in one .keras file, written whole.

    Its state (the best value and epoch) goes into the run's backup, so a
    resumed run compares against the best of all its sessions. Put it before
    the backup: the backup then commits an epoch with its checkpoint written.

    Args:
        path: the .keras file (checkpoints/best.keras).
        monitor: a logged figure that is lower when better (an error or a loss).
    """

    def __init__(self, path, monitor):
        super().__init__()
        self.path = pathlib.Path(path)
        self.monitor = monitor
        self.best = math.inf
        self.best_epoch = None

    def get_state(self):
        return {"best": None if math.isinf(self.best) else self.best, "best_epoch": self.best_epoch}

    def set_state(self, state):
        self.best = math.inf if state.get("best") is None else float(state["best"])
        self.best_epoch = state.get("best_epoch")

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is None:
            raise KeyError(f"{self.monitor} is not logged")  # checked before training: a bug if reached
        value = float(value)
        if math.isfinite(value) and value < self.best:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            save_keras(self.model, self.path)
            self.best, self.best_epoch = value, epoch + 1


def _git(*argv):
    root = pathlib.Path(__file__).resolve().parents[2]
    if not (root / ".git").exists():
        return None
    try:
        done = subprocess.run(["git", *argv], cwd=root, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def _cpu():
    """The CPU's model name and the flags that matter to training speed."""
    try:
        text = pathlib.Path("/proc/cpuinfo").read_text()
    except OSError:
        return {"model": platform.processor() or platform.machine(), "flags": []}
    model = next((line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("model name")), "")
    flags = set(next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), []))
    wanted = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16", "amx_int8")
    return {"model": model, "flags": [flag for flag in wanted if flag in flags]}


def _gpu(device):

    details = tf.config.experimental.get_device_details(device)
    capability = details.get("compute_capability")
    return {"name": details.get("device_name", device.name),
            "compute_capability": ".".join(map(str, capability)) if capability else None}


def environment(devices, choices=()):
    """This session's environment: versions, devices, CPU, the project's commit, the command line.

    Args:
        devices: the replicas' device names.
        choices: lines saying what auto chose (precision, XLA) and why.
    """

    build = tf.sysconfig.get_build_info()
    commit = _git("rev-parse", "HEAD")
    return {
        "started_at": now_utc(),
        "command": list(getattr(sys, "orig_argv", sys.argv)),
        "cwd": os.getcwd(),
        "host": platform.node(),
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "numpy": np.__version__,
        "tensorflow_built_for_cuda": build.get("cuda_version"),
        "tensorflow_built_for_cudnn": build.get("cudnn_version"),
        "devices": list(devices),
        "gpus": [_gpu(gpu) for gpu in tf.config.list_physical_devices("GPU")],
        "cpu": _cpu(),
        "cpu_count": os.cpu_count(),
        "git_commit": commit,
        "git_dirty": bool(_git("status", "--porcelain")) if commit else None,
        "choices": list(choices),
        "malloc": memory.applied(),  # what the input pipeline set (pipeline.data.memory), None if not yet built
    }


def record_environment(path, session):
    """Appends this session to environment.json ({"sessions": [...]}, one entry per start or resumption)."""
    path = pathlib.Path(path)
    sessions = []
    if path.is_file():
        try:
            sessions = json.loads(path.read_text())["sessions"]
        except (ValueError, KeyError, TypeError):
            sessions = []  # a damaged record is replaced, not trusted
    atomic_write_text(path, json.dumps({"sessions": [*sessions, session]}, indent=2) + "\n")
