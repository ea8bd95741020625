"""The shape of the code: small modules and functions, and TensorFlow only behind bench/engine/.

The commands that need no model (help, the registry, a report, a sweep with nothing left to
run) run in a fresh interpreter and must not import TensorFlow or Keras.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path

import numpy as np
import pytest
from conftest import fresh_python

# one xdist worker runs this file: its module-scoped fixture is set up once
pytestmark = pytest.mark.xdist_group("layout")

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("bench", "backbones")
MAX_MODULE_LINES = 450
MAX_FUNCTION_LINES = 60
FILES = ("train_images.npy", "train_labels.npy", "test_images.npy", "test_labels.npy")


def _modules() -> list[Path]:
    return sorted(p for package in PACKAGES for p in (ROOT / package).rglob("*.py"))


def _functions(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            yield node


def test_no_module_over_the_line_limit():
    long = {str(p.relative_to(ROOT)): n for p in _modules()
            if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES}
    assert not long, f"modules over {MAX_MODULE_LINES} lines: {long}"


def test_no_function_over_the_line_limit():
    long = {}
    for path in _modules():
        for node in _functions(ast.parse(path.read_text())):
            lines = node.end_lineno - node.lineno + 1
            if lines > MAX_FUNCTION_LINES:
                long[f"{path.relative_to(ROOT)}:{node.lineno} {node.name}"] = lines
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines: {long}"


def test_the_limits_are_measured_on_real_code():
    """The checks above see every module and function (a wrong glob would pass vacuously)."""
    modules = _modules()
    assert ROOT / "bench" / "__main__.py" in modules
    assert ROOT / "backbones" / "registry.py" in modules
    names = {f.name for p in modules for f in _functions(ast.parse(p.read_text()))}
    assert {"run_one", "write_report", "main"} <= names


def _top_level_imports(path: Path) -> set[str]:
    """Modules imported at module level (not inside a function or under TYPE_CHECKING)."""
    found = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return found


def test_only_the_engine_imports_tensorflow_at_module_level():
    engine = ROOT / "bench" / "engine"
    offenders = {
        str(p.relative_to(ROOT)): sorted(heavy)
        for p in _modules() if engine not in p.parents
        if (heavy := {m for m in _top_level_imports(p)
                      if m.split(".")[0] in ("tensorflow", "keras")
                      or m.startswith("bench.engine")})
    }
    assert not offenders, f"TensorFlow (or the engine) imported outside bench/engine: {offenders}"


_MAIN = """
import json, runpy, sys
sys.argv = ["bench", *json.loads(sys.argv[1])]
try:
    runpy.run_module("bench", run_name="__main__")
except SystemExit as exit:
    result = exit.code
else:
    result = 0
"""


def _probe(*args: str) -> dict:
    """Runs python -m bench ARGS in a fresh interpreter; its exit code and the TF modules it
    imported."""
    found = fresh_python(_MAIN, json.dumps(list(args)))
    return {"code": found["result"], "heavy": found["heavy"]}


@pytest.mark.parametrize("args", [["--help"], ["--list"], ["run", "--help"], ["list"]],
                         ids=" ".join)
def test_commands_without_a_model_import_no_tensorflow(args):
    assert _probe(*args) == {"code": 0, "heavy": []}


@pytest.fixture(scope="module")
def finished_sweep(tmp_path_factory) -> list[str]:
    """The arguments of a small sweep that has run to the end once."""
    tmp = tmp_path_factory.mktemp("resumed")
    data = tmp / "data"
    data.mkdir()
    rng = np.random.default_rng(0)
    for name in FILES:
        n = 24 if name.startswith("train") else 12
        if "images" in name:
            np.save(data / name, rng.integers(0, 255, (n, 8, 8, 3), dtype=np.uint8))
        else:
            np.save(data / name, np.arange(n) % 2)
    args = ["dense", "--epochs", "1", "--quiet", "--data", str(data), "--out", str(tmp / "out"),
            "--cache-dir", str(tmp / "cache")]
    first = _probe(*args)
    assert first["code"] == 0 and "tensorflow" in first["heavy"]  # the probe sees an import
    return args


def test_report_imports_no_tensorflow(finished_sweep):
    out = finished_sweep[finished_sweep.index("--out") + 1]
    assert _probe("report", "--out", out) == {"code": 0, "heavy": []}


def test_a_fully_resumed_sweep_imports_no_tensorflow(finished_sweep):
    assert _probe(*finished_sweep) == {"code": 0, "heavy": []}


# --- imports: layers without cycles -----------------------------------------------------------
MAX_FUNCTION_LEVEL_IMPORTS = 35  # of project modules; each crosses into bench/engine (TensorFlow)


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_imports() -> list[tuple[str, str, bool]]:
    """(importer, imported module, inside a function) for every import of a bench or backbones
    module in bench/ and backbones/; `from package import submodule` counts as the submodule,
    imports under `if TYPE_CHECKING:` do not count (they never run)."""
    modules = {_module_name(p): p for p in _modules()}
    found = []
    for name, path in modules.items():
        tree = ast.parse(path.read_text())
        typing_only = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If)
                       and getattr(node.test, "id", "") == "TYPE_CHECKING"
                       for n in ast.walk(node)}
        in_function = {id(n) for node in ast.walk(tree)
                       if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
                       for n in ast.walk(node)}
        for node in ast.walk(tree):
            if id(node) in typing_only or not isinstance(node, ast.Import | ast.ImportFrom):
                continue
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                base = node.module or ""
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base
                           for a in node.names]
            for target in dict.fromkeys(targets):
                if target.split(".")[0] in PACKAGES:
                    found.append((name, target, id(node) in in_function))
    return found


def _cycles(edges: set[tuple[str, str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    graph: dict[str, set[str]] = {}
    for a, b in edges:
        graph.setdefault(a, set()).add(b)
        graph.setdefault(b, set())
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while (w := stack.pop()) != v:
                on_stack.discard(w)
                component.append(w)
            on_stack.discard(v)
            if component:
                found.append(sorted([v, *component]))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycle_anywhere_in_bench_or_backbones():
    edges = {(a, b) for a, b, _ in project_imports() if a != b}
    assert len(edges) > 50  # the walk sees the real code
    assert not _cycles(edges), _cycles(edges)


def test_the_cycle_check_finds_a_cycle():
    assert _cycles({("a", "b"), ("b", "c"), ("c", "a"), ("c", "d")}) == [["a", "b", "c"]]
    assert _cycles({("a", "b"), ("b", "c")}) == []


def test_project_modules_are_imported_inside_functions_only_to_reach_the_engine():
    inner = [(a, b) for a, b, in_function in project_imports() if in_function]
    assert inner, "the walk sees the engine's lazy imports"
    assert len(inner) <= MAX_FUNCTION_LEVEL_IMPORTS, inner
    elsewhere = [(a, b) for a, b in inner if not b.startswith("bench.engine")
                 and not a.startswith("bench.engine")]
    assert not elsewhere, elsewhere


def test_the_readme_install_block_installs_the_readme_test_command():
    import re
    import tomllib

    readme = (ROOT / "README.md").read_text()
    extras = re.findall(r'pip install -e "\.\[([a-z,]+)\]"', readme.split("## The two commands")[0])
    assert extras, "no install block before 'The two commands'"
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    installed = " ".join(project["dependencies"] + [
        dep for extra in extras[0].split(",") for dep in project["optional-dependencies"][extra]])
    assert re.search(r"\btox\b", installed), "pip install -e '.[test]' leaves tox out"
