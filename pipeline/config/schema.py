"""The experiment config's tree: its sections, their fields, defaults and checks.

Every section is strict and frozen: "64" is not an int, an unknown key is an
error, nan and inf are not numbers, and a bad value names its dotted key.
Field names follow the Keras arguments they feed.
"""

import re
from typing import Literal, Optional, Union

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from model_defs.geometry import IMAGENET_MEAN, MIN_INPUT_SIZE
from pipeline.console.text import excerpt
from pipeline.errors import ConfigError

# A flood of errors (a file of unknown keys) is cut short.
MAX_ERRORS = 10


# LRN constants cuDNN accepts (cudnnSetLRNDescriptor; TensorFlow's GPU LRN): odd n
# with depth radius n // 2 in 1..7, beta >= 0.01, k >= 1e-5.
LRN_N_RANGE = (3, 15)
LRN_MIN_BETA = 0.01
LRN_MIN_K = 1e-5

# A run name becomes one directory under runs/: one path component, no separators, not "." or "..".
NAME_PATTERN = re.compile(r"[A-Za-z0-9._-]+")


class _Section(BaseModel):
    # strict: "64" is not an int and 1 is not a bool; extra keys are errors; nan and inf are not numbers here.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)

    def derive(self, updates):
        """A validated copy with some values changed: the one way to make a config from another.

        Args:
            updates: {dotted key relative to this section: value}, e.g.
                {"train.epochs": 3, "data.cache": False} on a `Config`, or
                {"cache": False} on a `DataConfig`.

        Returns:
            A new instance of the same class, checked like a loaded config.

        Raises:
            ConfigError: an unknown key, a wrong type or an impossible value,
                named by its dotted key.
        """
        tree = self.model_dump(mode="json")
        for key, value in updates.items():
            node = tree
            *parents, leaf = key.split(".")
            for part in parents:
                if not isinstance(node.get(part), dict):
                    raise ConfigError(f"{key}: unknown key")
                node = node[part]
            if leaf not in node:
                raise ConfigError(f"{key}: unknown key")
            node[leaf] = value
        try:
            return type(self).model_validate(tree)
        except ValidationError as exc:
            raise ConfigError(format_errors(exc)) from None


class AugmentConfig(_Section):
    """Training-time augmentation (paper, section 4.1)."""

    crop: Literal["random", "inception", "center"] = "random"  # random 224 crop of the central 256 square
    flip: bool = True  # random horizontal reflection
    pca_noise: float = Field(0.1, ge=0.0)  # std of the PCA colour-noise alphas; 0 turns it off
    min_area: float = Field(0.08, gt=0.0, le=1.0)  # inception crop: the smallest share of the image it takes


