"""A run that knows its data: other classes refuse a resume, other files are counted, nothing of the record rewritten."""

import json
import shutil

import pytest

from pipeline import train
from pipeline.config import load_config
from pipeline.training import run as training_run
from pipeline.training.backup import RunBackup
from tests.helpers.images import jpeg_bytes, write_tree
from tests.helpers.runs import TINY, Killed, args, killed_after_first_epoch

NO_EXPORT = ["export.keras=false", "export.saved_model=false"]


def _photos(root, classes=("blue", "green", "red"), per_class=6):
    write_tree(root, {f"{name}/{i}.jpg": jpeg_bytes(seed=10 * c + i) for c, name in enumerate(classes)
                      for i in range(per_class)})


def _snapshot(run_dir):
    return {str(p.relative_to(run_dir)): p.read_bytes() for p in sorted(run_dir.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("change", ["class added", "class renamed"])
def test_a_resume_on_other_classes_is_refused_in_one_line_and_writes_nothing(tmp_path, capsys, change):
    root, run_dir = tmp_path / "photos", tmp_path / "run"
    _photos(root)
    killed_after_first_epoch(run_dir, *NO_EXPORT, f"data.source=folder:{root}")
    assert (run_dir / "labels.txt").read_text() == "blue\ngreen\nred\n"
    if change == "class added":
        write_tree(root, {f"yellow/{i}.jpg": jpeg_bytes(seed=90 + i) for i in range(6)})
        difference = "1 class added: 'yellow'"
    else:
        (root / "blue").rename(root / "azure")  # same count, index 0 would mean another class
        difference = "class 0 is 'azure' now, 'blue' when the run began"
    before = _snapshot(run_dir)
    capsys.readouterr()
    assert train.main(args(run_dir, *NO_EXPORT, f"data.source=folder:{root}")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: the data's classes are not those the run in {run_dir} began with ({difference}): "
                   "restore the data the run began with, or pass --overwrite to train the run afresh, or choose "
                   "another --run-dir"]
    assert _snapshot(run_dir) == before  # labels.txt, the data record, the backup: all as they were


def test_files_added_and_removed_resume_with_one_line_each_and_the_record_stays_the_first(tmp_path, capsys):
    root, run_dir = tmp_path / "photos", tmp_path / "run"
    _photos(root)
    killed_after_first_epoch(run_dir, *NO_EXPORT, f"data.source=folder:{root}")
    record = (run_dir / "data_identity.json").read_bytes()
    recorded = json.loads(record)
    assert recorded["class_names"] == ["blue", "green", "red"]
    train_count = recorded["splits"]["train"]["count"]
    # Two photos added and one removed, all in the training split (held out or not by each file's own name).
    gone = next(p for p in sorted(root.rglob("*.jpg")) if _in_training(run_dir, root, p))
    gone.unlink()
    write_tree(root, {"green/new-a.jpg": jpeg_bytes(seed=71), "green/new-b.jpg": jpeg_bytes(seed=72)})
    capsys.readouterr()
    figures = training_run.train(load_config([], TINY + NO_EXPORT + [f"data.source=folder:{root}"]), run_dir)
    out = capsys.readouterr().out
    notes = [line for line in out.splitlines() if line.startswith("note:")]
    added = sum(_in_training(run_dir, root, root / "green" / name) for name in ("new-a.jpg", "new-b.jpg"))
    assert len(notes) == (1 if added == 2 else 2), out
    assert any(line.startswith(f"note: the training split has {added} file") and "1 file removed" in line
               for line in notes), notes
    assert figures["epochs"] == 2
    assert (run_dir / "data_identity.json").read_bytes() == record  # the data the run began with
    assert json.loads(record)["splits"]["train"]["count"] == train_count
    assert (run_dir / "labels.txt").read_text() == "blue\ngreen\nred\n"


def _in_training(run_dir, root, path):
    """Whether the folder split puts `path` (relative to `root`) in training: by its name alone."""
    import numpy as np

    from pipeline.data.identity import name_hashes
    from pipeline.data.sources import SPLIT_SALT

    del run_dir
    draw = (name_hashes([str(path.relative_to(root))], salt=SPLIT_SALT) >> np.uint64(11)).astype(np.float64) * 2.0**-53
    return bool(draw[0] >= 0.2)  # data.validation_fraction's default


def test_a_run_that_stopped_before_its_first_backup_keeps_its_data_record(tmp_path):
    root, run_dir = tmp_path / "photos", tmp_path / "run"
    _photos(root)
    config = load_config([], TINY + NO_EXPORT + ["train.epochs=1", f"data.source=folder:{root}"])
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(RunBackup, "on_epoch_end", lambda self, epoch, logs=None: (_ for _ in ()).throw(Killed()))
        with pytest.raises(Killed):
            training_run.train(config, run_dir)
    record = (run_dir / "data_identity.json").read_bytes()
    shutil.rmtree(run_dir / "backup", ignore_errors=True)
    training_run.train(config, run_dir)  # trains from the start; the record of the data stays
    assert (run_dir / "data_identity.json").read_bytes() == record
