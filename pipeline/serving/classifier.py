"""Classifying image files with an exported SavedModel, which carries its preprocessing and class names.

Only TensorFlow is needed: no project code runs inside the model (see
`pipeline.serving.saved_model`). A file that cannot be read or decoded gets an
error of its own; the others are still classified.
"""

import os
import pathlib
import re
import stat

from pipeline.console.native import filtered_native_stderr
from pipeline.console.text import printable
from pipeline.errors import ConfigError
from pipeline.storage.files import is_regular_file
from pipeline.storage.rundir import SAVED_MODEL_DIR

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".gif", ".bmp")
DEFAULT_BATCH = 32
# The largest file read as an image: far above any photograph, far below what would exhaust memory.
MAX_FILE_BYTES = 256 * 2**20


class UsageError(ConfigError):
    """The command cannot run at all (no model, no images, a damaged SavedModel): exit status 2."""


def find_saved_model(path):
    """The SavedModel directory named by `path`: itself, or `<path>/saved_model` for a run directory.

    Args:
        path: a SavedModel directory or a run directory.

    Returns:
        `pathlib.Path` of a directory holding saved_model.pb.

    Raises:
        UsageError: when neither holds a SavedModel.
    """
    path = pathlib.Path(path)
    for candidate in (path, path / SAVED_MODEL_DIR):
        if (candidate / "saved_model.pb").is_file():
            return candidate
    raise UsageError(
        f"no SavedModel in {path} (looked for saved_model.pb there and in {path / SAVED_MODEL_DIR}); "
        "pass a run directory of a finished run or its saved_model/ (python -m pipeline.export re-creates it)"
    )


def expand_inputs(paths):
    """Files to classify: each path as given, a folder replaced by its image files.

    Args:
        paths: file and folder paths.

    Returns:
        A list of `pathlib.Path`. Named files are kept even when missing or
        not images (they get an error line); folders contribute only files
        with an image suffix, sorted, so stray files there are skipped.
    """
    files = []
    for path in map(pathlib.Path, paths):
        if path.is_dir():
            files += sorted(
                p for p in path.rglob("*")
                if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".") and is_regular_file(p)
            )
        else:
            files.append(path)
    return files


def _read(path, limit=None):
    """(bytes, None) for a readable, non-empty regular file of at most `limit` bytes, else (None, error message).

    Opened without blocking and checked before reading: a FIFO, a device
    (a link to /dev/zero), a directory or a huge file gets its error, and the
    other files are still classified. `limit` None: MAX_FILE_BYTES.
    """
    limit = MAX_FILE_BYTES if limit is None else limit
    try:
        handle = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError:
        return None, "no such file"
    except OSError as exc:
        return None, f"cannot read: {exc.strerror or exc}"
    try:
        info = os.fstat(handle)
        if not stat.S_ISREG(info.st_mode):
            kind = "a directory" if stat.S_ISDIR(info.st_mode) else "a FIFO, device or socket"
            return None, f"not a regular file ({kind}): not read"
        if info.st_size > limit:
            return None, f"{info.st_size:,} bytes, more than an image file may have ({limit:,}): not read"
        with os.fdopen(os.dup(handle), "rb") as reader:
            data = reader.read(limit + 1)
    except OSError as exc:
        return None, f"cannot read: {exc.strerror or exc}"
    finally:
        os.close(handle)
    if not data:
        return None, "empty file, not an image"
    if len(data) > limit:
        return None, f"more than {limit:,} bytes, more than an image file may have: not read"
    return data, None


def _decode_error(exc):
    """A one-line reason from TensorFlow's decode error, without graph node names and stack notes."""
    text = getattr(exc, "message", None) or str(exc)
    too_large = re.search(r"limit of\]\s*\[(\d+)\].*?\[(\d+)\]", text, re.S)
    if too_large:
        limit, pixels = too_large.groups()
        return (
            f"image of {int(pixels):,} pixels, larger than the SavedModel's limit of {int(limit):,} "
            "(data.max_pixels when it was exported): not decoded; shrink it, or re-export with a higher data.max_pixels"
        )
    lines = [line.strip() for line in text.splitlines()]
    noise = ("Graph execution error", "Detected at node", "<stack traces", "[[")
    reasons = [line for line in lines if line and not line.startswith(noise)]
    return f"not a readable JPEG, PNG, GIF or BMP image ({reasons[-1] if reasons else type(exc).__name__})"


