"""What `auto` chooses: bfloat16 and XLA on GPUs that have them, float32 without XLA on a CPU (devices injected)."""

import pytest

from pipeline.config import load_config
from pipeline.training.hardware import Device, choose_jit, choose_precision, resolve, visible_devices

H200 = Device("/gpu:0", True, (9, 0))
A100 = Device("/gpu:1", True, (8, 0))
V100 = Device("/gpu:2", True, (7, 0))
CPU = Device("/cpu:0", False)


@pytest.mark.parametrize("devices, precision, jit", [
    ([H200], "mixed_bfloat16", True),
    ([H200, A100], "mixed_bfloat16", True),
    ([A100, V100], "float32", True),  # one GPU without bfloat16 decides for all
    ([V100], "float32", True),
    ([CPU], "float32", False),
    ([CPU, H200], "float32", False),
])
def test_auto_on_each_kind_of_device(devices, precision, jit):
    assert choose_precision(devices)[0] == precision
    assert choose_jit(devices)[0] == jit


def test_what_is_configured_is_kept_and_the_lines_say_what_auto_chose_and_why():
    config, lines = resolve(load_config([], []), [V100])
    assert (config.train.precision, config.train.jit_compile) == ("float32", True)
    assert lines == [
        "train.precision: auto chose float32 (/gpu:2 has compute capability 7.0, without bfloat16 arithmetic; "
        "train.precision: mixed_float16 uses its float16 tensor cores)",
        "train.jit_compile: auto chose true (every replica is a GPU)",
    ]
    explicit = load_config([], ["train.precision=mixed_float16", "train.jit_compile=false"])
    config, lines = resolve(explicit, [H200])
    assert (config.train.precision, config.train.jit_compile) == ("mixed_float16", False)
    assert lines == ["train.precision: mixed_float16", "train.jit_compile: false"]


def test_this_cpu_keeps_the_cpu_path_float32_without_xla():
    if any(device.gpu for device in visible_devices()):
        pytest.skip("this machine has a GPU: auto chooses for it (the tests above)")
    # The defaults are auto; on a machine without a GPU they are exactly float32 and jit_compile false.
    config, lines = resolve(load_config([], []), visible_devices())
    assert (config.train.precision, config.train.jit_compile) == ("float32", False)
    assert lines[0] == "train.precision: auto chose float32 (a CPU: mixed precision is for GPUs)"
