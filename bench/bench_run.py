"""Time `remediate run --cause socket --yes` end to end over SSH on the lab, against its floor.

Run as root (it builds its own lab on 127.0.31.x and tears it down):

    .venv/bin/python bench/bench_run.py [--runs 10]

Each run is a fresh process, as a user or a script would start it (interpreter
start, imports, SSH connect, evidence, apply, probe), with the lab broken
before each (alternating the missing and permission variants). The break is
not timed. Round trips are the SSH command executions the run made.

The anchor (the floor, measured in the same sitting, alternated with remediate on the same break,
``socket missing``): one OpenSSH connection running one bash script that does what the fix does and
no more: restart php-fpm through the host's supervisor, then ask nginx for /index.php until it
answers 200. No evidence, no validation, no backup, no journal: what remediate adds is the ratio.
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
    fixes, floors = [], []  # socket missing only, alternated: remediate, then the one-session script
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
            if index % 2 == 0:
                fixes.append(walls[-1])
                lab.break_("socket", "missing")
                floors.append(_floor(lab))
    finally:
        lab.down()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    print(f"remediate --help: median {statistics.median(help_times) * 1000:.0f} ms")
    if floors:
        ratio = statistics.median(fixes) / statistics.median(floors)
        print(
            f"socket missing, alternated: remediate median {statistics.median(fixes):.2f} s; one-session floor "
            f"median {statistics.median(floors):.2f} s; ratio {ratio:.2f}x"
        )
    print(
        f"run --cause socket, {args.runs} runs: median {statistics.median(walls):.2f} s wall "
        f"(min {min(walls):.2f}, max {max(walls):.2f}); SSH round trips per run: {sorted(set(trips))}; "
        f"outcomes: {sorted(set(outcomes))}"
    )


def _floor(lab: Lab) -> float:
    """One ssh connection, one bash script: restart php-fpm under the host's supervisor, poll nginx for 200."""
    from remediate.hosts.inventory import load_inventory
    from remediate.hosts.managers import restart_argv

    web = load_inventory(lab.inventory).host("web01")
    restart = " ".join(restart_argv(web, "php-fpm"))
    url = f"http://{web['ansible_host']}:{lab.config().http_port}/index.php"
    script = (
        f"{restart} >/dev/null && for i in $(seq 100); do "
        f"[ \"$(curl -s -o /dev/null -w '%{{http_code}}' {url})\" = 200 ] && exit 0; sleep 0.05; done; exit 1"
    )
    argv = [
        "ssh", "-p", str(web["ansible_port"]), "-i", str(web["ansible_ssh_private_key_file"]),
        "-o", f"UserKnownHostsFile={web['known_hosts']}", "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes",
        f"{web['ansible_user']}@{web['ansible_host']}", script,
    ]  # fmt: skip
    start = time.perf_counter()
    subprocess.run(argv, check=True, capture_output=True)
    return time.perf_counter() - start


if __name__ == "__main__":
    main()
