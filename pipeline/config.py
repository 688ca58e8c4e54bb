"""The experiment config: one typed, frozen tree loaded from YAML and overrides.

Precedence is defaults < each `--config` file in order < each `--set key=value`.
Every field is checked (type, range, unknown keys) before anything is written,
and a bad value ends in one `ConfigError` naming its dotted key. Field names
follow the Keras arguments they feed. This module does not import TensorFlow,
so a bad config fails in a fraction of a second.
"""

import copy
import pathlib
import re
import reprlib
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
from pipeline.errors import ConfigError


def _config_dir():
    """The shipped configs: pipeline/configs in an installed package, configs/ beside pipeline/ in a checkout."""
    here = pathlib.Path(__file__).resolve().parent
    for candidate in (here / "configs", here.parent / "configs"):
        if candidate.is_dir():
            return candidate
    return here / "configs"


CONFIG_DIR = _config_dir()
DEFAULT_CONFIG = CONFIG_DIR / "quickstart.yaml"


def shipped_configs():
    """The names of the shipped configs (`--config NAME` finds them from any directory)."""
    return sorted(path.stem for path in CONFIG_DIR.glob("*.yaml"))


def config_path(name):
    """The file `--config name` means: the file itself, or a shipped config of that name (with or without .yaml).

    Raises:
        ConfigError: when there is neither.
    """
    path = pathlib.Path(name)
    if path.is_file() or len(path.parts) > 1:
        return path
    shipped = CONFIG_DIR / (path.name if path.suffix in (".yaml", ".yml") else f"{path.name}.yaml")
    if shipped.is_file():
        return shipped
    if path.exists():
        return path
    raise ConfigError(f"config file not found: {name} (a path, or one of the shipped configs: "
                      f"{', '.join(shipped_configs())})")


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader that also reads exponent floats without a dot.

    PyYAML follows YAML 1.1, where `5e-4` and `1e6` are strings; YAML 1.2 (and
    every other reader) makes them numbers. Configs write weight decays and
    learning rates that way, so they load as floats here.
    """


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def _mapping_without_duplicates(loader, node, deep=False):
    """A YAML mapping; a key given twice is an error (YAML forbids it; PyYAML would keep the last)."""
    loader.flatten_mapping(node)
    seen = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        if isinstance(key, (str, int, float, bool)) and key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"the key {key!r} is given twice (lines {seen[key] + 1} and {key_node.start_mark.line + 1})"
            )
        if isinstance(key, (str, int, float, bool)):
            seen[key] = key_node.start_mark.line
    return loader.construct_mapping(node, deep=deep)


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping_without_duplicates)

# A config is a few hundred values in a few kilobytes; YAML aliases can make a few bytes stand for
# billions of values, and a file of megabytes takes PyYAML seconds to read.
MAX_VALUES = 10_000
MAX_CONFIG_BYTES = 1_000_000


def _count_values(data, limit):
    """How many values `data` holds once every alias is expanded, counting up to `limit` + 1 at most."""
    count, stack = 0, [data]
    while stack and count <= limit:
        item = stack.pop()
        count += 1
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
    return count


def yaml_problem(exc):
    """One line for a YAML error: what is wrong and where (line and column), without the quoted source."""
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    mark = getattr(exc, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    return f"{problem}{where}"


def read_yaml(text):
    """Parses YAML text with `_Loader` (safe, exponent floats as numbers, no duplicate keys).

    Raises:
        yaml.YAMLError: the text is not valid YAML, repeats a key, or stands for
            more than MAX_VALUES values once its aliases are expanded.
    """
    data = yaml.load(text, Loader=_Loader)
    if _count_values(data, MAX_VALUES) > MAX_VALUES:
        raise yaml.YAMLError(f"more than {MAX_VALUES:,} values (aliases expanded): not a config")
    return data


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
            raise ConfigError(_format_errors(exc)) from None


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


# Errors name their keys; a bad value is quoted as a short excerpt, and a flood of errors is cut short.
MAX_ERRORS = 10
_EXCERPT = reprlib.Repr()
_EXCERPT.maxlevel, _EXCERPT.maxstring, _EXCERPT.maxother = 2, 60, 60
_EXCERPT.maxdict = _EXCERPT.maxlist = _EXCERPT.maxtuple = _EXCERPT.maxset = 4


def excerpt(value):
    """A short, one-line rendering of any value (at most about 80 characters)."""
    text = _EXCERPT.repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _format_errors(error: ValidationError):
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


def _deep_merge(base, update):
    """Returns base updated recursively by update (dicts merge, the rest replaces)."""
    merged = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def parse_override(text):
    """Parses `a.b.c=value` into a nested dict; the value is read as YAML.

    Raises:
        ConfigError: when there is no `=` or the key is empty.
    """
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise ConfigError(f"--set expects key=value with a dotted key, got {excerpt(text)}")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ConfigError(f"--set {excerpt(text)}: not UTF-8 text; give the value in UTF-8") from None
    try:
        value = read_yaml(raw) if raw.strip() else None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{excerpt(key)}: value {excerpt(raw)} is not valid YAML ({yaml_problem(exc)})") from None
    nested = value
    for part in reversed(key.split(".")):
        nested = {part: nested}
    return nested


def load_yaml(path):
    """Reads one YAML config file into a dict, with errors that name the file."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        with open(path, "rb") as handle:
            raw = handle.read(MAX_CONFIG_BYTES + 1)
        if len(raw) > MAX_CONFIG_BYTES:
            raise ConfigError(f"{path}: larger than {MAX_CONFIG_BYTES // 1000} kB: not a config file")
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{path}: not UTF-8 text (byte {exc.start}): a config file is YAML in UTF-8; save it as UTF-8"
        ) from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    try:
        data = read_yaml(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {yaml_problem(exc)}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config file must hold a mapping of sections, got {type(data).__name__}")
    return data


def load_layered(path, seen=()):
    """One config file with its base: a top-level `base: NAME` (a path beside the file, or a shipped config)
    is loaded first, recursively, and the file's own keys override it.

    Raises:
        ConfigError: the base is missing, or the bases form a cycle.
    """
    path = pathlib.Path(path)
    data = load_yaml(path)
    base = data.pop("base", None)
    if base is None:
        return data
    if not isinstance(base, str):
        raise ConfigError(f"{path}: base must name one config file, got {excerpt(base)}")
    beside = path.parent / base
    base_path = beside if beside.is_file() else config_path(base)
    if base_path.resolve() in seen or base_path.resolve() == path.resolve():
        raise ConfigError(f"{path}: base {base} leads back to itself")
    return _deep_merge(load_layered(base_path, (*seen, path.resolve())), data)


def build_config(data):
    """Validates a plain dict into a `Config`.

    Raises:
        ConfigError: naming every dotted key that is unknown, mistyped or out of range.
    """
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_errors(exc)) from None