class DataConfig(_Section):
    """Where images come from and how they reach the model."""

    # digits | synthetic | tfds:<name> | folder:<path> | records:<path> (python -m pipeline.prepare)
    source: str = "digits"
    data_dir: Optional[str] = None  # tfds: where prepared datasets live (TFDS default: ~/tensorflow_datasets)
    manual_dir: Optional[str] = None  # tfds: where manually downloaded archives are (imagenet2012's tars)
    download: bool = False  # tfds: allow downloading and preparing (needs internet for most datasets)
    train_split: str = "train"  # tfds / folder: name of the training split (folder: sub-folder)
    validation_split: Optional[str] = "validation"  # tfds / folder: None carves validation_fraction out of train
    image_size: int = Field(224, ge=MIN_INPUT_SIZE)  # model input, square
    resize: int = Field(256, ge=MIN_INPUT_SIZE)  # shorter side before cropping (paper: 256)
    validation_fraction: float = Field(0.2, gt=0.0, lt=1.0)  # for sources without a validation split
    num_classes: int = Field(10, ge=2)  # synthetic source only
    num_examples: int = Field(512, ge=1)  # synthetic source only: training images
    augment: AugmentConfig = AugmentConfig()
    # Keep the training data in memory after the first epoch (for file sources: the encoded files).
    # auto: only when it takes at most a quarter of the available memory; true refuses data that cannot fit.
    cache: Union[Literal["auto"], bool] = "auto"
    # Largest image, in pixels, decoded whole (PNG, GIF, BMP; a JPEG decodes only its crop window):
    # larger files are skipped and counted, so one hostile file cannot take the process's memory.
    max_pixels: int = Field(50_000_000, ge=1)
    deterministic: bool = False  # same seed, same batches in the same order (slower parallel augmentation)

    @field_validator("source")
    @classmethod
    def _known_source(cls, value):
        kind, _, arg = value.partition(":")
        if kind in ("digits", "synthetic") and not arg:
            return value
        if kind in ("tfds", "folder", "records") and arg:
            return value
        raise ValueError("must be 'digits', 'synthetic', 'tfds:<name>', 'folder:<path>' or 'records:<path>'")

    @property
    def source_kind(self):
        """"digits", "synthetic", "folder", "tfds" or "records": the part of `source` before the colon."""
        return self.source.partition(":")[0]

    @property
    def source_location(self):
        """The folder, dataset name or records folder after the colon; None for digits and synthetic."""
        return self.source.partition(":")[2] or None

    @property
    def in_memory(self):
        """Whether the source's examples are arrays made in this process (digits, synthetic), not files."""
        return self.source_kind in ("digits", "synthetic")

    @model_validator(mode="after")
    def _crop_fits(self):
        if self.resize < self.image_size:
            raise ValueError(f"data.resize ({self.resize}) must be at least data.image_size ({self.image_size})")
        return self


class ModelConfig(_Section):
    """Arguments of `model_defs.alexnet.build_alexnet` (see its docstring): each field is one of its
    keyword arguments, under the same name, so `build_alexnet(**model.model_dump())` builds it."""

    dropout: float = Field(0.5, ge=0.0, lt=1.0)
    lrn: bool = True
    # The ranges cuDNN's LRN runs (depth radius n // 2 from 1 to 7, beta >= 0.01, k >= 1e-5), so a
    # config that trains on a CPU also trains on a GPU.
    lrn_k: float = 2.0
    lrn_n: int = 5
    lrn_alpha: float = Field(1e-4, ge=0.0)
    lrn_beta: float = 0.75
    groups: Literal[1, 2] = 2
    # How grouped layers compute (same weights either way): auto picks by backend and device
    # (model_defs.layers.GROUPED_CONV_DEFAULTS), towers (split, convolve, concatenate) or native.
    grouped_conv: Literal["auto", "towers", "native"] = "auto"
    widths: Literal["paper", "torchvision"] = "paper"
    fc_units: int = Field(4096, ge=1)
    init: Literal["paper", "caffe", "glorot_uniform", "he_normal"] = "paper"
    mean: list[float] = Field(default_factory=lambda: list(IMAGENET_MEAN), min_length=3, max_length=3)
    std: list[float] = Field(default_factory=lambda: [1.0, 1.0, 1.0], min_length=3, max_length=3)

    @field_validator("lrn_n")
    @classmethod
    def _odd(cls, value):
        if value % 2 != 1 or not LRN_N_RANGE[0] <= value <= LRN_N_RANGE[1]:
            raise ValueError(
                f"must be odd, from {LRN_N_RANGE[0]} to {LRN_N_RANGE[1]} (the window is centred on each channel; "
                "cuDNN's LRN takes a depth radius n // 2 from 1 to 7)"
            )
        return value

    @field_validator("lrn_beta")
    @classmethod
    def _beta(cls, value):
        if value < LRN_MIN_BETA:
            raise ValueError(f"must be at least {LRN_MIN_BETA} (the smallest beta cuDNN's LRN runs)")
        return value

    @field_validator("lrn_k")
    @classmethod
    def _k(cls, value):
        if value < LRN_MIN_K:
            raise ValueError(f"must be at least {LRN_MIN_K:g} (the smallest k cuDNN's LRN runs)")
        return value

    @field_validator("std")
    @classmethod
    def _positive(cls, value):
        if min(value) <= 0:
            raise ValueError("every entry must be positive")
        return value


