"""Every command ends a user's mistake in one `error: <what>: <what to do>` line with its exit status."""

import subprocess
import sys

import pytest

from pipeline import (
    benchmark,
    evaluate,
    export,
    predict,
    prepare,
    train,
)
from pipeline.console import cli
from pipeline.errors import ConfigError, RunFailed
from tests.helpers.runs import ROOT, make_run, project_env
from tuning import search


def _one_error_line(err):
    lines = err.splitlines()
    return len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err


def test_command_maps_user_errors_to_their_status(capsys):
    def raising(exc):
        @cli.command
        def main(argv=None):
            raise exc

        return main()

    assert raising(ConfigError("train.epochs: must be positive: fix it")) == 2
    assert raising(RunFailed("the loss became nan: lower the rate")) == 1
    assert raising(KeyboardInterrupt()) == 130
    assert raising(PermissionError(13, "Permission denied", "/runs/x")) == 1
    err = capsys.readouterr().err.splitlines()
    assert err == [
        "error: train.epochs: must be positive: fix it",
        "error: the loss became nan: lower the rate",
        "error: interrupted: run the same command again to resume where it stopped",
        "error: /runs/x: Permission denied: check the path, its permissions and the free disk space",
    ]
    with pytest.raises(ZeroDivisionError):  # a bug keeps its traceback
        raising(ZeroDivisionError("bug"))


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("cli") / "run"
    make_run(run_dir)
    return run_dir


def test_damaged_or_missing_inputs_of_each_command(finished_run, tmp_path, capsys):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(finished_run, broken)
    (broken / "model.keras").write_bytes(b"PK\x03\x04 not a whole zip")
    (broken / "saved_model" / "saved_model.pb").write_bytes(b"\x08\x96\x01 garbage")
    image = tmp_path / "a.png"
    image.write_bytes(b"\x89PNG")
    cases = [
        (evaluate.main, [str(broken)], f"error: {broken / 'model.keras'}: cannot be loaded as a Keras model ("),
        (predict.main, [str(broken), str(image)], f"error: {broken / 'saved_model'}: cannot be loaded as a SavedModel ("),
        (export.main, [str(tmp_path / "nowhere")], f"error: run directory not found: {tmp_path / 'nowhere'}"),
        (export.main, [str(broken)], f"error: {broken / 'model.keras'}: cannot be loaded as a Keras model ("),
        (prepare.main, ["--output", str(tmp_path / "p"), "--shards", "-1"], "error: --shards must be from 0 to"),
        (benchmark.main, ["--repeats", "0"], "error: --repeats must be at least 1, got 0"),
        (benchmark.main, ["--set", "model.lrn_n=17"], "error: model.lrn_n: must be odd, from 3 to 15"),
        (benchmark.main, ["--input", "--images", str(tmp_path / "none")], f"error: --images {tmp_path / 'none'} is not"),
        (train.main, ["--set", "model.lrn_beta=0.001"], "error: model.lrn_beta: must be at least 0.01 (the smallest"),
        (search.main, ["--dir", str(image)], f"error: {image} is a file, not a search directory: choose another --dir"),
        (train.main, ["--bogus"], "error: unrecognized arguments: --bogus: see python -m pipeline.train --help"),
    ]
    for main, argv, start in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert _one_error_line(err) and err.startswith(start), (argv, err)
    (broken / "labels.txt").unlink()
    shutil.copy(finished_run / "model.keras", broken / "model.keras")
    assert export.main([str(broken)]) == 2
    assert capsys.readouterr().err.startswith(f"error: {broken} holds no labels.txt: the class names are unknown")


