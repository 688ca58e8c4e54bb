"""The paper's ten-crop test on the validation data, after every training epoch."""

import keras

from pipeline.data.decode import skip_undecodable
from pipeline.data.pipelines import eval_pipeline
from pipeline.data.sources import load_source
from pipeline.evaluation.scoring import evaluate_model


class TenCropValidation(keras.callbacks.Callback):
    """Adds the paper's ten-crop validation errors to each epoch's logs.

    At the end of every epoch (Keras' own centre-crop validation is over by
    then) it evaluates the model on the validation split seen as ten views per
    image - the four corner and the centre patches of the central resize x
    resize square, and their mirror images, softmax averaged (paper, section
    4.1) - with the functions of `python -m pipeline.evaluate --crops 10`, and
    adds `val_10crop_top1_error` and, with more than 5 classes,
    `val_10crop_top5_error` to the logs. Keras' `val_top1_error` and
    `val_top5_error` stay as they are.

    Put it before EpochStats and the TensorBoard callback (the logs dict is
    shared, so TensorBoard writes the errors to the `validation` run as
    epoch_10crop_top1_error / epoch_10crop_top5_error, and the backup's history,
    hence metrics.json, keeps them), and before the plateau schedule, which
    may monitor `val_10crop_top1_error`.

    The validation images come from a second pipeline built from the same
    source, config and seed as the trainer's (`pipeline.data.pipelines.eval_pipeline`
    with crops=10, not cached, train.batch_size / 10 images a step, so a step
    holds about as many views as a training batch). With `validation_steps`
    it takes the first validation_steps x batch_size validation images, the
    ones Keras' truncated validation sees. Undecodable files are left out
    silently: Keras' validation pass has already named and counted them.

    The model runs outside any `strategy.run` (inference only, on this
    process's devices); that is fine for one host, with or without
    MirroredStrategy, but not meant for multi-worker training, which the
    trainer refuses with train.validation_crops: 10.

    Args:
        data_config: `pipeline.config.DataConfig` of the run.
        batch_size: the run's global batch size (train.batch_size).
        seed: the run's seed (the synthetic source's images depend on it).
        validation_steps: train.validation_steps, or None for the whole split.
    """

    CROPS = 10
    PREFIX = "val_10crop_"

    def __init__(self, data_config, batch_size, seed=0, validation_steps=None):
        super().__init__()
        self.data_config = data_config
        self.batch_size = batch_size
        self.seed = seed
        self.validation_steps = validation_steps
        self._dataset = None

    def dataset(self):
        """The batched ten-crop validation pipeline (built once)."""
        if self._dataset is None:

            source = load_source(self.data_config, self.seed)
            examples = source.validation
            if source.encoded:
                examples = skip_undecodable(examples, max_pixels=self.data_config.max_pixels)  # silently: Keras' validation reports them
            if self.validation_steps:
                examples = examples.take(self.validation_steps * self.batch_size)
            step = max(1, self.batch_size // self.CROPS)
            self._dataset = eval_pipeline(examples, self.data_config, step, crops=self.CROPS, cache=False)
        return self._dataset

    def on_train_begin(self, logs=None):
        self.dataset()  # a missing or unreadable source fails here, not after the first epoch

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        num_classes = int(self.model.output_shape[-1])
        result = evaluate_model(self.model, self.dataset(), self.CROPS, num_classes, verbose=0)
        logs[f"{self.PREFIX}top1_error"] = result["top1_error"]
        if result["top5_error"] is not None:
            logs[f"{self.PREFIX}top5_error"] = result["top5_error"]
