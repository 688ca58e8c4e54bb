"""What benchmarks/gpu/run.sh writes besides the benchmarks' own JSON: the host's description and a summary.

    python benchmarks/gpu/report.py env OUT/env.json     # versions, devices, whether TensorFlow is there
    python benchmarks/gpu/report.py summary OUT          # one line per figure from OUT/*.json, and the CPU's
                                                         # loss curves (cpu_reference_loss.json) beside the GPU's
"""

import importlib
import importlib.util
import json
import os
import pathlib
import shutil
import statistics
import subprocess
import sys


def describe_host(path):
    info = {"python": sys.version.split()[0], "executable": sys.executable, "cpus": os.cpu_count()}
    for name in ("keras", "jax", "jaxlib", "torch", "numpy", "optree", "namex", "h5py", "ml_dtypes"):
        try:
            info[name] = importlib.import_module(name).__version__
        except Exception as error:  # noqa: BLE001  recorded, not raised: the description is what matters
            info[name] = f"not importable: {type(error).__name__}: {error}"
    info["tensorflow_installed"] = importlib.util.find_spec("tensorflow") is not None
    try:
        import jax

        info["jax_devices"] = [f"{d.platform}:{d.id} {d.device_kind}" for d in jax.devices()]
    except Exception as error:  # noqa: BLE001
        info["jax_devices"] = f"{type(error).__name__}: {error}"
    if shutil.which("nvidia-smi"):
        query = "--query-gpu=name,driver_version,memory.total,clocks.max.sm,clocks.max.mem"
        done = subprocess.run(["nvidia-smi", query, "--format=csv,noheader"], capture_output=True, text=True)
        info["nvidia_smi"] = done.stdout.strip() or done.stderr.strip()
    pathlib.Path(path).write_text(json.dumps(info, indent=1) + "\n")
    print(json.dumps(info, indent=1))


def summarise(out):
    out = pathlib.Path(out)
    reference = pathlib.Path(__file__).with_name("cpu_reference_loss.json")
    for path in sorted(out.glob("*.json")) + [reference]:
        try:
            figures = json.loads(path.read_text())
        except ValueError as error:
            print(f"{path.name}: unreadable ({error})")
            continue
        if path.name == "env.json":
            continue
        where = f"{figures.get('backend', '')} {figures.get('backend_version', '')} {figures.get('device', '')}".strip()
        for step in figures.get("steps", []):
            print(f"{path.name}: Keras {where}, {step['precision']}, batch {step['batch_size']}, "
                  f"{step['grouped_conv']}, LRN {step['lrn_implementation']}: {statistics.median(step['images_per_second']):.0f} images/s, "
                  f"{step['tflops']:.2f} TFLOP/s")  # fmt: skip
        for peer in figures.get("torch", []):
            how = "torch.compile" if peer.get("compiled") else "eager"
            if "error" in peer:
                print(f"{path.name}: PyTorch {how}: not measured: {peer['error']}")
            else:
                print(f"{path.name}: PyTorch {peer['torch']} {how} on {peer['device']}, {peer['precision']}, batch "
                      f"{peer['batch_size']}: {statistics.median(peer['images_per_second']):.0f} images/s")  # fmt: skip
        for curve in figures.get("loss_curves", []):
            shown = "  ".join(f"{k}: {v:.4f}" for k, v in curve["every_10"].items())
            print(f"{path.name}: loss, {curve['precision']}, batch {curve['batch_size']}, {where}: {shown}")
        if "tensorflow_loaded" in figures:
            print(f"{path.name}: TensorFlow loaded in that process: {figures['tensorflow_loaded']}")


if __name__ == "__main__":
    command, target = sys.argv[1:3]
    describe_host(target) if command == "env" else summarise(target)
