"""Training throughput of the configured AlexNet, against what the hardware can do; three modes.

    python -m pipeline.benchmark                                     # TensorFlow: quickstart's model, batch 64
    python -m pipeline.benchmark --precision mixed_bfloat16 --groups 1 --batch-size 128
    python -m pipeline.benchmark --config configs/imagenet2012.yaml --no-fit
    python -m pipeline.benchmark --config configs/imagenet2012.yaml --fit-source records:DIR   # end to end
    python -m pipeline.benchmark --backend jax --config configs/imagenet2012.yaml    # any Keras backend
    python -m pipeline.benchmark --backend jax --set data.image_size=64 --loss-steps 50 --json out.json
    python -m pipeline.benchmark --input [--images DIR]             # the input pipeline alone

The mode options (--backend, --input) may stand anywhere on the line; each
mode's --help lists its options. Exit status as every command (`pipeline.console.cli`).
"""

import argparse
import importlib.util
import os
import sys

from pipeline.bench import input as input_benchmark
from pipeline.bench.backend import (  # imports no Keras
    BACKENDS,
    GROUPED_CONV,
    LRN_IMPLEMENTATIONS,
    PRECISIONS,
    benchmark,
)
from pipeline.config import load_config
from pipeline.console import cli
from pipeline.data.memory import keep_freed_memory
from pipeline.errors import ConfigError

USAGE = __doc__.split("\n\n")[1]

TENSORFLOW_LINES = """
without a mode option: TensorFlow's compiled training step (the one model.fit runs) on one in-memory batch,
each line the median of --repeats timings with their spread:
  matmul        this device's dense matmul rate (GFLOP/s; also in the compute dtype under mixed precision)
  FLOPs/image   training FLOPs of one image from the layer shapes, for groups 2 and 1
  step          the step's images/s, and its FLOP rate over the matmul rate; "paired" divides each timing by
                a matmul timed just before it
  PyTorch       the same step in PyTorch (benchmarks/torch_reference.py, a process of its own), when torch is
                installed and the precision is float32 without jit
  fit           images/s of a real pipeline.train run (tf.data, every callback, the backup) on
                --fit-source, and its ratio to the step timed before and after it
  peak RSS      the process's peak resident memory
  cores used    CPU time over wall time during a timing: well under all cores means other load
"""

BACKEND_LINES = """
with --backend: the configured model (model.*, data.image_size, train.optimizer, seed; default
configs/quickstart.yaml) on that Keras backend, without TensorFlow unless it is the backend, for each
precision x batch size x grouped-convolution form x LRN implementation: training images/s (the Keras
trainer's own step on one batch on the device: the model, PaperSGD and the loss, no metric, no input
pipeline) and TFLOP/s; before them the PyTorch peer (eager; under torch.compile on a GPU or with
--torch-compile); with --loss-steps, the loss every 10 steps of training on one fixed batch (dropout
off). benchmarks/gpu/run.sh runs it on a GPU host that has no TensorFlow.
"""


def _parser(prog, usage, epilog):
    return cli.ArgumentParser(prog=prog, usage=usage, description=__doc__.split("\n")[0] + "\n\n" + USAGE,
                              epilog=epilog, formatter_class=argparse.RawDescriptionHelpFormatter,
                              allow_abbrev=False)  # fmt: skip


def _add_modes(parser):
    modes = parser.add_argument_group("modes (one at most, anywhere on the line)").add_mutually_exclusive_group()
    modes.add_argument("--input", action="store_true",
                       help="the input pipeline alone (its options: python -m pipeline.benchmark --input --help)")
    modes.add_argument("--backend", choices=BACKENDS,
                       help="the model's training step on this Keras backend, needing no TensorFlow unless it is "
                            "the backend (its options: python -m pipeline.benchmark --backend jax --help)")  # fmt: skip


def _add_common(parser, steps, warmup):
    """The options both step benchmarks have; returns their group, for the mode's own options."""
    parser = parser.add_argument_group("the benchmark's options")
    parser.add_argument("--config", action="append", default=[], metavar="YAML",
                        help="experiment file(s), as for pipeline.train. Default: configs/quickstart.yaml")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override one dotted key, e.g. --set model.groups=1 --set model.fc_units=2048")
    parser.add_argument("--steps", type=int, default=steps, help=f"training steps per timing (default {steps})")
    parser.add_argument("--warmup", type=int, default=warmup, help=f"untimed steps first (default {warmup})")
    parser.add_argument("--repeats", type=int, default=3, help="timings per measurement (default 3)")
    parser.add_argument("--torch", action=argparse.BooleanOptionalAction, default=None,
                        help="time the same step in PyTorch too (default: when torch is installed)")
    return parser


def _check_counts(args, *names):
    for name in names:
        cli.check_range(f"--{name.replace('_', '-')}", getattr(args, name), 1)
    cli.check_range("--warmup", args.warmup, 0)


def parse_mode(argv):
    """(input?, backend or None, the other arguments): the mode options, wherever they stand."""
    modes = cli.ArgumentParser(prog="python -m pipeline.benchmark", add_help=False, allow_abbrev=False)
    _add_modes(modes)
    known, rest = modes.parse_known_args(argv)
    return known.input, known.backend, rest


