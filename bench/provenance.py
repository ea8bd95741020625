"""Where a row was computed, as far as it can be told without TensorFlow: bench's git commit
and the CPU."""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path

from bench.cache import process_caches


def git_commit() -> str | None:
    """The commit of the checkout bench runs from (+dirty with local changes); None outside one.

    Asked of git once per process: the checkout does not change under a running sweep.
    """
    once = process_caches().once
    if "git_commit" not in once:
        once["git_commit"] = _ask_git()
    return once["git_commit"]


def _ask_git() -> str | None:
    root = Path(__file__).resolve().parents[1]
    if not (root / ".git").exists():
        return None
    try:
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=10)
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain",
                                "--untracked-files=no"], capture_output=True, text=True,
                               timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    return out.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def cpu_name() -> str:
    """The CPU's model name (/proc/cpuinfo on Linux), else what platform says."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def usable_cores() -> int:
    """The cores this process may run on (its affinity), which TensorFlow's threads share."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