class Classifier:
    """An exported SavedModel, loaded with plain TensorFlow.

    Args:
        saved_model: a SavedModel directory written by `pipeline.export`.
    """

    def __init__(self, saved_model):
        import tensorflow as tf

        self._tf = tf
        try:
            self.model = tf.saved_model.load(str(saved_model))
            signatures = set(self.model.signatures)
        except Exception as exc:  # protobuf, TensorFlow and OS errors for a damaged SavedModel
            reason = (getattr(exc, "message", None) or str(exc) or type(exc).__name__).strip().splitlines()[0]
            raise UsageError(
                f"{saved_model}: cannot be loaded as a SavedModel ({reason[:200]}): it is damaged or not a "
                "SavedModel; re-export it with python -m pipeline.export <run dir>"
            ) from None
        missing = {"serving_default", "class_names"} - signatures
        if missing:
            raise UsageError(
                f"{saved_model} lacks the signature(s) {', '.join(sorted(missing))}; "
                "re-export it with python -m pipeline.export <run dir>"
            )
        names = self.model.signatures["class_names"]()["class_names"].numpy()
        self.class_names = [name.decode("utf-8") for name in names]

    def probabilities(self, encoded):
        """Class probabilities of encoded images.

        Args:
            encoded: a list of encoded image byte strings.

        Returns:
            float32 array [len(encoded), classes].

        Raises:
            tf.errors.InvalidArgumentError: when any of them cannot be decoded.
        """
        tf = self._tf
        # A bad image fails the call with an error this class reports; TensorFlow's and libjpeg's own
        # stderr lines about it would only repeat it.
        with filtered_native_stderr():
            outputs = self.model.signatures["serving_default"](image_bytes=tf.constant(encoded, dtype=tf.string))
            return outputs["probabilities"].numpy()

    def classify(self, files, top=5, batch_size=DEFAULT_BATCH):
        """Top-k classes of each file, in the order given.

        Images go through the SavedModel in batches; when a batch fails to
        decode, its images are retried one by one so only the bad ones fail.

        Args:
            files: `pathlib.Path`s of image files.
            top: how many classes per image (at most the number of classes).
            batch_size: images per SavedModel call.

        Yields:
            One dict per file: {"file", "top": [{"class", "index", "probability"}, ...]}
            or {"file", "error"}.
        """
        top = min(top, len(self.class_names))
        pending = []
        for path in files:
            data, error = _read(path)
            if error:
                # Flush first, so results come out in the order the files were given.
                yield from self._run(pending, top)
                pending = []
                yield {"file": printable(path), "error": error}
                continue
            pending.append((path, data))
            if len(pending) == batch_size:
                yield from self._run(pending, top)
                pending = []
        yield from self._run(pending, top)

    def _run(self, batch, top):
        if not batch:
            return
        try:
            rows = self.probabilities([data for _, data in batch])
        except self._tf.errors.InvalidArgumentError as exc:
            if len(batch) == 1:
                yield {"file": printable(batch[0][0]), "error": _decode_error(exc)}
                return
            for item in batch:
                yield from self._run([item], top)
            return
        for (path, _), row in zip(batch, rows):
            order = sorted(range(len(row)), key=lambda i: -row[i])[:top]
            yield {
                "file": printable(path),
                "top": [
                    {"class": self.class_names[i], "index": int(i), "probability": float(row[i])} for i in order
                ],
            }


def format_table(result):
    """A readable block for one result: the file, then one line per class.

    Args:
        result: one dict yielded by `Classifier.classify` (without "error").

    Returns:
        The text, lines joined by newlines.
    """
    width = max(len(entry["class"]) for entry in result["top"])
    lines = [result["file"]]
    for rank, entry in enumerate(result["top"], 1):
        lines.append(f"  {rank}. {entry['class']:<{width}}  {entry['probability']:7.2%}")
    return "\n".join(lines)
