"""A readable terminal: TensorFlow's start-up notices filtered out of stderr.

TensorFlow's C++ runtime writes its notices straight to file descriptor 2
before any logging setting of Python can reach it: "All log messages before
absl::InitializeLog() ...", the oneDNN notice (once per shared library, so
twice), "This TensorFlow binary is optimized to use ...", "Could not find cuda
drivers" and, on every host without a GPU, "failed call to cuInit: CUDA error".
`quiet_startup` installs an import hook: the first `import tensorflow` runs
with descriptor 2 sent to a temporary file, lists the devices (which is when
CUDA is probed), and then writes back every line that is not one of those
notices, so warnings and errors still reach the terminal.

It also sets TF_CPP_MIN_LOG_LEVEL=1 for the process, so that TensorFlow's
INFO lines stay off once it runs; its warnings and errors show. Nothing happens
when TF_CPP_MIN_LOG_LEVEL is set already (any value: the user then chose
TensorFlow's verbosity, and 0 shows everything), or when TensorFlow is already
imported.
"""

import importlib.abc
import importlib.util
import os
import re
import sys
import tempfile

QUIET_LEVEL_VARIABLE = "TF_CPP_MIN_LOG_LEVEL"

# Lines of TensorFlow's start-up that say nothing a user must act on.
_NOISE = (
    re.compile(r"^WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR$"),
    re.compile(r"^I\d{4} [\d:. ]+\d+ \S+:\d+\] "),  # informational (oneDNN, CPU features, no CUDA drivers)
    re.compile(r"^To enable the following instructions: .* rebuild TensorFlow with the appropriate compiler flags\.$"),
    re.compile(r"^E\d{4} [\d:. ]+\d+ cuda_platform\.cc:\d+\] failed call to cuInit: "),  # no GPU on this host
)


def is_noise(line):
    """Whether one stderr line is a start-up notice that `quiet_startup` filters out."""
    return any(pattern.match(line) for pattern in _NOISE)


class _QuietLoader(importlib.abc.Loader):
    def __init__(self, loader, finder):
        self.loader = loader
        self.finder = finder

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        if self.finder in sys.meta_path:
            sys.meta_path.remove(self.finder)  # once
        sys.stderr.flush()
        saved = os.dup(2)
        with tempfile.TemporaryFile(mode="w+b") as captured:
            os.dup2(captured.fileno(), 2)
            try:
                self.loader.exec_module(module)
                module.config.list_physical_devices()  # CUDA is probed here: its notices go with the rest
            finally:
                sys.stderr.flush()
                os.dup2(saved, 2)
                os.close(saved)
                captured.seek(0)
                kept = [line for line in captured.read().decode(errors="replace").splitlines() if not is_noise(line)]
                if kept:
                    print("\n".join(kept), file=sys.stderr, flush=True)


class _QuietFinder(importlib.abc.MetaPathFinder):
    # It stays on sys.meta_path until TensorFlow is actually imported: a mere `importlib.util.find_spec`
    # ("is TensorFlow installed?") must not use it up.
    finding = False

    def find_spec(self, name, path, target=None):
        if name != "tensorflow" or self.finding:
            return None
        self.finding = True  # the real finders do the finding
        try:
            spec = importlib.util.find_spec(name)
        finally:
            self.finding = False
        if spec is not None and spec.loader is not None:
            spec.loader = _QuietLoader(spec.loader, self)
        return spec


def quiet_startup():
    """Filters TensorFlow's start-up notices out of stderr when TensorFlow is imported (see the module docstring).

    Returns:
        True when the hook is installed (or already was).
    """
    if "TF_CPP_MIN_LOG_LEVEL" in os.environ or "tensorflow" in sys.modules:
        return False
    if not any(isinstance(finder, _QuietFinder) for finder in sys.meta_path):
        sys.meta_path.insert(0, _QuietFinder())
    # Once TensorFlow runs, its INFO lines (the profiler's sessions, ...) stay off too; warnings and errors show.
    os.environ[QUIET_LEVEL_VARIABLE] = "1"
    return True
