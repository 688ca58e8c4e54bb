"""The C allocator's settings for streaming batches.

glibc's M_MMAP_THRESHOLD, M_TOP_PAD and M_ARENA_MAX, unless the environment sets them.
"""

import sys

from pipeline.data import memory
from tests.helpers.processes import project_env, run

# Starts 12 threads, all alive at once, each of which allocates (glibc gives a thread its heap at its first
# malloc), then prints the heaps the process has.
THREADS = """
import threading
from pipeline.data import memory
{setup}
started, done = threading.Barrier(12), threading.Barrier(12)
def work():
    started.wait()
    block = bytearray(100_000)
    done.wait()
threads = [threading.Thread(target=work) for _ in range(12)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
print(memory.heaps())
"""


def _env(**settings):
    """The subprocess environment with none of malloc's variables but `settings`."""
    env = {k: v for k, v in project_env().items() if k not in memory.SETTINGS}
    return {**env, **settings}


def _python(code, env):
    done = run([sys.executable, "-c", code], env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.splitlines()


def _line(env):
    return _python("from pipeline.data.memory import keep_freed_memory as k; print(k()); print(k() is k())", env)


SET = f"malloc: M_MMAP_THRESHOLD 32 MiB, M_TOP_PAD 256 MiB, M_ARENA_MAX {memory.arena_limit()}"


def test_malloc_keeps_freed_memory_in_few_heaps_once_per_process():
    line, once = _line(_env())
    assert line == f"{SET}; 1 heap(s) made so far"
    assert once == "True"


def test_each_environment_variable_wins_for_its_own_setting():
    line, _ = _line(_env(MALLOC_TOP_PAD_="131072"))
    assert line.startswith(f"malloc: M_MMAP_THRESHOLD 32 MiB, MALLOC_TOP_PAD_=131072 from the environment, "
                           f"M_ARENA_MAX {memory.arena_limit()};")
    line, _ = _line(_env(MALLOC_ARENA_MAX="5", MALLOC_MMAP_THRESHOLD_="65536"))
    assert line.startswith("malloc: MALLOC_MMAP_THRESHOLD_=65536 from the environment, M_TOP_PAD 256 MiB, "
                           "MALLOC_ARENA_MAX=5 from the environment;")


def test_the_arena_limit_is_a_quarter_of_the_cores_from_2_to_8():
    assert [memory.arena_limit(cores) for cores in (1, 2, 8, 11, 12, 20, 32, 112)] == [2, 2, 2, 2, 3, 5, 8, 8]


def test_threads_share_the_limited_heaps():
    # glibc's own limit on 2 cores is 16 heaps: 12 threads get a heap each, beside the main one.
    unlimited = int(_python(THREADS.format(setup=""), _env())[-1])
    limited = int(_python(THREADS.format(setup="memory.keep_freed_memory()"), _env())[-1])
    assert limited == min(memory.arena_limit(), 13) < unlimited
    # The environment's limit rules instead of this module's.
    assert int(_python(THREADS.format(setup="memory.keep_freed_memory()"), _env(MALLOC_ARENA_MAX="5"))[-1]) == 5


# Allocates ten 1 MB blocks and prints how many of them malloc gave mappings of their own.
MAPPED = """
import ctypes, re
from pipeline.data import memory
{setup}
def mapped():
    return int(re.search('<total type="mmap" count="([0-9]+)"', memory.malloc_info()).group(1))
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
before = mapped()
blocks = [libc.malloc(1 << 20) for _ in range(10)]
print(mapped() - before)
"""


def test_records_and_batches_come_from_the_heaps_not_mappings_of_their_own():
    assert int(_python(MAPPED.format(setup="memory.keep_freed_memory()"), _env())[-1]) == 0
    # glibc's own threshold (128 KiB at start) maps each of them.
    assert int(_python(MAPPED.format(setup=""), _env())[-1]) == 10
    assert int(_python(MAPPED.format(setup="memory.keep_freed_memory()"), _env(MALLOC_TOP_PAD_="1"))[-1]) == 0


def test_building_the_pipelines_sets_it(monkeypatch):
    from pipeline.config import load_config
    from pipeline.data.pipelines import build_datasets

    monkeypatch.setitem(memory._state, "applied", None)
    for name in memory.SETTINGS:
        monkeypatch.delenv(name, raising=False)
    build_datasets(load_config([], ["data.source=digits", "data.image_size=64"]).data, 8)
    assert memory.applied().startswith(f"{SET};")
