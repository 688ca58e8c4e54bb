"""Distributed tuning's environment (`tuning.distributed`): KerasTuner's variables made from the command line,
set for a block and restored after it (an error included), and the role they give a process."""

import os

import pytest

from tuning.distributed import environ, oracle_address, role, tuner_environment

KEYS = ("KERASTUNER_TUNER_ID", "KERASTUNER_ORACLE_IP", "KERASTUNER_ORACLE_PORT")


@pytest.fixture
def clean(monkeypatch):
    """No KerasTuner variable set, whatever the shell running the tests has."""
    for key in KEYS:
        monkeypatch.delenv(key, raising=False)


def test_the_command_line_becomes_kerastuners_variables():
    assert tuner_environment("worker0", "10.0.0.1", 8000) == {
        "KERASTUNER_TUNER_ID": "worker0",
        "KERASTUNER_ORACLE_IP": "10.0.0.1",
        "KERASTUNER_ORACLE_PORT": "8000",
    }
    assert tuner_environment(None, None, None) == {}


def test_variables_are_set_for_the_block_and_restored_after_it_even_after_an_error(clean, monkeypatch):
    monkeypatch.setenv("KERASTUNER_TUNER_ID", "before")
    with pytest.raises(RuntimeError, match="inside"), environ({"KERASTUNER_TUNER_ID": "chief",
                                                               "KERASTUNER_ORACLE_IP": "127.0.0.1"}):
        assert (os.environ["KERASTUNER_TUNER_ID"], os.environ["KERASTUNER_ORACLE_IP"]) == ("chief", "127.0.0.1")
        raise RuntimeError("inside")
    assert os.environ["KERASTUNER_TUNER_ID"] == "before"  # the value it had
    assert "KERASTUNER_ORACLE_IP" not in os.environ  # unset, as it was
    with environ({}):
        assert os.environ["KERASTUNER_TUNER_ID"] == "before"


@pytest.mark.parametrize(
    "variables, expected",
    [
        ({}, "single"),
        ({"KERASTUNER_TUNER_ID": "chief"}, "single"),  # no oracle to talk to: a search of its own
        ({"KERASTUNER_TUNER_ID": "chief", "KERASTUNER_ORACLE_IP": "127.0.0.1"}, "chief"),
        ({"KERASTUNER_TUNER_ID": "the_chief_1", "KERASTUNER_ORACLE_IP": "127.0.0.1"}, "chief"),  # as KerasTuner reads it
        ({"KERASTUNER_TUNER_ID": "worker0", "KERASTUNER_ORACLE_IP": "127.0.0.1"}, "worker"),
        ({"KERASTUNER_ORACLE_IP": "127.0.0.1"}, "worker"),
    ],
)
def test_the_role_follows_kerastuners_variables(clean, monkeypatch, variables, expected):
    for key, value in variables.items():
        monkeypatch.setenv(key, value)
    assert role() == expected


def test_the_oracle_address_is_read_from_kerastuners_variables(clean):
    with environ(tuner_environment("chief", "10.0.0.1", 8000)):
        assert oracle_address() == ("10.0.0.1", 8000)
