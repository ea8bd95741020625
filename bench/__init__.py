"""bench: every keras.applications backbone, frozen under the lesson's head, on one leaderboard.

Importing `bench` loads no TensorFlow; `bench.run` does, when called.
"""

from __future__ import annotations

from bench.sweep import run

__version__ = "0.1.0"

__all__ = ["run", "__version__"]
