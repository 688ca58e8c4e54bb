"""`python -m pipeline.evaluate`: centre crop and the paper's ten crops, the results file and table, TensorBoard."""

import json

import numpy as np
import pytest
import tensorflow as tf
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from pipeline import evaluate
from pipeline.data.augment import resize_shorter_side
from pipeline.data.pipelines import eval_pipeline
from pipeline.data.sources import load_source
from pipeline.evaluation import evaluator, scoring
from pipeline.storage.rundir import RunDir
from tests.helpers.runs import make_run

SIZE, RESIZE = 64, 72  # data.image_size, data.resize of TINY


def direct_probabilities(model, config, crops):
    """Mean softmax over the views of every validation image, computed without the pipeline's crop code."""
    rows, labels = [], []
    for image, label in load_source(config.data, config.seed).validation:
        resized = resize_shorter_side(tf.cast(image, tf.float32), RESIZE).numpy()
        height, width = resized.shape[:2]
        if crops == 1:
            top, left = (height - SIZE) // 2, (width - SIZE) // 2
            views = [resized[top : top + SIZE, left : left + SIZE]]
        else:
            top, left = (height - RESIZE) // 2, (width - RESIZE) // 2
            square = resized[top : top + RESIZE, left : left + RESIZE]
            far, mid = RESIZE - SIZE, (RESIZE - SIZE) // 2
            corners_and_centre = ((0, 0), (0, far), (far, 0), (far, far), (mid, mid))
            views = [square[y : y + SIZE, x : x + SIZE] for y, x in corners_and_centre]
            views += [view[:, ::-1] for view in views]
        logits = model(np.stack(views), training=False).numpy().astype(np.float64)
        softmax = np.exp(logits - logits.max(axis=1, keepdims=True))
        softmax /= softmax.sum(axis=1, keepdims=True)
        assert softmax.shape == (crops, 10)
        rows.append(softmax.mean(axis=0))
        labels.append(int(label))
    return np.array(rows), np.array(labels)


def errors(probabilities, labels):
    ranking = np.argsort(-probabilities, axis=1)
    top1 = float(np.mean(ranking[:, 0] != labels))
    top5 = float(np.mean([label not in row[:5] for row, label in zip(ranking, labels)]))
    return top1, top5


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("runs") / "tiny"
    config, model = make_run(run_dir)  # 8 validation images, 10 classes
    direct = {crops: direct_probabilities(model, config, crops) for crops in (1, 10)}
    return run_dir, config, model, direct


def test_ten_crops_are_the_mean_of_ten_softmaxes(run):
    _, config, model, direct = run
    source = load_source(config.data, config.seed)
    for crops in (1, 10):
        dataset = eval_pipeline(source.validation, config.data, 3, crops=crops, cache=False)
        batches = list(scoring.batch_probabilities(model, dataset, crops))
        assert [len(labels) for _, labels in batches] == [3, 3, 2]
        got = np.concatenate([p for p, _ in batches])
        np.testing.assert_array_equal(np.concatenate([labels for _, labels in batches]), direct[crops][1])
        np.testing.assert_allclose(got, direct[crops][0], atol=1e-6)
    # Ten views see other pixels than the centre crop alone.
    assert np.abs(direct[10][0] - direct[1][0]).max() > 0.01


def test_top_k_hits_counts_ties_as_hits():
    scores = np.array([[0.5, 0.2, 0.2, 0.1], [0.1, 0.2, 0.3, 0.4], [0.25, 0.25, 0.25, 0.25]])
    labels = np.array([0, 1, 3])
    assert scoring.top_k_hits(scores, labels, 1) == 2  # row 0, and row 2 (all tied)
    assert scoring.top_k_hits(scores, labels, 2) == 2  # row 1's label ranks third
    assert scoring.top_k_hits(scores, labels, 3) == 3


@pytest.mark.parametrize("crops, batch_args, batch_size", [(1, ["--batch-size", "3"], 3), (10, [], 1)])
def test_evaluate_command_writes_errors_beside_the_papers(run, capsys, crops, batch_args, batch_size):
    run_dir, _, _, direct = run
    assert evaluate.main([str(run_dir), "--crops", str(crops), *batch_args]) == 0
    top1, top5 = errors(*direct[crops])
    results = json.loads((run_dir / f"eval_validation_{crops}.json").read_text())
    assert (results["split"], results["crops"], results["images"]) == ("validation", crops, 8)
    assert results["batch_size"] == batch_size  # default: train.batch_size (8) // crops
    assert results["top1_error"] == pytest.approx(top1, abs=1e-12)
    assert results["top5_error"] == pytest.approx(top5, abs=1e-12)
    assert results["reference"] == {
        "paper_one_cnn_top1": 0.407,
        "paper_one_cnn_top5": 0.182,
        "paper_ensemble_top5": 0.153,
        "torchvision_top1": 0.435,
        "torchvision_top5": 0.209,
    }

    lines = capsys.readouterr().out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"{run_dir}: 8 validation images (synthetic)"))
    label = f"this run, {crops} crop{'s' if crops > 1 else ''} (validation)"
    table = [line.split() for line in lines[start + 2 : start + 6]]
    assert [" ".join(row[:-2]) for row in table] == [
        label,
        "paper, one CNN, 10 crops (val)",
        "paper, 7-CNN ensemble (test)",
        "torchvision AlexNet, 1 crop (val)",
    ]
    assert [row[-2:] for row in table] == [
        [f"{top1:.2%}", f"{top5:.2%}"],
        ["40.70%", "18.20%"],
        ["-", "15.30%"],
        ["43.50%", "20.90%"],
    ]

    accumulator = EventAccumulator(str(run_dir / "logs" / "eval"), size_guidance={"tensors": 0})
    accumulator.Reload()
    for name, value in (("top1_error", top1), ("top5_error", top5)):
        (event,) = accumulator.Tensors(f"validation_{crops}crop_{name}")
        assert event.step == 1  # train.epochs of the run
        assert float(tf.make_ndarray(event.tensor_proto)) == pytest.approx(value, abs=1e-6)


