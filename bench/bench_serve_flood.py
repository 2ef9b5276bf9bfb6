"""`remediate serve` under unauthenticated junk: does it keep answering Slack and /healthz, and what does it store?

Run as root or not (it starts its own service on loopback, with a text inventory, and a fake Slack):

    .venv/bin/python bench/bench_serve_flood.py [--seconds 30] [--senders 8]

For ``--seconds``, junk senders send as fast as they can: gzip bombs (10 MB in 10 KB), one captured signed
request replayed, webhooks of 200 alerts for hosts not in the inventory (with a bearer token, as a
misconfigured Alertmanager would; without it with --no-token), slow bodies (headers, then a byte a
second) and held connections (one address opening 200 connections a second that never finish their
headers, keeping the newest 400: the per-client cap answers the extra ones 503). Meanwhile a signed `/remediate help`
every 0.5 s and `GET /healthz` every 0.2 s are timed.
Printed: the junk sent, each measured request's median and worst latency, how many answered late
(Slack waits 3 s; /healthz is expected under 100 ms) and how much the service's state directory grew.
Nothing here asserts.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from support.serving import (
    AM_TOKEN,
    FakeSlack,
    Service,
    alert,
    alert_payload,
    http,
    signed,
    slash_body,
)

INVENTORY = "all:\n  hosts:\n    web01: {ansible_host: 127.0.99.1}\n"


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--senders", type=int, default=8)
    parser.add_argument("--no-token", action="store_true", help="the storms come without Alertmanager's token")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="remediate-bench-flood-"))
    (work / "inventory.yml").write_text(INVENTORY)
    fake = FakeSlack()
    svc = Service(work / "svc", work / "inventory.yml", fake.url).start()
    stop = threading.Event()
    sent: dict[str, int] = {"bomb": 0, "replay": 0, "storm": 0, "slow": 0, "hold": 0}
    lock = threading.Lock()
    bomb = gzip.compress(b"0" * 10_000_000)
    replayed = slash_body("status", "U111")
    replay_headers = signed(replayed)
    http("POST", svc.url + "/slack/events", replayed, replay_headers)  # the genuine first delivery
    host, port = "127.0.0.1", int(svc.url.rsplit(":", 1)[1])

    held: list[socket.socket] = []

    def count(kind: str) -> None:
        with lock:
            sent[kind] += 1

    def junk(index: int) -> None:
        n = 0
        while not stop.is_set():
            kind = ("bomb", "replay", "storm", "slow", "hold")[index % 5]  # each sender one kind, as fast as it goes
            n += 1
            try:
                if kind == "bomb":
                    http("POST", svc.url + "/slack/events", bomb, {"Content-Encoding": "gzip"}, timeout=10)
                elif kind == "replay":
                    http("POST", svc.url + "/slack/events", replayed, replay_headers, timeout=10)
                elif kind == "storm":
                    labels = [
                        {"alertname": "Nginx502", "instance": f"10.{index}.{n % 250}.{i}:9113"} for i in range(200)
                    ]
                    alerts = [alert(lab, f"f{n}-{i}") for i, lab in enumerate(labels)]
                    token = {} if args.no_token else {"Authorization": f"Bearer {AM_TOKEN}"}
                    http("POST", svc.url + "/alertmanager", json.dumps(alert_payload(*alerts)), token, timeout=10)
                elif kind == "hold":
                    sock = socket.create_connection(
                        (host, port), timeout=5, source_address=(f"127.0.0.{10 + index}", 0)
                    )
                    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
                    held.append(sock)
                    if len(held) > 400:
                        held.pop(0).close()
                    time.sleep(0.005)  # a slowloris holds connections; churning them is a SYN flood (the kernel's)
                else:
                    with socket.create_connection((host, port), timeout=5) as sock:
                        sock.sendall(b"POST /alertmanager HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n")
                        for _ in range(3):
                            if stop.is_set():
                                break
                            sock.sendall(b"x")
                            time.sleep(1)
                count(kind)
            except OSError:
                count(kind)

    slack_times: list[float] = []
    health_times: list[float] = []

    def measure_slack() -> None:
        while not stop.is_set():
            body = slash_body("help", "U111")
            start = time.perf_counter()
            status, _ = http("POST", svc.url + "/slack/events", body, signed(body), timeout=10)
            if status == 200:
                slack_times.append(time.perf_counter() - start)
            time.sleep(0.5)

    def measure_health() -> None:
        while not stop.is_set():
            start = time.perf_counter()
            status, _ = http("GET", svc.url + "/healthz", timeout=10)
            if status == 200:
                health_times.append(time.perf_counter() - start)
            time.sleep(0.2)

    state = svc.dir / "state"
    before = _size(state)
    threads = [threading.Thread(target=junk, args=(i,), daemon=True) for i in range(args.senders)]
    threads += [threading.Thread(target=measure_slack, daemon=True), threading.Thread(target=measure_health,
                                                                                       daemon=True)]  # fmt: skip
    for thread in threads:
        thread.start()
    time.sleep(args.seconds)
    stop.set()
    for thread in threads:
        thread.join(15)
    grown = _size(state) - before
    refused = [line for line in str(http("GET", svc.url + "/metrics")[1]).splitlines()
               if line.startswith("remediate_connections_refused_total")]  # fmt: skip
    for sock in held:
        sock.close()
    posts = len(fake.calls)
    svc.stop()
    fake.close()

    def line(name: str, times: list[float], limit: float) -> str:
        if not times:
            return f"{name}: no answer at all"
        late = sum(1 for t in times if t > limit)
        return (f"{name}: {len(times)} answered, median {statistics.median(times) * 1000:.1f} ms, worst "
                f"{max(times) * 1000:.1f} ms, {late} over {limit * 1000:.0f} ms")  # fmt: skip

    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    print(f"{args.seconds:g} s of junk from {args.senders} senders: " + ", ".join(f"{v} {k}" for k, v in sent.items()))
    print(line("signed /remediate help", slack_times, 3.0))
    print(line("GET /healthz", health_times, 0.1))
    print("connections refused at once: " + (", ".join(refused) or "none"))
    print(f"state directory grew by {grown / 1024:.0f} KB; {posts} Slack call(s) during the flood")


if __name__ == "__main__":
    main()
