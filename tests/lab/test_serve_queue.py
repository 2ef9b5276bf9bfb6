"""`remediate serve` with `queue: postgresql://…`: the service records and queues, workers run, nothing runs locally.

Real parts throughout: Debian's PostgreSQL (tests/support/pg.py), Debian's Alertmanager, the lab's hosts,
`remediate serve` and `remediate worker --config` as processes. The ledger, approvals and audit
chain are in the same database as Procrastinate's jobs; the service's own state directory holds
none of them.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from support.incidents import answers, break_lab, children, plan_post, thread_says
from support.lab import WorkerProcesses, remediate_cli
from support.pg import Postgres
from support.serving import Alertmanager, FakeSlack, Service, alert, alert_payload, click_body, http, slash_body

from remediate.lab.core import Lab, LabConfig
from remediate.serve.queued import ServiceQueue
from remediate.stores.ledger import Ledger

pytestmark = pytest.mark.lab


@pytest.fixture
def queue_url(postgres: Postgres) -> str:
    """An empty database with the queue's schema, as `remediate queue init` makes it."""
    postgres.reset()
    done = remediate_cli("queue", "init", "--queue", postgres.url)
    assert done.returncode == 0, done.stderr
    return postgres.url


class Workers(WorkerProcesses):
    """`remediate worker --config serve.yml` processes for ``service``."""

    def __init__(self, service: Service) -> None:
        super().__init__(service.dir, service.dir / "journal", prefix="worker-")
        self.service = service

    def start(self, name: str, *extra: str) -> None:
        self.spawn(name, "--config", str(self.service.config_path), *extra)


@pytest.fixture
def on_queue(tmp_path: Path, lab: Lab, fake_slack: FakeSlack, queue_url: str) -> Iterator[tuple[Service, Workers]]:
    svc = Service(tmp_path / "svc", lab.inventory, fake_slack.url, approval_ttl="10m", queue=queue_url).start()
    workers = Workers(svc)
    try:
        yield svc, workers
    finally:
        workers.stop()
        svc.stop()
    for text in [svc.log.read_text(), *(workers.log(n) for n in workers.procs)]:
        assert "Traceback" not in text, text[-3000:]


def _wait(check: Any, timeout: float = 90, step: float = 0.3) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(step)
    raise AssertionError(f"not within {timeout}s")


