"""The model factory: the configured AlexNet, compiled with the paper's optimizer and the top-k errors."""

import contextlib
import pathlib

from pipeline.training.hardware import concrete_jit, concrete_precision
from pipeline.training.strategy import scaled_learning_rate


@contextlib.contextmanager
def dtype_policy(name):
    """Sets Keras' global dtype policy for the enclosed block, then restores the previous one.

    Layers take the global policy when they are created, so a model built
    inside the block keeps it; the global itself must not leak into other
    models of the process (tests, the tuner).

    Args:
        name: "float32", "mixed_float16" or "mixed_bfloat16".
    """
    import keras

    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(name)
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)


def build_model(config, num_classes):
    """The AlexNet described by `config.model` and `config.data` (uncompiled).

    The model carries no weight-decay penalty: `compile_model`'s optimizer
    applies `train.optimizer.weight_decay` inside its update (`PaperSGD`).

    Args:
        config: the run's `Config`; `train.precision` sets the layers' dtype
            policy (fc8's logits stay float32, LRN computes in float32); auto is
            chosen for the visible devices (`pipeline.training.hardware`).
        num_classes: width of fc8.

    Returns:
        An uncompiled `keras.Model` with logits out.
    """
    from model_defs.alexnet import build_alexnet

    with dtype_policy(concrete_precision(config.train)):
        # ModelConfig's fields are build_alexnet's keyword arguments, under the same names.
        return build_alexnet(
            num_classes=num_classes, input_size=config.data.image_size, seed=config.seed, **config.model.model_dump()
        )


def compile_model(model, config, num_classes, learning_rate=None):
    """Compiles with the paper's SGD, cross-entropy on logits, and top-1/top-5 error.

    The optimizer is `PaperSGD`: momentum with the weight decay added to each
    kernel's gradient inside the update, as in the paper's update rule. The
    reported loss is therefore the cross-entropy alone, without an L2 term.

    Under mixed_float16 Keras wraps the optimizer in a LossScaleOptimizer
    itself (dynamic loss scaling); the loss is computed on float32 logits.

    Args:
        model: from `build_model` (inside the strategy's scope when distributed).
        config: the run's `Config`.
        num_classes: for the top-5 metric (only with more than 5 classes).
        learning_rate: initial rate; None takes `train.optimizer.learning_rate`
            after `train.lr_scaling`.

    Returns:
        The same model, compiled.
    """
    import keras

    from model_defs.optimizers import PaperSGD
    from pipeline.evaluation.metrics import error_metrics

    opt = config.train.optimizer
    model.compile(
        optimizer=PaperSGD(
            learning_rate=learning_rate or scaled_learning_rate(config.train),
            momentum=opt.momentum,
            nesterov=opt.nesterov,
            coupled_weight_decay=opt.weight_decay,
        ),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=error_metrics(num_classes),
        jit_compile=concrete_jit(config.train),
    )
    return model


def precision_note(precision, has_gpu):
    """A warning line when a mixed precision will be slower than float32, else None.

    On a CPU, half-precision convolutions are fast only with hardware support
    (AVX512_BF16 or AMX for bfloat16, AVX512_FP16 or AMX-FP16 for float16);
    without it TensorFlow converts and falls back to slow paths (measured:
    mixed_bfloat16 about 9x slower than float32 on an AVX2 CPU).

    Args:
        precision: `train.precision`.
        has_gpu: whether training runs on GPUs.
    """
    if precision == "float32" or has_gpu:
        return None
    try:
        flags = set(pathlib.Path("/proc/cpuinfo").read_text().split())
    except OSError:
        return None
    wanted = {"mixed_bfloat16": {"avx512_bf16", "amx_bf16"}, "mixed_float16": {"avx512_fp16", "amx_fp16"}}[precision]
    if flags & wanted:
        return None
    return (
        f"warning: train.precision={precision} on a CPU without {' or '.join(sorted(wanted))}: expect it to be "
        "several times slower than float32 (half-precision convolutions fall back to slow paths)"
    )
