"""Images/s of the project's AlexNet training step on any Keras 3 backend, beside PyTorch; needs no TensorFlow.

    python -m pipeline.benchmark --backend jax                        # the paper's network at 224, the full grid
    python -m pipeline.benchmark --backend jax --precision mixed_bfloat16 --batch-size 512 --grouped-conv native
    python -m pipeline.benchmark --backend jax --image-size 64 --steps 2 --loss-steps 50 --json out.json
    python -m pipeline.bench.step --backend jax ...                   # the same without the project's dependencies

For each precision x batch size x grouped-convolution form (x LRN implementation)
it prints the training images/s of `build_alexnet` + `PaperSGD` (lr 0.01,
momentum 0.9, coupled weight decay 5e-4) + softmax cross-entropy, as the median
of --repeats timings of --steps steps with their spread, and the FLOP rate that
makes (training FLOPs per image: 2 x the multiply-adds of every convolution and
dense layer, times 3 for forward and both gradients, conv1 times 2). The step is
the Keras trainer's own (the one `model.fit` runs: on JAX the jitted
`train_step` with its state donated, on TensorFlow the compiled `train_function`)
on one batch of random images held on the device, after warm-up: the model and
optimizer alone, no input pipeline, no callbacks, no metric but the loss.

Beside it, the PyTorch peer (`benchmarks/torch_reference.py`, the same network,
channels-last, bfloat16 by autocast) on the same device, eager and, on a GPU or
with --torch-compile, under `torch.compile`; each in a process of its own, run
before Keras starts (a JAX process takes most of the GPU's memory).

--loss-steps N trains the model N steps on one fixed batch (fixed seed, dropout
off so that the curve depends on the arithmetic alone), in each precision, and
prints the loss every 10 steps: it must fall, and fall alike on every device.
--no-timing leaves out the Keras timings (the loss check, or the peer, alone).
benchmarks/gpu/run.sh runs all of it on a GPU host that has no TensorFlow.

The backend is fixed when Keras is imported: this module sets KERAS_BACKEND
from --backend before it imports Keras, and imports nothing but Keras, NumPy,
the backend and model_defs (TensorFlow only when it is the backend).
"""

import argparse
import importlib.util
import json
import os
import pathlib
import statistics
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[2]
TORCH_PEER = ROOT / "benchmarks" / "torch_reference.py"
BACKENDS = ("jax", "tensorflow", "torch")
PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")
# The paper's optimizer (section 5) with the trainer's defaults.
OPTIMIZER = dict(learning_rate=0.01, momentum=0.9, coupled_weight_decay=5e-4)


