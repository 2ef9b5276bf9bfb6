"""Measure the diagnose path: classification throughput, and a 2 GB error log against a 2 MB one.

Run as root for the SSH part (it builds its own lab on 127.0.32.x and tears it down):

    .venv/bin/python bench/bench_diagnose.py [--runs 5] [--big-gb 2] [--no-ssh]

1. Throughput: remediate.evidence.classify.classify over the test corpus repeated to 1M lines (median of
   --runs), in lines per second.
2. Size: two error logs that end in the same 15-minute window (the same lines) and differ only in
   how much older history precedes it: 2 MB and 2 GB. Timed as `remediate diagnose --log FILE`
   (a fresh process each run, the helper's seek-from-end window reader), and, unless --no-ssh,
   as `remediate diagnose --host web01` over SSH on the lab with nginx_error_log pointed at each
   file. The ratio big/small is what the issue's target is about (within 2x).
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

from remediate.evidence.classify import classify

CORPUS = Path(__file__).resolve().parent.parent / "tests" / "corpus" / "errorlog" / "labelled.log"


def _stamp(t: float) -> str:
    return time.strftime("%Y/%m/%d %H:%M:%S", time.localtime(t))


def throughput(runs: int) -> dict[str, float]:
    lines = [raw.split(b"\t", 1)[1] for raw in CORPUS.read_bytes().splitlines() if not raw.startswith(b"#")]
    repeat = 1_000_000 // len(lines) + 1
    text = (b"\n".join(lines * repeat)[: 1 << 30]).decode("utf-8", "surrogateescape")
    count = text.count("\n") + 1
    rates = []
    for _ in range(runs):
        start = time.perf_counter()
        classify(text)
        rates.append(count / (time.perf_counter() - start))
    return {"lines": count, "median_lines_per_s": statistics.median(rates), "min": min(rates), "max": max(rates)}


def make_log(path: Path, size: int, now: float, window: bytes) -> None:
    """``size`` bytes of old history (hours old), then the same recent window."""
    old_line = (
        "[error] 2210#2210: *1 connect() failed (111: Connection refused) while connecting to upstream, "
        'client: 10.0.0.5, server: x, request: "GET / HTTP/1.1", upstream: "http://10.9.9.9:8080/", host: "x"\n'
    )
    block_lines = []
    start = now - 86400
    for i in range(10000):
        block_lines.append(f"{_stamp(start + i * 0.001)} {old_line}")
    block = "".join(block_lines).encode()
    with path.open("wb") as fh:
        remaining = size - len(window)
        while remaining > 0:
            part = block if remaining >= len(block) else block[: block.rfind(b"\n", 0, remaining) + 1]
            if not part:
                break
            fh.write(part)
            remaining -= len(part)
        fh.write(window)


def window_lines(now: float) -> bytes:
    corpus = [raw.split(b"\t", 1)[1] for raw in CORPUS.read_bytes().splitlines() if not raw.startswith(b"#")]
    out = []
    for i in range(2000):
        line = corpus[i % len(corpus)]
        stamp = _stamp(now - 600 + i * 0.25).encode()
        out.append(stamp + line[19:] if line[:4].isdigit() else line)
    return b"\n".join(out) + b"\n"


def timed(argv: list[str], runs: int, env: dict[str, str]) -> list[float]:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        done = subprocess.run(argv, capture_output=True, env=env, check=False)
        times.append(time.perf_counter() - start)
        if done.returncode != 0:
            raise SystemExit(f"{' '.join(argv[:6])}... failed: {done.stderr.decode()[-300:]}")
    return times


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--big-gb", type=float, default=2.0)
    parser.add_argument("--no-ssh", action="store_true")
    args = parser.parse_args()
    result: dict[str, object] = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "throughput": throughput(args.runs),
    }
    directory = Path(tempfile.mkdtemp(prefix="remediate-bench-diagnose-", dir="/tmp"))
    directory.chmod(0o755)
    now = time.time()
    window = window_lines(now)
    small, big = directory / "small" / "error.log", directory / "big" / "error.log"
    for path, size in ((small, 2 << 20), (big, int(args.big_gb * (1 << 30)))):
        path.parent.mkdir()
        make_log(path, size, now, window)
    result["sizes"] = {"small": small.stat().st_size, "big": big.stat().st_size}
    env = {**os.environ, "REMEDIATE_STATE_DIR": str(directory / "state")}
    remediate = [sys.executable, "-m", "remediate.cli"]
    offline = {}
    for name, path in (("small", small), ("big", big)):
        offline[name] = statistics.median(
            timed([*remediate, "diagnose", "--log", str(path), "--since", "15m", "--json"], args.runs, env)
        )
    offline["ratio"] = offline["big"] / offline["small"]
    result["offline_median_s"] = offline
    if not args.no_ssh:
        from remediate.lab.core import Lab, LabConfig

        lab = Lab(directory / "lab")
        lab.up(LabConfig(dir=str(directory / "lab"), net="127.0.32"))
        try:
            over_ssh = {}
            for name, path in (("small", small), ("big", big)):
                inventory = directory / f"inventory-{name}.yml"
                text = lab.inventory.read_text()
                old = f"nginx_error_log: {lab.dir}/web01/nginx/logs/error.log"
                inventory.write_text(text.replace(old, f"nginx_error_log: {path}"))
                argv = [*remediate, "diagnose", "-i", str(inventory), "--host", "web01", "--json"]
                over_ssh[name] = statistics.median(timed(argv, args.runs, env))
            over_ssh["ratio"] = over_ssh["big"] / over_ssh["small"]
            result["ssh_median_s"] = over_ssh
        finally:
            lab.down()
    subprocess.run(["rm", "-rf", str(directory)], check=False)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
