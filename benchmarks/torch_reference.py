"""The same AlexNet training step in PyTorch, timed the way the project's benchmarks time ours.

    python -m benchmarks.torch_reference --image-size 128 --batch-size 64 --groups 2
    python -m benchmarks.torch_reference --image-size 224 --batch-size 512 --precision bfloat16 --compile

A yardstick, not part of the project (not installed: run it from a checkout,
`pip install -e ".[torch]"` brings torch): it answers "is the Keras step as fast
as the other mainstream framework on this device?". The network matches
`model_defs.alexnet.build_alexnet` layer for layer (conv1 11x11/4 on the input
padded 1/2 as ours, LRN after conv1 and conv2, 3x3/2 max-pooling, conv2/4/5 in
`groups`, fc6/fc7 with dropout 0.5, fc8), with channels-last memory format, SGD
with momentum 0.9 and coupled weight decay 5e-4, softmax cross-entropy: the same
FLOPs and the same optimizer work. (PyTorch's LRN divides alpha by n; the
constant does not change the cost.) It runs on CUDA when there is a GPU, else on
the CPU; bfloat16 is autocast (weights and optimizer in float32, as Keras'
mixed_bfloat16; float32 matmuls may use TF32 on a GPU, as JAX's do by default);
`--compile` times the step with the network under `torch.compile`.

`pipeline.bench.peer` starts it, for both step benchmarks of `pipeline.benchmark`,
in a process of its own, so that the two frameworks' thread pools never share
the cores and their GPU memory pools never meet. Prints one JSON line: the images/s of each timing,
the device, the threads used and torch's version (or {"error": ...}).
"""

import argparse
import json
import sys
import time

from model_defs.geometry import CONV1_PADDING, GROUPED_LAYERS, WIDTHS, feature_map_sizes


def build_torch_alexnet(num_classes=1000, groups=2, widths="paper", fc_units=4096, input_size=224, lrn=True):
    """AlexNet as a `torch.nn.Sequential`, shaped as `build_alexnet` (same weights per layer)."""
    import torch
    from torch import nn

    c1, c2, c3, c4, c5 = WIDTHS[widths]

    def g(name):
        return groups if name in GROUPED_LAYERS else 1

    def norm():
        return [nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=2.0)] if lrn else []

    (top, bottom), (left, right) = CONV1_PADDING
    pool5 = feature_map_sizes(input_size)["pool5"]
    return nn.Sequential(
        nn.ZeroPad2d((left, right, top, bottom)),
        nn.Conv2d(3, c1, 11, stride=4), nn.ReLU(inplace=True),
        *norm(),
        nn.MaxPool2d(3, 2),
        nn.Conv2d(c1, c2, 5, padding=2, groups=g("conv2")), nn.ReLU(inplace=True),
        *norm(),
        nn.MaxPool2d(3, 2),
        nn.Conv2d(c2, c3, 3, padding=1, groups=g("conv3")), nn.ReLU(inplace=True),
        nn.Conv2d(c3, c4, 3, padding=1, groups=g("conv4")), nn.ReLU(inplace=True),
        nn.Conv2d(c4, c5, 3, padding=1, groups=g("conv5")), nn.ReLU(inplace=True),
        nn.MaxPool2d(3, 2),
        nn.Flatten(),
        nn.Linear(c5 * pool5 * pool5, fc_units), nn.ReLU(inplace=True), nn.Dropout(0.5),
        nn.Linear(fc_units, fc_units), nn.ReLU(inplace=True), nn.Dropout(0.5),
        nn.Linear(fc_units, num_classes),
    ).to(memory_format=torch.channels_last)  # fmt: skip


def torch_step_rate(
    image_size=128, batch_size=64, groups=2, steps=6, warmup=2, repeats=3, num_classes=1000, widths="paper",
    fc_units=4096, precision="float32", compile=False, device=None, lrn=True,
):  # fmt: skip
    """Training images/s of the PyTorch AlexNet on one in-memory batch.

    Args:
        precision: "float32" or "bfloat16" (autocast; float32 weights and optimizer).
        compile: time the step under `torch.compile` (its compilation is in the warm-up).
        device: "cuda" or "cpu"; None: CUDA when there is a GPU.
        The others: the network's shape (as `build_alexnet`) and the timing (`steps` per timing, after
        `warmup` untimed steps, `repeats` timings).

    Returns:
        (a list of images/s, one per timing, the device used).
    """
    import torch

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(0)
    torch.backends.cudnn.benchmark = True  # picks the fastest convolution algorithms for these shapes
    torch.set_float32_matmul_precision("high")  # TF32 in float32 matmuls on a GPU, as XLA's default precision
    model = build_torch_alexnet(num_classes, groups, widths, fc_units, input_size=image_size, lrn=lrn).to(device)
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    loss_fn = torch.nn.CrossEntropyLoss()
    images = (torch.rand(batch_size, 3, image_size, image_size, device=device) * 255).to(
        memory_format=torch.channels_last
    )
    labels = torch.randint(0, num_classes, (batch_size,), device=device)
    half = precision == "bfloat16"
    network = torch.compile(model) if compile else model  # forward and backward compiled, the optimizer eager

    def step():
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=half):
            loss = loss_fn(network(images), labels)
        loss.backward()
        optimizer.step()
        return loss.detach()

    for _ in range(max(warmup, 2 if compile else 0)):
        step()
    float(step())
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(steps):
            loss = step()
        float(loss)  # waits for the device
        rates.append(steps * batch_size / (time.perf_counter() - start))
    return rates, device


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.torch_reference", description=__doc__.split("\n")[0])
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--groups", type=int, choices=[1, 2], default=2)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--num-classes", type=int, default=1000)
    parser.add_argument("--widths", choices=sorted(WIDTHS), default="paper")
    parser.add_argument("--fc-units", type=int, default=4096)
    parser.add_argument("--no-lrn", dest="lrn", action="store_false", help="leave out norm1 and norm2")
    parser.add_argument("--precision", choices=["float32", "bfloat16"], default="float32")
    parser.add_argument("--compile", action="store_true", help="time the step under torch.compile")
    parser.add_argument("--device", choices=["cuda", "cpu"], help="default: CUDA when there is a GPU")
    args = parser.parse_args(argv)
    try:
        import torch
    except ImportError:
        print(json.dumps({"error": "torch is not installed"}))
        return 3
    try:
        rates, device = torch_step_rate(
            args.image_size, args.batch_size, args.groups, args.steps, args.warmup, args.repeats, args.num_classes,
            args.widths, args.fc_units, args.precision, args.compile, args.device, args.lrn,
        )  # fmt: skip
    except Exception as error:  # noqa: BLE001  one JSON line whatever went wrong (e.g. no compiler for --compile)
        print(json.dumps({"error": f"{type(error).__name__}: {str(error)[:500]}"}))
        return 1
    name = torch.cuda.get_device_name() if device == "cuda" else "cpu"
    print(json.dumps({
        "images_per_second": rates, "threads": torch.get_num_threads(), "torch": torch.__version__,
        "device": name, "precision": args.precision, "compile": args.compile,
    }))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