def test_a_real_command_line_prints_one_line_and_nothing_else(tmp_path):
    # TensorFlow is loaded (the strategy is made before the run directory is opened), and its start-up
    # notices are filtered out: the terminal shows the error alone.
    path = tmp_path / "file"
    path.write_text("x")
    env = project_env()
    assert "TF_CPP_MIN_LOG_LEVEL" not in env  # as a user's shell: the filter is on
    command = [sys.executable, "-m", "pipeline.train", "--run-dir", str(path)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert (done.returncode, done.stderr) == (2, f"error: {path} is a file, not a run directory: choose another --run-dir\n")


def test_readme_documents_exit_status_and_security():
    readme = (ROOT / "README.md").read_text()
    security = readme.split("## Security", 1)[1].split("\n## ", 1)[0]
    for needle in ("--worker-hosts", "--oracle-ip", "tf.saved_model.load", "private network"):
        assert needle in security
    assert "| 2 |" in readme and "| 1 |" in readme


ALIAS_BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{b}: &{b} [{', '.join([f'*{a}'] * 9)}]\n" for a, b in zip("abcdefgh", "bcdefghi")
) + "data:\n  augment:\n    min_area: *i\n"

BAD_CONFIGS = {
    "random bytes": (bytes(range(256)), "not UTF-8 text (byte 128): a config file is YAML in UTF-8; save it as UTF-8"),
    "UTF-16": ("train:\n  epochs: 3\n".encode("utf-16"), "not UTF-8 text (byte 0): a config file is YAML in UTF-8; save it as UTF-8"),
    "alias bomb": (ALIAS_BOMB.encode(), "not valid YAML: more than 10,000 values (aliases expanded): not a config"),
    "duplicate key": (b"train:\n  epochs: 3\n  epochs: 4\n",
                      "not valid YAML: the key 'epochs' is given twice (lines 2 and 3)"),
    "syntax": (b"train: [1, 2\nb: 3\n", "not valid YAML: expected ',' or ']', but got ':' at line 2, column 2"),
}


@pytest.mark.parametrize("case", sorted(BAD_CONFIGS))
def test_a_bad_config_file_is_one_line_for_every_command_that_reads_one(tmp_path, capsys, case):
    data, message = BAD_CONFIGS[case]
    path = tmp_path / "bad.yaml"
    path.write_bytes(data)
    for main, argv in (
        (train.main, ["--config", str(path), "--run-dir", str(tmp_path / "run")]),
        (prepare.main, ["--config", str(path), "--output", str(tmp_path / "out")]),
        (search.main, ["--config", str(path), "--dir", str(tmp_path / "search")]),
    ):
        assert main(argv) == 2
        assert capsys.readouterr().err == f"error: {path}: {message}\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.yaml"]


def test_a_damaged_config_yaml_in_a_run_is_one_line(finished_run, tmp_path, capsys):
    import shutil

    run_dir = tmp_path / "run"
    shutil.copytree(finished_run, run_dir)
    (run_dir / "config.yaml").write_bytes(b"\xff\xfe\x00garbage")
    assert evaluate.main([str(run_dir), "--no-figures"]) == 2
    assert capsys.readouterr().err == (
        f"error: {run_dir / 'config.yaml'}: not UTF-8 text (byte 0): a config file is YAML in UTF-8; save it as UTF-8\n"
    )
    assert train.main(["--run-dir", str(run_dir), "--overwrite"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {run_dir} is not a run directory of this project (it holds ")
    assert err.endswith("(config.yaml is not a config of this project)\n")


@pytest.mark.parametrize("override, message", [
    ("name=\udcff\udcfe", "--set 'name=\\udcff\\udcfe': not UTF-8 text; give the value in UTF-8"),
    ("model.std=[.nan, 1, 1]", "model.std.0: Input should be a finite number (got nan)"),
    ("train.optimizer.learning_rate=.inf", "train.optimizer.learning_rate: Input should be a finite number (got inf)"),
    ("data.augment.pca_noise=.inf", "data.augment.pca_noise: Input should be a finite number (got inf)"),
    ("model.mean=[1, -.inf, 2]", "model.mean.1: Input should be a finite number (got -inf)"),
])
def test_bad_overrides_are_one_line_naming_the_key(tmp_path, capsys, override, message):
    for main, argv in ((train.main, ["--run-dir", str(tmp_path / "run")]),
                       (evaluate.main, [str(tmp_path)])):
        assert main(argv + ["--set", override]) == 2
        err = capsys.readouterr().err
        assert err == f"error: {message}\n" or main is evaluate.main, err
    assert list(tmp_path.iterdir()) == []
