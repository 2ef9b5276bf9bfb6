"""`remediate diagnose --host` wall time and round trips: one cause in the window, and six at once,
the code before the one-round-trip diagnosis against the code now, measured in one sitting.

Run as root (it builds its own lab on 127.0.33.x and tears it down):

    .venv/bin/python bench/bench_round_trips.py [--runs 5] [--before 4287ba2]

``--before`` is a commit of this repository (default: the last commit before issue #11); it is
checked out in a temporary git worktree and run with PYTHONPATH pointing at it, so both versions
run against the same lab, alternately, each run a fresh process.

* one cause: the lab broken as ``socket missing`` (its real error-log lines).
* six at once: each of six breaks (socket, down, timeout, dns, invalid-response, workers) is made
  in turn and its real error-log lines kept; then the lab is reset (healthy) and the window holds
  all of them, stamped now. Every candidate playbook's evidence is collected, as in a storm.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from remediate.evidence.classify import classify_text
from remediate.lab.core import PROBES, Lab, LabConfig

ROOT = Path(__file__).resolve().parent.parent
SIX = [
    ("socket", "missing"),
    ("down", "crash"),
    ("timeout", "read"),
    ("dns", "no-resolver"),
    ("invalid-response", "empty"),
    ("workers", "load"),
]
_STAMP = re.compile(r"^\d{4}/\d\d/\d\d \d\d:\d\d:\d\d", re.M)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--before", default="4287ba2")
    args = parser.parse_args()
    directory = Path(tempfile.mkdtemp(prefix="remediate-bench-trips-", dir="/tmp"))
    directory.chmod(0o755)
    before = directory / "before"
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "-f", "--detach", str(before), args.before], check=True)
    cfg = LabConfig(dir=str(directory / "lab"), net="127.0.33")
    lab = Lab(Path(cfg.dir))
    lab.up(cfg)
    error_log = Path(cfg.dir) / "web01" / "nginx" / "logs" / "error.log"
    env = {**os.environ, "REMEDIATE_STATE_DIR": str(directory / "state")}
    argv = [sys.executable, "-m", "remediate.cli", "diagnose", "-i", str(lab.inventory), "--host", "web01", "--json"]
    versions = {"before": str(before), "now": str(ROOT)}
    results: dict[tuple[str, str], list[tuple[float, int, str]]] = {}
    try:
        captured = []
        for cause, variant in SIX:
            lab.reset()
            error_log.write_bytes(b"")
            spec = lab.break_(cause, variant, keep=True)
            lab.probe(cfg, PROBES[spec.probe])
            lines = [line.text for line in classify_text(error_log.read_text("utf-8", "surrogateescape"))]
            captured += lines[-3:]
        six = "\n".join(captured) + "\n"

        def diagnose(version: str) -> tuple[float, int, str]:
            start = time.perf_counter()
            done = subprocess.run(
                argv,
                capture_output=True,
                text=True,
                env={**env, "PYTHONPATH": versions[version]},
                cwd=versions[version],  # python -m puts the working directory first on sys.path
                check=False,
            )
            wall = time.perf_counter() - start
            report = json.loads(done.stdout) if done.stdout.strip() else {"verdict": done.stderr.strip()[-200:]}
            return wall, int(report.get("round_trips", 0)), str(report.get("verdict"))

        lab.reset()
        error_log.write_bytes(b"")
        spec = lab.break_("socket", "missing", keep=True)
        lab.probe(cfg, PROBES[spec.probe])
        for _ in range(args.runs):
            for version in versions:
                results.setdefault(("one cause", version), []).append(diagnose(version))
        lab.reset()
        for _ in range(args.runs):
            for version in versions:
                error_log.write_text(_STAMP.sub(time.strftime("%Y/%m/%d %H:%M:%S"), six))
                results.setdefault(("six causes", version), []).append(diagnose(version))
    finally:
        lab.down()
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(before)], check=False)
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    for scenario in ("one cause", "six causes"):
        medians = {}
        for version in versions:
            runs = results[(scenario, version)]
            walls = [r[0] for r in runs]
            medians[version] = statistics.median(walls)
            trips = sorted({r[1] for r in runs})
            verdicts = sorted({r[2] for r in runs})
            print(
                f"{scenario:>10}, {version:>6}: median {medians[version]:.2f} s (min {min(walls):.2f}, "
                f"max {max(walls):.2f}); round trips {trips or '?'}; verdict {verdicts}"
            )
        print(f"{scenario:>10}: now/before = {medians['now'] / medians['before']:.2f}")


if __name__ == "__main__":
    main()
