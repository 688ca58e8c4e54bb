"""Writing a trained model out: model.keras for Keras users, a SavedModel for serving.

The SavedModel is self-contained: the evaluation preprocessing and the class
names are inside it, so `tf.saved_model.load` and `saved_model_cli` serve it
with no project code. Its signatures:

    serving_default     image_bytes: string [N], encoded JPEG, PNG, GIF or BMP
                        (decoded by content; a GIF gives its first frame),
                        resized so the shorter side is data.resize, centre-cropped
                        to data.image_size: the preprocessing of
                        `python -m pipeline.evaluate` (a JPEG decodes only the
                        crop window). A PNG, GIF or BMP of more than max_pixels
                        pixels (data.max_pixels when exported) fails the call
                        with an error that says so, before it is decoded.
    serve_preprocessed  image: float32 [N, S, S, 3], RGB in [0, 255], already
                        resized and cropped (S = data.image_size).
    class_names         no input; class_names: string [classes].

Both image signatures return probabilities (float32 [N, classes]) and the k =
min(5, classes) most probable classes: top5_indices (int32 [N, k]),
top5_names (string [N, k]) and top5_probabilities (float32 [N, k]).
"""

import pathlib
import shutil

from pipeline.errors import is_disk_full
from pipeline.storage.files import (
    check_free_space,
    disk_full,
    recover_directory,
    replace_directory,
    staging_path,
)
from pipeline.storage.models import model_bytes, save_keras
from pipeline.storage.rundir import KERAS_FILE, SAVED_MODEL_DIR

ENDPOINTS = ("serving_default", "serve_preprocessed", "class_names")
# The paper reports top-5 error; the signatures return that many candidates.
TOP_K = 5


def export_saved_model(model, path, class_names, image_size, resize, max_pixels=50_000_000):
    """Writes a SavedModel with encoded-image and preprocessed-image signatures.

    The directory is written beside `path` first and swapped into place
    (`pipeline.storage.files.replace_directory`): at every instant `path` holds the
    complete old or the complete new SavedModel, and leftovers of a killed
    export are repaired by the next one.

    Args:
        model: the trained AlexNet (logits out, [N, S, S, 3] input in [0, 255]).
        path: the SavedModel directory to write (replaced if it exists).
        class_names: names in class-index order; stored in the SavedModel.
        image_size: the model's square input size S.
        resize: shorter side of an image before the centre crop (evaluation
            preprocessing, as `pipeline.data.augment.EvalTransform`).
        max_pixels: the largest PNG, GIF or BMP `serving_default` decodes.

    Returns:
        `pathlib.Path` of the written directory.

    Raises:
        ValueError: when the model's output width or input size does not match
            `class_names` or `image_size`.
    """
    import keras
    import tensorflow as tf

    from pipeline.data import decode  # imports TensorFlow, as this function does
    from pipeline.data.augment import EvalTransform

    path = pathlib.Path(path)
    class_names = [str(name) for name in class_names]
    num_classes = int(model.output_shape[-1])
    if num_classes != len(class_names):
        raise ValueError(f"the model has {num_classes} outputs but {len(class_names)} class names were given")
    if tuple(model.input_shape[1:]) != (image_size, image_size, 3):
        raise ValueError(f"the model takes {model.input_shape[1:]} inputs, not {image_size}x{image_size}x3")
    top_k = min(TOP_K, num_classes)
    # float32 whatever the global precision policy: resizing in half precision would shift pixel values.
    transform = EvalTransform(image_size, resize=resize, crops=1, dtype="float32")

    def outputs(images):
        probabilities = tf.nn.softmax(tf.cast(model(images, training=False), tf.float32), axis=-1)
        top_probabilities, top_indices = tf.math.top_k(probabilities, k=top_k)
        # A graph constant: the names travel inside the SavedModel, no asset file to lose.
        names = tf.constant(class_names, dtype=tf.string)
        return {
            "probabilities": probabilities,
            "top5_indices": top_indices,
            "top5_names": tf.gather(names, top_indices),
            "top5_probabilities": top_probabilities,
        }

    def preprocess(image_bytes):
        # By content, not by file name: a PNG saved as .JPEG is common in scraped data. The
        # transform takes the bytes: a JPEG decodes only its crop window, as in pipeline.evaluate.
        pixels = decode.whole_decode_pixels(image_bytes)
        check = tf.debugging.Assert(
            pixels <= max_pixels,
            ["image larger than the SavedModel's limit of", max_pixels, "pixels (max_pixels):", pixels],
        )
        with tf.control_dependencies([check]):
            return transform(tf.identity(image_bytes))

    def serve_encoded(image_bytes):
        images = tf.map_fn(
            preprocess, image_bytes, fn_output_signature=tf.TensorSpec([image_size, image_size, 3], tf.float32)
        )
        return outputs(images)

    def serve_preprocessed(image):
        return outputs(image)

    def names():
        return {"class_names": tf.constant(class_names, dtype=tf.string)}

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(
        name="serving_default",
        fn=serve_encoded,
        input_signature=[tf.TensorSpec([None], tf.string, name="image_bytes")],
    )
    archive.add_endpoint(
        name="serve_preprocessed",
        fn=serve_preprocessed,
        input_signature=[tf.TensorSpec([None, image_size, image_size, 3], tf.float32, name="image")],
    )
    archive.add_endpoint(name="class_names", fn=names, input_signature=[])

    repaired = recover_directory(path)
    if repaired:
        print(f"{path}: {repaired}")
    staging = staging_path(path)
    check_free_space(staging, model_bytes(model, optimizer=False))
    try:
        archive.write_out(str(staging), verbose=False)
    except Exception as exc:
        shutil.rmtree(staging, ignore_errors=True)
        if is_disk_full(exc):
            raise disk_full(path) from None
        raise
    replace_directory(staging, path)
    return path


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
    run_dir = pathlib.Path(run_dir)
    written = []
    if config.export.keras:
        written.append(save_keras(model, run_dir / KERAS_FILE))
    if config.export.saved_model:
        written.append(
            export_saved_model(
                model, run_dir / SAVED_MODEL_DIR, class_names, config.data.image_size, config.data.resize,
                config.data.max_pixels,
            )
        )
    return written
