"""Training throughput of the configured AlexNet, against what the hardware can do.

    python -m pipeline.benchmark                                  # configs/quickstart.yaml's model, batch 64
    python -m pipeline.benchmark --precision mixed_bfloat16 --groups 1 --batch-size 128
    python -m pipeline.benchmark --config configs/imagenet2012.yaml --set data.image_size=224 --no-fit
    python -m pipeline.benchmark --config configs/imagenet2012.yaml --fit-source records:DIR   # end to end
    python -m pipeline.benchmark --input [--images DIR]     # the input pipeline alone (pipeline.input_benchmark)
    python -m pipeline.benchmark --backend jax [...]        # the model's step on a Keras backend, no TensorFlow
                                                            # (pipeline.bench.step)

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
import contextlib
import io
import os
import pathlib
import resource
import statistics
import sys
import tempfile
import time

from pipeline import cli
from pipeline.config import load_config


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


def _layer_forward_flops(layer):
    """2 x multiply-adds of one layer's forward pass for one image (0 for other layers)."""
    import keras

    kernel = getattr(layer, "kernel", None)
    if kernel is None:
        return 0
    weights = 1
    for size in kernel.shape:
        weights *= int(size)
    if isinstance(layer, keras.layers.Conv2D):
        # Each output position applies the whole kernel: (kh*kw*cin/groups) x cout
        # multiply-adds (a grouped kernel is stored as (kh, kw, cin/groups, cout)).
        height, width = layer.output.shape[1:3]
        return 2 * int(height) * int(width) * weights
    if isinstance(layer, keras.layers.Dense):
        return 2 * weights
    return 0


def forward_flops(model):
    """Forward FLOPs of one image: 2 x multiply-adds of every convolution and dense layer.

    Args:
        model: a built functional model (channels-last convolutions).

    Returns:
        The count as an int. Biases, ReLU, LRN, pooling and the loss are left
        out (well under 1 % for AlexNet).
    """
    return sum(_layer_forward_flops(layer) for layer in model.layers)


def training_flops(model):
    """Training FLOPs of one image: forward, gradient of the activations, gradient of the weights.

    Each of the three costs about one forward pass per layer, except that no
    gradient flows into the first weighted layer's input (the images), so
    conv1 costs two forward passes, not three.

    Args:
        model: a built functional model (channels-last convolutions).

    Returns:
        The count as an int.
    """
    total, first = 0, True
    for layer in model.layers:
        flops = _layer_forward_flops(layer)
        if flops:
            total += (2 if first else 3) * flops
            first = False
    return total


def _median_spread(values):
    return statistics.median(values), min(values), max(values)


def _fmt(values, unit, digits=1):
    median, low, high = _median_spread(values)
    return f"{median:.{digits}f} {unit} (spread {low:.{digits}f}-{high:.{digits}f}, {len(values)} runs)"


class _CoreMeter:
    """Cores this process kept busy (CPU time / wall time) over the timings it wraps."""

    def __init__(self):
        self.cpu = self.wall = 0.0

    @contextlib.contextmanager
    def measure(self):
        cpu, wall = time.process_time(), time.perf_counter()
        try:
            yield
        finally:
            self.cpu += time.process_time() - cpu
            self.wall += time.perf_counter() - wall

    @property
    def cores(self):
        return self.cpu / self.wall if self.wall else float("nan")

    def describe(self, what="", warn=True):
        available = len(os.sched_getaffinity(0))
        note = "  <- other load on the machine? (see --help)" if warn and self.cores < 0.8 * available else ""
        return f"  used {self.cores:.2f} of {available} cores{what}{note}"


def matmul_rate(dtype="float32", size=2048, repeats=3, per_repeat=4):
    """Measured dense matmul rate of the default device.

    Args:
        dtype: "float32", "float16" or "bfloat16".
        size: square matrix size.
        repeats: timings.
        per_repeat: matmuls per timing.

    Returns:
        A list of GFLOP/s, one per timing.
    """
    import tensorflow as tf

    a = tf.random.uniform((size, size), dtype=tf.float32)
    a, b = tf.cast(a, dtype), tf.cast(tf.transpose(a), dtype)
    # Eager calls, one op each: inside a tf.function, identical matmuls of
    # constants would be merged or folded by the graph optimiser.
    tf.matmul(a, b).numpy()  # warm up (kernel selection, allocation)
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(per_repeat):
            product = tf.matmul(a, b)
        product.numpy()
        rates.append(2 * size**3 * per_repeat / (time.perf_counter() - start) / 1e9)
    return rates


