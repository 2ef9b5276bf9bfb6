"""Fleet jobs through Procrastinate on a real PostgreSQL, run by real `remediate worker` processes on the fleet lab.

What must hold whatever the workers do: jobs for one host never overlap (checked in the hosts'
own lock history), each job is accounted for exactly once, a worker SIGKILLed mid-job leaves its
host as the host's journal says and its job retried by another worker, and an alert enqueued
twice is one job.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from support.lab import WorkerProcesses, remediate_cli
from support.pg import Postgres

from remediate.hosts.inventory import load_inventory
from remediate.lab.core import PROBES, Lab
from remediate.queue import producer

HOSTS = ["web01", "web02", "web03", "web04", "web05"]


@pytest.fixture
def db(postgres: Postgres) -> str:
    """An empty database with the queue's schema, as `remediate queue init` makes it."""
    postgres.reset()
    done = remediate_cli("queue", "init", "--queue", postgres.url)
    assert done.returncode == 0, done.stderr
    return postgres.url


class Workers(WorkerProcesses):
    """`remediate worker` processes on the fleet lab's inventory."""

    def __init__(self, lab: Lab, url: str, state: Path) -> None:
        super().__init__(state, state)
        self.lab, self.url = lab, url

    def start(self, name: str, *extra: str, inventory: Path | None = None) -> None:
        self.spawn(name, "-i", str(inventory or self.lab.inventory), "--queue", self.url, *extra)


@pytest.fixture
def workers(fleet_lab: Lab, db: str, tmp_path: Path) -> Iterator[Workers]:
    pool = Workers(fleet_lab, db, tmp_path)
    try:
        yield pool
    finally:
        pool.stop()


def _lock_history(lab: Lab, host: str) -> list[dict[str, object]]:
    path = Path(lab.webs(host)[0].root) / "journal" / "locks.log"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _intervals(entries: list[dict[str, object]]) -> list[tuple[float, float, str]]:
    """(acquired, released, run_id) of every session that let go; a holder killed while holding has no release."""
    opened: dict[tuple[object, object], float] = {}
    spans = []
    for e in entries:
        key = (e["run_id"], e["pid"])
        if "acquired" in e:
            opened[key] = float(e["acquired"])  # type: ignore[arg-type]
        elif key in opened:
            spans.append((opened.pop(key), float(e["released"]), str(e["run_id"])))  # type: ignore[arg-type]
    return sorted(spans)


def _jobs(url: str) -> list[tuple[int, str, int, str | None]]:
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT id, status::text, attempts, queueing_lock FROM procrastinate_jobs ORDER BY id")
        return [(r[0], r[1], r[2], r[3]) for r in rows.fetchall()]


def _results(url: str) -> dict[int, tuple[str, str, str, int]]:
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT job_id, host, outcome, worker, attempt FROM remediate_results").fetchall()
        return {r[0]: (r[1], r[2], r[3], r[4]) for r in rows}


