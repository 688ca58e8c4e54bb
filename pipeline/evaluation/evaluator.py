"""Evaluating a finished run: its split rebuilt from config.yaml, scored, recorded, and drawn.

The data is checked against the run first (`check_data`): classes other than
the run's (labels.txt, or the run's data identity, `pipeline.data.identity`)
are refused; files added to or removed from the split since the run used it
are counted in a note. The errors go to <run>/eval_<split>_<crops>.json and to
TensorBoard under <run>/logs/eval; the pictures (`pipeline.evaluation.pictures`)
to <run>/figures/*.png and TensorBoard images.
"""

import json
import math
import pathlib

from pipeline.config import load_config
from pipeline.data import identity
from pipeline.errors import ConfigError
from pipeline.evaluation import references
from pipeline.evaluation.analysis import NEIGHBOUR_QUERIES, TOP5_IMAGES, EvaluationSamples
from pipeline.evaluation.pictures import NEIGHBOUR_POOL, evaluation_pictures
from pipeline.evaluation.scoring import evaluate_model, write_tensorboard
from pipeline.serving.run_model import load_run_model
from pipeline.storage.files import atomic_write_text
from pipeline.storage.rundir import (
    CONFIG_FILE,
    EVAL_LOGS_DIR,
    LABELS_FILE,
    LOGS_DIR,
    eval_result_path,
)

SPLITS = ("validation", "train")


def check_request(split, crops, overrides):
    """Refuses an evaluation that cannot be run, before anything is loaded.

    Raises:
        ConfigError: an unknown split, a crop count other than 1 or 10, or an
            override of anything but data.* keys.
    """
    if split not in SPLITS:
        raise ConfigError(f"unknown split {split!r}: use one of {', '.join(SPLITS)}")
    if crops not in (1, 10):
        raise ConfigError(f"crops must be 1 or 10, got {crops}")
    for text in overrides:
        if not text.partition("=")[0].strip().startswith("data."):
            raise ConfigError(f"--set {text!r}: only data.* keys can change for an evaluation")


def open_split(config, model, split):
    """The run's data source and the examples of `split`, checked against the model.

    Returns:
        (source, examples, size, skipped): `skipped` is the
        `pipeline.data.decode.SkippedFiles` of a file source, counting the
        files skipped as they are met (None for in-memory sources).

    Raises:
        ConfigError: the data cannot be read, or its classes or image size do
            not match the model.
    """
    from pipeline.data.decode import SkippedFiles, skip_undecodable
    from pipeline.data.sources import load_source

    if tuple(model.input_shape[1:3]) != (config.data.image_size,) * 2:
        raise ConfigError(f"data.image_size is {config.data.image_size}, the model takes {model.input_shape[1:3]}")
    try:
        source = load_source(config.data, config.seed)
    except (NotImplementedError, FileNotFoundError) as exc:
        raise ConfigError(f"data.source {config.data.source!r}: {exc}") from None
    num_classes = int(model.output_shape[-1])
    if source.num_classes != num_classes:
        raise ConfigError(
            f"data.source {config.data.source!r} has {source.num_classes} classes, the model {num_classes}"
        )
    examples, size = (source.validation, source.validation_size) if split == "validation" else (
        source.train, source.train_size)
    skipped = None
    if source.encoded:  # files: (bytes, label, name); undecodable or gone ones are named, counted and left out
        skipped = SkippedFiles()
        examples = skip_undecodable(examples, skipped, max_pixels=config.data.max_pixels)
    return source, examples, size, skipped


def check_data(run_dir, config, source, split):
    """Compares the data about to be evaluated with the run's: its classes, and the split's files.

    Args:
        run_dir: the run directory.
        config: the run's config, with the evaluation's overrides.
        source: the data's `Source`.
        split: "validation" or "train".

    Returns:
        (note, change): `note` is a line saying how the split's files differ
        from those the run used (None when they are the same, or the run
        recorded no data identity); `change` is the record of it for the
        results file: {"added", "removed", "count", "recorded_count"}
        (added and removed None where no file names tell), or None when
        nothing is known.

    Raises:
        ConfigError: the data's class names (or their order) are not the run's.
        DirectoryError: the run's data identity (or labels.txt) is damaged.
    """
    recorded = identity.read(run_dir)
    names = identity.run_class_names(run_dir, recorded)
    difference = None if names is None else identity.class_change(
        names, source.class_names, now="in the data", then="in the run")
    if difference:
        raise ConfigError(
            f"data.source {config.data.source!r}: its classes are not the run's ({difference}): evaluate on data "
            f"with the run's classes, in the order of its {LABELS_FILE}"
        )
    if recorded is None:
        return None, None
    then, now = recorded.splits[split], identity.identify(source).splits[split]
    if then.digest is None or now.digest is None:
        return None, None
    change = identity.split_change(split, then, now)
    if change is None:
        return None, identity.SplitChange(split, now.count, then.count, 0, 0).as_record()
    return identity.evaluation_note(change), change.as_record()