# Matrix size -> matmuls per timing: the same work per timing at both sizes.
_MATMUL_SIZES = {2048: 8, 4096: 1}


def _best_matmul(dtype, repeats, out, sizes=None):
    """The matmul rate at 2048 and at 4096 (the same work per timing); prints both, returns the faster size's list.

    Which size runs closer to the peak depends on the kernels and caches
    (Eigen here is faster at 2048, oneDNN at 4096), so the ceiling is the
    better of the two; `sizes[dtype]` is set to it.
    """
    best = None
    for size, per_repeat in _MATMUL_SIZES.items():
        rates = matmul_rate(dtype, size=size, repeats=repeats, per_repeat=per_repeat)
        out(f"matmul {dtype:<8} {size:>4}    {_fmt(rates, 'GFLOP/s')}")
        if best is None or statistics.median(rates) > statistics.median(best):
            best = rates
            if sizes is not None:
                sizes[dtype] = size
    return best


def step_rate(config, batch_size, steps, warmup, repeats, num_classes=1000, meter=None, beside=None):
    """Training images/s of the model's compiled training step on one in-memory batch.

    The step is the one `model.fit` runs (`model.train_function` over a
    dataset iterator), fed one batch repeated from memory, with no callbacks:
    the model and optimizer alone. (`train_on_batch` adds Python overhead
    per call, about a tenth of a step here.)

    Args:
        config: the `Config` (model, precision, jit).
        batch_size: images per step.
        steps: steps per timing.
        warmup: untimed steps first.
        repeats: timings.
        num_classes: width of fc8.
        meter: a `_CoreMeter` to charge the timed steps to.
        beside: a function called (untimed) before each timing, e.g. a matmul
            timing, so that both see the machine in the same state.

    Returns:
        (list of images/s, the model).
    """
    import keras
    import tensorflow as tf

    from pipeline import train

    keras.utils.set_random_seed(config.seed)
    model = train.compile_model(train.build_model(config, num_classes), config, num_classes)
    size = config.data.image_size
    images = tf.random.uniform((batch_size, size, size, 3), 0, 255)
    labels = tf.random.uniform((batch_size,), 0, num_classes, dtype=tf.int32)
    model.train_on_batch(images, labels)  # builds the metrics and optimizer, traces the step
    iterator = iter(tf.data.Dataset.from_tensors((images, labels)).repeat())
    for _ in range(warmup):
        logs = model.train_function(iterator)
    float(logs["loss"])
    rates = []
    meter = meter or _CoreMeter()
    for _ in range(repeats):
        if beside is not None:
            beside()
        with meter.measure():
            start = time.perf_counter()
            for _ in range(steps):
                logs = model.train_function(iterator)
            float(logs["loss"])  # wait for the last step
            rates.append(steps * batch_size / (time.perf_counter() - start))
    return rates, model


def fit_rate(config, batch_size, steps, repeats, num_classes=1000, meter=None, source="synthetic"):
    """Training images/s of a real `pipeline.train` run on the synthetic source (or another).

    Args:
        config: the `Config` (data, model, precision, jit; data.source is replaced
            by `source`).
        batch_size: global batch.
        steps: steps per epoch.
        repeats: timed epochs (one more runs first, untimed: it traces the step).
        num_classes: classes of the synthetic data (width of fc8).
        meter: a `_CoreMeter` to charge the run to (all of it: tracing,
            validation and backups too).
        source: a `data.source`; anything but "synthetic" is read as training
            reads it, without the cache (each epoch decodes its files again)
            and with the source's own classes.

    Returns:
        A list of images/s, one per timed epoch (the trainer's own figure).
    """
    from pipeline import train
    from pipeline.config import build_config

    data = config.to_dict()
    if source == "synthetic":
        data["data"].update(source="synthetic", num_examples=steps * batch_size, num_classes=num_classes)
    else:
        data["data"].update(source=source, cache=False)
    data["train"].update(
        batch_size=batch_size, epochs=repeats + 1, steps_per_epoch=steps, validation_steps=1, verbose=0
    )
    data["export"].update(keras=False, saved_model=False)
    run_config = build_config(data)
    meter = meter or _CoreMeter()
    with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stdout(io.StringIO()):
        with meter.measure():
            train.train(run_config, pathlib.Path(tmp) / "run")
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
        import tensorflow as tf

        events = EventAccumulator(str(pathlib.Path(tmp) / "run" / "logs" / "train"), size_guidance={"tensors": 0})
        events.Reload()
        rates = [float(tf.make_ndarray(e.tensor_proto)) for e in events.Tensors("epoch_images_per_second")]
    return rates[1:]


