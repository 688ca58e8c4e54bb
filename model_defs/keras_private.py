"""Every private Keras, TensorFlow and KerasTuner attribute this project uses, in one place.

Each one is a workaround with a reason below; `tests/model_defs/test_keras_private.py`
checks that the installed libraries still have each of them, so an upgrade that
removes one fails loudly in the tests instead of quietly in a run. Nothing else
in the project touches a private attribute of Keras, TensorFlow or KerasTuner.
This module imports none of them at import time.
"""


def set_initial_epoch(model, epoch):
    """Makes the next `model.fit` start at `epoch`: how Keras' own BackupAndRestore resumes a run.

    `fit(initial_epoch=...)` cannot be used from a callback, which learns the
    epoch only in `on_train_begin`, after fit has read its arguments; Keras'
    trainer reads `model._initial_epoch` after calling the callbacks.
    """
    model._initial_epoch = epoch


def initial_epoch(model):
    """The epoch a resumed run starts at (0 for a fresh one), as `set_initial_epoch` left it."""
    return getattr(model, "_initial_epoch", None) or 0


def release_eval_iterator(model):
    """Lets go of `model.fit`'s validation iterator now instead of at the next validation.

    Keras 3.15 keeps the iterator (and the tf.data iterator under it) from one
    validation to the next and drops it only when the next one starts; with a
    truncated validation set the drop stalled 6-10 s in about half of the
    epochs on a 2-core CPU. Does nothing when the attribute is gone.
    """
    iterator = getattr(model, "_eval_epoch_iterator", None)
    if iterator is not None and hasattr(iterator, "reset"):
        iterator.reset()


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