def evaluate_run(
    run_dir,
    split="validation",
    crops=1,
    batch_size=None,
    overrides=(),
    verbose=1,
    pictures=True,
    neighbour_pool=NEIGHBOUR_POOL,
):
    """Evaluates a finished run and records the result.

    Args:
        run_dir: the run directory (config.yaml, model.keras).
        split: "validation" or "train" (evaluation preprocessing either way).
        crops: 1 (centre) or 10 (the paper's ten views, softmax averaged).
        batch_size: images per step; None: train.batch_size / crops, so a
            step holds about as many views as a training batch.
        overrides: `data.key=value` strings applied to the run's config, to
            evaluate on another dataset with the same classes.
        verbose: 1 shows a progress bar.
        pictures: also draw the pictures of `pipeline.evaluation.pictures` into
            <run>/figures/ and TensorBoard.
        neighbour_pool: training images searched for the nearest neighbours.

    Returns:
        The results (also written to eval_<split>_<crops>.json and TensorBoard);
        `figure_files` lists the picture files written, relative to the run
        directory (none without pictures).

    The results hold `changed_since_run`: how the evaluated split's files
    differ from those the run used ({"added", "removed", "count",
    "recorded_count"}, see `check_data`), or None when the run recorded no
    data identity.

    Raises:
        ConfigError: no such run, unfinished run, bad override, or a dataset
            whose classes (names, order) are not the run's.
    """
    from pipeline.data.pipelines import eval_pipeline

    run_dir = pathlib.Path(run_dir)
    check_request(split, crops, overrides)
    if batch_size is not None and batch_size < 1:
        raise ConfigError(f"batch size must be at least 1, got {batch_size}")
    if neighbour_pool < 1:
        raise ConfigError(f"the neighbour pool must hold at least 1 image, got {neighbour_pool}")
    _, model = load_run_model(run_dir)
    config = load_config([run_dir / CONFIG_FILE], overrides)
    batch_size = batch_size or max(1, config.train.batch_size // crops)
    source, examples, size, skipped = open_split(config, model, split)
    note, change = check_data(run_dir, config, source, split)
    if note:
        print(note)
    samples = _samples(int(model.output_shape[-1]), config.seed) if pictures else None
    result = evaluate_model(
        model, eval_pipeline(examples, config.data, batch_size, crops=crops), crops, int(model.output_shape[-1]),
        num_batches=math.ceil(size / batch_size), verbose=verbose, samples=samples,
    )  # fmt: skip
    results = _record(run_dir, split, crops, config, batch_size, skipped, result, change)
    if samples is not None:
        paths = evaluation_pictures(
            run_dir, config, model, source, samples, results, batch_size * crops, neighbour_pool, verbose
        )
        results["figure_files"] = [str(path.relative_to(run_dir)) for path in paths]
    atomic_write_text(eval_result_path(run_dir, split, crops), json.dumps(results, indent=2, sort_keys=True) + "\n")
    write_tensorboard(run_dir / LOGS_DIR / EVAL_LOGS_DIR, results, step=config.train.epochs)
    return results


def _samples(num_classes, seed):

    return EvaluationSamples(num_classes, shown=max(TOP5_IMAGES, NEIGHBOUR_QUERIES), seed=seed)


def _record(run_dir, split, crops, config, batch_size, skipped, result, change=None):
    """The evaluation's results as eval_<split>_<crops>.json holds them."""

    return {
        "run": str(run_dir),
        "split": split,
        "crops": crops,
        "data_source": config.data.source,
        "image_size": config.data.image_size,
        "resize": config.data.resize,
        "batch_size": batch_size,
        "skipped_images": skipped.count if skipped is not None else 0,
        "changed_since_run": change,
        **result,
        "figure_files": [],
        "reference": {
            "paper_one_cnn_top1": references.PAPER_ONE_CNN_TOP1,
            "paper_one_cnn_top5": references.PAPER_ONE_CNN_TOP5,
            "paper_ensemble_top5": references.PAPER_ENSEMBLE_TOP5,
            "torchvision_top1": references.TORCHVISION_TOP1,
            "torchvision_top5": references.TORCHVISION_TOP5,
        },
    }