class OptimizerConfig(_Section):
    """SGD as in the paper, section 5."""

    name: Literal["sgd"] = "sgd"
    learning_rate: float = Field(0.01, gt=0.0)
    momentum: float = Field(0.9, ge=0.0, lt=1.0)
    nesterov: bool = False
    # The paper's value, coupled into the gradient as an L2 penalty on kernels.
    weight_decay: float = Field(5e-4, ge=0.0)


class ScheduleConfig(_Section):
    """Learning-rate schedule."""

    # plateau: the paper's "divide by 10 when the validation error stops improving";
    # step: multiply by `factor` at each epoch in `milestones`; cosine: cosine decay
    # to `min_learning_rate` over all epochs. Any of them after `warmup_epochs` of
    # linear warm-up.
    name: Literal["constant", "plateau", "step", "cosine"] = "constant"
    factor: float = Field(0.1, gt=0.0, lt=1.0)
    patience: int = Field(1, ge=0)  # plateau: epochs without improvement before a reduction
    max_reductions: int = Field(3, ge=0)  # plateau: the paper reduced three times
    monitor: str = "val_top1_error"  # plateau
    milestones: list[int] = Field(default_factory=lambda: [30, 60, 80])  # step
    min_learning_rate: float = Field(0.0, ge=0.0)  # cosine
    warmup_epochs: int = Field(0, ge=0)

    @field_validator("milestones")
    @classmethod
    def _increasing(cls, value):
        if any(b <= a for a, b in zip(value, value[1:])) or any(m < 1 for m in value):
            raise ValueError("must be positive, strictly increasing epoch numbers")
        return value


class TrainConfig(_Section):
    """How the model is trained."""

    epochs: int = Field(90, ge=1)
    batch_size: int = Field(128, ge=1)  # global batch, over all replicas (paper: 128)
    steps_per_epoch: Optional[int] = Field(None, ge=1)  # None: one pass over the training data
    validation_steps: Optional[int] = Field(None, ge=1)  # None: the whole validation split
    # 10: after each epoch also the paper's ten-crop test on the validation data (val_10crop_top1_error,
    # val_10crop_top5_error); 1: Keras' centre-crop validation only. Not with multi-worker training.
    validation_crops: Literal[1, 10] = 1
    optimizer: OptimizerConfig = OptimizerConfig()
    schedule: ScheduleConfig = ScheduleConfig()
    # auto: MirroredStrategy over all visible GPUs when there are two or more, else one device.
    strategy: Literal["auto", "mirrored", "multi_worker", "one_device"] = "auto"
    devices: Optional[list[str]] = None  # mirrored / one_device: e.g. ["/gpu:0", "/gpu:1"]
    # Learning rate scaling with the global batch: none (the paper's 128) or linear
    # (lr * batch_size / lr_reference_batch).
    lr_scaling: Literal["none", "linear"] = "none"
    lr_reference_batch: int = Field(128, ge=1)
    # auto: mixed_bfloat16 when every replica is a GPU with bfloat16 arithmetic (compute capability 8.0 and up),
    # else float32 (a CPU keeps float32: the run's first lines say what auto chose and why).
    precision: Literal["auto", "float32", "mixed_float16", "mixed_bfloat16"] = "auto"
    # XLA. auto: on when every replica is a GPU, off on a CPU (where it measured slower). Explicit because
    # Keras' own "auto" turns it off under MirroredStrategy.
    jit_compile: Union[Literal["auto"], bool] = "auto"
    backup_every_steps: Optional[int] = Field(None, ge=1)  # None: back up at the end of each epoch
    # Progress: 0 silent, 1 a bar redrawn in place, 2 plain lines (every ~30 s and at each epoch end, for
    # log files); auto: 1 on a terminal, 2 when stdout is redirected.
    verbose: Literal["auto", 0, 1, 2] = "auto"
    log_interval: float = Field(30.0, gt=0.0)  # seconds between two progress lines in a log file (verbose 2)
    # Multi-worker training: seconds each worker waits for the others to start before it gives up.
    cluster_timeout: float = Field(600.0, gt=0.0)
    # The metric whose best epoch is kept as checkpoints/best.keras (minimised); auto: schedule.monitor;
    # null: no best checkpoint.
    checkpoint_monitor: Optional[str] = "auto"
    # [first, last] training batch of the first epoch traced for TensorBoard's Profile tab (null: none);
    # the profiler plugin is in the project's `profile` extra.
    profile: Optional[list[int]] = Field(None, min_length=2, max_length=2)

    @field_validator("profile")
    @classmethod
    def _batches(cls, value):
        if value is not None and not 1 <= value[0] <= value[1]:
            raise ValueError("must be [first, last] batch numbers with 1 <= first <= last")
        return value


