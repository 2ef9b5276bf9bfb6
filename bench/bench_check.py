"""`remediate run --check` (evidence, plan, candidate validated on the host) against another commit, in one sitting.

Run as root (it builds its own lab on 127.0.31.x and tears it down):

    .venv/bin/python bench/bench_check.py --against REF [--runs 12]

The lab is broken as ``socket permission`` (a fix that edits the pool, so --check validates the
candidate with php-fpm -t); then ``--runs`` times, alternated, the working tree's CLI and REF's
(a temporary git worktree; ``python -m`` puts its directory first on sys.path) each run
``run --cause socket --check --json`` as a fresh process. Printed: each side's median wall time and
what it reported (outcome, round trips, last step), which must be the same. Nothing here asserts.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from remediate.lab.core import Lab, LabConfig

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--against", required=True, metavar="REF", help="the commit to compare with")
    parser.add_argument("--runs", type=int, default=12)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="remediate-bench-check-", dir="/tmp"))
    work.chmod(0o755)
    other = work / "other"
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "-q", "--detach", str(other), args.against], check=True)
    lab = Lab(work / "lab")
    (work / "lab").mkdir()
    (work / "lab").chmod(0o755)
    lab.up(LabConfig(dir=str(work / "lab"), net="127.0.31"))
    env = {**os.environ, "REMEDIATE_STATE_DIR": str(work / "state")}
    sides = {"working tree": ROOT, args.against: other}
    times: dict[str, list[float]] = {name: [] for name in sides}
    said: dict[str, set[tuple[str, int, str]]] = {name: set() for name in sides}
    try:
        lab.break_("socket", "permission")
        for _ in range(args.runs):
            for name, tree in sides.items():
                argv = [sys.executable, "-m", "remediate.cli", "run", "-i", str(lab.inventory), "--host", "web01",
                        "--cause", "socket", "--check", "--json"]  # fmt: skip
                start = time.perf_counter()
                done = subprocess.run(argv, cwd=tree, capture_output=True, text=True, env=env, check=False)
                times[name].append(time.perf_counter() - start)
                report = json.loads(done.stdout)
                said[name].add((report["outcome"], report["round_trips"], report["steps"][-1]["step"]))
    finally:
        lab.down()
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(other)], check=False)
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    for name in sides:
        print(f"{name}: run --check median {statistics.median(times[name]):.3f} s over {args.runs}; said {said[name]}")


if __name__ == "__main__":
    main()
