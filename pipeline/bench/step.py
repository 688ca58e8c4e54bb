"""The one training-step timer: Keras' own compiled step (the one `model.fit` runs) on one batch held in memory.

Works on every Keras 3 backend and imports Keras (and TensorFlow, when it is
the backend) only inside its functions, after the caller has chosen the backend.
"""

import time

import numpy as np

from pipeline.bench.timing import CoreMeter
from pipeline.training.model import build_model


def random_batch(batch_size, image_size, num_classes, seed=0):
    """(images float32 [B, S, S, 3] uniform in [0, 255], labels int32 [B]) from a seeded NumPy generator."""

    rng = np.random.default_rng(seed)
    images = rng.uniform(0, 255, (batch_size, image_size, image_size, 3)).astype(np.float32)
    return images, rng.integers(0, num_classes, batch_size).astype(np.int32)


def trainer_steps(model, images, labels):
    """A function `run(n)` that runs the Keras trainer's training step n times on one batch and returns the last loss.

    The first `train_on_batch` builds the optimizer and the metrics and
    compiles the step; `run` then calls the compiled step as `model.fit` does
    (`model.train_function`), with the batch already on the device, and waits
    for the last step only.

    Args:
        model: a compiled Keras model.
        images, labels: the batch.
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


def time_steps(run, batch_size, steps, warmup, repeats, meter=None, beside=None):
    """Training images/s of `run` (from `trainer_steps`): one per timing of `steps` steps, after `warmup` untimed.

    Args:
        run: `trainer_steps(...)`.
        batch_size: images per step.
        steps: steps per timing.
        warmup: untimed steps first.
        repeats: timings.
        meter: a `CoreMeter` to charge the timed steps to.
        beside: a function called (untimed) before each timing, e.g. a matmul
            timing, so that both see the machine in the same state.

    Returns:
        A list of images/s, one per timing.
    """
    if warmup:
        run(warmup)
    meter = meter or CoreMeter()
    rates = []
    for _ in range(repeats):
        if beside is not None:
            beside()
        with meter.measure():
            start = time.perf_counter()
            run(steps)  # returns when the last step is done
            rates.append(steps * batch_size / (time.perf_counter() - start))
    return rates


def bare_model(config, num_classes, lrn_implementation="auto", jit=None):
    """The configured AlexNet with `PaperSGD` and cross-entropy on the logits only: no metrics, no callbacks.

    Built by the training core's model factory (`pipeline.training.model.build_model`:
    model.*, data.image_size, train.precision, seed), the optimizer from
    train.optimizer.

    Args:
        config: the `Config`.
        num_classes: width of fc8.
        lrn_implementation: the LRN layers' implementation ("auto", "banded", "windowed", "cudnn").
        jit: compile with XLA; None: Keras' choice (XLA on JAX).
    """
    import keras

    from model_defs.layers import LocalResponseNormalization

    keras.backend.clear_session()
    model = build_model(config, num_classes)
    for layer in model.layers:
        if isinstance(layer, LocalResponseNormalization):
            layer.implementation = lrn_implementation
    return compile_bare(model, config, jit)


def compile_bare(model, config, jit=None):
    """Compiles `model` as `bare_model` does: `PaperSGD` from train.optimizer, cross-entropy on logits, no metrics."""
    import keras

    from model_defs.optimizers import PaperSGD

    opt = config.train.optimizer
    model.compile(
        optimizer=PaperSGD(learning_rate=opt.learning_rate, momentum=opt.momentum, nesterov=opt.nesterov,
                           coupled_weight_decay=opt.weight_decay),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile="auto" if jit is None else jit,
    )  # fmt: skip
    return model


def loss_curve(config, num_classes, steps, batch_size, jit=None):
    """The losses of `steps` + 1 training steps on one fixed batch (dropout off, seeded): at k, after k updates."""
    model = bare_model(config.derive({"model.dropout": 0.0}), num_classes, jit=jit)
    images, labels = random_batch(batch_size, config.data.image_size, num_classes, seed=config.seed)
    return [float(model.train_on_batch(images, labels, return_dict=True)["loss"]) for _ in range(steps + 1)]


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
