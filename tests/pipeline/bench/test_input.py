"""The input benchmark's pieces: the decode ceiling, counting inside TensorFlow, the table's arithmetic."""

import tensorflow as tf

from pipeline import prepare
from pipeline.bench.input import (
    count_batches,
    decode_pipeline,
    measure,
    parse_args,
    report,
    take_images,
    with_threads,
)
from pipeline.config import load_config
from pipeline.data.sources import load_source
from tests.helpers.images import jpeg_bytes, write_tree


def test_report_gives_per_core_ratios_and_the_cores_for_20k():
    results = {
        ("reference", 1): ([100.0], 1.0), ("reference", 2): ([180.0, 200.0, 220.0], 2.0),
        ("decode", 1): ([400.0], 1.0), ("decode", 2): ([800.0], 2.0),
        ("raw", 1): ([1000.0], 0.5), ("raw", 2): ([1500.0, 1600.0, 1700.0], 1.6),
    }  # fmt: skip
    lines = []
    report(results, [1, 2], out=lines.append)
    assert lines[0].split() == ["pipeline", "1", "thr", "img/s", "cores", "2", "thr", "img/s", "cores", "per", "core",
                                "spread", "vs", "reference", "vs", "decode", "cores", "for", "20k/s"]
    # raw: 1000 images/s on half a core is 2000 per core, so 20,000 images/s need 10 cores; at 2 threads
    # 1600 against the reference's 200 and the decoder's 800.
    assert lines[3].split() == ["raw", "1000", "0.50", "1600", "1.60", "2000", "1500-1700", "8.00x", "2.00x", "10.0"]
    assert lines[1].split() == ["reference", "100", "1.00", "200", "2.00", "100", "180-220", "1.00x", "0.25x", "200.0"]


def test_the_decode_ceiling_decodes_every_prepared_record(tmp_path):
    write_tree(tmp_path / "images", {f"train/c{i % 2}/{i}.jpg": jpeg_bytes(60 + i, 80, seed=i) for i in range(5)})
    out = tmp_path / "prepared"
    argv = ["--set", f"data.source=folder:{tmp_path / 'images'}", "--set", "data.validation_fraction=0.2"]
    assert prepare.main(argv + ["--output", str(out)]) == 0
    records = load_source(load_config([], [f"data.source=records:{out}"]).data).train_records
    # Four training images (one held out), each decoded whole at its own size (smaller than 256: kept).
    shapes = [tuple(s.numpy().tolist()) for batch in decode_pipeline(records, 2) for s in batch]
    assert len(shapes) == len(set(shapes)) == 4 and set(shapes) <= {(60 + i, 80, 3) for i in range(5)}
    decoded = with_threads(decode_pipeline(records, 3), 1)
    assert take_images(iter(decoded), count_batches(decoded)) == 4


def test_thread_counts_are_checked():
    import pytest

    from pipeline.errors import ConfigError

    with pytest.raises(ConfigError, match="--threads must be at least 1, got 0"):
        parse_args(["--threads", "1", "0"])
    assert parse_args([]).threads == [1, 2]
    assert parse_args(["--threads", "4"]).threads == [4]
    options = with_threads(tf.data.Dataset.range(3), 1).options()
    assert options.threading.private_threadpool_size == 1 and options.threading.max_intra_op_parallelism == 1


def test_timings_take_whole_epochs_from_one_iterator():
    epoch = tf.data.Dataset.range(10).batch(4).map(lambda x: (x, x))  # batches of 4, 4 and 2
    assert count_batches(epoch) == 3
    iterator = iter(epoch.repeat())
    assert take_images(iterator, 3) == 10
    assert take_images(iterator, 4) == 14  # the same iterator goes on: 4 + 4 + 2, then the next epoch's 4
    assert [int(x) for x in next(iterator)[0]] == [4, 5, 6, 7]
    results = measure({"tiny": lambda: epoch}, repeats=2, passes=3, threads=(1,))
    rates, cores = results["tiny", 1]
    assert len(rates) == 2 and all(rate > 0 for rate in rates) and cores > 0
