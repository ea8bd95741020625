"""What bench says on a terminal: one-line messages, and C++ chatter kept off stderr.

Pure Python: the CLI, the executors and the engine all use it.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator


def one_line(text: object) -> str:
    """text with every run of white space (newlines included) folded into one space."""
    return " ".join(str(text).split()) if text is not None else ""


@contextlib.contextmanager
def captured_stderr() -> Iterator[list[str]]:
    """File descriptor 2 into a temporary file for the block (C++ libraries write there, not to
    sys.stderr); the list yielded holds what was written once the block ends."""
    said: list[str] = []
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as log:
        os.dup2(log.fileno(), 2)
        try:
            yield said
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            log.seek(0)
            said.append(log.read().decode(errors="replace"))
