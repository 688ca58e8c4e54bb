"""The search directory (`tuning.searchdir`): a search resumes only with the config it began with (the budget
and the progress output may change), --overwrite and a resumption refuse a folder that is not a search directory
of this project and leave every file in it, and the directory is made only when the search begins."""

import pytest

from pipeline.config import load_config
from pipeline.errors import ConfigError
from pipeline.storage.files import DirectoryError
from tests.helpers.experiments import write_experiment
from tests.helpers.folders import unchanged, user_folder
from tests.helpers.runs import ROOT
from tuning import search, searchdir
from tuning.searchdir import SearchDir


def test_resuming_with_another_search_space_is_refused(tmp_path):
    config = load_config([write_experiment(tmp_path)])
    search_dir = tmp_path / "search"
    search_dir.mkdir()
    (search_dir / "config.yaml").write_text(config.to_yaml())
    searchdir.check_resumable(search_dir, load_config([write_experiment(tmp_path, tune={"max_trials": 9})]))
    searchdir.check_resumable(search_dir, load_config([write_experiment(tmp_path, train={"verbose": 2})]))
    changed = load_config([write_experiment(tmp_path, tune={"dropout": {"min": 0.1, "max": 0.2}})])
    with pytest.raises(ConfigError, match=r"holds a search with another config \(differs in: tune\.dropout\.max, tune\.dropout\.min\)"):
        searchdir.check_resumable(search_dir, changed)


def test_search_overwrite_refuses_a_folder_of_user_files(tmp_path, capsys):
    photos = tmp_path / "photos"
    files = user_folder(photos)
    argv = ["--config", str(ROOT / "configs" / "tune_quickstart.yaml"), "--dir", str(photos), "--overwrite"]
    assert search.main(argv) == 2
    assert capsys.readouterr().err.startswith(f"error: {photos} is not a search directory of this project")
    assert unchanged(photos, files)
    assert search.main(argv[:-1]) == 2
    assert capsys.readouterr().err == (
        f"error: {photos / 'config.yaml'} is not a config of this project (camera: unknown key); choose another --dir\n"
    )
    (photos / "config.yaml").unlink()
    del files["config.yaml"]
    assert search.main(argv[:-1]) == 2
    assert capsys.readouterr().err.startswith(f"error: {photos} is not empty and holds no config.yaml")
    assert unchanged(photos, files)


def test_the_directory_is_made_only_when_the_search_begins(tmp_path):
    config = load_config([write_experiment(tmp_path)])
    path = tmp_path / "runs" / "search"
    with SearchDir(path, config):
        assert list(path.iterdir()) == []  # locked, nothing written
    assert not (tmp_path / "runs").exists()  # a search that did not begin leaves nothing
    with SearchDir(path, config) as opened:
        opened.begin()
    assert [p.name for p in path.iterdir()] == ["config.yaml"]
    assert (path / "config.yaml").read_text() == config.to_yaml()


def test_overwrite_deletes_what_the_old_search_wrote_when_the_new_one_begins(tmp_path):
    config = load_config([write_experiment(tmp_path)])
    path = tmp_path / "search"
    for name in ("best.yaml", "oracle.json", "chief.json", "trial_0/trial.json", "trial_0/checkpoint.weights.h5",
                 "logs/0/execution0/train/events.out.tfevents.1"):
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_text("old")
    (path / "config.yaml").write_text(load_config([write_experiment(tmp_path)], ["tune.max_trials=9"]).to_yaml())
    with SearchDir(path, config, overwrite=True) as opened:
        assert (path / "oracle.json").read_text() == "old"  # nothing is deleted before the search begins
        opened.begin()
    assert [p.name for p in path.iterdir()] == ["config.yaml"]
    assert (path / "config.yaml").read_text() == config.to_yaml()


def test_a_file_is_not_a_search_directory(tmp_path):
    path = tmp_path / "search"
    path.write_text("mine")
    with pytest.raises(DirectoryError) as refused, SearchDir(path, load_config([write_experiment(tmp_path)])):
        pass
    assert str(refused.value) == f"{path} is a file, not a search directory: choose another --dir"
    assert path.read_text() == "mine"
