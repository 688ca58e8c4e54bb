"""The TensorFlow training benchmark: the step against the matmul ceiling, the PyTorch peer, a real fit.

`python -m pipeline.benchmark` prints the lines (its --help says what each
means); `benchmark` returns the measurements as a dict too.
"""

import contextlib
import importlib.util
import io
import os
import pathlib
import resource
import statistics
import tempfile

import keras
import tensorflow as tf
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from model_defs import keras_private
from model_defs.flops import training_flops
from pipeline.bench.peer import describe, torch_peer
from pipeline.bench.step import random_batch, time_steps, trainer_steps
from pipeline.bench.timing import MATMUL_SIZES, CoreMeter, best_matmul, fmt, matmul_rate
from pipeline.training import run as training_run
from pipeline.training.hardware import resolve, visible_devices
from pipeline.training.model import build_model, compile_model, precision_note


def step_rate(config, batch_size, steps, warmup, repeats, num_classes=1000, meter=None, beside=None):
    """Training images/s of the model `pipeline.train` compiles, its step timed by `pipeline.bench.step`.

    The model and optimizer alone: one in-memory batch, no input pipeline,
    no callbacks.

    Args:
        config: the `Config` (model, precision, jit).
        batch_size: images per step.
        steps: steps per timing.
        warmup: untimed steps first.
        repeats: timings.
        num_classes: width of fc8.
        meter: a `CoreMeter` to charge the timed steps to.
        beside: a function called (untimed) before each timing (`time_steps`).

    Returns:
        (list of images/s, the model).
    """


    keras.utils.set_random_seed(config.seed)
    model = compile_model(build_model(config, num_classes), config, num_classes)
    run = trainer_steps(model, *random_batch(batch_size, config.data.image_size, num_classes, config.seed))
    return time_steps(run, batch_size, steps, warmup, repeats, meter, beside), model


def fit_rate(config, batch_size, steps, repeats, num_classes=1000, meter=None, source="synthetic"):
    """Training images/s of a real `pipeline.train` run on the synthetic source (or another).

    Args:
        config: the `Config` (data, model, precision, jit; data.source is replaced
            by `source`).
        batch_size: global batch.
        steps: steps per epoch.
        repeats: timed epochs (one more runs first, untimed: it traces the step).
        num_classes: classes of the synthetic data (width of fc8).
        meter: a `CoreMeter` to charge the run to (all of it: tracing,
            validation and backups too).
        source: a `data.source`; anything but "synthetic" is read as training
            reads it, without the cache (each epoch decodes its files again)
            and with the source's own classes.

    Returns:
        A list of images/s, one per timed epoch (the trainer's own measure).
    """
    if source == "synthetic":
        updates = {"data.source": "synthetic", "data.num_examples": steps * batch_size, "data.num_classes": num_classes}
    else:
        updates = {"data.source": source, "data.cache": False}
    run_config = config.derive({
        **updates, "train.batch_size": batch_size, "train.epochs": repeats + 1, "train.steps_per_epoch": steps,
        "train.validation_steps": 1, "train.verbose": 0, "export.keras": False, "export.saved_model": False,
    })  # fmt: skip
    meter = meter or CoreMeter()
    with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stdout(io.StringIO()):
        with meter.measure():
            training_run.train(run_config, pathlib.Path(tmp) / "run")

        events = EventAccumulator(str(pathlib.Path(tmp) / "run" / "logs" / "train"), size_guidance={"tensors": 0})
        events.Reload()
        rates = [float(tf.make_ndarray(e.tensor_proto)) for e in events.Tensors("epoch_images_per_second")]
    return rates[1:]


def _peak_rss_gib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux: KiB