def parse_args(argv=None):
    from pipeline.console.cli import ArgumentParser  # plain Python: no TensorFlow, Keras or pydantic

    parser = ArgumentParser(prog="python -m pipeline.benchmark --backend BACKEND", description=__doc__.split("\n")[0])
    parser.add_argument("--backend", choices=BACKENDS, default=os.environ.get("KERAS_BACKEND", "jax"),
                        help="Keras backend (default: $KERAS_BACKEND, else jax)")
    parser.add_argument("--precision", nargs="+", choices=PRECISIONS, default=["mixed_bfloat16", "float32"])
    parser.add_argument("--batch-size", nargs="+", type=int, default=[128, 512])
    parser.add_argument("--grouped-conv", nargs="+", choices=["auto", "towers", "native"], default=["towers", "native"],
                        help="forms of the grouped convolutions to time (default: both; one only with --groups 1)")
    parser.add_argument("--lrn-implementation", nargs="+", choices=["auto", "banded", "windowed", "cudnn"],
                        default=["auto"], help="LRN forms to time (default: the backend's choice for the device)")
    parser.add_argument("--image-size", type=int, default=224, help="input height and width (default 224)")
    parser.add_argument("--num-classes", type=int, default=1000)
    parser.add_argument("--fc-units", type=int, default=4096)
    parser.add_argument("--groups", type=int, choices=[1, 2], default=2)
    parser.add_argument("--widths", choices=["paper", "torchvision"], default="paper")
    parser.add_argument("--no-lrn", dest="lrn", action="store_false", help="leave out norm1 and norm2")
    parser.add_argument("--steps", type=int, default=20, help="training steps per timing (default 20)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps after compiling (default 3)")
    parser.add_argument("--repeats", type=int, default=3, help="timings per figure (default 3)")
    parser.add_argument("--jit", action=argparse.BooleanOptionalAction, default=None,
                        help="compile with XLA (default: Keras' choice, which is XLA on JAX)")
    parser.add_argument("--torch", action=argparse.BooleanOptionalAction, default=None,
                        help="time the PyTorch peer too (default: when torch is installed)")
    parser.add_argument("--torch-compile", action=argparse.BooleanOptionalAction, default=None,
                        help="also time the peer under torch.compile (default: when the peer runs on a GPU)")
    parser.add_argument("--loss-steps", type=int, default=0, metavar="N",
                        help="also train N steps on one fixed batch per precision and print the loss curve")
    parser.add_argument("--loss-batch-size", type=int, default=32, help="batch of the loss check (default 32)")
    parser.add_argument("--no-timing", dest="timing", action="store_false",
                        help="time nothing in Keras (the loss check, or the PyTorch peer, alone)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", metavar="PATH", help="write every figure to this JSON file (rewritten as they come)")
    args = parser.parse_args(argv)
    if min(args.batch_size) < 1:
        parser.error(f"--batch-size must be at least 1, got {min(args.batch_size)}")
    for name in ("steps", "repeats", "image_size", "num_classes", "fc_units", "loss_batch_size"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    if args.image_size < 64:
        parser.error(f"--image-size must be at least 64 for AlexNet, got {args.image_size}")
    if args.warmup < 0 or args.loss_steps < 0:
        parser.error("--warmup and --loss-steps must be at least 0")
    if args.groups == 1:
        args.grouped_conv = args.grouped_conv[:1]  # one tower: the form does not exist
    return args


def _fmt(values, unit, digits=0):
    median = statistics.median(values)
    return f"{median:.{digits}f} {unit} (spread {min(values):.{digits}f}-{max(values):.{digits}f}, {len(values)} runs)"


def device_description():
    """The device the backend computes on, in words (e.g. "gpu: NVIDIA H200")."""
    import keras

    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        device = jax.devices()[0]
        return device.platform if device.device_kind == device.platform else f"{device.platform}: {device.device_kind}"
    if backend == "torch":
        import torch

        return f"cuda: {torch.cuda.get_device_name()}" if torch.cuda.is_available() else "cpu"
    import tensorflow as tf

    gpus = tf.config.list_logical_devices("GPU")
    return f"gpu: {gpus[0].name}" if gpus else "cpu"


def build(args, precision="float32", grouped_conv="auto", lrn_implementation="auto", dropout=0.5, seed=None):
    """The benchmarked model, compiled with `PaperSGD` and sparse softmax cross-entropy on the logits."""
    import keras

    from model_defs.alexnet import build_alexnet
    from model_defs.layers import LocalResponseNormalization
    from model_defs.optimizers import PaperSGD

    keras.backend.clear_session()
    keras.config.set_dtype_policy(precision)
    try:
        model = build_alexnet(
            num_classes=args.num_classes, input_size=args.image_size, fc_units=args.fc_units, groups=args.groups,
            widths=args.widths, lrn=args.lrn, dropout=dropout, grouped_conv=grouped_conv, seed=seed,
        )  # fmt: skip
    finally:
        keras.config.set_dtype_policy("float32")
    for layer in model.layers:
        if isinstance(layer, LocalResponseNormalization):
            layer.implementation = lrn_implementation
    model.compile(
        optimizer=PaperSGD(**OPTIMIZER),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile="auto" if args.jit is None else args.jit,
    )
    return model


def trainer_steps(model, images, labels):
    """A function `run(n)` that runs the Keras trainer's training step n times on one batch and returns the last loss.

    The first `train_on_batch` builds the optimizer and the loss metric and
    compiles the step; `run` then calls the compiled step as `model.fit` does,
    with the batch already on the device, and waits for the last step only.
    """
    import keras

    model.train_on_batch(images, labels)
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        data = (jax.device_put(images), jax.device_put(labels), None)  # the structure train_on_batch traced
        state = tuple(
            [v.value for v in variables]
            for variables in (model.trainable_variables, model.non_trainable_variables, model.optimizer.variables,
                              model.metrics_variables)
        )  # fmt: skip

        def run(n):
            nonlocal state
            for _ in range(n):
                logs, state = model.train_function(state, iter([data]))  # state donated: updated in place
            return float(logs["loss"])

        return run
    if backend == "tensorflow":
        import tensorflow as tf

        iterator = iter(tf.data.Dataset.from_tensors((images, labels)).repeat())

        def run(n):
            for _ in range(n):
                logs = model.train_function(iterator)
            return float(logs["loss"])

        return run
    data = (keras.ops.convert_to_tensor(images), keras.ops.convert_to_tensor(labels), None)

    def run(n):
        for _ in range(n):
            logs = model.train_function([data])
        return float(logs["loss"])

    return run


def _batch(args, batch_size, seed=0):
    import numpy as np

    rng = np.random.default_rng(seed)
    images = rng.uniform(0, 255, (batch_size, args.image_size, args.image_size, 3)).astype(np.float32)
    labels = rng.integers(0, args.num_classes, batch_size).astype(np.int32)
    return images, labels


def step_rate(args, precision, batch_size, grouped_conv, lrn_implementation):
    """Training images/s of one configuration: a list, one per timing."""
    model = build(args, precision, grouped_conv, lrn_implementation, seed=args.seed)
    run = trainer_steps(model, *_batch(args, batch_size))
    if args.warmup:
        run(args.warmup)
    rates = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        run(args.steps)
        rates.append(args.steps * batch_size / (time.perf_counter() - start))
    from model_defs.flops import training_flops  # Keras is loaded by now, on the chosen backend

    return rates, training_flops(model)


def loss_curve(args, precision):
    """The losses of `args.loss_steps` + 1 steps on one fixed batch (dropout off, seeded): at k, after k updates."""
    model = build(args, precision, dropout=0.0, seed=args.seed)
    images, labels = _batch(args, args.loss_batch_size, seed=args.seed)
    return [float(model.train_on_batch(images, labels, return_dict=True)["loss"]) for _ in range(args.loss_steps + 1)]


def torch_peer(args, precision, batch_size, compile=False):
    """The PyTorch peer's result (a dict with "images_per_second", or with "error"), run in a process of its own."""
    if not TORCH_PEER.is_file():
        return {"error": f"{TORCH_PEER.relative_to(ROOT)} is not here: the peer runs from the project's checkout"}
    command = [
        sys.executable, "-m", "benchmarks.torch_reference", "--image-size", str(args.image_size),
        "--batch-size", str(batch_size), "--groups", str(args.groups), "--steps", str(args.steps),
        "--warmup", str(args.warmup), "--repeats", str(args.repeats), "--num-classes", str(args.num_classes),
        "--widths", args.widths, "--fc-units", str(args.fc_units),
        "--precision", "float32" if precision == "float32" else "bfloat16",
    ] + (["--compile"] if compile else []) + ([] if args.lrn else ["--no-lrn"])  # fmt: skip
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if not lines:
        return {"error": f"benchmarks.torch_reference failed: {done.stderr.strip().splitlines()[-1:]}"}
    return json.loads(lines[-1])


class Report:
    """Prints each figure as it comes and keeps them all, rewriting the JSON file (if any) after each."""

    def __init__(self, path, out=print):
        self.path, self.out = path, out
        self.figures = {"steps": [], "torch": [], "loss_curves": []}

    def add(self, kind, figure, line):
        self.figures[kind].append(figure)
        self.out(line)
        self.save()

    def save(self):
        if self.path:
            pathlib.Path(self.path).write_text(json.dumps(self.figures, indent=1) + "\n")


def _torch_figures(args, report):
    on_cpu = True
    for precision in dict.fromkeys("float32" if p == "float32" else "bfloat16" for p in args.precision):
        for batch_size in args.batch_size:
            for compile in (False, True):
                if compile and not args.torch_compile and (args.torch_compile is False or on_cpu):
                    continue  # by default torch.compile on a GPU only (on a CPU it compiles for minutes)
                result = torch_peer(args, precision, batch_size, compile)
                on_cpu = result.get("device", "cpu") == "cpu"
                how = f"PyTorch {'torch.compile' if compile else 'eager':<13} {precision:<14} batch {batch_size:>4}"
                figure = dict(result, batch_size=batch_size, compiled=compile)
                if "error" in result:
                    report.add("torch", figure, f"{how}  not measured: {result['error']}")
                else:
                    rates = result["images_per_second"]
                    report.add("torch", figure, f"{how}  {_fmt(rates, 'images/s')}; {result['device']}, "
                                                f"torch {result['torch']}, {result['threads']} threads")  # fmt: skip


def benchmark(args, out=print):
    """Runs the configured measurements; returns the figures (also written to --json)."""
    report = Report(args.json, out)
    torch_wanted = args.torch if args.torch is not None else args.timing and importlib.util.find_spec("torch")
    if torch_wanted:
        _torch_figures(args, report)  # first: a JAX process holds most of the GPU's memory until it ends
    if not args.timing and not args.loss_steps:
        return report.figures

    import keras

    backend = keras.backend.backend()
    version = importlib.import_module(backend).__version__
    report.figures.update(backend=backend, backend_version=version, keras=keras.__version__,
                          device=device_description(), args=vars(args))  # fmt: skip
    out(
        f"Keras {keras.__version__} on {backend} {version}, {report.figures['device']}; AlexNet "
        f"{args.image_size}x{args.image_size}, groups {args.groups}, widths {args.widths}, "
        f"{'LRN' if args.lrn else 'no LRN'}, fc {args.fc_units}, {args.num_classes} classes"
    )
    if args.timing:
        for precision in args.precision:
            for batch_size in args.batch_size:
                for grouped_conv in args.grouped_conv:
                    for lrn_implementation in args.lrn_implementation if args.lrn else ["auto"]:
                        rates, flops = step_rate(args, precision, batch_size, grouped_conv, lrn_implementation)
                        tflops = statistics.median(rates) * flops / 1e12
                        figure = dict(precision=precision, batch_size=batch_size, grouped_conv=grouped_conv,
                                      lrn_implementation=lrn_implementation, images_per_second=rates,
                                      training_flops=flops, tflops=tflops)  # fmt: skip
                        how = f"{precision:<14} batch {batch_size:>4}  {grouped_conv:<6} LRN {lrn_implementation:<8}"
                        report.figures["tensorflow_loaded"] = sys.modules.get("tensorflow") is not None
                        report.add("steps", figure, f"{how}  {_fmt(rates, 'images/s')}  {tflops:.2f} TFLOP/s "
                                                    f"({flops / 1e9:.3f} GFLOP/image)")  # fmt: skip
    if args.loss_steps:
        for precision in args.precision:
            losses = loss_curve(args, precision)
            shown = {k: round(losses[k], 4) for k in range(0, len(losses), 10)}
            figure = dict(precision=precision, batch_size=args.loss_batch_size, losses=losses, every_10=shown)
            report.figures["tensorflow_loaded"] = sys.modules.get("tensorflow") is not None
            report.add("loss_curves", figure, f"loss, {precision:<14} batch {args.loss_batch_size}, step: loss  "
                                              + "  ".join(f"{k}: {v:.4f}" for k, v in shown.items()))  # fmt: skip
    return report.figures


def main(argv=None):
    args = parse_args(argv)
    if "keras" in sys.modules and sys.modules["keras"].backend.backend() != args.backend:
        loaded = sys.modules["keras"].backend.backend()
        print(f"error: --backend {args.backend}: Keras is loaded with {loaded} in this process already; run "
              "the benchmark in a new process", file=sys.stderr)  # fmt: skip
        return 2
    os.environ["KERAS_BACKEND"] = args.backend  # read when Keras is imported
    if importlib.util.find_spec(args.backend) is None:
        print(f"error: --backend {args.backend}: {args.backend} is not installed", file=sys.stderr)
        return 2
    benchmark(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
