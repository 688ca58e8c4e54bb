"""The project as a user installs it: a non-editable install runs every command from any directory."""

import ast
import os
import pathlib
import shutil
import subprocess
import sys

import pytest
import tomllib

ROOT = pathlib.Path(__file__).resolve().parents[1]
SKIP = shutil.ignore_patterns(".git", "runs", "build", "dist", "*.egg-info", "__pycache__", "wheels", ".pytest_cache")


def test_every_package_of_the_project_is_in_the_distribution():
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    on_disk = {
        ".".join(path.parent.relative_to(ROOT).parts)
        for top in ("pipeline", "model_defs", "tuning") for path in (ROOT / top).rglob("__init__.py")
    }
    assert listed == on_disk | {"pipeline.configs"}


def test_every_console_script_names_a_command_main():
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    for name, target in scripts.items():
        module, function = target.split(":")
        tree = ast.parse((ROOT / (module.replace(".", "/") + ".py")).read_text())
        assert function in {node.name for node in tree.body if isinstance(node, ast.FunctionDef)}, name


@pytest.mark.slow
def test_a_non_editable_install_runs_the_default_command_and_shipped_configs_from_elsewhere(tmp_path):
    source = tmp_path / "src"
    shutil.copytree(ROOT, source, ignore=SKIP)
    venv = tmp_path / "venv"
    # The dependencies come from this interpreter's site-packages; the project itself is installed as a wheel is.
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True, timeout=120)
    install = subprocess.run([venv / "bin" / "python", "-m", "pip", "install", "-q", "--no-deps",
                              "--no-build-isolation", str(source)], capture_output=True, text=True, timeout=300)
    assert install.returncode == 0, install.stderr[-2000:]
    shutil.rmtree(source)  # nothing may lean on the copy it was built from
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "TF_CPP_MIN_LOG_LEVEL")}

    def run(*argv):
        return subprocess.run([str(a) for a in argv], cwd=elsewhere, env=env, capture_output=True, text=True,
                              timeout=300)

    where = run(venv / "bin" / "python", "-c", "import pipeline; print(pipeline.__file__)")
    assert where.stdout.strip().startswith(str(venv / "lib")), where.stdout + where.stderr
    version = run(venv / "bin" / "alexnet-train", "--version")
    assert version.stdout.strip() == "alexnet-pipeline 0.2.0"
    default = run(venv / "bin" / "alexnet-train", "--print-config")  # the default command's config, found
    assert default.returncode == 0 and default.stdout.startswith("name: quickstart\n"), default.stderr
    small = ["--set", "train.epochs=1", "--set", "train.steps_per_epoch=2", "--set", "train.validation_steps=1",
             "--set", "data.image_size=64", "--set", "data.resize=64", "--set", "model.fc_units=32",
             "--set", "export.saved_model=false"]
    trained = run(venv / "bin" / "python", "-m", "pipeline.train", "--config", "quickstart", *small)
    assert trained.returncode == 0, trained.stdout[-2000:] + trained.stderr[-2000:]
    assert (elsewhere / "runs" / "quickstart" / "metrics.json").is_file()
    for config in ("cifar10", "imagenet2012", "tune_quickstart"):
        shown = run(venv / "bin" / "alexnet-train", "--config", config, "--print-config")
        assert shown.returncode == 0 and shown.stdout.startswith(f"name: {config}\n"), shown.stderr
    assert sorted(p.name for p in elsewhere.iterdir()) == ["runs"]
