"""Measure the foundation's costs on the lab: SSH connect, one exec, nginx -T fetch+parse, parser speed.

Run as root (it builds its own lab on 127.0.30.x and tears it down):

    .venv/bin/python bench/bench_foundation.py [--runs 15]

Prints medians. Ratios matter more than absolute numbers on a noisy machine;
all figures come from one run.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from remediate.hosts.connect import open_transport
from remediate.hosts.inventory import load_inventory
from remediate.lab.core import Lab, LabConfig
from remediate.nginx import NginxConfig, parse
from remediate.transport.ssh import SSHTransport


def _median(fn: Callable[[], object], runs: int) -> float:
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def _big_config(servers: int) -> bytes:
    block = (
        "server {{\n    listen 10.0.{a}.{b}:80;\n    server_name s{i}.example.com;\n"
        "    location / {{ proxy_pass http://10.1.{a}.{b}:8080; proxy_set_header Host $host; }}\n"
        "    location ~ \\.php$ {{ fastcgi_pass unix:/run/php/p{i}.sock; }}  # comment {{ }}\n"
        '    location /api/ {{ set $x "a;b{{}}"; proxy_pass http://up{i}/; }}\n}}\n'
    )
    return ("http {\n" + "".join(block.format(i=i, a=i // 250, b=i % 250) for i in range(servers)) + "}\n").encode()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    runs = args.runs

    big = _big_config(2000)
    parse_s = _median(lambda: parse(big), 5)
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    print(f"parse: {len(big) / 1e6:.2f} MB config in {parse_s * 1000:.0f} ms = {len(big) / parse_s / 1e6:.1f} MB/s")

    directory = Path(tempfile.mkdtemp(prefix="remediate-bench-", dir="/tmp"))
    directory.chmod(0o755)
    lab = Lab(directory)
    start = time.perf_counter()
    lab.up(LabConfig(dir=str(directory), net="127.0.30"))
    print(f"lab up: {time.perf_counter() - start:.2f} s")
    try:
        host = load_inventory(lab.inventory).host("web01")

        def connect_and_run() -> None:
            with open_transport(host) as t:
                t.run(["true"])

        connect = _median(connect_and_run, runs)
        with open_transport(host) as t:
            assert isinstance(t, SSHTransport)
            exec_s = _median(lambda: t.run(["true"]), runs)
            fetch = _median(lambda: t.run([*host.nginx_base_argv, "-T"]), runs)
            text = t.run([*host.nginx_base_argv, "-T"]).stdout
            model = _median(lambda: NginxConfig.from_dump(text).passes(), runs)
        print(f"ssh connect + first exec (median of {runs}): {connect * 1000:.0f} ms")
        print(f"one exec on an open connection:          {exec_s * 1000:.0f} ms")
        print(f"nginx -T over ssh:                       {fetch * 1000:.0f} ms")
        print(f"split + parse + link + passes():         {model * 1000:.1f} ms ({len(text)} bytes)")
        print(f"ratio connect / exec: {connect / exec_s:.1f}x; parse is {fetch / model:.0f}x cheaper than the fetch")
    finally:
        lab.down()


if __name__ == "__main__":
    main()
