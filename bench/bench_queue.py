"""Jobs per second through Procrastinate on PostgreSQL, with no-op jobs: what the queue itself costs.

Run as root (it starts its own PostgreSQL on 127.0.36.1 in a temporary directory, the tests'
harness, and removes it):

    .venv/bin/python bench/bench_queue/ [--jobs 2000] [--concurrency 8] [--runs 3]

Each run: defer --jobs no-op jobs one by one through `remediate.queue.producer.Queue.enqueue` (a job lock
and a queueing lock per job, as a fleet run makes them; timed: enqueue rate), then one in-process
Procrastinate worker with --concurrency runs them until none is left (timed: run rate); then the
same number of jobs without any lock, to show what the locks cost. Medians of --runs. Postgres
runs with fsync off (the tests' settings), so this is the queue's CPU and round trips, not a
disk's flush rate. The jobs go to 50 hosts, so --jobs 2000 is a backlog of 40 jobs per host.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from support.pg import Postgres  # noqa: E402

from remediate.hosts.inventory import load_inventory  # noqa: E402
from remediate.queue import producer, schema  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    server = Postgres(addr="127.0.36.1")
    server.start()
    inventory_file = Path(server.root) / "inventory.yml"
    inventory_file.write_text("all:\n  hosts:\n" + "".join(f"    h{n}:\n" for n in range(50)))
    hosts = list(load_inventory(inventory_file))
    enqueue_rates, run_rates, plain_rates = [], [], []
    try:
        for _ in range(args.runs):
            server.reset()
            schema.init(server.url)
            jobs = producer.Queue(server.url)
            began = time.perf_counter()
            for n in range(args.jobs):
                jobs.enqueue(hosts[n % len(hosts)], "noop", key=str(n))
            enqueue_rates.append(args.jobs / (time.perf_counter() - began))
            jobs.close()
            run_rates.append(args.jobs / _drain(server.url, args.concurrency))
            # The same jobs with no job lock and no queueing lock: what the locks cost.
            server.reset()
            schema.init(server.url)
            _defer_plain(server.url, args.jobs)
            plain_rates.append(args.jobs / _drain(server.url, args.concurrency))
    finally:
        server.destroy()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    print(
        f"{args.jobs} no-op jobs, {args.runs} runs: enqueue median {statistics.median(enqueue_rates):.0f} jobs/s "
        f"(min {min(enqueue_rates):.0f}); run with one worker, concurrency {args.concurrency}: median "
        f"{statistics.median(run_rates):.0f} jobs/s (min {min(run_rates):.0f}); the same jobs without locks: "
        f"{statistics.median(plain_rates):.0f} jobs/s"
    )


def _defer_plain(url: str, count: int) -> None:
    from procrastinate import App, PsycopgConnector

    app = App(connector=PsycopgConnector(conninfo=url))
    task = app.task(name=schema.TASK, queue=schema.DEFAULT_QUEUE)(lambda **_: None)
    with app.open():
        for n in range(count):
            task.defer(n=n)


def _drain(url: str, concurrency: int) -> float:
    logging.getLogger("procrastinate").setLevel(logging.ERROR)  # not its "App in __main__" advice
    """Seconds one worker takes to run every job of the default queue (no-op), then stop."""
    from procrastinate import App, PsycopgConnector

    app = App(connector=PsycopgConnector(conninfo=url))

    @app.task(name=schema.TASK)
    def noop(**_: object) -> None:
        return None

    began = time.perf_counter()
    app.run_worker(queues=[schema.DEFAULT_QUEUE], concurrency=concurrency, wait=False, install_signal_handlers=False)
    return time.perf_counter() - began


if __name__ == "__main__":
    main()
