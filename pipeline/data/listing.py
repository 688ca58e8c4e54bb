"""Listing image folders: the files of each class, in a fixed order, once per training start.

A folder of ImageNet holds 1.28 M files; walking it takes a while, so a
training run lists it once (`shared_listings`) for all the pipelines it builds
at start-up, and shows the count as it goes. The hashes of the files' names
(`relative_name_hashes`: the folder's validation split, the data's identity)
are computed once a listing too.
"""

import contextlib
import os
import pathlib
import sys

import numpy as np

from pipeline.console.progress import Progress
from pipeline.console.text import printable
from pipeline.data.identity import name_hashes
from pipeline.data.splits import DataError

# Files a folder source reads; the content decides the format, not the name.
IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".gif", ".bmp"}


def list_class_folders(root):
    """The sorted class sub-folder names of `root`.

    Raises:
        DataError: when there are none, or one's name is not UTF-8 (class names are text: labels.txt, the
            SavedModel's outputs).
    """
    classes = sorted(e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith("."))
    if not classes:
        raise DataError(f"{root} has no class sub-folders; expected {root}/<class>/<image files>")
    for name in classes:
        try:
            name.encode("utf-8")
        except UnicodeEncodeError:
            raise DataError(
                f"class folder {printable(os.path.join(root, name))}: its name is not UTF-8 text, and a class name "
                "must be (labels.txt, the SavedModel's class names): rename the folder"
            ) from None
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
    """(paths, labels) of the image files under root/<class>/, in a fixed order.

    A path is str(pathlib.Path(root)), a slash, and the file's name relative
    to `root` (<class>/..., as `relative_name_hashes` takes it).
    """
    key = (str(root), tuple(classes))
    if _listings is not None and key in _listings:
        paths, labels = _listings[key]
        return list(paths), labels.copy()
    paths, labels = _walk_images(root, classes)
    if _listings is not None:
        _listings[key] = (paths, labels)
    return list(paths), labels.copy()


def relative_name_hashes(root, classes, paths, salt=b""):
    """64-bit hashes (`pipeline.data.identity.name_hashes`) of the names of `paths` relative to `root`.

    Args:
        root, classes, paths: `paths` is `list_images(root, classes)[0]`, the whole listing.
        salt: the hashes' salt.

    Returns:
        A read-only uint64 array in the order of `paths`; inside `shared_listings`
        computed once a listing, not once a pipeline.
    """
    key = ("hashes", str(root), tuple(classes), salt)
    if _listings is not None and key in _listings:
        return _listings[key]
    start = len(str(pathlib.Path(root))) + 1
    hashes = name_hashes((path[start:] for path in paths), salt)
    hashes.flags.writeable = False
    if _listings is not None:
        _listings[key] = hashes
    return hashes


def _walk_images(root, classes):
    """Image files (regular files with an image suffix, not hidden) under root/<class>/, sorted, with labels.

    Anything else with an image suffix (a FIFO, a device, a link to one, a
    folder) is left out and named in one warning: reading it could block or
    never end.
    """

    paths, labels, others = [], [], []
    progress = Progress(f"listing {printable(root)}", unit="files")  # 1.28 M ImageNet files take a while
    for label, name in enumerate(classes):
        folder = pathlib.Path(root) / name
        if not folder.is_dir():
            continue
        before = len(paths)
        for path, regular in _image_entries(folder):
            if regular:
                paths.append(path)
                labels.append(label)
            else:
                others.append(path)
        progress.update(len(paths) - before)
    progress.done()
    if others:
        shown = ", ".join(printable(p) for p in others[:3]) + (f" and {len(others) - 3} more" if len(others) > 3 else "")
        print(f"warning: skipping {len(others)} entries with an image suffix that are not regular files: {shown}",
              file=sys.stderr)
    return paths, np.array(labels, np.int32)


def _image_entries(folder):
    """(path, is a regular file) of each entry with an image suffix under `folder`: files first, then sub-folders.

    The order of `os.walk` with sorted names: a folder's files, then each of its
    sub-folders (symbolic links to folders are not followed), recursively.
    """
    files, folders = [], []
    for entry in sorted(os.scandir(folder), key=lambda e: e.name):
        if entry.is_dir(follow_symlinks=False):
            folders.append(entry.path)
        elif pathlib.Path(entry.name).suffix.lower() in IMAGE_EXTENSIONS and not entry.name.startswith("."):
            files.append((entry.path, entry.is_file(follow_symlinks=True)))
    yield from files
    for path in folders:
        yield from _image_entries(path)


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
