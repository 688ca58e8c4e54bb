"""Distributed tuning: KerasTuner's chief and workers, named by its environment variables.

One chief process runs the oracle (it trains nothing) and any number of
workers take trials from it over gRPC; `--tuner-id/--oracle-ip/--oracle-port`
set KERASTUNER_TUNER_ID, KERASTUNER_ORACLE_IP and KERASTUNER_ORACLE_PORT for
the life of the tuner (setting those variables yourself works the same).
"""

import contextlib
import os


@contextlib.contextmanager
def environ(updates):
    """Sets environment variables for the duration of the block, then restores them."""
    saved = {key: os.environ.get(key) for key in updates}
    os.environ.update(updates)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def tuner_environment(tuner_id, oracle_ip, oracle_port):
    """KerasTuner's variables for a process of a distributed search ({} when tuner_id is None)."""
    if tuner_id is None:
        return {}
    return {
        "KERASTUNER_TUNER_ID": tuner_id,
        "KERASTUNER_ORACLE_IP": oracle_ip,
        "KERASTUNER_ORACLE_PORT": str(oracle_port),
    }


def role():
    """'single', 'chief' or 'worker', from KerasTuner's environment variables."""
    if "KERASTUNER_ORACLE_IP" not in os.environ:
        return "single"
    # KerasTuner takes any id containing "chief" for the chief.
    return "chief" if "chief" in os.environ.get("KERASTUNER_TUNER_ID", "") else "worker"


def oracle_address():
    """(ip, port) of the chief's oracle, from KerasTuner's environment variables."""
    return os.environ["KERASTUNER_ORACLE_IP"], int(os.environ["KERASTUNER_ORACLE_PORT"])