def _audit(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return remediate_cli("audit", *args, "--state", url)


def test_a_real_alertmanager_alert_is_fixed_by_a_worker_not_by_the_service(
    on_queue: tuple[Service, Workers], fake_slack: FakeSlack, lab: Lab, lab_cfg: LabConfig, queue_url: str
) -> None:
    """Acceptance: serve with `queue:` runs no job itself (no worker process, no local ledger); an alert
    from the real Alertmanager is queued, fixed by `remediate worker --config`, reported to Slack, once,
    however often Alertmanager repeats it; the audit chain in PostgreSQL verifies."""
    service, workers = on_queue
    break_lab(lab, lab_cfg)
    assert service.proc is not None and children(service.proc.pid) == []
    workers.start("dc-a")
    health = _wait(lambda: (lambda h: h if h[0] == 200 and h[1]["workers"] >= 1 else None)(
        http("GET", service.url + "/healthz")), timeout=30)  # fmt: skip
    assert health[1]["ok"] is True and "password" not in str(health[1])

    am = Alertmanager(service.dir / "am", service.url, service.dir / "secrets" / "am.token").start()
    try:
        am.add("alertname=Nginx502", "instance=127.0.20.1:8080", "severity=page")
        _wait(lambda: answers(lab, lab_cfg) == 200, timeout=60)
        thread_says(fake_slack, "*web01* socket: *fixed*")
        time.sleep(4)  # Alertmanager repeats the firing alert every 2 s: duplicates, one job
    finally:
        am.stop()
    jobs = service.wait_jobs_done()
    assert [(j["trigger"], j["outcome"], j["worker"]) for j in jobs] == [("alertmanager", "fixed", "dc-a")], jobs
    assert jobs[0]["queue"]["queue"] == "remediate-serve" and jobs[0]["queue"]["status"] == "succeeded"
    assert children(service.proc.pid) == [], "the service ran no worker of its own"
    assert not (service.dir / "state" / "ledger.db").exists() and not (service.dir / "state" / "audit.db").exists()

    verify = _audit(queue_url, "verify")
    assert verify.returncode == 0 and "the audit chain holds" in verify.stdout, verify.stdout + verify.stderr
    records = json.loads(_audit(queue_url, "show", "--json").stdout)["records"]
    kinds = [r["kind"] for r in records]
    assert kinds.count("trigger") == 1 and kinds.count("coalesced") >= 1 and kinds.count("outcome") == 1, kinds
    assert sum(r["data"]["duplicates"] for r in records if r["kind"] == "coalesced") >= 1, records
    with psycopg.connect(queue_url) as conn:
        (queued,) = conn.execute(
            "SELECT count(*) FROM procrastinate_jobs WHERE task_name = 'remediate.serve'"
        ).fetchone()
    assert queued == 1


def test_a_chat_approval_is_planned_and_run_by_workers(
    on_queue: tuple[Service, Workers], fake_slack: FakeSlack, lab: Lab, lab_cfg: LabConfig
) -> None:
    """/remediate run: a worker plans and posts the buttons; the click is decided by the service against the
    approval in PostgreSQL; a worker (another one, maybe) runs the approved plan; a second click is refused."""
    service, workers = on_queue
    break_lab(lab, lab_cfg)
    workers.start("w1")
    workers.start("w2")
    ack = service.slack(slash_body("run web01 socket", "U111"))
    assert ack[0] == 200 and "planning" in str(ack[1])
    _, approval = plan_post(fake_slack, 0)
    assert answers(lab, lab_cfg) == 502
    assert service.slack(click_body(approval, "U222"))[0] == 200
    thread_says(fake_slack, "*web01* socket: *fixed*")
    assert answers(lab, lab_cfg) == 200
    assert service.slack(click_body(approval, "U222"))[0] == 200
    thread_says(fake_slack, "this approval was already approved by U222", timeout=15)
    jobs = service.wait_jobs_done()
    assert [(j["mode"], j["outcome"]) for j in jobs] == [("run", "fixed"), ("approve", "awaiting-approval")]
    assert {j["worker"] for j in jobs} <= {"w1", "w2"}


def test_a_zone_with_no_worker_waits_visible_in_api_jobs(
    tmp_path: Path, lab: Lab, fake_slack: FakeSlack, queue_url: str
) -> None:
    """web01 in zone dc2: its job goes to remediate-serve@dc2 and waits there while only a default-zone
    worker runs, visible in GET /api/jobs as queued; a dc2 worker then takes it."""
    text = lab.inventory.read_text()
    assert "    web01:\n" in text
    inventory = tmp_path / "inventory.yml"
    inventory.write_text(text.replace("    web01:\n", "    web01:\n      remediate_zone: dc2\n", 1))
    service = Service(tmp_path / "svc", inventory, fake_slack.url, queue=queue_url).start()
    workers = Workers(service)
    try:
        workers.start("default")
        labels = {"alertname": "Nginx502Look", "instance": "web01:9113"}
        assert service.alert(alert_payload(alert(labels, "fp-zone")))[0] == 200
        time.sleep(4)  # the default worker is up and polling: it must not take a dc2 job
        (job,) = service.jobs()
        assert job["state"] == "pending" and job["worker"] is None, job
        assert job["queue"]["queue"] == "remediate-serve@dc2" and job["queue"]["status"] == "todo", job
        workers.start("dc2", "--zone", "dc2")
        (done,) = service.wait_jobs_done(timeout=60)
        assert done["outcome"] == "diagnosed" and done["worker"] == "dc2", done
    finally:
        workers.stop()
        service.stop()


def test_a_job_recorded_but_never_queued_is_queued_by_the_sweep(
    on_queue: tuple[Service, Workers], queue_url: str
) -> None:
    """The service died between recording a job and queueing it (made here by writing the ledger directly):
    the service's sweep finds the pending job with no queue job and queues it; a worker runs it once."""
    service, workers = on_queue
    ledger = Ledger(queue_url)
    job, _ = ledger.submit("web01", "auto", "diagnose", trigger="alertmanager", requested_by="fp-orphan",
                           dedupe="am:fp-orphan:t0", data={"reply": {}})  # fmt: skip
    ledger.db.execute("UPDATE jobs SET created = created - ? WHERE id = ?", (ServiceQueue.ORPHAN_AFTER + 5, job.id))
    ledger.close()
    workers.start("w1")
    (done,) = service.wait_jobs_done(timeout=60)
    assert done["id"] == job.id and done["outcome"] == "diagnosed" and done["worker"] == "w1", done
    assert done["queue"]["status"] == "succeeded"


def test_worker_config_errors_are_one_line(tmp_path: Path, lab: Lab, fake_slack: FakeSlack) -> None:
    """A config without `queue:` needs no worker; a URL with a password in serve.yml is refused (the file is
    not a secret): each one line, exit 2 or 5, nothing started."""
    service = Service(tmp_path / "svc", lab.inventory, fake_slack.url)
    done = remediate_cli("worker", "--config", str(service.config_path))
    assert done.returncode == 2 and "has no `queue:`" in done.stderr and len(done.stderr.strip().splitlines()) == 1
    leaky = Service(tmp_path / "leaky", lab.inventory, fake_slack.url, queue="postgresql://u:hunter2@db/remediate")
    for argv in (("worker", "--config", str(leaky.config_path)), ("serve", "--config", str(leaky.config_path))):
        done = remediate_cli(*argv)
        assert done.returncode == 5 and "must not hold a password" in done.stderr, done.stderr
        assert "hunter2" not in done.stderr and len(done.stderr.strip().splitlines()) == 1


def test_a_worker_killed_mid_job_leaves_the_job_to_another_worker(
    on_queue: tuple[Service, Workers], lab: Lab, lab_cfg: LabConfig, queue_url: str
) -> None:
    """SIGKILL the worker running an alert's fix: its heartbeat stops, the other worker finds the job stalled
    and runs it again (the host's journal first finishes or undoes what the killed run left); the ledger job
    ends once, fixed, and the lab answers 200."""
    service, workers = on_queue
    break_lab(lab, lab_cfg)
    workers.start("w1")
    workers.start("w2")
    labels = {"alertname": "Nginx502", "instance": "web01:9113"}
    assert service.alert(alert_payload(alert(labels, "fp-kill")))[0] == 200
    running = _wait(lambda: next((j for j in service.jobs() if j["state"] == "running"), None), timeout=30, step=0.02)
    victim = running["worker"]
    os.killpg(workers.procs[victim].pid, signal.SIGKILL)
    workers.procs[victim].wait()
    (done,) = service.wait_jobs_done(timeout=90)
    survivor = ({"w1", "w2"} - {victim}).pop()
    assert done["outcome"] == "fixed" and done["worker"] == survivor, done
    assert done["queue"]["status"] == "succeeded" and done["queue"]["attempts"] >= 1, done
    assert answers(lab, lab_cfg) == 200
    records = json.loads(_audit(queue_url, "show", "--json").stdout)["records"]
    outcomes = [r for r in records if r["kind"] == "outcome" and r["data"]["job"] == done["id"]]
    assert len(outcomes) == 1 and outcomes[0]["data"]["outcome"] == "fixed", outcomes


def test_postgres_restarted_under_alerts_loses_no_job_and_runs_none_twice(
    on_queue: tuple[Service, Workers], postgres: Postgres, queue_url: str
) -> None:
    """PostgreSQL restarts while alerts arrive and a worker runs their jobs: the service answers 503 while it
    cannot record (Alertmanager would retry; so does this test), reconnects, and every alert ends counted in
    one ledger job, each job done once, with one outcome in an audit chain that still verifies."""
    service, workers = on_queue
    workers.start("w1")

    def deliver(i: int) -> None:
        labels = {"alertname": "Nginx502Look", "instance": "web01:9113", "n": str(i)}
        payload = alert_payload(alert(labels, f"fp-restart-{i}"))
        _wait(lambda: service.alert(payload)[0] == 200, timeout=60, step=0.5)

    for i in range(4):
        deliver(i)
    postgres.restart()
    for i in range(4, 8):
        deliver(i)
    jobs = service.wait_jobs_done(timeout=120)
    # every alert is in exactly one job (a storm of one host's alerts coalesces into the job waiting or running)
    assert sum(j["data"]["alerts"] for j in jobs) == 8 and {j["outcome"] for j in jobs} == {"diagnosed"}, jobs
    records = json.loads(_audit(queue_url, "show", "--json").stdout)["records"]
    outcomes = [r["data"]["job"] for r in records if r["kind"] == "outcome"]
    assert sorted(outcomes) == sorted(j["id"] for j in jobs), "each job has exactly one outcome"
    assert _audit(queue_url, "verify").returncode == 0


def test_serve_check_reaches_the_queue_or_says_why(
    tmp_path: Path, lab: Lab, fake_slack: FakeSlack, postgres: Postgres
) -> None:
    """`serve --check` with `queue:` connects: a database without the schema says to run `queue init` (exit 5),
    one nobody listens on says why (exit 6); after `queue init` it is ok. One line each."""
    postgres.reset()
    service = Service(tmp_path / "svc", lab.inventory, fake_slack.url, queue=postgres.url)
    done = remediate_cli("serve", "--config", str(service.config_path), "--check")
    assert done.returncode == 5 and "remediate queue init" in done.stderr, done.stderr
    assert remediate_cli("queue", "init", "--queue", postgres.url).returncode == 0
    done = remediate_cli("serve", "--config", str(service.config_path), "--check")
    assert done.returncode == 0 and "jobs on the queue" in done.stdout, done.stdout + done.stderr
    nowhere = Service(tmp_path / "nowhere", lab.inventory, fake_slack.url, queue="postgresql://x@127.0.22.9:5999/r")
    done = remediate_cli("serve", "--config", str(nowhere.config_path), "--check")
    assert done.returncode == 6 and len(done.stderr.strip().splitlines()) == 1, done.stderr