def parse_args(argv=None):
    """The options of the TensorFlow benchmark (no mode option); argv: None reads sys.argv."""
    parser = _parser("python -m pipeline.benchmark", "%(prog)s [--input | --backend BACKEND] [options]",
                     TENSORFLOW_LINES)
    _add_modes(parser)
    options = _add_common(parser, steps=6, warmup=2)
    options.add_argument("--batch-size", type=int, default=64, help="global batch (default 64)")
    options.add_argument("--precision", choices=["float32", "mixed_float16", "mixed_bfloat16"],
                        help="train.precision (default: the config's)")
    options.add_argument("--groups", type=int, choices=[1, 2], help="model.groups (default: the config's)")
    options.add_argument("--jit", action=argparse.BooleanOptionalAction, default=None,
                        help="train.jit_compile (default: the config's)")
    options.add_argument("--no-fit", dest="fit", action="store_false", help="skip the real fit")
    options.add_argument("--fit-source", default="synthetic", metavar="SOURCE",
                        help="data.source of the real fit, e.g. folder:DIR or records:DIR for the end-to-end "
                             "ratio with real JPEGs (default: synthetic, in memory)")
    args = parser.parse_args(argv)
    _check_counts(args, "batch_size", "repeats", "steps")
    return args


def parse_backend_args(argv=None):
    """The options of `--backend B`; the model comes from --config/--set as for every command."""
    parser = _parser("python -m pipeline.benchmark --backend BACKEND",
                     f"python -m pipeline.benchmark --backend {{{','.join(BACKENDS)}}} [options]", BACKEND_LINES)
    parser.add_argument_group("mode").add_argument("--backend", choices=BACKENDS, required=True,
                                                   help="the Keras backend")  # fmt: skip
    options = _add_common(parser, steps=20, warmup=3)
    options.add_argument("--precision", nargs="+", choices=PRECISIONS, default=["mixed_bfloat16", "float32"],
                        help="policies to time (default: mixed_bfloat16 float32)")
    options.add_argument("--batch-size", nargs="+", type=int, default=[128, 512], help="default: 128 512")
    options.add_argument("--grouped-conv", nargs="+", choices=GROUPED_CONV, default=["towers", "native"],
                        help="forms of the grouped convolutions to time, in place of model.grouped_conv "
                             "(default: towers native; the first only with model.groups 1)")
    options.add_argument("--lrn-implementation", nargs="+", choices=LRN_IMPLEMENTATIONS, default=["auto"],
                        help="LRN forms to time (default: the backend's choice for the device)")
    options.add_argument("--num-classes", type=int, default=1000, help="width of fc8 (default 1000)")
    options.add_argument("--jit", action=argparse.BooleanOptionalAction, default=None,
                        help="compile with XLA (default: Keras' choice, which is XLA on JAX)")
    options.add_argument("--torch-compile", action=argparse.BooleanOptionalAction, default=None,
                        help="also time the peer under torch.compile (default: when the peer runs on a GPU)")
    options.add_argument("--loss-steps", type=int, default=0, metavar="N",
                        help="also train N steps on one fixed batch per precision and print the loss curve")
    options.add_argument("--loss-batch-size", type=int, default=32, help="batch of the loss check (default 32)")
    options.add_argument("--no-timing", dest="timing", action="store_false",
                        help="time nothing in Keras (the loss check, or the PyTorch peer, alone)")
    options.add_argument("--json", metavar="PATH", help="write every measurement to this JSON file, as they come")
    args = parser.parse_args(argv)
    cli.check_range("--batch-size", min(args.batch_size), 1)
    _check_counts(args, "repeats", "steps", "num_classes", "loss_batch_size")
    cli.check_range("--loss-steps", args.loss_steps, 0)
    return args


def _run_tensorflow(argv):
    args = parse_args(argv)
    overrides = list(args.set) + [f"train.batch_size={args.batch_size}"]
    if args.precision:
        overrides.append(f"train.precision={args.precision}")
    if args.groups:
        overrides.append(f"model.groups={args.groups}")
    if args.jit is not None:
        overrides.append(f"train.jit_compile={str(args.jit).lower()}")
    config = load_config(args.config, overrides)
    keep_freed_memory()  # before TensorFlow loads: the fit reads records through the input pipeline
    from pipeline.bench.report import benchmark

    benchmark(config, args.batch_size, args.repeats, args.steps, args.warmup, fit=args.fit, torch=args.torch,
              fit_source=args.fit_source)  # fmt: skip


def _run_backend(argv):
    args = parse_backend_args(argv)
    config = load_config(args.config, args.set)
    loaded = sys.modules.get("keras")
    if loaded is not None and loaded.backend.backend() != args.backend:
        raise ConfigError(f"--backend {args.backend}: Keras is loaded with {loaded.backend.backend()} in this "
                              "process already; run the benchmark in a new process")  # fmt: skip
    if importlib.util.find_spec(args.backend) is None:
        raise ConfigError(f"--backend {args.backend}: {args.backend} is not installed")
    os.environ["KERAS_BACKEND"] = args.backend  # read when Keras is imported

    benchmark(args, config)


@cli.command
def main(argv=None):
    """Runs the benchmark the arguments ask for; returns the exit status (`pipeline.console.cli`)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    use_input, backend, rest = parse_mode(argv)
    if use_input:

        return input_benchmark.main(rest)
    if backend:
        return _run_backend(argv)
    return _run_tensorflow(argv)


if __name__ == "__main__":
    sys.exit(main())
