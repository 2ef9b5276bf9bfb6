"""Time fixing 1, 10 and 20 broken hosts with `remediate run --limit ... --forks 20`, as ratios to one host.

Run as root (it builds its own lab of 20 web hosts on 127.0.35.x and tears it down):

    .venv/bin/python bench/bench_fleet.py [--runs 5] [--sizes 1,10,20]

Each measurement is a fresh `remediate run --limit web[0:N-1] --cause socket --yes --forks 20 --json`
process, as a user starts it, against N web hosts broken the same way (php-fpm stopped) just
before; the break is not timed. The sizes are alternated within each round, so a noisy moment
of the machine touches every size alike. The goal (#13) is 20 hosts within 3x one host.

Every lab host runs on this machine's cores, so the bench also reports CPU seconds: the
controller's (the remediate process) and the whole machine's during the run (the hosts' sshd,
helpers, supervisorctl and php-fpm restarts included), to show which side sets the wall time.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from remediate.lab.core import PROBES, Lab, LabConfig


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--sizes", default="1,10,20")
    parser.add_argument("--forks", type=int, default=20)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    directory = Path(tempfile.mkdtemp(prefix="remediate-bench-fleet-", dir="/tmp"))
    directory.chmod(0o755)
    lab = Lab(directory)
    started = time.perf_counter()
    lab.up(LabConfig(dir=str(directory), net="127.0.35", web_hosts=max(sizes)))
    up_seconds = time.perf_counter() - started
    env = {**os.environ, "REMEDIATE_STATE_DIR": str(directory / "state")}
    walls: dict[int, list[float]] = {n: [] for n in sizes}
    controller: dict[int, list[float]] = {n: [] for n in sizes}  # the remediate process's CPU seconds
    machine: dict[int, list[float]] = {n: [] for n in sizes}  # every process's CPU seconds (lab hosts too)
    try:
        for _ in range(args.runs):
            for n in sizes:
                limit = f"web[0:{n - 1}]"
                lab.reset()
                lab.break_("socket", "missing", keep=True, limit=limit)
                for web in lab.webs(limit):
                    web.probe(PROBES["php"])
                begin, cpu, busy = time.perf_counter(), _children_cpu(), _machine_busy()
                done = subprocess.run(
                    [sys.executable, "-m", "remediate.cli", "run", "-i", str(lab.inventory), "--limit", limit,
                     "--cause", "socket", "--yes", "--forks", str(args.forks), "--json"],
                    capture_output=True, text=True, env=env, check=False,
                )  # fmt: skip
                walls[n].append(time.perf_counter() - begin)
                controller[n].append(_children_cpu() - cpu)
                machine[n].append(_machine_busy() - busy)
                summary = json.loads(done.stdout.splitlines()[-1])["summary"]
                if summary["outcomes"] != {"fixed": n}:
                    raise SystemExit(f"{n} hosts: {summary}")
    finally:
        lab.down()
    one = statistics.median(walls[sizes[0]])
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    print(f"lab up with {max(sizes)} web hosts: {up_seconds:.1f} s")
    for n in sizes:
        median = statistics.median(walls[n])
        print(
            f"{n:>3} hosts, --forks {args.forks}: median {median:.2f} s wall (min {min(walls[n]):.2f}, "
            f"max {max(walls[n]):.2f}); ratio to {sizes[0]} host(s): {median / one:.2f}; CPU: the controller "
            f"{statistics.median(controller[n]):.2f} s, the whole machine {statistics.median(machine[n]):.2f} s"
        )


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _machine_busy() -> float:
    """CPU seconds every process on the machine has used (all cores), from /proc/stat."""
    fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


if __name__ == "__main__":
    main()
