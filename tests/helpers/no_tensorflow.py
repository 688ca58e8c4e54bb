"""TensorFlow made absent from a process, as on a GPU host without it, with every request for it recorded.

A subprocess whose PYTHONPATH is the checkout calls `install()` first: from then on `import tensorflow` (or any
submodule) raises ModuleNotFoundError and `importlib.util.find_spec` answers None for it, as both do where
TensorFlow is not installed. `imports` names the files that tried to import it, `probes` those that only asked
whether it is there (torch's dynamo asks about every library it knows); paths relative to site-packages.
"""

import importlib.abc
import importlib.util
import sys
import traceback

imports = []
probes = []

_find_spec = importlib.util.find_spec


def _is_tensorflow(name):
    return name == "tensorflow" or name.startswith("tensorflow.")


def _caller():
    """The file of the first frame outside the import machinery and this module ("<string>": a `python -c`)."""
    frames = reversed(traceback.extract_stack())
    return next(
        (f.filename for f in frames
         if "importlib" not in f.filename and "<frozen" not in f.filename
         and f.filename not in ("<string>", __file__)),
        "<string>",
    ).rsplit("site-packages/", 1)[-1]  # fmt: skip


class _Absent(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if _is_tensorflow(name):
            imports.append(_caller())
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


def _probe(name, package=None):
    if _is_tensorflow(importlib.util.resolve_name(name, package) if name.startswith(".") else name):
        probes.append(_caller())
        return None
    return _find_spec(name, package)


def install():
    """Make TensorFlow absent in this process."""
    sys.meta_path.insert(0, _Absent())
    importlib.util.find_spec = _probe
