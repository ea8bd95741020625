"""bench: every keras.applications backbone, frozen under the lesson's head, on one leaderboard.

Importing `bench` loads no TensorFlow; `bench.run` does, when called.
"""

from __future__ import annotations

__version__ = "0.1.0"


def run(*args, **kwargs):
    """See bench.sweep.run: run backbones under the lesson protocol, get a pandas DataFrame."""
    from bench.sweep import run as _run

    return _run(*args, **kwargs)


__all__ = ["run", "__version__"]
