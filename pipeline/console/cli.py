"""How every command ends: one `error:` line and a documented exit status, never a traceback for a user's mistake.

Exit status of every command (`pipeline.train`, `evaluate`, `predict`, `export`, `prepare`, `benchmark`,
`tuning.search`):

    0    done
    1    the run started and failed: training diverged, some images could not
         be classified, out of memory, a disk or file-system error
    2    the command could not start: a bad argument or config, or an input
         (config file, run directory, model, labels, data) that is missing,
         unreadable, or not what it should be; a directory that is not ours
    130  interrupted (Ctrl-C, SIGINT)
    143  stopped by SIGTERM (a scheduler's preemption); training backs up first
         (`pipeline.console.signals`)

Errors a user can cause are raised as `pipeline.errors.UserError` subclasses
(`ConfigError` and its kin: status 2; `RunFailed`: status 1) with a message of
the form "<what>: <what to do>"; `command` prints it as `error: <message>`.
Errors that are not the user's (bugs) keep their traceback.

This module does not import TensorFlow.
"""

import argparse
import functools
import sys
from importlib import metadata

from pipeline import __version__
from pipeline.console.signals import terminate_raises
from pipeline.errors import ConfigError, RunFailed, Stopped, UserError, is_disk_full

USAGE = 2
FAILED = 1
INTERRUPTED = 130


def exit_status(exc):
    """The exit status of a `UserError`: FAILED for a run that started and failed, else USAGE."""
    return FAILED if isinstance(exc, RunFailed) else USAGE


def _tensorflow_error(exc):
    """(message, status) for a TensorFlow error a user's machine or data causes, else None."""
    tf = sys.modules.get("tensorflow")
    if tf is None or not isinstance(exc, tf.errors.OpError):
        return None
    first = (exc.message or "").strip().splitlines()[:1]
    detail = first[0] if first else type(exc).__name__
    if isinstance(exc, tf.errors.ResourceExhaustedError):
        return f"out of memory ({detail}): lower train.batch_size or data.image_size, or free memory", FAILED
    if isinstance(exc, (tf.errors.NotFoundError, tf.errors.PermissionDeniedError)):
        return f"{detail}: check that the file exists and is readable", FAILED
    return None


def report(exc):
    """The exit status for `exc`, after printing its one-line error; None for an error that is a bug."""
    if isinstance(exc, UserError):
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return exit_status(exc)
    if isinstance(exc, Stopped):
        print(exc.message, file=sys.stderr, flush=True)
        return exc.status
    if isinstance(exc, KeyboardInterrupt):
        print("error: interrupted: run the same command again to resume where it stopped", file=sys.stderr)
        return INTERRUPTED
    if is_disk_full(exc):
        where = getattr(exc, "filename", None)
        where = f"{where}: " if where else ""
        print(f"error: {where}no space left on the device: free some space, then run the same command again",
              file=sys.stderr)
        return FAILED
    if isinstance(exc, MemoryError):
        print("error: out of memory: lower train.batch_size, or set data.cache: false", file=sys.stderr)
        return FAILED
    if isinstance(exc, OSError) and exc.strerror:
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"error: {where}{exc.strerror}: check the path, its permissions and the free disk space",
              file=sys.stderr)
        return FAILED
    found = _tensorflow_error(exc)
    if found is not None:
        print(f"error: {found[0]}", file=sys.stderr)
        return found[1]
    return None


def command(body):
    """Decorates a command's `main(argv=None)`: user errors become one line and an exit status.

    The decorated function returns the status (0 when `body` returns None)
    instead of raising, so tests can call `main([...])` and check it. While it
    runs, SIGTERM raises `Stopped` (`pipeline.console.signals`): one line and
    exit status 143 instead of a silent end.
    """

    @functools.wraps(body)
    def main(argv=None):
        try:
            with terminate_raises():
                status = body(argv)
        except (Exception, KeyboardInterrupt, Stopped) as exc:
            status = report(exc)
            if status is None:
                raise
        return 0 if status is None else status

    return main


def version():
    """The installed project's version (pipeline.__version__ when run from a checkout that is not installed)."""

    try:
        return metadata.version("alexnet-pipeline")
    except metadata.PackageNotFoundError:

        return __version__


class ArgumentParser(argparse.ArgumentParser):
    """`argparse.ArgumentParser` whose errors are one `error:` line (status 2) instead of usage text.

    `description` is shown as written (a command's docstring with its usage
    examples), and every command answers `--version`.
    """

    def __init__(self, *args, version_option=True, **kwargs):
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(*args, **kwargs)
        if version_option:
            self.add_argument("--version", action="version", version=f"alexnet-pipeline {version()}")

    def error(self, message):
        raise ConfigError(f"{message}: see python -m {self.prog.removeprefix('python -m ')} --help")


def add_config_options(parser, set_example="train.optimizer.learning_rate=0.005"):
    """The options every command that reads an experiment config has: --config, --set, --print-config."""
    parser.add_argument("--config", action="append", default=[], metavar="YAML",
                        help="experiment file, or the name of a shipped one (quickstart, cifar10, imagenet2012, ...); "
                             "repeat to layer files, later ones win. Default: quickstart")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help=f"override one dotted key, e.g. --set {set_example}")
    parser.add_argument("--print-config", action="store_true",
                        help="print the resolved config (YAML) and exit, writing nothing")


def check_range(name, value, low=None, high=None):
    """Raises `ConfigError` naming the argument unless low <= value <= high (either bound may be None)."""
    if (low is not None and value < low) or (high is not None and value > high):
        if high is None:
            bound = f"at least {low}"
        elif low is None:
            bound = f"at most {high}"
        else:
            bound = f"from {low} to {high}"
        raise ConfigError(f"{name} must be {bound}, got {value}")
