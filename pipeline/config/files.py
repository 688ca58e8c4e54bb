"""Config files: the shipped ones found by name, YAML read strictly, layered on a base, overrides parsed.

A config file is YAML in UTF-8, at most MAX_CONFIG_BYTES, without duplicate
keys, standing for at most MAX_VALUES values once its aliases are expanded;
exponent floats without a dot (5e-4) are numbers. Every error is one line
naming the file, or the key.
"""

import copy
import pathlib
import re

import yaml

from pipeline.console.text import excerpt
from pipeline.errors import ConfigError


def _config_dir():
    """The shipped configs: pipeline/configs in an installed package, configs/ beside pipeline/ in a checkout."""
    here = pathlib.Path(__file__).resolve().parent.parent  # pipeline/
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


def deep_merge(base, update):
    """Returns base updated recursively by update (dicts merge, the rest replaces)."""
    merged = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
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
    return deep_merge(load_layered(base_path, (*seen, path.resolve())), data)
