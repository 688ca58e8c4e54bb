"""The first augmented training batch (pipeline.data.preview): taken without disturbing the trainer's data, and
one clear error when no training image decodes."""

import numpy as np

from pipeline import train
from pipeline.config import load_config
from pipeline.data.pipelines import build_datasets
from pipeline.data.preview import first_training_batch
from tests.helpers.images import epoch_images, write_tree
from tests.helpers.runs import TINY

# A short run with the PCA colour noise on, as a user's run has it.
SHORT = TINY + ["data.augment.pca_noise=0.1", "train.epochs=1", "train.steps_per_epoch=2"]


def test_first_training_batch_leaves_the_trainers_data_as_it_was():
    config = load_config([], SHORT)
    untouched = build_datasets(config.data, 16, seed=config.seed)
    expected = [epoch_images(untouched.train_for(epoch)) for epoch in range(2)]
    data = build_datasets(config.data, 16, seed=config.seed)
    images, labels = first_training_batch(config.data, 16, config.seed)
    assert images.shape == (16, 64, 64, 3) and images.dtype == np.uint8 and labels.shape == (16,)
    # Training then sees the epochs it sees without the picture, the first of them holding the pictured images.
    seen = [epoch_images(data.train_for(epoch)) for epoch in range(2)]
    assert seen == expected and expected[0] != expected[1]
    pictured = {image.tobytes() for image in np.clip(np.rint(images), 0, 255).astype(np.uint8)}
    assert pictured <= seen[0]


def test_a_folder_of_undecodable_files_ends_training_with_one_error_line(tmp_path, capfd):
    broken = {"empty.jpg": b"", "text.jpg": b"not an image", "truncated.jpg": b"\xff\xd8\xff\xe0\x00\x10JFIF"}
    write_tree(tmp_path / "photos", {f"{split}/c{c}/{name}": data for split in ("train", "validation")
                                     for c in range(2) for name, data in broken.items()})  # fmt: skip
    source = f"folder:{tmp_path / 'photos'}"
    argv = ["--run-dir", str(tmp_path / "run")]
    for item in TINY + [f"data.source={source}", "data.resize=64"]:
        argv += ["--set", item]
    assert train.main(argv) == 2
    err = capfd.readouterr().err
    assert "Traceback" not in err
    assert [line for line in err.splitlines() if line.startswith("error:")] == [
        f"error: data.source {source}: no training image could be decoded (the undecodable files are named in the "
        "warnings above): replace them, or point data.source at images"
    ]
    assert err.count("warning: skipping undecodable image") == 6  # each training file named once
