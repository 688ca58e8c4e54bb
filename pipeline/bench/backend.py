"""The configured model's training step on any Keras 3 backend, beside the PyTorch peer, and a loss check.

Imports no TensorFlow unless it is the backend: `python -m pipeline.benchmark --backend B`
sets KERAS_BACKEND before this module imports Keras.
"""

import importlib
import importlib.util
import json
import pathlib
import statistics
import sys
import types

from pipeline.bench.peer import describe, torch_peer
from pipeline.bench.step import bare_model, device_description, loss_curve, random_batch, time_steps, trainer_steps
from pipeline.bench.timing import fmt

BACKENDS = ("jax", "tensorflow", "torch")
PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")
GROUPED_CONV = ("auto", "towers", "native")
LRN_IMPLEMENTATIONS = ("auto", "banded", "windowed", "cudnn")


class Report:
    """Prints each measurement as it comes and keeps them all, rewriting the JSON file (if any) after each."""

    def __init__(self, path, out=print):
        self.path, self.out = path, out
        self.results = {"steps": [], "torch": [], "loss_curves": []}

    def add(self, kind, result, line):
        self.results[kind].append(result)
        self.out(line)
        self.save()

    def save(self):
        if self.path:
            pathlib.Path(self.path).write_text(json.dumps(self.results, indent=1) + "\n")


def _peer_rows(args, config, report):
    on_cpu = True
    for precision in dict.fromkeys("float32" if p == "float32" else "bfloat16" for p in args.precision):
        for batch_size in args.batch_size:
            for compile in (False, True):
                if compile and not args.torch_compile and (args.torch_compile is False or on_cpu):
                    continue  # by default torch.compile on a GPU only (on a CPU it compiles for minutes)
                result = torch_peer(config.model, config.data.image_size, batch_size, args.steps, args.warmup,
                                    args.repeats, args.num_classes, precision, compile)  # fmt: skip
                on_cpu = result.get("device", "cpu") == "cpu"
                how = f"PyTorch {'torch.compile' if compile else 'eager':<13} {precision:<14} batch {batch_size:>4}"
                row = dict(result, batch_size=batch_size, compiled=compile)
                if "error" in result:
                    report.add("torch", row, f"{how}  not measured: {result['error']}")
                else:
                    report.add("torch", row, f"{how}  {fmt(result['images_per_second'], 'images/s', 0)}; "
                                             f"{describe(result)}")  # fmt: skip


def _step_rows(args, config, report):
    from model_defs.flops import training_flops  # imports Keras: on the backend chosen by now

    lrn_forms = args.lrn_implementation if config.model.lrn else ["auto"]
    # One tower has no grouped form to choose.
    grouped_forms = args.grouped_conv if config.model.groups == 2 else args.grouped_conv[:1]
    for precision in args.precision:
        for batch_size in args.batch_size:
            for grouped_conv in grouped_forms:
                for lrn_implementation in lrn_forms:
                    variant = config.derive({"train.precision": precision, "model.grouped_conv": grouped_conv})
                    model = bare_model(variant, args.num_classes, lrn_implementation, args.jit)
                    images, labels = random_batch(batch_size, config.data.image_size, args.num_classes, config.seed)
                    rates = time_steps(trainer_steps(model, images, labels), batch_size, args.steps, args.warmup,
                                       args.repeats)  # fmt: skip
                    flops = training_flops(model)
                    tflops = statistics.median(rates) * flops / 1e12
                    row = dict(precision=precision, batch_size=batch_size, grouped_conv=grouped_conv,
                               lrn_implementation=lrn_implementation, images_per_second=rates,
                               training_flops=flops, tflops=tflops)  # fmt: skip
                    how = f"{precision:<14} batch {batch_size:>4}  {grouped_conv:<6} LRN {lrn_implementation:<8}"
                    report.results["tensorflow_loaded"] = isinstance(sys.modules.get("tensorflow"), types.ModuleType)
                    report.add("steps", row, f"{how}  {fmt(rates, 'images/s', 0)}  {tflops:.2f} TFLOP/s "
                                             f"({flops / 1e9:.3f} GFLOP/image)")  # fmt: skip


def _loss_rows(args, config, report):
    for precision in args.precision:
        variant = config.derive({"train.precision": precision})
        losses = loss_curve(variant, args.num_classes, args.loss_steps, args.loss_batch_size, args.jit)
        shown = {k: round(losses[k], 4) for k in range(0, len(losses), 10)}
        row = dict(precision=precision, batch_size=args.loss_batch_size, losses=losses, every_10=shown)
        report.results["tensorflow_loaded"] = isinstance(sys.modules.get("tensorflow"), types.ModuleType)
        report.add("loss_curves", row, f"loss, {precision:<14} batch {args.loss_batch_size}, step: loss  "
                                       + "  ".join(f"{k}: {v:.4f}" for k, v in shown.items()))  # fmt: skip


def benchmark(args, config, out=print):
    """Runs the measurements the arguments ask for, on the Keras backend this process has chosen.

    For each precision x batch size x grouped-convolution form (x LRN
    implementation) the training images/s of `pipeline.bench.step.bare_model`,
    the median of args.repeats timings (`time_steps`) with its spread, and the
    FLOP rate that makes; before them the PyTorch peer on the same device
    (a JAX process holds most of a GPU's memory until it ends); after them, with
    args.loss_steps, the loss of that many steps on one fixed batch in each
    precision.

    Args:
        args: the command's options (`pipeline.benchmark.parse_backend_args`).
        config: the `Config`: model.*, data.image_size, train.optimizer and seed are read.
        out: where lines go.

    Returns:
        The measurements, as written to args.json: "steps", "torch", "loss_curves"
        lists, the backend, its version, Keras', the device, the options and the model.
    """
    report = Report(args.json, out)
    torch_wanted = args.torch if args.torch is not None else args.timing and importlib.util.find_spec("torch")
    if torch_wanted:
        _peer_rows(args, config, report)
    if not args.timing and not args.loss_steps:
        return report.results

    import keras

    backend = keras.backend.backend()
    version = importlib.import_module(backend).__version__
    report.results.update(backend=backend, backend_version=version, keras=keras.__version__,
                          device=device_description(), args=vars(args), model=config.model.model_dump(mode="json"),
                          image_size=config.data.image_size, seed=config.seed)  # fmt: skip
    m = config.model
    out(
        f"Keras {keras.__version__} on {backend} {version}, {report.results['device']}; AlexNet "
        f"{config.data.image_size}x{config.data.image_size}, groups {m.groups}, widths {m.widths}, "
        f"{'LRN' if m.lrn else 'no LRN'}, fc {m.fc_units}, {args.num_classes} classes"
    )
    if args.timing:
        _step_rows(args, config, report)
    if args.loss_steps:
        _loss_rows(args, config, report)
    return report.results
