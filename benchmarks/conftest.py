"""The performance suite (tox -e perf): real assets through environment variables, and the
ratio lines every benchmark exists for, repeated at the end of the run.

Timings on a shared machine are noisy: every line carries the 1-minute load average seen
before the measurement, and results/PERF.md records figures only from quiet runs.
"""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402

_LINES: list[str] = []


def _folder(variable: str, hint: str) -> Path:
    value = os.environ.get(variable)
    if not value:
        pytest.skip(f"{variable} is unset ({hint})")
    path = Path(value)
    if not path.is_dir():
        pytest.skip(f"{variable}={value} is not a folder ({hint})")
    return path


@pytest.fixture(scope="session")
def weights_dir() -> Path:
    return _folder("BENCH_TEST_WEIGHTS_DIR", "tox -e perf sets it to ../shared/weights")


@pytest.fixture(scope="session")
def ds10(weights_dir):
    """cifar10-ds10: 878 train / 293 test images, 64x64, the lesson's data shape."""
    from bench.data import load_dataset

    return load_dataset(_folder("BENCH_TEST_DATA", "tox -e perf sets it to "
                                "../shared/datasets/cifar10-ds10"))


@pytest.fixture(scope="session")
def data10k():
    """cifar10-10k: 10,000 train images, 32x32, for the scaling benchmark."""
    from bench.data import load_dataset

    return load_dataset(_folder("BENCH_PERF_DATA_10K", "tox -e perf sets it to "
                                "../shared/datasets/cifar10-10k"))


@pytest.fixture
def report(request):
    """report(line): printed now and again in the run's summary."""

    def emit(line: str) -> None:
        _LINES.append(line)
        capture = request.config.pluginmanager.getplugin("capturemanager")
        with capture.global_and_fixture_disabled():
            print(f"\n{line}", flush=True)

    return emit


def pytest_terminal_summary(terminalreporter):
    if _LINES:
        terminalreporter.section("bench ratios (see results/PERF.md for the targets)")
        for line in _LINES:
            terminalreporter.write_line(line)
