"""The shape of the code: commands on top, no import circles, short functions, private Keras in one place.

These read the source (ast), not the running program, so they are fast and
name the file and line of whatever breaks a rule.
"""

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGES = ("pipeline", "model_defs", "tuning")
COMMANDS = {"train", "evaluate", "predict", "export", "prepare", "benchmark"}
MAX_FUNCTION_LINES = 80
# The one module allowed to touch private attributes of Keras and TensorFlow.
PRIVATE_ACCESS_MODULE = "model_defs.keras_private"
PRIVATE_PACKAGES = ("keras.src", "tensorflow.python", "tensorflow.core", "keras_tuner.src", "tf_keras")


def _modules():
    """{dotted module name: parsed ast} of every module of the project's packages."""
    modules = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            modules[name] = (path, ast.parse(path.read_text(), filename=str(path)))
    return modules


MODULES = _modules()


def _imports(name, tree):
    """The project modules `name` imports, at the top or inside functions."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            targets = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        found |= {target for target in targets if target in MODULES and target != name}
    return found


def test_the_top_of_pipeline_holds_the_commands_the_config_and_the_errors_only():
    top = {path.stem for path in (ROOT / "pipeline").glob("*.py")} - {"__init__"}
    assert top == COMMANDS | {"errors"} and (ROOT / "pipeline" / "config" / "__init__.py").is_file()
    for command in COMMANDS:
        tree = MODULES[f"pipeline.{command}"][1]
        functions = {node.name for node in tree.body if isinstance(node, ast.FunctionDef)}
        assert "main" in functions, command


def test_the_imports_form_no_circle():
    graph = {name: _imports(name, tree) for name, (_, tree) in MODULES.items()}
    # A package imports its own modules only through them: drop edges to a module's own parents.
    for name in graph:
        graph[name] = {target for target in graph[name] if not name.startswith(target + ".")}
    state, path = {}, []

    def visit(node):
        state[node] = "open"
        path.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == "open":
                circle = path[path.index(target):] + [target]
                pytest.fail("import circle: " + " -> ".join(circle))
            if target not in state:
                visit(target)
        path.pop()
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node)


def _code_lines(function):
    """Lines of a function that hold code: not blank, not a comment, not its docstring."""
    path_lines = function.source_lines
    body = function.node.body
    skip = set()
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) and isinstance(
        body[0].value.value, str
    ):
        skip |= set(range(body[0].lineno, body[0].end_lineno + 1))
    count = 0
    for number in range(function.node.lineno, function.node.end_lineno + 1):
        text = path_lines[number - 1].strip()
        if number in skip or not text or text.startswith("#"):
            continue
        count += 1
    return count


class _Function:
    def __init__(self, node, source_lines, where):
        self.node, self.source_lines, self.where = node, source_lines, where


def _functions():
    for name, (path, tree) in MODULES.items():
        lines = path.read_text().splitlines()
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                yield _Function(node, lines, f"{path.relative_to(ROOT)}:{node.lineno} {node.name}")


def test_no_function_is_longer_than_80_lines_of_code():
    long = [f"{f.where} ({_code_lines(f)} lines)" for f in _functions() if _code_lines(f) > MAX_FUNCTION_LINES]
    assert long == []


def _inherited_privates(tree):
    """`self._name` reads in classes that never define `_name` themselves: private members of a base class."""
    found = []
    for cls in (node for node in ast.walk(tree) if isinstance(node, ast.ClassDef)):
        defined = {node.name for node in cls.body if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))}
        for node in ast.walk(cls):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "self":
                if isinstance(node.ctx, ast.Store):
                    defined.add(node.attr)
        for node in ast.walk(cls):
            if (
                isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "self"
                and node.attr.startswith("_") and not node.attr.startswith("__") and node.attr not in defined
            ):
                found.append((cls.name, node.attr, node.lineno))
    return found


# Names of the standard library that start with an underscore yet are documented as its public API.
STDLIB_PUBLIC = {("os", "_exit")}  # ends a process at once, without cleanup: the cluster's watchdog (strategy.py)


def _foreign_privates(tree):
    """`x._name` and getattr(x, "_name") on anything but self and cls (our own modules' functions aside)."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
            owner = node.value.id if isinstance(node.value, ast.Name) else None
            if owner not in ("self", "cls") and (owner, node.attr) not in STDLIB_PUBLIC:
                found.append((node.attr, node.lineno))
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("getattr", "hasattr"):
            if len(node.args) > 1 and isinstance(node.args[1], ast.Constant) and str(node.args[1].value).startswith("_"):
                found.append((node.args[1].value, node.lineno))
        if isinstance(node, ast.ImportFrom) and node.module and node.module != "__future__" and any(
            part.startswith("_") for part in node.module.split(".")
        ):
            found.append((node.module, node.lineno))
        if isinstance(node, ast.ImportFrom) and node.module and node.module != "__future__":
            found += [(f"{node.module}.{alias.name}", node.lineno) for alias in node.names
                      if alias.name.startswith("_") and not alias.name.startswith("__")]
        # Keras' and TensorFlow's implementation packages are private whatever their names say.
        modules = [alias.name for alias in node.names] if isinstance(node, ast.Import) else (
            [node.module] if isinstance(node, ast.ImportFrom) and node.module else [])
        found += [(name, node.lineno) for name in modules if name.startswith(PRIVATE_PACKAGES)]
    return found


def test_private_attributes_of_keras_and_tensorflow_are_touched_in_one_module_only():
    offences = []
    for name, (path, tree) in MODULES.items():
        if name == PRIVATE_ACCESS_MODULE:
            continue
        where = path.relative_to(ROOT)
        offences += [f"{where}:{line} {cls}.self.{attr}" for cls, attr, line in _inherited_privates(tree)]
        offences += [f"{where}:{line} {attr}" for attr, line in _foreign_privates(tree)]
    assert offences == []


def test_private_access_rules_catch_each_form():
    code = "\n".join([
        "import keras.src.utils", "from tensorflow.python.eager import context", "from keras.src import ops",
        "from somewhere import _hidden", "x._private", "getattr(x, '_private')", "from _private_mod import y",
        "os._exit(1)", "os._private",
    ])
    names = sorted(name for name, _ in _foreign_privates(ast.parse(code)))
    assert names == ["_private", "_private", "_private", "_private_mod", "keras.src", "keras.src.utils",
                     "somewhere._hidden", "tensorflow.python.eager"]


# Every command's --help, in one fresh process: none may load TensorFlow, Keras, KerasTuner or matplotlib, so a
# mistyped option answers in a fraction of a second.
HELP = """
import contextlib, io, json, sys
from pipeline import benchmark, evaluate, export, predict, prepare, train
from tuning import search
for module in (benchmark, evaluate, export, predict, prepare, train, search):
    with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):
        module.main(["--help"])
print(json.dumps(sorted(m for m in ("tensorflow", "keras", "keras_tuner", "matplotlib") if m in sys.modules)))
"""


def test_the_commands_help_loads_no_tensorflow():
    import subprocess
    import sys

    from tests.helpers.processes import project_env

    done = subprocess.run([sys.executable, "-c", HELP], env=project_env(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"
