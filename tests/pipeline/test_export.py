"""`python -m pipeline.export`: re-exporting a run's SavedModel from its model.keras or --model, the refusals
(no run, an unfinished run, no or a damaged labels.txt), and two exports at once taking turns."""

import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from pipeline import export
from pipeline.config import load_config
from pipeline.storage.rundir import LABELS_FILE, RunDir
from tests.helpers.runs import EXPORT_TINY, make_run
from tests.helpers.serving import keras_probabilities


def test_reexport_command_rewrites_the_saved_model_with_labels_txt(tmp_path, capsys):
    run_dir = tmp_path / "again"
    _, model = make_run(run_dir)
    x = np.random.default_rng(8).uniform(0, 255, (2, 64, 64, 3)).astype(np.float32)
    renamed = [f"renamed_{c}" for c in range(10)]
    (run_dir / LABELS_FILE).write_text("".join(f"{n}\n" for n in renamed))
    (run_dir / "saved_model" / "saved_model.pb").unlink()

    assert export.main([str(run_dir)]) == 0
    assert f"Wrote {run_dir / 'saved_model'} (10 classes" in capsys.readouterr().out
    served = tf.saved_model.load(str(run_dir / "saved_model"))
    assert [n.decode() for n in served.signatures["class_names"]()["class_names"].numpy()] == renamed
    np.testing.assert_allclose(served.serve_preprocessed(x)["probabilities"].numpy(),
                               keras_probabilities(model, x), atol=1e-5)
    assert not list(tmp_path.glob(".*.tmp"))  # the staging directory was moved into place

    # --model exports another saved Keras model into the same run.
    model.get_layer("fc8").set_weights([w * 0 for w in model.get_layer("fc8").get_weights()])
    model.save(tmp_path / "zero.keras")
    assert export.main([str(run_dir), "--model", str(tmp_path / "zero.keras")]) == 0
    served = tf.saved_model.load(str(run_dir / "saved_model"))
    np.testing.assert_allclose(served.serve_preprocessed(x)["probabilities"].numpy(), np.full((2, 10), 0.1), atol=1e-6)


def test_reexport_refuses_missing_and_unfinished_runs(tmp_path, capsys):
    assert export.main([str(tmp_path / "nowhere")]) == 2
    assert "run directory not found" in capsys.readouterr().err

    unfinished = tmp_path / "unfinished"
    with RunDir(unfinished, load_config([], EXPORT_TINY)):
        pass  # config.yaml only, as a run that has not finished
    assert export.main([str(unfinished)]) == 2
    err = capsys.readouterr().err
    assert "model.keras not found: the run is unfinished" in err and "Traceback" not in err

    run_dir = tmp_path / "nolabels"
    make_run(run_dir)
    (run_dir / LABELS_FILE).unlink()
    before = (run_dir / "saved_model" / "saved_model.pb").read_bytes()
    assert export.main([str(run_dir)]) == 2
    assert "holds no labels.txt" in capsys.readouterr().err
    assert (run_dir / "saved_model" / "saved_model.pb").read_bytes() == before


def test_a_short_labels_txt_is_named_as_the_damaged_file(tmp_path, capsys):
    run_dir = tmp_path / "run"
    make_run(run_dir)
    (run_dir / LABELS_FILE).write_text("a\nb\nc\n")
    before = _tree(run_dir / "saved_model")
    assert export.main([str(run_dir)]) == 2
    assert capsys.readouterr().err == (
        f"error: {run_dir / LABELS_FILE} names 3 classes but the run's model.keras has 10 outputs: labels.txt was "
        "changed or damaged; restore it (one class name per line, in class-index order) or train the run again "
        "(--overwrite)\n"
    )
    assert _tree(run_dir / "saved_model") == before


def _tree(path):
    return {p.relative_to(path).as_posix(): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


PAUSED_EXPORT = """
import pathlib, sys, time
from pipeline import export
from pipeline.storage import files
marker = pathlib.Path(sys.argv[1])
swap = files.replace_directory
def slow_swap(staging, target):
    marker.write_text("staged")
    time.sleep(float(sys.argv[2]))
    return swap(staging, target)
import pipeline.serving.saved_model as saved_model
saved_model.replace_directory = slow_swap
sys.exit(export.main(sys.argv[3:]))
"""


@pytest.mark.slow
def test_two_exports_at_once_one_waits_its_turn_and_the_saved_model_is_whole(tmp_path):
    from tests.helpers.processes import finish, project_env, start, wait_until

    run_dir = tmp_path / "run"
    _, model = make_run(run_dir)
    marker = tmp_path / "staged"
    first = start([sys.executable, "-c", PAUSED_EXPORT, str(marker), "5", str(run_dir)], env=project_env())
    wait_until(marker.exists, first)
    second = subprocess.run([sys.executable, "-m", "pipeline.export", str(run_dir)], env=project_env(),
                            capture_output=True, text=True, timeout=120)
    assert second.returncode == 2, second.stderr
    assert second.stderr == (f"error: {run_dir} is in use by another process (a training run, an export or an "
                             "evaluation of this run): wait for it to finish, or choose another run directory\n")
    status, output = finish(first)
    assert status == 0, output
    # One complete SavedModel, no staging left, and it serves the run's model.
    assert sorted(p.name for p in run_dir.iterdir() if p.name.startswith(".")) == []
    x = np.random.default_rng(3).uniform(0, 255, (2, 64, 64, 3)).astype(np.float32)
    served = tf.saved_model.load(str(run_dir / "saved_model"))
    np.testing.assert_allclose(served.serve_preprocessed(x)["probabilities"].numpy(),
                               keras_probabilities(model, x), atol=1e-5)
