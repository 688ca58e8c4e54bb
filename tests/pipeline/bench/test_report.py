"""The TensorFlow benchmark's report (`pipeline.bench.report`), as `python -m pipeline.benchmark` prints it: one
line for each measurement, from the CPU kernels to the peak memory; no timings are asserted."""

import pytest

from pipeline import benchmark


@pytest.mark.slow
def test_report_names_every_measurement(capsys, tmp_path):
    import importlib.util

    import numpy as np
    import tensorflow as tf

    rng = np.random.default_rng(0)
    for i in range(12):  # the end-to-end fit reads real JPEGs from a folder
        path = tmp_path / f"class{i % 2}" / f"{i}.jpg"
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(tf.io.encode_jpeg(rng.integers(0, 255, (90, 120, 3), dtype=np.uint8)).numpy())
    tiny = ["--set", "data.image_size=64", "--set", "data.resize=72", "--set", "model.fc_units=16"]
    quick = ["--batch-size", "4", "--steps", "1", "--warmup", "1", "--repeats", "1"]
    assert benchmark.main(tiny + quick + ["--fit-source", f"folder:{tmp_path}"]) == 0
    out = capsys.readouterr().out
    for label in ("CPU kernels: ", "matmul float32  2048", "matmul float32  4096", "training FLOPs/image",
                  "step (in-memory batch)", "of the matmul rate", "paired with a matmul", "fit (pipeline.train)",
                  f"folder:{tmp_path}", "step again after fit", "of the step before and after", "peak RSS"):
        assert label in out, label
    if importlib.util.find_spec("torch"):
        assert "PyTorch step (same net)" in out and "x PyTorch's" in out
