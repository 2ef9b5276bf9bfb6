"""Time `remediate run --cause socket --yes` end to end over SSH on the lab, and count its round trips.

Run as root (it builds its own lab on 127.0.31.x and tears it down):

    .venv/bin/python bench/bench_run.py [--runs 10]

Each run is a fresh process, as a user or a script would start it (interpreter
start, imports, SSH connect, evidence, apply, probe), with the lab broken
before each (alternating the missing and permission variants). The break is
not timed. Round trips are the SSH command executions the run made.
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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    directory = Path(tempfile.mkdtemp(prefix="remediate-bench-run-", dir="/tmp"))
    directory.chmod(0o755)
    lab = Lab(directory)
    lab.up(LabConfig(dir=str(directory), net="127.0.31"))
    env = {**os.environ, "REMEDIATE_STATE_DIR": str(directory / "state")}
    remediate = [sys.executable, "-m", "remediate.cli"]
    walls, trips, outcomes = [], [], []
    try:
        help_times = []
        for _ in range(5):
            start = time.perf_counter()
            subprocess.run([*remediate, "--help"], capture_output=True, check=True)
            help_times.append(time.perf_counter() - start)
        for index in range(args.runs):
            lab.break_("socket", "missing" if index % 2 == 0 else "permission")
            start = time.perf_counter()
            done = subprocess.run(
                [
                    *remediate,
                    "run",
                    "-i",
                    str(lab.inventory),
                    "--host",
                    "web01",
                    "--cause",
                    "socket",
                    "--yes",
                    "--json",
                ],
                capture_output=True,
                text=True,
                env=env,
                check=False,
            )
            walls.append(time.perf_counter() - start)
            report = json.loads(done.stdout)
            trips.append(report["round_trips"])
            outcomes.append(report["outcome"])
    finally:
        lab.down()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    print(f"remediate --help: median {statistics.median(help_times) * 1000:.0f} ms")
    print(
        f"run --cause socket, {args.runs} runs: median {statistics.median(walls):.2f} s wall "
        f"(min {min(walls):.2f}, max {max(walls):.2f}); SSH round trips per run: {sorted(set(trips))}; "
        f"outcomes: {sorted(set(outcomes))}"
    )


if __name__ == "__main__":
    main()
