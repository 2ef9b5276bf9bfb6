"""The real host's costs: building its root file system, booting it, and one `run --cause auto --yes` there,
against the same run on the loopback lab (the anchor, measured in the same sitting).

Run as root (it boots its own Debian hosts and a loopback lab on 127.0.32.x, and tears them down):

    .venv/bin/python bench/bench_realhost.py [--runs 5]

Each sample boots a fresh host from the cached root file system (the build is timed only when the cache
is missing: delete /var/cache/remediate/debian-bookworm, or set REMEDIATE_ROOTFS_CACHE, to time it).
The run is a fresh process, as a user starts it, on a socket break (php-fpm's master SIGKILLed on the
Debian host; php-fpm stopped on the loopback lab): evidence, diagnosis, restart, the failing request
replayed. Medians are printed with the machine; nothing here asserts a time.
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
from remediate.lab.realhost import RealHost
from remediate.lab.rootfs import CACHE, build_rootfs


def _run(inventory: Path, host: str, env: dict[str, str]) -> tuple[float, str]:
    argv = [sys.executable, "-m", "remediate.cli", "run", "-i", str(inventory), "--host", host, "--cause", "auto"]
    start = time.perf_counter()
    done = subprocess.run([*argv, "--yes", "--json"], capture_output=True, text=True, env=env, check=False)
    return time.perf_counter() - start, json.loads(done.stdout)["outcome"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="remediate-bench-realhost-", dir="/tmp"))
    work.chmod(0o755)
    env = {**os.environ, "REMEDIATE_STATE_DIR": str(work / "state")}
    cached = (CACHE / "recipe").exists()
    start = time.perf_counter()
    build_rootfs(say=lambda *_: None)
    built = None if cached else time.perf_counter() - start
    boots, real, real_outcomes = [], [], []
    for index in range(args.runs):
        host = RealHost(work / f"debian{index}")
        start = time.perf_counter()
        cfg = host.up(subnet=200, name="rmd-bench", say=lambda *_: None)
        boots.append(time.perf_counter() - start)
        try:
            host.break_("socket", "killed")
            seconds, outcome = _run(host.inventory, RealHost.hostname, env)
            real.append(seconds)
            real_outcomes.append(outcome)
            assert host.status(cfg)["php"] == 200, "not fixed"
        finally:
            host.down()
    lab = Lab(work / "lab")
    (work / "lab").mkdir()
    (work / "lab").chmod(0o755)
    lab.up(LabConfig(dir=str(work / "lab"), net="127.0.32"))
    loop, loop_outcomes = [], []
    try:
        for _ in range(args.runs):
            lab.break_("socket", "missing")
            lab.probe(lab.config(), "/index.php")  # the failing request (the Debian break makes its own)
            seconds, outcome = _run(lab.inventory, "web01", env)
            loop.append(seconds)
            loop_outcomes.append(outcome)
    finally:
        lab.down()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    if built is not None:
        print(f"root file system built in {built:.1f} s (debootstrap from Debian's mirror, then the site)")
    else:
        print(f"root file system: cached in {CACHE} (delete it to time a build)")
    print(f"boot to healthy (systemd-nspawn -b, every probe 200): median {statistics.median(boots):.2f} s "
          f"over {len(boots)}")  # fmt: skip
    print(f"run --cause auto --yes, Debian host (socket/killed): median {statistics.median(real):.2f} s, "
          f"outcomes {sorted(set(real_outcomes))}")  # fmt: skip
    print(f"run --cause auto --yes, loopback lab (socket/missing): median {statistics.median(loop):.2f} s, "
          f"outcomes {sorted(set(loop_outcomes))}")  # fmt: skip
    print(f"ratio real host / loopback: {statistics.median(real) / statistics.median(loop):.2f}")


if __name__ == "__main__":
    main()