def _wait_done(url: str, ids: list[int], timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        states = {job_id: status for job_id, status, _, _ in _jobs(url)}
        if all(states.get(i) in ("succeeded", "failed") for i in ids):
            return
        time.sleep(0.2)
    raise AssertionError(f"jobs not done after {timeout}s: {_jobs(url)}")


def test_thirty_jobs_over_five_hosts_never_overlap_on_a_host(fleet_lab: Lab, workers: Workers) -> None:
    """Two workers, 30 jobs over 5 broken hosts: each job runs once, none refused, no two at once on one host."""
    fleet_lab.reset()
    fleet_lab.break_("socket", "missing", keep=True, limit=",".join(HOSTS))
    before = {h: len(_lock_history(fleet_lab, h)) for h in HOSTS}
    inventory = load_inventory(fleet_lab.inventory)
    jobs = producer.Queue(workers.url)
    try:
        ids = [
            jobs.enqueue(inventory.host(host), "run", key=f"n{n}", cause="socket", yes=True, requested_by="t")
            for n in range(6)
            for host in HOSTS
        ]
    finally:
        jobs.close()
    assert None not in ids and len(set(ids)) == 30
    workers.start("w1", "--concurrency", "4")
    workers.start("w2", "--concurrency", "4")
    _wait_done(workers.url, ids)  # type: ignore[arg-type]
    results = _results(workers.url)
    assert sorted(results) == sorted(ids)  # every job accounted for, exactly once
    assert {status for _, status, _, _ in _jobs(workers.url)} == {"succeeded"}
    outcomes = [outcome for _, outcome, _, _ in results.values()]
    assert outcomes.count("fixed") == 5 and outcomes.count("nothing-to-do") == 25, outcomes
    assert {worker for _, _, worker, _ in results.values()} == {"w1", "w2"}  # both took jobs
    for host in HOSTS:
        spans = _intervals(_lock_history(fleet_lab, host)[before[host] :])
        assert len(spans) >= 6, spans  # every job took the host's lock (with its evidence round trip)
        for (_, end, first), (start, _, second) in itertools.pairwise(spans):
            assert end <= start, f"{host}: {first} held the lock until {end}, {second} took it at {start}"
        assert fleet_lab.webs(host)[0].probe(PROBES["php"]) == 200


def test_a_worker_killed_mid_job_leaves_the_host_consistent_and_the_job_retried(
    fleet_lab: Lab, workers: Workers
) -> None:
    """SIGKILL the worker holding a fix job mid-run: another worker retries it once; the host ends fixed."""
    fleet_lab.reset()
    fleet_lab.break_("socket", "missing", keep=True, limit="web03")
    web03 = fleet_lab.webs("web03")[0]
    before = len(_lock_history(fleet_lab, "web03"))
    workers.start("w1", "--concurrency", "1")
    jobs = producer.Queue(workers.url)
    try:
        job_id = jobs.enqueue(load_inventory(fleet_lab.inventory).host("web03"), "run", cause="socket", yes=True)
    finally:
        jobs.close()
    assert job_id is not None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(_lock_history(fleet_lab, "web03")) == before:
        time.sleep(0.01)
    assert [r[1] for r in _jobs(workers.url) if r[0] == job_id] == ["doing"], "the job was not being worked on"
    workers.kill("w1")  # mid-job: it holds web03's lock
    workers.start("w2", "--concurrency", "1")
    _wait_done(workers.url, [job_id], timeout=90)
    (row,) = [r for r in _jobs(workers.url) if r[0] == job_id]
    assert row[1] == "succeeded" and row[2] == 2  # two tries: the killed one and the retry
    _host, outcome, worker, attempt = _results(workers.url)[job_id]
    assert worker == "w2" and attempt == 1 and outcome in ("fixed", "nothing-to-do")
    assert web03.probe(PROBES["php"]) == 200
    for meta in (Path(web03.root) / "journal" / "runs").glob("*/meta.json"):
        assert json.loads(meta.read_text())["state"] not in ("applying", "activating", "restoring"), meta


def test_the_same_alert_enqueued_twice_is_one_job(fleet_lab: Lab, db: str) -> None:
    """A second enqueue with the same host, cause and key while the first waits is refused: one job."""
    inventory = load_inventory(fleet_lab.inventory)
    jobs = producer.Queue(db)
    try:
        first = jobs.enqueue(inventory.host("web02"), "run", key="alert:fp-1", cause="socket", yes=True)
        second = jobs.enqueue(inventory.host("web02"), "run", key="alert:fp-1", cause="socket", yes=True)
        other = jobs.enqueue(inventory.host("web02"), "run", key="alert:fp-2", cause="socket", yes=True)
    finally:
        jobs.close()
    assert first is not None and second is None and other is not None
    assert [r[3] for r in _jobs(db)] == ["web02:run:socket:alert:fp-1", "web02:run:socket:alert:fp-2"]


def test_run_limit_through_the_queue_prints_the_same_summary(fleet_lab: Lab, workers: Workers) -> None:
    """`run --limit 'web0[1-3]' --queue URL --json`: workers fix the three; the JSON is a fleet run's."""
    fleet_lab.reset()
    fleet_lab.break_("socket", "missing", keep=True, limit="web0[1-3]")
    for web in fleet_lab.webs("web0[1-3]"):
        web.probe(PROBES["php"])
    workers.start("w1", "--concurrency", "3")
    done = remediate_cli(
        "run", "-i", str(fleet_lab.inventory), "--limit", "web0[1-3]", "--cause", "socket", "--yes",
        "--queue", workers.url, "--json",
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr + workers.log("w1")
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert sorted(r["host"] for r in lines[:-1]) == ["web01", "web02", "web03"]
    assert {r["outcome"] for r in lines[:-1]} == {"fixed"} and all(r["run_id"] for r in lines[:-1])
    assert lines[-1]["summary"]["outcomes"] == {"fixed": 3}


def test_a_job_for_a_zone_with_no_worker_waits_queued(fleet_lab: Lab, workers: Workers, tmp_path: Path) -> None:
    """A host in zone dc9, where no worker listens: its job stays queued (todo) and the run says so."""
    text = fleet_lab.inventory.read_text().replace("    web04:\n", "    web04:\n      remediate_zone: dc9\n", 1)
    zoned = tmp_path / "inventory.yml"
    zoned.write_text(text)
    workers.start("w1", inventory=zoned)  # the default zone only
    done = remediate_cli(
        "diagnose", "-i", str(zoned), "--limit", "web03:web04", "--queue", workers.url, "--wait", "3", "--json"
    )
    rows = {r["host"]: r for r in map(json.loads, done.stdout.splitlines()[:-1])}
    assert rows["web03"]["outcome"] == "diagnosed"
    assert rows["web04"]["outcome"] == "queued" and "still todo" in rows["web04"]["message"]
    assert done.returncode == 1
    with psycopg.connect(workers.url) as conn:
        (queue_name, status) = conn.execute(
            "SELECT queue_name, status::text FROM procrastinate_jobs WHERE args->>'host' = 'web04'"
        ).fetchone()  # type: ignore[misc]
    assert (queue_name, status) == ("remediate@dc9", "todo")


def test_postgres_restarted_under_load_loses_no_job_and_runs_none_twice(
    fleet_lab: Lab, postgres: Postgres, workers: Workers
) -> None:
    """Restart PostgreSQL while two workers run 20 jobs: the workers reconnect; every job ends once."""
    fleet_lab.reset()
    inventory = load_inventory(fleet_lab.inventory)
    jobs = producer.Queue(workers.url)
    try:
        ids = [jobs.enqueue(inventory.host(h), "diagnose", key=f"n{n}", since=60) for n in range(4) for h in HOSTS]
    finally:
        jobs.close()
    workers.start("w1", "--concurrency", "2")
    workers.start("w2", "--concurrency", "2")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(_results(workers.url)) < 3:
        time.sleep(0.05)
    postgres.restart()
    _wait_done(workers.url, ids, timeout=240)  # type: ignore[arg-type]
    assert sorted(_results(workers.url)) == sorted(ids)  # type: ignore[type-var]
    assert {(status, attempts) for _, status, attempts, _ in _jobs(workers.url)} == {("succeeded", 1)}  # once each
    assert {attempt for _, _, _, attempt in _results(workers.url).values()} == {0}
    assert all(proc.poll() is None for proc in workers.procs.values()), workers.log("w1") + workers.log("w2")


def test_a_job_for_a_host_the_worker_does_not_know_is_answered_not_crashed(
    fleet_lab: Lab, workers: Workers, tmp_path: Path
) -> None:
    """A worker whose inventory lacks the job's host answers `bad-input` (exit 5) naming it; the job succeeds."""
    other = tmp_path / "worker-inventory.yml"
    other.write_text(fleet_lab.inventory.read_text().replace("web05:", "web55:"))
    workers.start("w1", inventory=other)
    done = remediate_cli(
        "diagnose", "-i", str(fleet_lab.inventory), "--limit", "web05", "--queue", workers.url, "--json"
    )
    row = json.loads(done.stdout.splitlines()[0])
    assert (row["outcome"], row["exit_code"], done.returncode) == ("bad-input", 5, 5)
    assert row["message"].startswith("worker w1: ") and "web05" in row["message"]
    assert {status for _, status, _, _ in _jobs(workers.url)} == {"succeeded"}
