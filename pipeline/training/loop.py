"""The training loop of every run and trial: epochs of `strategy.run(model.train_step)`, resumable at any step.

    loop = TrainingLoop(model, cluster.strategy, plan, callbacks)
    history = loop.run(epochs, start=lambda: backup.position, stop=requests, on_stop=backup.save_at)

Keras' `model.fit` is not used, for three reasons:

- It fails under MultiWorkerMirroredStrategy (keras-team/keras#20585).
- It iterates one dataset the same way every epoch, so a run resumed mid-epoch
  starts that epoch again from its first batch (Keras' BackupAndRestore does
  the same). Here each epoch's data is `plan.train_for(epoch, first_step)`, a
  function of the run's seed and the epoch alone, so a run resumed at step S
  of epoch E sees the batches an uninterrupted run sees from there on.
- It looks at a stop request only between epochs. Here every step also
  carries a stop flag through the replicas' all-reduce, so on a stop request
  (SIGINT or SIGTERM on any worker) every worker learns it at the same step
  boundary, backs up there (`on_stop`) and ends with `Stopped`.

It runs the step functions `model.fit` runs (`model.train_step`,
`model.test_step`), calls the callbacks in the order `model.fit` calls them,
and logs what it logs: per-step figures the mean over replicas, epoch figures
the metrics' global results. `on_epoch_begin` receives
`{"first_step": S}`: callbacks that count an epoch's steps or images
(`pipeline.training.callbacks`) start from there.
"""

import dataclasses
import signal

import numpy as np

from model_defs import keras_private
from pipeline.errors import Stopped, signal_name

# The stop flags each replica contributes to the step's all-reduce: one slot per signal, summed over replicas;
# where both were received somewhere, SIGTERM (the scheduler's) wins.
_FLAG_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@dataclasses.dataclass(frozen=True)
class Position:
    """Where training stands: `epoch` epochs finished, and `step` steps of the next one trained."""

    epoch: int = 0
    step: int = 0

    def describe(self, epochs, steps_per_epoch):
        """"epoch 3 of 90, step 120 of 10,010" (the epoch counted from 1, the steps of it done), or
        "the end of epoch 2 of 90" between two epochs."""
        if self.step == 0 and self.epoch > 0:
            return f"the end of epoch {self.epoch} of {epochs}"
        return f"epoch {self.epoch + 1} of {epochs}, step {self.step:,} of {steps_per_epoch:,}"


