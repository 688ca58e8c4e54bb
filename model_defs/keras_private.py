"""Every private Keras, TensorFlow and KerasTuner attribute this project uses, in one place.

Each one is a workaround with a reason below; `tests/model_defs/test_keras_private.py`
checks that the installed libraries still have each of them, so an upgrade that
removes one fails loudly in the tests instead of quietly in a run. Nothing else
in the project touches a private attribute of Keras, TensorFlow or KerasTuner.
This module imports none of them at import time.
"""


def build_metrics(model, element_spec):
    """Creates the compiled metrics' variables before the first step, as `model.fit` does.

    The training loop (`pipeline.training.loop`) puts a mid-epoch backup's
    running metrics back as its epoch begins, before any step has built them;
    Keras builds them from a symbolic batch in its private `_symbolic_build`.

    Args:
        model: a compiled model.
        element_spec: the (images, labels) spec of a training batch.
    """
    model._symbolic_build(data_batch=tuple(element_spec))


def summary_writers(tensorboard):
    """The file writers of a `keras.callbacks.TensorBoard` callback (name -> writer), to flush them.

    Keras opens them lazily and keeps them private; the trainer flushes them at
    each epoch's end so that a killed run's charts reach its last backup.
    """
    return dict(getattr(tensorboard, "_writers", {}))


def optimizer_variable_key(optimizer, variable):
    """The key a Keras optimizer files `variable` under (the same for a Keras variable and its backend one)."""
    return optimizer._var_key(variable)


def optimizer_variable_index(optimizer, variable):
    """The index of `variable` in the optimizer's slot lists (its momentums)."""
    return optimizer._get_variable_index(variable)


def onednn_enabled():
    """Whether the loaded TensorFlow runs oneDNN CPU kernels (TensorFlow has no public query)."""
    from tensorflow.python.util import _pywrap_util_port

    return bool(_pywrap_util_port.IsMklEnabled())


class _ShortSleeps:
    """The `time` module with every sleep cut to at most `longest` seconds."""

    def __init__(self, longest):
        self.longest = longest

    def __getattr__(self, name):
        import time

        return getattr(time, name)

    def sleep(self, seconds):
        import time

        time.sleep(min(seconds, self.longest))


def quick_tuner_chief(longest=0.5):
    """Makes KerasTuner's chief notice within `longest` seconds that the last worker has finished.

    Once a worker learns the search is over, KerasTuner 1.4's chief server
    (`keras_tuner.src.distribute.oracle_chief.start_server`) checks for trials
    still running only every 20 s, so the chief outlived its workers by up to
    20 s; its module's `time` is replaced by one whose sleeps last at most
    `longest`. Call it in the chief's process before `tuner.search`.
    """
    from keras_tuner.src.distribute import oracle_chief

    oracle_chief.time = _ShortSleeps(longest)
