"""The same AlexNet training step in PyTorch, timed the way `pipeline.benchmark` times ours.

    python -m pipeline.torch_reference --image-size 128 --batch-size 64 --groups 2

A yardstick, not part of training: it answers "is the Keras step as fast as
the other mainstream framework on this machine?". The network matches
`model_defs.alexnet.build_alexnet` layer for layer (conv1 11x11/4 on the input
padded 1/2 as ours, LRN after conv1 and conv2, 3x3/2 max-pooling, conv2/4/5 in
`groups`, fc6/fc7 with dropout 0.5, fc8), with channels-last memory format,
float32, SGD with momentum 0.9 and coupled weight decay 5e-4, softmax
cross-entropy: the same FLOPs and the same optimizer work. (PyTorch's LRN
divides alpha by n; the constant does not change the cost.)

It runs in its own process (`benchmark` starts it with `subprocess`), so the
two frameworks' thread pools never share the cores, and it needs `torch`
(`pip install torch --index-url https://download.pytorch.org/whl/cpu`), which
the project does not depend on. Prints one JSON line: the images/s of each
timing, the threads used and torch's version.
"""

import argparse
import json
import sys
import time

from model_defs.geometry import CONV1_PADDING, WIDTHS


def build_torch_alexnet(num_classes=1000, groups=2, widths="paper", fc_units=4096, input_size=224):
    """AlexNet as a `torch.nn.Sequential`, shaped as `build_alexnet` (same weights per layer)."""
    import torch
    from torch import nn

    from model_defs.geometry import GROUPED_LAYERS, feature_map_sizes

    c1, c2, c3, c4, c5 = WIDTHS[widths]

    def g(name):
        return groups if name in GROUPED_LAYERS else 1

    (top, bottom), (left, right) = CONV1_PADDING
    pool5 = feature_map_sizes(input_size)["pool5"]
    return nn.Sequential(
        nn.ZeroPad2d((left, right, top, bottom)),
        nn.Conv2d(3, c1, 11, stride=4), nn.ReLU(inplace=True),
        nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=2.0),
        nn.MaxPool2d(3, 2),
        nn.Conv2d(c1, c2, 5, padding=2, groups=g("conv2")), nn.ReLU(inplace=True),
        nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=2.0),
        nn.MaxPool2d(3, 2),
        nn.Conv2d(c2, c3, 3, padding=1, groups=g("conv3")), nn.ReLU(inplace=True),
        nn.Conv2d(c3, c4, 3, padding=1, groups=g("conv4")), nn.ReLU(inplace=True),
        nn.Conv2d(c4, c5, 3, padding=1, groups=g("conv5")), nn.ReLU(inplace=True),
        nn.MaxPool2d(3, 2),
        nn.Flatten(),
        nn.Linear(c5 * pool5 * pool5, fc_units), nn.ReLU(inplace=True), nn.Dropout(0.5),
        nn.Linear(fc_units, fc_units), nn.ReLU(inplace=True), nn.Dropout(0.5),
        nn.Linear(fc_units, num_classes),
    ).to(memory_format=torch.channels_last)


def torch_step_rate(
    image_size=128, batch_size=64, groups=2, steps=6, warmup=2, repeats=3, num_classes=1000, widths="paper",
    fc_units=4096,
):
    """Training images/s of the PyTorch AlexNet on one in-memory batch.

    Returns:
        A list of images/s, one per timing of `steps` steps.
    """
    import torch

    torch.manual_seed(0)
    model = build_torch_alexnet(num_classes, groups, widths, fc_units, input_size=image_size)
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    loss_fn = torch.nn.CrossEntropyLoss()
    images = (torch.rand(batch_size, 3, image_size, image_size) * 255).to(memory_format=torch.channels_last)
    labels = torch.randint(0, num_classes, (batch_size,))

    def step():
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(model(images), labels)
        loss.backward()
        optimizer.step()
        return loss

    for _ in range(warmup):
        step()
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(steps):
            loss = step()
        float(loss)
        rates.append(steps * batch_size / (time.perf_counter() - start))
    return rates


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m pipeline.torch_reference", description=__doc__.split("\n")[0])
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--groups", type=int, choices=[1, 2], default=2)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--num-classes", type=int, default=1000)
    parser.add_argument("--widths", choices=sorted(WIDTHS), default="paper")
    parser.add_argument("--fc-units", type=int, default=4096)
    args = parser.parse_args(argv)
    try:
        import torch
    except ImportError:
        print(json.dumps({"error": "torch is not installed"}))
        return 3
    rates = torch_step_rate(
        args.image_size, args.batch_size, args.groups, args.steps, args.warmup, args.repeats, args.num_classes,
        args.widths, args.fc_units,
    )
    print(json.dumps({"images_per_second": rates, "threads": torch.get_num_threads(), "torch": torch.__version__}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