class TrainingLoop:
    """One model, strategy, epoch plan and callback list, trained epoch by epoch.

    Args:
        model: the compiled model, built in `strategy.scope()`.
        strategy: the `tf.distribute.Strategy` (the default one included).
        plan: the `pipeline.training.core.EpochPlan`.
        callbacks: Keras callbacks (`pipeline.training.core.build_callbacks`).
    """

    def __init__(self, model, strategy, plan, callbacks=()):
        import keras

        self.model = model
        self.strategy = strategy
        self.plan = plan
        self.callbacks = keras.callbacks.CallbackList(
            list(callbacks), add_history=True, add_progbar=False, model=model, epochs=None,
            steps=plan.steps_per_epoch,
        )  # fmt: skip
        self._train_function = None
        self._test_function = None
        self._agree_function = None

    def _functions(self):
        """The compiled step, validation step and stop agreement (traced once, on first use)."""
        import tensorflow as tf

        strategy, model = self.strategy, self.model

        def mean(values):
            return {name: strategy.reduce(tf.distribute.ReduceOp.MEAN, value, axis=None) for name, value in values.items()}

        def agreed(flags):
            # Every replica of every worker adds its worker's flags: > 0 where any worker was signalled. (The
            # identity puts the flags on the replica's device: MirroredStrategy cannot reduce them otherwise.)
            return tf.distribute.get_replica_context().all_reduce(tf.distribute.ReduceOp.SUM, tf.identity(flags))

        def train_step(batch, flags):
            return model.train_step(batch), agreed(flags)

        def train(batch, flags):
            logs, stop = strategy.run(train_step, args=(batch, flags))
            return mean(logs), strategy.experimental_local_results(stop)[0]

        def agree(flags):
            return strategy.experimental_local_results(strategy.run(agreed, args=(flags,)))[0]

        self._train_function = tf.function(train, jit_compile=bool(model.jit_compile), reduce_retracing=True)
        self._test_function = tf.function(lambda batch: mean(strategy.run(model.test_step, args=(batch,))),
                                          reduce_retracing=True)
        self._agree_function = tf.function(agree)

    @staticmethod
    def _flags(stop):
        signum = getattr(stop, "signum", None)
        return np.array([signum == flag for flag in _FLAG_SIGNALS], np.int32)

    @staticmethod
    def _agreed_signal(flags):
        """The signal every worker stops for, or None."""
        received = [flag for flag, count in zip(_FLAG_SIGNALS, np.asarray(flags)) if count > 0]
        return received[-1] if received else None

    def run(self, epochs, start=None, stop=None, on_stop=None, on_train_begin=None):
        """Trains up to `epochs` epochs.

        Args:
            epochs: the epoch to stop after.
            start: the `Position` to start at, or a function returning it,
                called after the callbacks' `on_train_begin` (where a backup
                restores the run); None: the beginning.
            stop: a `pipeline.console.signals.StopAtStep` (anything with a
                `signum`), read at every step boundary; None: no stops.
            on_stop: called with the `Position` at which every worker stops
                (the backup saves there) before `Stopped` is raised.
            on_train_begin: called after the callbacks' `on_train_begin`
                (the chief's broadcast of its state to the other workers).

        Returns:
            The `keras.callbacks.History`.

        Raises:
            Stopped: a stop was requested on some worker; every worker
                stopped at the same step, after `on_stop`.
        """
        import tensorflow as tf

        model, plan, callbacks = self.model, self.plan, self.callbacks
        if self._train_function is None:
            self._functions()
        callbacks.set_params({"epochs": epochs, "steps": plan.steps_per_epoch, "verbose": 0})
        with self.strategy.scope():
            keras_private.build_metrics(model, plan.element_spec)
        model.stop_training = False
        callbacks.on_train_begin()
        if on_train_begin is not None:
            on_train_begin()
        start = (start() if callable(start) else start) or Position()
        # One iterator a session for the training batches, one for the validation's (`_Passes`).
        more = start.epoch < epochs  # else a run resumed with every epoch trained: nothing to read
        training = _Passes(self.strategy, plan.train_stream(start.epoch, start.step, epochs)) if more else None
        validation = (_Passes(self.strategy, plan.validation_stream(epochs - start.epoch))
                      if more and plan.validation is not None else None)  # fmt: skip
        epoch_logs = None
        for epoch in range(start.epoch, epochs):
            first = start.step if epoch == start.epoch else 0
            model.reset_metrics()
            callbacks.on_epoch_begin(epoch, {"first_step": first})
            for step, batch in zip(range(first, plan.steps_per_epoch), training.batches(epoch)):
                callbacks.on_train_batch_begin(step)
                logs, flags = self._train_function(batch, tf.constant(self._flags(stop)))
                callbacks.on_train_batch_end(step, logs)
                signum = self._agreed_signal(flags)
                if signum is not None:
                    self._stop(signum, Position(epoch, step + 1), on_stop, epochs)
                if model.stop_training:
                    break
            # Read in cross-replica context, the metrics aggregate over all replicas of all workers.
            epoch_logs = {name: float(value) for name, value in model.get_metrics_result().items()}
            if validation is not None:
                epoch_logs.update({f"val_{name}": value
                                   for name, value in self._validate(validation, epoch - start.epoch).items()})
            callbacks.on_epoch_end(epoch, epoch_logs)
            # A signal during validation or the epoch's callbacks: the epoch's backup is written; stop here.
            signum = self._agreed_signal(self._agree_function(tf.constant(self._flags(stop))))
            if signum is not None and epoch + 1 < epochs:
                self._stop(signum, Position(epoch + 1, 0), None, epochs)
            if model.stop_training:
                break
        if epochs > 0:
            model.optimizer.finalize_variable_values(model.trainable_weights)  # e.g. EMA weights, as fit does
        callbacks.on_train_end(epoch_logs)
        return model.history

    def _validate(self, validation, index):
        model, callbacks = self.model, self.callbacks
        model.reset_metrics()
        callbacks.on_test_begin()
        for step, batch in enumerate(validation.batches(index)):
            callbacks.on_test_batch_begin(step)
            callbacks.on_test_batch_end(step, self._test_function(batch))
        logs = {name: float(value) for name, value in model.get_metrics_result().items()}
        callbacks.on_test_end(logs)
        return logs

    def _stop(self, signum, position, on_stop, epochs):
        if on_stop is not None:
            on_stop(position)
        where = position.describe(epochs, self.plan.steps_per_epoch)
        if on_stop is None and position.step:
            raise Stopped(signum, f"stopped by {signal_name(signum)} at {where}")
        raise Stopped(signum, f"stopped by {signal_name(signum)} at {where}; backed up: run the same command to resume")


class _Passes:
    """The batches of consecutive passes (epochs, validations) from one iterator; each batch carries its pass.

    Deleting a tf.data iterator stalls until its autotuning thread next wakes
    (TF 2.21: seconds, more the longer the iterator lived: 8 s after 33 s),
    which an iterator a pass would pay at every pass. So each session reads
    all of its passes through one iterator, of a dataset whose batches carry
    the index of their pass as a last component (`EpochPlan.train_stream`,
    `validation_stream`): a pass ends at the first batch of the next one,
    which is kept for it, or at the end of the data.

    Args:
        strategy: the `tf.distribute.Strategy` that distributes the batches.
        dataset: batches (images, labels, pass index a label).
    """

    def __init__(self, strategy, dataset):
        self._strategy = strategy
        self._iterator = iter(strategy.experimental_distribute_dataset(dataset))
        self._held = None  # the next pass's first batch, read as the last one ended

    def _pass_of(self, marks):
        """The pass of a batch; None when this worker's replicas hold none of its examples."""
        for local in self._strategy.experimental_local_results(marks):
            if local.shape[0]:
                return int(local[0])
        return None

    def batches(self, index):
        """The batches (images, labels) of pass `index`, up to the next pass's first batch or the data's end."""
        import tensorflow as tf

        while True:
            if self._held is not None:
                element, self._held = self._held, None
            else:
                try:
                    element = next(self._iterator)
                except (StopIteration, tf.errors.OutOfRangeError):
                    return
            found = self._pass_of(element[-1])
            if found is None:
                # Workers that read data of their own split each of their batches between the cluster's
                # replicas; the last one of a pass, smaller than that, leaves an empty piece behind it, on
                # every worker alike. No step trains on nothing.
                continue
            if found != index:
                self._held = element
                return
            yield element[:-1]
