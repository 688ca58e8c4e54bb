"""SIGINT and SIGTERM: one line and 143 for any command, a noted stop for training, a second signal stops at once."""

import os
import signal
import time

import pytest

from pipeline.console import cli, signals
from pipeline.errors import Stopped


def _signal_self(signum):
    os.kill(os.getpid(), signum)
    time.sleep(0.01)  # the handler runs at the next bytecode of the main thread


def test_a_command_ends_on_sigterm_with_one_line_and_status_143(capsys):
    finished = []

    @cli.command
    def main(argv=None):
        try:
            _signal_self(signal.SIGTERM)
            time.sleep(5)  # never reached: the handler raises
        finally:
            finished.append("cleaned up")

    before = signal.getsignal(signal.SIGTERM)
    assert main([]) == 143
    assert finished == ["cleaned up"]  # finally blocks run (locks released, temporary files removed)
    assert capsys.readouterr().err == "stopped by SIGTERM: run the same command again to go on\n"
    assert signal.getsignal(signal.SIGTERM) is before  # the command's handler is gone again


def test_stop_at_step_notes_the_first_signal_and_the_second_stops_at_once():
    said = []
    with signals.StopAtStep(say=said.append) as stop:
        assert stop.signum is None
        _signal_self(signal.SIGTERM)
        assert stop.signum == signal.SIGTERM  # noted, nothing raised: the loop stops at its next step
        assert said == ["SIGTERM received: stopping after the current step with a backup "
                        "(send it again to stop at once)"]
        with pytest.raises(KeyboardInterrupt):
            _signal_self(signal.SIGINT)
    with signals.StopAtStep(say=said.append) as stop:
        _signal_self(signal.SIGINT)
        assert stop.signum == signal.SIGINT
        with pytest.raises(Stopped) as raised:
            _signal_self(signal.SIGTERM)
        assert raised.value.status == 143
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_reclaim_puts_pythons_handler_back_in_charge():
    with signals.terminate_raises():
        # Another library sets its own handler behind Python's back (TensorFlow does, at the C level);
        # reclaim sets Python's again. Here the other handler is SIG_IGN set through the C library.
        import ctypes

        libc = ctypes.CDLL(None)
        libc.signal(signal.SIGTERM, 1)  # SIG_IGN
        signals.reclaim()
        with pytest.raises(Stopped):
            _signal_self(signal.SIGTERM)