class ExportConfig(_Section):
    """What a finished run writes besides its logs."""

    keras: bool = True  # model.keras
    saved_model: bool = True  # saved_model/ with a serving signature


class SearchRange(_Section):
    """One hyperparameter's search interval."""

    min: float
    max: float
    sampling: Literal["linear", "log"] = "linear"

    @model_validator(mode="after")
    def _ordered(self):
        if not self.min < self.max:
            raise ValueError(f"empty or inverted range: min ({self.min}) must be below max ({self.max})")
        if self.sampling == "log" and self.min <= 0:
            raise ValueError("a log-sampled range needs min > 0")
        return self


class TuneConfig(_Section):
    """KerasTuner search over the training config (`python -m tuning.search`)."""

    tuner: Literal["random", "bayesian", "hyperband"] = "random"
    # The search space: each range replaces one config value; null keeps the config's value.
    dropout: Optional[SearchRange] = SearchRange(min=0.3, max=0.7)  # model.dropout
    learning_rate: Optional[SearchRange] = SearchRange(min=1e-4, max=1e-1, sampling="log")  # train.optimizer.learning_rate
    momentum: Optional[SearchRange] = None  # train.optimizer.momentum
    weight_decay: Optional[SearchRange] = None  # train.optimizer.weight_decay
    max_trials: int = Field(10, ge=1)  # random / bayesian
    epochs: int = Field(5, ge=1)  # per trial; Hyperband's max_epochs
    hyperband_factor: int = Field(3, ge=2)
    objective: str = "val_top5_error"  # a logged metric; minimised if it is an error or loss
    seed: int = 0


class Config(_Section):
    """The whole experiment."""

    name: Optional[str] = None  # run name; runs/<name> unless --run-dir says otherwise
    seed: int = 0
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    export: ExportConfig = ExportConfig()
    tune: TuneConfig = TuneConfig()

    @field_validator("name")
    @classmethod
    def _safe_name(cls, value):
        if value is not None and (not NAME_PATTERN.fullmatch(value) or value in (".", "..")):
            raise ValueError(
                "must be one path component of letters, digits, '.', '_' and '-' (not '.' or '..'): "
                "it names the run directory runs/<name>; use --run-dir for a directory elsewhere"
            )
        return value

    def to_dict(self):
        return self.model_dump(mode="json")

    def to_yaml(self):
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


def format_errors(error: ValidationError):
    lines = []
    items = error.errors()
    for item in items[:MAX_ERRORS]:
        key = ".".join(excerpt(part) if not isinstance(part, (str, int)) else str(part) for part in item["loc"])
        key = excerpt(key).strip("'") if len(key) > 80 else key or "<top level>"
        message = item["msg"]
        if item["type"] == "extra_forbidden":
            message = "unknown key"
        message = message.removeprefix("Value error, ")
        got = item.get("input")
        if item["type"] != "extra_forbidden" and not isinstance(got, dict):
            message += f" (got {excerpt(got)})"
        lines.append(f"{key}: {message}")
    if len(items) > MAX_ERRORS:
        lines.append(f"and {len(items) - MAX_ERRORS} more errors")
    return "; ".join(lines)