def _peak_rss_gib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux: KiB


def _variant_flops(config, num_classes):
    from pipeline import train
    from pipeline.config import build_config

    figures = {}
    for groups in (2, 1):
        data = config.to_dict()
        data["model"]["groups"] = groups
        data["train"]["precision"] = "float32"
        figures[groups] = training_flops(train.build_model(build_config(data), num_classes))
    return figures


def torch_rate(config, batch_size, steps, warmup, repeats, num_classes=1000):
    """images/s of the PyTorch reference step (a subprocess), or None with the reason when it cannot run."""
    import json
    import subprocess

    root = pathlib.Path(__file__).resolve().parents[1]
    if not (root / "benchmarks" / "torch_reference.py").is_file():
        return None, "benchmarks/torch_reference.py is not here: the peer runs from the project's checkout"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")])))
    command = [
        sys.executable, "-m", "benchmarks.torch_reference",
        "--image-size", str(config.data.image_size), "--batch-size", str(batch_size),
        "--groups", str(config.model.groups), "--steps", str(steps), "--warmup", str(warmup),
        "--repeats", str(repeats), "--num-classes", str(num_classes),
        "--widths", config.model.widths, "--fc-units", str(config.model.fc_units),
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if not lines:
        return None, f"benchmarks.torch_reference failed: {done.stderr.strip().splitlines()[-1:]}"
    result = json.loads(lines[-1])
    if "error" in result:
        return None, result["error"]
    return result["images_per_second"], f"torch {result['torch']} on {result['device']}, {result['threads']} threads"


def benchmark(
    config, batch_size=64, repeats=3, steps=6, warmup=2, fit=True, num_classes=1000, out=print, torch=None,
    fit_source="synthetic",
):
    """Runs every measurement and prints the report.

    Args:
        config: the `Config` to measure.
        batch_size, repeats, steps, warmup: see the command-line options.
        fit: also time a real `pipeline.train` run.
        fit_source: data.source of the real fit.
        torch: also time the PyTorch reference step (None: when torch is
            installed and the model is float32 without jit).
        num_classes: width of fc8.
        out: where lines go.

    Returns:
        A dict of the figures (medians and lists).
    """
    import keras
    import tensorflow as tf

    t = config.train
    out(
        f"AlexNet {config.data.image_size}x{config.data.image_size}, groups {config.model.groups}, "
        f"widths {config.model.widths}, fc {config.model.fc_units}, {num_classes} classes; "
        f"batch {batch_size}, precision {t.precision}, jit_compile {t.jit_compile}"
    )
    devices = [d.name for d in tf.config.list_logical_devices()]
    on_gpu = any("GPU" in name for name in devices)
    out(f"Device: {', '.join(devices)}")
    from pipeline.train import precision_note

    note = precision_note(t.precision, on_gpu)
    if note:
        out(note)
    from tensorflow.python.util import _pywrap_util_port

    if not on_gpu:
        onednn = _pywrap_util_port.IsMklEnabled()
        out(f"CPU kernels: {'oneDNN' if onednn else 'Eigen'} (TF_ENABLE_ONEDNN_OPTS={os.environ.get('TF_ENABLE_ONEDNN_OPTS', 'unset')})")
    figures = {}
    matmul_cores = _CoreMeter()
    matmul_sizes = {}
    with matmul_cores.measure():
        matmul = _best_matmul("float32", repeats, out, matmul_sizes)
    figures["matmul_gflops"] = matmul
    out(matmul_cores.describe())
    compute_dtype = {"mixed_float16": "float16", "mixed_bfloat16": "bfloat16"}.get(t.precision)
    peak = statistics.median(matmul)
    if compute_dtype:
        half = _best_matmul(compute_dtype, repeats, out, matmul_sizes)
        figures[f"matmul_{compute_dtype}_gflops"] = half
        peak = max(peak, statistics.median(half))

    variants = _variant_flops(config, num_classes)
    out(
        f"training FLOPs/image    {variants[2] / 1e9:.3f} GFLOP (groups 2, the paper), "
        f"{variants[1] / 1e9:.3f} GFLOP (groups 1)"
    )

    # A matmul timed just before each step timing: on a shared machine the
    # speed drifts, and the pair sees the same state.
    peak_size = matmul_sizes[compute_dtype or "float32"]
    paired = []

    def beside():
        rates = [matmul_rate(dtype, size=peak_size, repeats=1, per_repeat=_MATMUL_SIZES[peak_size])[0]
                 for dtype in ("float32", compute_dtype) if dtype]
        paired.append(max(rates))

    step_cores = _CoreMeter()
    steps_per_s, model = step_rate(config, batch_size, steps, warmup, repeats, num_classes, step_cores, beside)
    flops = training_flops(model)
    del model
    keras.backend.clear_session()
    achieved = [rate * flops / 1e9 for rate in steps_per_s]
    fractions = [a / m for a, m in zip(achieved, paired)]
    figures.update(
        step_images_per_second=steps_per_s, step_cores=step_cores.cores, training_flops=flops, peak_gflops=peak,
        paired_matmul_gflops=paired, peak_fractions=fractions,
    )
    out(f"step (in-memory batch)  {_fmt(steps_per_s, 'images/s')}")
    out(step_cores.describe())
    out(
        f"  = {statistics.median(achieved):.1f} GFLOP/s = {statistics.median(achieved) / peak:.2f} of the "
        f"{'best ' if compute_dtype else ''}matmul rate"
    )
    out(
        f"  paired with a matmul ({peak_size}) timed before each repeat: {_fmt(fractions, 'of the matmul rate', 2)}"
    )
    figures["step_peak_rss_gib"] = _peak_rss_gib()
    out(f"  peak RSS so far         {figures['step_peak_rss_gib']:.2f} GiB")

    if torch is None:
        import importlib.util

        torch = importlib.util.find_spec("torch") is not None and t.precision == "float32" and not t.jit_compile
    if torch:
        torch_per_s, how = torch_rate(config, batch_size, steps, warmup, repeats, num_classes)
        if torch_per_s is None:
            out(f"PyTorch step            not measured: {how}")
        else:
            figures["torch_images_per_second"] = torch_per_s
            ratio = statistics.median(steps_per_s) / statistics.median(torch_per_s)
            out(f"PyTorch step (same net) {_fmt(torch_per_s, 'images/s')}; {how}")
            out(f"  our step = {ratio:.2f}x PyTorch's")

    if fit:
        fit_cores = _CoreMeter()
        fit_per_s = fit_rate(config, batch_size, steps, repeats, num_classes, fit_cores, source=fit_source)
        figures["fit_images_per_second"] = fit_per_s
        out(f"fit (pipeline.train)    {_fmt(fit_per_s, 'images/s')} on data.source={fit_source}")
        out(fit_cores.describe(" over the whole run (tracing, validation, backups included)", warn=False))
        # The step again, so that a drift of the machine's speed during the
        # fit shows up in the step's spread instead of in the ratio alone.
        again, model = step_rate(config, batch_size, steps, warmup, repeats, num_classes)
        del model
        keras.backend.clear_session()
        figures["step_after_fit_images_per_second"] = again
        out(f"step again after fit    {_fmt(again, 'images/s')}")
        reference = statistics.median(steps_per_s + again)
        ratio = statistics.median(fit_per_s) / reference
        worst = min(fit_per_s) / reference
        out(f"  fit = {ratio:.2f} of the step figure before and after (worst epoch {worst:.2f})")
    figures["peak_rss_gib"] = _peak_rss_gib()
    out(f"peak RSS                {figures['peak_rss_gib']:.2f} GiB")
    return figures


@cli.command
def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["--input"]:
        from pipeline import input_benchmark

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
    benchmark(
        config, args.batch_size, args.repeats, args.steps, args.warmup, fit=args.fit, torch=args.torch,
        fit_source=args.fit_source,
    )


if __name__ == "__main__":
    sys.exit(main())
