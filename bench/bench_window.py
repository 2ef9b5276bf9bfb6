"""`remediate diagnose --log` over 64, 256 and 1024 MB windows: time and peak memory.

    .venv/bin/python bench/bench_window.py [--runs 3] [--sizes 64,256,1024] [--dir /var/tmp]

Each file is an error log whose every line is inside the window (stamped within the last hour,
read with --since 1d), so the window is the whole file. Each run is a fresh process; its wall
time and peak RSS (from wait4) are recorded, and the medians printed with the ratios between
sizes. Linear time means 1024 MB takes ~4x what 256 MB takes; bounded memory means the peak RSS
does not grow with the size.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

LINES = [
    "[error] 2210#2210: *{n} connect() failed (111: Connection refused) while connecting to upstream, "
    'client: 10.0.0.5, server: x, request: "GET /api/{n} HTTP/1.1", upstream: "http://10.9.9.9:8080/", host: "x"\n',
    "[crit] 2210#2210: *{n} connect() to unix:/run/php/php8.2-fpm.sock failed (13: Permission denied) while "
    'connecting to upstream, client: 10.0.0.6, server: x, request: "GET /index.php HTTP/1.1", host: "x"\n',
    "[warn] 2210#2210: *{n} an upstream response is buffered to a temporary file /var/cache/nginx/1/00/{n} "
    'while reading upstream, client: 10.0.0.7, server: x, request: "GET /big HTTP/1.1", host: "x"\n',
]


def make_log(path: Path, megabytes: int) -> None:
    start = time.time() - 3000
    target = megabytes << 20
    with path.open("w") as fh:
        written, n = 0, 0
        while written < target:
            stamp = time.strftime("%Y/%m/%d %H:%M:%S", time.localtime(start + n / 4000))
            chunk = "".join(f"{stamp} {LINES[(n + k) % 3].format(n=n + k)}" for k in range(1000))
            fh.write(chunk)
            written += len(chunk)
            n += 1000


def measure(path: Path) -> tuple[float, float]:
    """(seconds, peak RSS in MB) of one `remediate diagnose --log PATH --since 1d --json`."""
    argv = [sys.executable, "-m", "remediate.cli", "diagnose", "--log", str(path), "--since", "1d", "--json"]
    started = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out = proc.stdout.read() if proc.stdout else b""
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - started
    if status != 0 and os.waitstatus_to_exitcode(status) not in (0, 3):
        raise SystemExit(f"diagnose failed: {proc.stderr.read().decode() if proc.stderr else ''}")
    report = json.loads(out)
    assert report["findings"], "the window held no finding"
    return elapsed, usage.ru_maxrss / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--sizes", default="64,256,1024", help="window sizes in MB")
    ap.add_argument("--dir", default="/var/tmp", help="where the logs are written (needs the space)")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    results = {}
    with tempfile.TemporaryDirectory(prefix="remediate-bench-window-", dir=args.dir) as tmp:
        for size in sizes:
            path = Path(tmp) / f"error-{size}.log"
            make_log(path, size)
            runs = [measure(path) for _ in range(args.runs)]
            results[size] = {
                "bytes": path.stat().st_size,
                "median_s": statistics.median(r[0] for r in runs),
                "min_s": min(r[0] for r in runs),
                "max_s": max(r[0] for r in runs),
                "peak_rss_mb": max(r[1] for r in runs),
            }
            path.unlink()
            done = results[size]
            print(f"{size:>5} MB: median {done['median_s']:.2f} s, peak RSS {done['peak_rss_mb']:.0f} MB", flush=True)
    ratios = {f"{b}/{a}": results[b]["median_s"] / results[a]["median_s"] for a, b in itertools.pairwise(sizes)}
    print(
        json.dumps(
            {
                "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
                "runs": args.runs,
                "results": results,
                "time_ratios": ratios,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
