"""Training throughput of the configured AlexNet, against what the hardware can do.

    python -m pipeline.benchmark                                  # configs/quickstart.yaml's model, batch 64
    python -m pipeline.benchmark --precision mixed_bfloat16 --groups 1 --batch-size 128
    python -m pipeline.benchmark --config configs/imagenet2012.yaml --set data.image_size=224 --no-fit
    python -m pipeline.benchmark --config configs/imagenet2012.yaml --fit-source records:DIR   # end to end
    python -m pipeline.benchmark --input [--images DIR]     # the input pipeline alone (pipeline.bench.input)
    python -m pipeline.benchmark --backend jax [...]        # the model's step on a Keras backend, no TensorFlow
                                                            # (pipeline.bench.step)

The figures are measured by `pipeline.bench.report` (the training step against
the matmul ceiling, a real fit, the PyTorch peer), `pipeline.bench.input` and
`pipeline.bench.step`.

Prints, each as the median of --repeats timings with their spread (min-max):

  matmul        the dense matmul rate of this device measured in this process
                (GFLOP/s; float32, and the compute dtype under mixed precision;
                square matrices of 2048 and 4096, the faster size counts):
                the practical ceiling for a network made of convolutions and
                fully-connected layers.
  FLOPs/image   training FLOPs of one image, computed from the layer shapes:
                2 x (multiply-adds of every convolution and dense layer) per
                forward pass, times 3 for forward + backward (the gradient with
                respect to the activations and to the weights each cost about
                one forward), except conv1, whose input (the images) needs no
                gradient: times 2. Given for the configured variant, the
                paper's two groups and the single tower.
  step          training images/s of the compiled training step (the one
                model.fit runs) on one in-memory batch, after warm-up, no
                callbacks: the model and optimizer alone. Its FLOP rate over
                the matmul rate is the "fraction of peak"; it is also given
                paired, each step timing over a matmul timed just before it,
                which a drift of a shared machine's speed does not skew.
  fit           training images/s of a real `python -m pipeline.train` run
                (model.fit, the tf.data input pipeline on the synthetic source,
                every callback, TensorBoard, the per-epoch backup), measured by
                the same per-epoch figure the trainer logs; its ratio to `step`
                is what the input pipeline and callbacks cost, against the
                step timed both before and after the fit. --fit-source
                reads real images instead (folder:, records:, tfds:), the
                end-to-end ratio.
  PyTorch       the same network and optimizer step in PyTorch
                (benchmarks/torch_reference.py in the project's checkout),
                timed the same way in a separate process, on the GPU when
                there is one, when torch is installed; with the ratio of
                our step to it. Not for mixed precision or jit.
  peak RSS      the process's peak resident memory.
  cores used    CPU time of this process over wall time during a timing. On
                a machine shared with other jobs it falls (to 1.0 of 2 cores
                when another job keeps two threads busy: the scheduler shares
                cores per thread), and the images/s fall with it; a figure
                measured at well under all cores understates the hardware.

Every figure depends on the other load on the machine: run it on an idle one.
"""

import argparse
import sys

from pipeline.config import load_config
from pipeline.console import cli


def parse_args(argv=None):
    parser = cli.ArgumentParser(prog="python -m pipeline.benchmark", description=__doc__.split("\n")[0])
    parser.add_argument("--config", action="append", default=[], metavar="YAML",
                        help="experiment file(s), as for pipeline.train. Default: configs/quickstart.yaml")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override one dotted key")
    parser.add_argument("--batch-size", type=int, default=64, help="global batch (default 64)")
    parser.add_argument("--repeats", type=int, default=3, help="timings per figure (default 3)")
    parser.add_argument("--steps", type=int, default=6, help="training steps per timing (default 6)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first (default 2)")
    parser.add_argument("--precision", choices=["float32", "mixed_float16", "mixed_bfloat16"],
                        help="train.precision (default: the config's)")
    parser.add_argument("--groups", type=int, choices=[1, 2], help="model.groups (default: the config's)")
    parser.add_argument("--jit", action=argparse.BooleanOptionalAction, default=None,
                        help="train.jit_compile (default: the config's)")
    parser.add_argument("--no-fit", dest="fit", action="store_false", help="skip the real-fit figure")
    parser.add_argument("--fit-source", default="synthetic", metavar="SOURCE",
                        help="data.source of the real-fit figure, e.g. folder:DIR or records:DIR for the end-to-end "
                             "ratio with real JPEGs (default: synthetic, in memory)")
    parser.add_argument("--torch", action=argparse.BooleanOptionalAction, default=None,
                        help="time the same step in PyTorch (default: when torch is installed)")
    args = parser.parse_args(argv)
    for name in ("batch_size", "repeats", "steps"):
        cli.check_range(f"--{name.replace('_', '-')}", getattr(args, name), 1)
    cli.check_range("--warmup", args.warmup, 0)
    return args


@cli.command
def main(argv=None):
    """Runs the benchmark the arguments ask for; returns the exit status (`pipeline.console.cli`)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["--input"]:
        from pipeline.bench import input as input_benchmark

        return input_benchmark.main(argv[1:])
    if any(arg == "--backend" or arg.startswith("--backend=") for arg in argv):
        # The model's step on a Keras backend chosen here, before anything imports Keras or TensorFlow.
        from pipeline.bench import step

        return step.main(argv)
    args = parse_args(argv)
    overrides = list(args.set) + [f"train.batch_size={args.batch_size}"]
    if args.precision:
        overrides.append(f"train.precision={args.precision}")
    if args.groups:
        overrides.append(f"model.groups={args.groups}")
    if args.jit is not None:
        overrides.append(f"train.jit_compile={str(args.jit).lower()}")
    config = load_config(args.config, overrides)
    from pipeline.bench.report import benchmark

    benchmark(
        config, args.batch_size, args.repeats, args.steps, args.warmup, fit=args.fit, torch=args.torch,
        fit_source=args.fit_source,
    )


if __name__ == "__main__":
    sys.exit(main())
