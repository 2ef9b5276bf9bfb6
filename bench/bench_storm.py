"""An Alertmanager storm against `remediate serve` with its shipped defaults: how many alerts a second it
acknowledges, how /healthz answers meanwhile, and how many jobs the storm leaves.

Run as root or not (a service on loopback over a text inventory whose hosts nothing can reach, so each
job ends at once as unreachable; a fake Slack):

    .venv/bin/python bench/bench_storm.py [--seconds 20] [--senders 10] [--per-webhook 100]

``--senders`` threads each POST webhooks of ``--per-webhook`` distinct firing alerts for one host
(web01) and cause (socket), as fast as the service answers, for ``--seconds``; one more thread asks
/healthz every 0.1 s. The service is ``python -m remediate.cli serve``, which puts the working
directory first on sys.path: to measure another commit in the same sitting, run this file from a
checkout of it (``git worktree add /tmp/other REF; cd /tmp/other; python $REPO/bench/bench_storm.py``).
Printed: alerts acknowledged (200) per second, /healthz median and p99, the jobs in the ledger (the
API lists 1000 at most), and the growth of the state directory. Nothing here asserts.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from support.serving import AM_TOKEN, FakeSlack, Service, alert, alert_payload, http

INVENTORY = "all:\n  hosts:\n    web01: {ansible_host: 127.0.99.1}\n"


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--senders", type=int, default=10)
    parser.add_argument("--per-webhook", type=int, default=100)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="remediate-bench-storm-"))
    (work / "inventory.yml").write_text(INVENTORY)
    fake = FakeSlack()
    svc = Service(work / "svc", work / "inventory.yml", fake.url, workers=4).start()  # the shipped default
    stop = threading.Event()
    acked, refused, lock = [0], [0], threading.Lock()
    health: list[float] = []
    headers = {"Authorization": f"Bearer {AM_TOKEN}", "Content-Type": "application/json"}

    def send(index: int) -> None:
        n = 0
        while not stop.is_set():
            labels = {"alertname": "Nginx502", "instance": "web01", "remediate_cause": "socket"}
            alerts = [alert(labels, f"s{index}-{n}-{i}") for i in range(args.per_webhook)]
            n += 1
            status, _ = http("POST", svc.url + "/alertmanager", json.dumps(alert_payload(*alerts)), headers, 30)
            with lock:
                if status == 200:
                    acked[0] += len(alerts)
                else:
                    refused[0] += len(alerts)

    def probe() -> None:
        while not stop.is_set():
            start = time.perf_counter()
            status, _ = http("GET", svc.url + "/healthz", timeout=30)
            if status == 200:
                health.append(time.perf_counter() - start)
            time.sleep(0.1)

    before = _size(svc.dir / "state")
    threads = [threading.Thread(target=send, args=(i,), daemon=True) for i in range(args.senders)]
    threads.append(threading.Thread(target=probe, daemon=True))
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    time.sleep(args.seconds)
    stop.set()
    for thread in threads:
        thread.join(60)
    elapsed = time.perf_counter() - started
    jobs = svc.jobs()
    grown = _size(svc.dir / "state") - before
    svc.stop()
    fake.close()
    health.sort()
    p99 = health[min(len(health) - 1, int(len(health) * 0.99))] if health else float("nan")
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    print(f"{args.senders} senders x {args.per_webhook} alerts per webhook for {elapsed:.1f} s (the service "
          f"from {os.getcwd()})")  # fmt: skip
    print(f"alerts acknowledged: {acked[0]} ({acked[0] / elapsed:.0f}/s); refused or failed: {refused[0]}")
    if health:
        print(f"/healthz: median {statistics.median(health) * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms ({len(health)})")
    alerts = sum(int(j["data"].get("alerts", 1)) for j in jobs)
    listed = f"{len(jobs)}+" if len(jobs) >= 1000 else str(len(jobs))
    print(f"jobs in the ledger: {listed} (answering {alerts} alerts); state grew {grown / 1024 / 1024:.1f} MB")


if __name__ == "__main__":
    main()
