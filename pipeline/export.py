"""Writing a trained model out: model.keras for Keras users, a SavedModel for serving."""

import keras
import tensorflow as tf


def export_saved_model(model, path, image_size):
    """Writes a SavedModel whose `serving_default` maps images to class probabilities.

    Args:
        model: the trained AlexNet (logits out).
        path: the SavedModel directory to write.
        image_size: the model's square input size.

    The signature takes `image`: float32 [batch, image_size, image_size, 3] RGB
    pixel values in [0, 255] (resized and cropped), and returns `probabilities`:
    float32 [batch, num_classes].
    """
    archive = keras.export.ExportArchive()
    archive.track(model)

    def serve(image):
        logits = model(image, training=False)
        return {"probabilities": tf.nn.softmax(tf.cast(logits, tf.float32), axis=-1)}

    archive.add_endpoint(
        name="serving_default",
        fn=serve,
        input_signature=[tf.TensorSpec([None, image_size, image_size, 3], tf.float32, name="image")],
    )
    archive.write_out(str(path), verbose=False)


def export_run(model, run_dir, config, class_names):
    """Writes model.keras and/or saved_model/ into a run directory, as configured.

    Args:
        model: the trained model.
        run_dir: `pathlib.Path` of the run directory.
        config: the run's `Config` (export switches, input size and resize).
        class_names: names in class-index order.

    Returns:
        The paths written.
    """
    export_config, image_size = config.export, config.data.image_size
    written = []
    if export_config.keras:
        model.save(run_dir / "model.keras")
        written.append(run_dir / "model.keras")
    if export_config.saved_model:
        export_saved_model(model, run_dir / "saved_model", image_size)
        written.append(run_dir / "saved_model")
    return written
