"""Child-process entry of an isolated sweep: python -m bench.executors.worker REQUEST OUT_DIR.

The request names the backbone, its single-seed configs and the data folder; OUT_DIR/runs.jsonl
receives one JSON row per config as each finishes, and OUT_DIR/head-<i>.npz the head weights
of the i-th row. Only JSON, .npy and .npz (allow_pickle=False) cross the process boundary: no
pickle.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

from bench.config import RunConfig
from bench.data import load_dataset
from bench.executors.common import worker_spec
from bench.headfile import child_head_path, save_head
from bench.runlog import RUNS_FILE


def _exit_with_parent(parent: int) -> None:
    """A child whose driver was killed (SIGKILL leaves no chance to clean up) stops too, with
    the processes it started."""

    def watch():
        while True:
            if os.getppid() != parent:
                if os.getpgid(0) == os.getpid():  # the leader of its own group (isolated.py)
                    os.killpg(0, signal.SIGKILL)  # itself and whatever it started
                os._exit(3)
            time.sleep(0.5)

    threading.Thread(target=watch, daemon=True).start()


def main(argv: list[str]) -> int:
    request_path, out_dir = map(Path, argv)
    request = json.loads(request_path.read_text())
    _exit_with_parent(int(request["parent_pid"]))


    spec = worker_spec(request["backbone"])
    from bench.engine.runner import run_one

    data = load_dataset(request["data"], download=False)
    if data.checksum() != request["data_checksum"]:
        raise RuntimeError(f"the data in {request['data']} changed during the sweep")
    # Rows as run_one made them (NaN stays NaN); the driver's append normalises them for good.
    with open(out_dir / RUNS_FILE, "a") as out:
        for i, config in enumerate(request["configs"]):
            result = run_one(spec, RunConfig(**config), data,
                             data_checksum=request["data_checksum"])
            if result.head_weights is not None:  # before its row: the driver reads both
                save_head(child_head_path(out_dir, i), result.head_weights)
            out.write(json.dumps(result.to_dict()) + "\n")  # one row per seed, as it finishes
            out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
