"""The C allocator's setting for streaming batches: glibc's M_TOP_PAD, unless the environment sets it."""

import os
import subprocess
import sys

from pipeline.data import memory


def _line(env):
    code = "from pipeline.data.memory import keep_freed_memory as k; print(k()); print(k() is k())"
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return done.stdout.splitlines()


def test_malloc_keeps_256_mib_at_the_top_of_its_heap_once_per_process():
    env = {k: v for k, v in os.environ.items() if k != memory.ENVIRONMENT}
    assert _line(env) == ["malloc: M_TOP_PAD 256 MiB (freed memory kept for the next batch)", "True"]


def test_the_environment_variable_wins():
    env = {**os.environ, memory.ENVIRONMENT: "131072"}
    assert _line(env) == ["malloc: MALLOC_TOP_PAD_=131072 from the environment", "True"]


def test_building_the_pipelines_sets_it(monkeypatch):
    from pipeline.config import load_config
    from pipeline.data.pipelines import build_datasets

    monkeypatch.setitem(memory._state, "applied", None)
    monkeypatch.delenv(memory.ENVIRONMENT, raising=False)
    build_datasets(load_config([], ["data.source=digits", "data.image_size=64"]).data, 8)
    assert memory.applied() == "malloc: M_TOP_PAD 256 MiB (freed memory kept for the next batch)"
