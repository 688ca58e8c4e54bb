"""Listing image folders: the files of each class, in a fixed order, once per training start.

A folder of ImageNet holds 1.28 M files; walking it takes a while, so a
training run lists it once (`shared_listings`) for all the pipelines it builds
at start-up, and shows the count as it goes.
"""

import contextlib
import os
import pathlib

import numpy as np

from pipeline.data.splits import DataError

# Files a folder source reads; the content decides the format, not the name.
IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".gif", ".bmp"}


def list_class_folders(root):
    """The sorted class sub-folder names of `root`.

    Raises:
        DataError: when there are none.
    """
    classes = sorted(e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith("."))
    if not classes:
        raise DataError(f"{root} has no class sub-folders; expected {root}/<class>/<image files>")
    return classes


_listings = None  # {(root, classes): (paths, labels)} inside `shared_listings()`


@contextlib.contextmanager
def shared_listings():
    """Inside the block, each image folder is listed once.

    A training run opens its source up to three times at start-up (the
    trainer's pipelines, the TensorBoard picture of the first batch, ten-crop
    validation); on ImageNet each listing walks 1.28 M files. Inside this
    block the later ones reuse the first listing. The lists are dropped when
    the block ends, so a folder changed afterwards is listed anew.
    """
    global _listings
    outer = _listings
    _listings = {} if outer is None else outer
    try:
        yield
    finally:
        _listings = outer


def list_images(root, classes):
    """(paths, labels) of the image files under root/<class>/, in a fixed order."""
    key = (str(root), tuple(classes))
    if _listings is not None and key in _listings:
        paths, labels = _listings[key]
        return list(paths), labels.copy()
    paths, labels = _walk_images(root, classes)
    if _listings is not None:
        _listings[key] = (paths, labels)
    return list(paths), labels.copy()


def _walk_images(root, classes):
    from pipeline.console.progress import Progress

    paths, labels = [], []
    progress = Progress(f"listing {root}", unit="files")  # 1.28 M ImageNet files take a while
    for label, name in enumerate(classes):
        folder = pathlib.Path(root) / name
        if not folder.is_dir():
            continue
        for dirpath, dirnames, filenames in os.walk(folder):
            dirnames.sort()
            before = len(paths)
            for filename in sorted(filenames):
                if pathlib.Path(filename).suffix.lower() in IMAGE_EXTENSIONS and not filename.startswith("."):
                    paths.append(os.path.join(dirpath, filename))
                    labels.append(label)
            progress.update(len(paths) - before)
    progress.done()
    return paths, np.array(labels, np.int32)


def estimated_bytes(paths, sample=2000):
    """The total size of the files, from the sizes of up to `sample` of them spread over the list."""
    if not paths:
        return 0
    step = max(1, len(paths) // sample)
    sizes = []
    for path in paths[::step][:sample]:
        try:
            sizes.append(os.stat(path).st_size)
        except OSError:
            pass  # gone since the listing: the reader reports it
    return int(round(sum(sizes) / max(1, len(sizes)) * len(paths)))
