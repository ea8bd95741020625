"""Runs a command on this machine made N times slower, uniformly: what a slower machine of the
same kind looks like to the command, for checking that bench calibrates from measurements.

    python benchmarks/slower.py 1.5 -- python -m pytest benchmarks/test_dry_run.py -k sweep

The command and every process it starts (children in new sessions too) are put in a cgroup of
Linux's v1 freezer, which is frozen for (1 - 1/N) of every PERIOD_S and thawed for the rest:
all threads, single- or multi-threaded work, lose the same share of wall time. A busy loop
beside the command is not the same: it takes one core from a two-thread operation and leaves
single-threaded work alone. Needs root and a mounted freezer hierarchy (FREEZER); exits 2
with one line when either is missing. Standard library only.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

FREEZER = Path("/sys/fs/cgroup/freezer")
# Shorter than a batch of any benchmark (tens of ms and up) so that each is slowed evenly, and
# long enough that freezing and thawing (about 0.1 ms each) cost nothing measurable.
PERIOD_S = 0.03


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("factor", type=float, help="how many times slower, > 1")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- then the command")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command or not args.factor > 1:
        print("slower.py: give a factor > 1, then -- and a command", file=sys.stderr)
        return 2
    group = FREEZER / f"bench-slower-{os.getpid()}"
    try:
        group.mkdir()
    except OSError as err:
        print(f"slower.py: cannot make a freezer cgroup in {FREEZER} ({err.strerror}): needs "
              "root and cgroup v1's freezer", file=sys.stderr)
        return 2
    state = (group / "freezer.state").open("w")

    def freeze(frozen: bool) -> None:
        state.write("FROZEN" if frozen else "THAWED")
        state.flush()

    try:
        child = subprocess.Popen(
            command, preexec_fn=lambda: (group / "cgroup.procs").write_text(str(os.getpid())))
        thawed = PERIOD_S / args.factor
        while child.poll() is None:
            time.sleep(thawed)
            freeze(True)
            time.sleep(PERIOD_S - thawed)
            freeze(False)
        return child.returncode
    finally:
        freeze(False)
        state.close()
        for _ in range(100):  # a straggler, thawed, ending: ten seconds at most
            if not (group / "cgroup.procs").read_text().strip():
                group.rmdir()
                break
            time.sleep(0.1)


if __name__ == "__main__":
    sys.exit(main())