def _variant_flops(config, num_classes):

    flops = {}
    for groups in (2, 1):
        variant = config.derive({"model.groups": groups, "train.precision": "float32"})
        flops[groups] = training_flops(build_model(variant, num_classes))
    return flops


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
        A dict of the measurements (lists, one entry per timing, and single values).
    """

    # auto (precision, XLA) as a training run on these devices would choose it.
    config, choices = resolve(config, visible_devices())
    results = {}
    _describe_setup(config, batch_size, num_classes, out)
    for line in choices:
        out(line)
    ceiling = _ceiling(config, repeats, out, results)
    variants = _variant_flops(config, num_classes)
    out(
        f"training FLOPs/image    {variants[2] / 1e9:.3f} GFLOP (groups 2, the paper), "
        f"{variants[1] / 1e9:.3f} GFLOP (groups 1)"
    )
    steps_per_s = _step(config, batch_size, steps, warmup, repeats, num_classes, ceiling, out, results)
    t = config.train
    if torch is None:

        torch = importlib.util.find_spec("torch") is not None and t.precision == "float32" and not t.jit_compile
    if torch:
        _torch(config, batch_size, steps, warmup, repeats, num_classes, steps_per_s, out, results)
    if fit:
        _fit(config, batch_size, steps, warmup, repeats, num_classes, fit_source, steps_per_s, out, results)
    results["peak_rss_gib"] = _peak_rss_gib()
    out(f"peak RSS                {results['peak_rss_gib']:.2f} GiB")
    return results


def _describe_setup(config, batch_size, num_classes, out):
    """The model, batch, precision and device lines (and the CPU kernels, or a precision warning)."""


    t = config.train
    out(
        f"AlexNet {config.data.image_size}x{config.data.image_size}, groups {config.model.groups}, "
        f"widths {config.model.widths}, fc {config.model.fc_units}, {num_classes} classes; "
        f"batch {batch_size}, precision {t.precision}, jit_compile {t.jit_compile}"
    )
    devices = [d.name for d in tf.config.list_logical_devices()]
    on_gpu = any("GPU" in name for name in devices)
    out(f"Device: {', '.join(devices)}")
    note = precision_note(t.precision, on_gpu)
    if note:
        out(note)
    if not on_gpu:
        kernels = "oneDNN" if keras_private.onednn_enabled() else "Eigen"
        out(f"CPU kernels: {kernels} (TF_ENABLE_ONEDNN_OPTS={os.environ.get('TF_ENABLE_ONEDNN_OPTS', 'unset')})")


def _ceiling(config, repeats, out, results):
    """The matmul ceiling: (peak GFLOP/s, the faster matrix size, the compute dtype under mixed precision)."""
    matmul_cores = CoreMeter()
    matmul_sizes = {}
    with matmul_cores.measure():
        matmul = best_matmul("float32", repeats, out, matmul_sizes)
    results["matmul_gflops"] = matmul
    out(matmul_cores.describe())
    compute_dtype = {"mixed_float16": "float16", "mixed_bfloat16": "bfloat16"}.get(config.train.precision)
    peak = statistics.median(matmul)
    if compute_dtype:
        half = best_matmul(compute_dtype, repeats, out, matmul_sizes)
        results[f"matmul_{compute_dtype}_gflops"] = half
        peak = max(peak, statistics.median(half))
    return peak, matmul_sizes[compute_dtype or "float32"], compute_dtype


def _step(config, batch_size, steps, warmup, repeats, num_classes, ceiling, out, results):
    """The step's images/s and its fraction of the matmul rate, also paired with a matmul timed just before."""

    peak, peak_size, compute_dtype = ceiling
    # A matmul timed just before each step timing: on a shared machine the
    # speed drifts, and the pair sees the same state.
    paired = []

    def beside():
        rates = [matmul_rate(dtype, size=peak_size, repeats=1, per_repeat=MATMUL_SIZES[peak_size])[0]
                 for dtype in ("float32", compute_dtype) if dtype]
        paired.append(max(rates))

    step_cores = CoreMeter()
    steps_per_s, model = step_rate(config, batch_size, steps, warmup, repeats, num_classes, step_cores, beside)
    flops = training_flops(model)
    del model
    keras.backend.clear_session()
    achieved = [rate * flops / 1e9 for rate in steps_per_s]
    fractions = [a / m for a, m in zip(achieved, paired)]
    results.update(
        step_images_per_second=steps_per_s, step_cores=step_cores.cores, training_flops=flops, peak_gflops=peak,
        paired_matmul_gflops=paired, peak_fractions=fractions,
    )
    out(f"step (in-memory batch)  {fmt(steps_per_s, 'images/s')}")
    out(step_cores.describe())
    out(
        f"  = {statistics.median(achieved):.1f} GFLOP/s = {statistics.median(achieved) / peak:.2f} of the "
        f"{'best ' if compute_dtype else ''}matmul rate"
    )
    out(
        f"  paired with a matmul ({peak_size}) timed before each repeat: {fmt(fractions, 'of the matmul rate', 2)}"
    )
    results["step_peak_rss_gib"] = _peak_rss_gib()
    out(f"  peak RSS so far         {results['step_peak_rss_gib']:.2f} GiB")
    return steps_per_s


def _torch(config, batch_size, steps, warmup, repeats, num_classes, steps_per_s, out, results):
    """The PyTorch peer's step (float32), and ours against it."""
    result = torch_peer(config.model, config.data.image_size, batch_size, steps, warmup, repeats, num_classes)
    if "error" in result:
        out(f"PyTorch step            not measured: {result['error']}")
        return
    torch_per_s = result["images_per_second"]
    results["torch_images_per_second"] = torch_per_s
    ratio = statistics.median(steps_per_s) / statistics.median(torch_per_s)
    out(f"PyTorch step (same net) {fmt(torch_per_s, 'images/s')}; {describe(result)}")
    out(f"  our step = {ratio:.2f}x PyTorch's")


def _fit(config, batch_size, steps, warmup, repeats, num_classes, fit_source, steps_per_s, out, results):
    """A real training run's images/s, against the step timed before and after it."""

    fit_cores = CoreMeter()
    fit_per_s = fit_rate(config, batch_size, steps, repeats, num_classes, fit_cores, source=fit_source)
    results["fit_images_per_second"] = fit_per_s
    out(f"fit (pipeline.train)    {fmt(fit_per_s, 'images/s')} on data.source={fit_source}")
    out(fit_cores.describe(" over the whole run (tracing, validation, backups included)", warn=False))
    # The step again, so that a drift of the machine's speed during the
    # fit shows up in the step's spread instead of in the ratio alone.
    again, model = step_rate(config, batch_size, steps, warmup, repeats, num_classes)
    del model
    keras.backend.clear_session()
    results["step_after_fit_images_per_second"] = again
    out(f"step again after fit    {fmt(again, 'images/s')}")
    reference = statistics.median(steps_per_s + again)
    ratio = statistics.median(fit_per_s) / reference
    worst = min(fit_per_s) / reference
    out(f"  fit = {ratio:.2f} of the step before and after (worst epoch {worst:.2f})")
