"""Timing on a shared machine (pipeline.bench.timing): the one median-and-spread format, the cores a timing used."""

from pipeline.bench import timing


def test_median_with_its_spread_and_the_number_of_runs():
    assert timing.median_spread([3.0, 1.0, 2.0, 10.0]) == (2.5, 1.0, 10.0)
    assert timing.fmt([3.0, 1.0, 2.0, 10.0], "images/s") == "2.5 images/s (spread 1.0-10.0, 4 runs)"
    assert timing.fmt([1234.4, 1200.6], "images/s", 0) == "1218 images/s (spread 1201-1234, 2 runs)"
    assert timing.fmt([0.6912], "of the matmul rate", 2) == "0.69 of the matmul rate (spread 0.69-0.69, 1 runs)"


def test_cores_used_is_cpu_time_over_wall_time_and_low_use_is_flagged(monkeypatch):
    monkeypatch.setattr(timing.os, "sched_getaffinity", lambda pid: {0, 1})
    meter = timing.CoreMeter()
    meter.cpu, meter.wall = 3.0, 2.0
    assert meter.cores == 1.5
    assert meter.describe(" in all") == "  used 1.50 of 2 cores in all  <- other load on the machine? (see --help)"
    assert meter.describe(warn=False) == "  used 1.50 of 2 cores"
    meter.cpu = 3.4  # 1.7 cores: at least 0.8 of those available
    assert meter.describe() == "  used 1.70 of 2 cores"
    assert timing.CoreMeter().describe(warn=False) == "  used nan of 2 cores"