def load_config(paths=(), overrides=()):
    """Loads the experiment config.

    Args:
        paths: YAML files or names of shipped configs (`config_path`), later
            ones overriding earlier ones; none means the shipped quickstart.
        overrides: `dotted.key=value` strings applied last.

    Returns:
        A validated, frozen `Config` whose `name` is set (from the files, or
        the first file's stem).

    Raises:
        ConfigError: on a missing file, bad YAML, an unknown key, a wrong type
            or an impossible value.
    """
    paths = [config_path(p) for p in paths] or [DEFAULT_CONFIG]
    merged = {}
    for path in paths:
        merged = _deep_merge(merged, load_layered(path))
    for text in overrides:
        merged = _deep_merge(merged, parse_override(text))
    if merged.get("name") is None:
        # The file name, made one safe path component ("my exp.yaml" -> "my_exp").
        merged["name"] = re.sub(r"[^A-Za-z0-9._-]", "_", paths[0].stem).strip(".") or "run"
    return build_config(merged)


# Keys that say how a run reports itself, not what it trains: a run (or a search) resumes with other values.
PRESENTATION_KEYS = ("train.verbose", "train.log_interval", "train.profile")


def comparable(config, ignore=PRESENTATION_KEYS):
    """The config as a nested dict without the dotted keys `ignore`, for comparing a run with its saved config."""
    tree = config.to_dict()
    for key in ignore:
        *parents, leaf = key.split(".")
        node = tree
        for part in parents:
            node = node[part]
        node.pop(leaf)
    return tree


def config_fingerprint(config, ignore=PRESENTATION_KEYS):
    """The config as a canonical string without the keys `ignore`, for comparing a run with its saved config."""
    return yaml.safe_dump(comparable(config, ignore), sort_keys=True)
