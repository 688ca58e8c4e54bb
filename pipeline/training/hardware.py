"""What `auto` means on this hardware: the precision and XLA a run gets on its devices, and why.

    train.precision: auto    mixed_bfloat16 when every replica is a GPU with bfloat16
                             arithmetic (compute capability 8.0 and up: A100, H100, H200,
                             RTX 30xx and later); float32 on older GPUs and on CPUs.
    train.jit_compile: auto  XLA when every replica is a GPU; off on a CPU, where it
                             measured slower (README, Speed).

A CPU run therefore trains exactly as with float32 and jit_compile false.
"""

import dataclasses

BFLOAT16_CAPABILITY = (8, 0)  # Ampere: the first NVIDIA GPUs with bfloat16 tensor cores


@dataclasses.dataclass(frozen=True)
class Device:
    """One replica's device: its name, whether it is a GPU, and a GPU's compute capability (None if unknown)."""

    name: str
    gpu: bool
    compute_capability: tuple = None


def replica_devices(names):
    """`Device`s for replica device names (e.g. "/cpu:0", "/job:worker/.../device:GPU:1"), GPU details from TF."""
    import tensorflow as tf

    physical = tf.config.list_physical_devices("GPU")
    devices = []
    for name in names:
        spec = tf.DeviceSpec.from_string(name)
        gpu = (spec.device_type or "").upper() == "GPU"
        capability = None
        if gpu and physical:
            index = spec.device_index or 0
            details = tf.config.experimental.get_device_details(physical[min(index, len(physical) - 1)])
            capability = details.get("compute_capability")
        devices.append(Device(name, gpu, tuple(capability) if capability else None))
    return devices


def choose_precision(devices, requested="auto"):
    """(precision, why) for `train.precision` on `devices`; a value other than auto is kept (why: None).

    Args:
        devices: the replicas' `Device`s.
        requested: `train.precision`.
    """
    if requested != "auto":
        return requested, None
    if not devices or not all(d.gpu for d in devices):
        return "float32", "a CPU: mixed precision is for GPUs"
    old = [d for d in devices if d.compute_capability is None or tuple(d.compute_capability) < BFLOAT16_CAPABILITY]
    if old:
        shown = ".".join(map(str, old[0].compute_capability)) if old[0].compute_capability else "unknown"
        return "float32", (
            f"{old[0].name} has compute capability {shown}, without bfloat16 arithmetic; "
            "train.precision: mixed_float16 uses its float16 tensor cores"
        )
    return "mixed_bfloat16", "every GPU has bfloat16 arithmetic (compute capability 8.0 or more)"


def choose_jit(devices, requested="auto"):
    """(jit_compile, why) for `train.jit_compile` on `devices`; true or false is kept (why: None)."""
    if requested != "auto":
        return bool(requested), None
    if devices and all(d.gpu for d in devices):
        return True, "every replica is a GPU"
    return False, "a CPU, where XLA measured slower"


def _line(key, value, why):
    shown = str(value).lower() if isinstance(value, bool) else value
    return f"{key}: {shown}" if why is None else f"{key}: auto chose {shown} ({why})"


def resolve(config, devices):
    """The config with `train.precision` and `train.jit_compile` made concrete for `devices`, and why.

    Returns:
        (config, lines): a `Config` whose two keys are no longer auto, and one line per key,
        e.g. "train.precision: auto chose float32 (a CPU: mixed precision is for GPUs)".
    """
    precision, why_precision = choose_precision(devices, config.train.precision)
    jit, why_jit = choose_jit(devices, config.train.jit_compile)
    lines = [_line("train.precision", precision, why_precision), _line("train.jit_compile", jit, why_jit)]
    return config.derive({"train.precision": precision, "train.jit_compile": jit}), lines


def visible_devices():
    """The devices a run without a strategy uses: every visible GPU, else the CPU."""
    import tensorflow as tf

    gpus = [f"/gpu:{i}" for i in range(len(tf.config.list_logical_devices("GPU")))]
    return replica_devices(gpus or ["/cpu:0"])


def concrete_precision(train_config):
    """`train.precision`, with auto chosen for the visible devices (for code that runs outside a training run)."""
    if train_config.precision != "auto":
        return train_config.precision
    return choose_precision(visible_devices())[0]


def concrete_jit(train_config):
    """`train.jit_compile`, with auto chosen for the visible devices."""
    if train_config.jit_compile != "auto":
        return bool(train_config.jit_compile)
    return choose_jit(visible_devices())[0]
