"""The shape of the code: small modules and functions, and TensorFlow only behind bench/engine/.

The commands that need no model (help, the registry, a report, a sweep with nothing left to
run) run in a fresh interpreter and must not import TensorFlow or Keras.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

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


_PROBE = (
    "import json, runpy, sys\n"
    "sys.argv = ['bench', *json.loads(sys.argv[1])]\n"
    "try:\n"
    "    runpy.run_module('bench', run_name='__main__')\n"
    "except SystemExit as exit:\n"
    "    code = exit.code\n"
    "else:\n"
    "    code = 0\n"
    "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras'))\n"
    "print(json.dumps({'code': code, 'heavy': heavy}))\n"
)


def _probe(*args: str) -> dict:
    """Runs python -m bench ARGS in a fresh interpreter; its exit code and the TF modules it
    imported."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.run([sys.executable, "-c", _PROBE, json.dumps(list(args))], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.splitlines()[-1])


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