def test_train_split_and_data_overrides(run):
    run_dir = run[0]
    results = evaluator.evaluate_run(run_dir, split="train", overrides=["data.num_examples=24"], verbose=0)
    assert (results["split"], results["images"], results["batch_size"]) == ("train", 24, 8)
    assert json.loads((run_dir / "eval_train_1.json").read_text())["images"] == 24


def test_usage_errors_exit_2(run, tmp_path, capsys):
    run_dir = run[0]
    assert evaluate.main([str(tmp_path / "nowhere")]) == 2
    assert "run directory not found" in capsys.readouterr().err

    unfinished = tmp_path / "unfinished"
    with RunDir(unfinished, run[1]):
        pass  # config.yaml only
    assert evaluate.main([str(unfinished)]) == 2
    assert "model.keras not found: the run is unfinished" in capsys.readouterr().err

    cases = [
        (["--set", "model.dropout=0.1"], "only data.* keys can change"),
        (["--set", "data.num_classes=4"], "has 4 classes, the model 10"),
        (["--set", "data.image_size=72"], "data.image_size is 72, the model takes (64, 64)"),
        (["--set", "data.resize=32"], "data.resize"),
    ]
    for extra, message in cases:
        assert evaluate.main([str(run_dir), *extra]) == 2, extra
        assert message in capsys.readouterr().err
    assert evaluate.main([str(run_dir), "--crops", "5"]) == 2
    assert capsys.readouterr().err == (
        "error: argument --crops: invalid choice: 5 (choose from 1, 10): see python -m pipeline.evaluate --help\n"
    )
    assert not (run_dir / "eval_validation_5.json").exists()


def test_a_folder_of_photos_with_a_bad_file(run, tmp_path, capfd):
    from tests.helpers.images import jpeg_bytes, write_tree

    layout = {f"validation/class_{c}/{i}.jpg": jpeg_bytes(seed=10 * c + i) for c in range(10) for i in range(2)}
    layout.update({f"train/class_{c}/0.jpg": jpeg_bytes(seed=c) for c in range(10)})
    layout["validation/class_3/empty.jpg"] = b""
    write_tree(tmp_path / "photos", layout)
    results = evaluator.evaluate_run(
        run[0], crops=10, overrides=[f"data.source=folder:{tmp_path / 'photos'}"], verbose=0
    )
    assert (results["images"], results["skipped_images"]) == (20, 1)
    assert "empty.jpg" in capfd.readouterr().err
    # The run (synthetic data) recorded no file names: another source is another split, and says so.
    assert results["changed_since_run"] == {"added": None, "removed": None, "count": 21, "recorded_count": 8}


def test_data_with_other_class_names_is_refused(run, tmp_path, capsys):
    from tests.helpers.images import jpeg_bytes, write_tree

    names = [f"class_{c}" for c in range(9)] + ["zebra"]  # ten classes, as the run has, one of them another
    write_tree(tmp_path / "photos", {f"{name}/{i}.jpg": jpeg_bytes(seed=i) for name in names for i in range(2)})
    before = {p.name: p.stat().st_mtime_ns for p in run[0].iterdir()}
    assert evaluate.main([str(run[0]), "--set", f"data.source=folder:{tmp_path / 'photos'}", "--no-figures"]) == 2
    assert capsys.readouterr().err == (
        f"error: data.source 'folder:{tmp_path / 'photos'}': its classes are not the run's (class 9 is 'zebra' in "
        "the data, 'class_9' in the run): evaluate on data with the run's classes, in the order of its labels.txt\n"
    )
    assert {p.name: p.stat().st_mtime_ns for p in run[0].iterdir()} == before  # refused before writing anything


def test_files_added_and_removed_since_the_run_are_counted(tmp_path, capsys):
    from tests.helpers.images import jpeg_bytes, write_tree

    photos = tmp_path / "photos"
    write_tree(photos, {f"{split}/c{c}/{i}.jpg": jpeg_bytes(seed=10 * c + i) for split in ("train", "val")
                        for c in range(2) for i in range(3)})  # fmt: skip
    run_dir = tmp_path / "run"
    make_run(run_dir, f"data.source=folder:{photos}")
    results = evaluator.evaluate_run(run_dir, pictures=False, verbose=0)
    assert results["changed_since_run"] == {"added": 0, "removed": 0, "count": 6, "recorded_count": 6}
    assert "note:" not in capsys.readouterr().out

    write_tree(photos, {"val/c0/new.jpg": jpeg_bytes(seed=99), "val/c1/new.jpg": jpeg_bytes(seed=98)})
    (photos / "val" / "c1" / "0.jpg").unlink()
    results = evaluator.evaluate_run(run_dir, pictures=False, verbose=0)
    assert "note: the validation split has 2 files the run did not validate on and lacks 1 it did\n" in (
        capsys.readouterr().out)
    assert results["changed_since_run"] == {"added": 2, "removed": 1, "count": 7, "recorded_count": 6}
    assert json.loads((run_dir / "eval_validation_1.json").read_text())["changed_since_run"] == (
        results["changed_since_run"])
    assert results["images"] == 7
    results = evaluator.evaluate_run(run_dir, split="train", pictures=False, verbose=0)
    assert results["changed_since_run"] == {"added": 0, "removed": 0, "count": 6, "recorded_count": 6}
