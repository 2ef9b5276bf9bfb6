"""The job ledger: durable before it answers, deduplicated, one job at a time per host, resumed after a crash."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from support import ROOT

from remediate.stores.ledger import Ledger


def _submit(ledger: Ledger, host: str, dedupe: str | None = None) -> str:
    job, _ = ledger.submit(host, "auto", "fix", trigger="alertmanager", requested_by="fp", dedupe=dedupe)
    return job.id


def test_the_same_alert_twice_is_one_job(store: str | Path) -> None:
    """Dedupe on (fingerprint, startsAt): a second delivery returns the recorded job, created False."""
    ledger = Ledger(store)
    first, created = ledger.submit("web01", "auto", "fix", trigger="alertmanager", requested_by="fp1", dedupe="fp1@t0")
    again, created_again = ledger.submit(
        "web01", "auto", "fix", trigger="alertmanager", requested_by="fp1", dedupe="fp1@t0"
    )
    assert created and not created_again and again.id == first.id and len(ledger.jobs()) == 1
    other, created_other = ledger.submit(
        "web01", "auto", "fix", trigger="alertmanager", requested_by="fp1", dedupe="fp1@t1"
    )
    assert created_other and other.id != first.id


def test_a_storm_for_one_host_and_cause_is_one_job(store: str | Path) -> None:
    """Storm coalescing: 100 distinct alerts for web01's socket while its job waits are that one job (it
    counts them and keeps the first fingerprints); a redelivered alert is a duplicate, not a second count,
    even once its job has ended (a PostgreSQL restart showed it); another cause is another job; once the job
    has ended, the next alert starts a new one."""
    ledger = Ledger(store)

    def alert(n: int, cause: str = "socket", start: str = "t0") -> tuple[str, str]:
        job, became = ledger.submit_alert("web01", cause, "fix", fingerprint=f"fp{n}", dedupe=f"am:fp{n}:{start}",
                                          data={"alertname": "Nginx502"})  # fmt: skip
        return job.id, became

    results = [alert(n) for n in range(100)]
    assert [became for _, became in results] == ["created"] + ["joined"] * 99
    (job_id,) = {job_id for job_id, _ in results}
    job = ledger.get(job_id)
    assert job.data["alerts"] == 100 and job.data["fingerprints"] == [f"fp{n}" for n in range(20)]
    assert alert(0) == (job_id, "duplicate") and alert(57) == (job_id, "duplicate")  # delivered again
    assert ledger.get(job_id).data["alerts"] == 100
    other, became = alert(100, cause="timeout")
    assert became == "created" and other != job_id
    claimed = ledger.claim("w1")
    assert claimed is not None and claimed.id == job_id
    assert alert(101) == (job_id, "joined")  # a running job answers the alerts that arrive meanwhile
    ledger.finish(job_id, "fixed")
    assert alert(57) == (job_id, "duplicate")  # delivered again after its job ended: still not a new job
    again, became = alert(102)
    assert became == "created" and again != job_id
    assert len(ledger.jobs()) == 3


def test_a_webhooks_alerts_are_recorded_together_or_not_at_all(store: str | Path) -> None:
    """submit_alerts records a webhook's alerts in one transaction: in order (the first creates, the rest
    join), and a batch with one bad alert records none of them."""
    from remediate.stores.ledger import AlertJob

    ledger = Ledger(store)
    batch = [AlertJob("web01", "socket", "fix", f"fp{n}", f"am:fp{n}:t0", {}) for n in range(5)]
    assert [what for _, what in ledger.submit_alerts(batch)] == ["created", "joined", "joined", "joined", "joined"]
    bad = [AlertJob("web02", "socket", "fix", "fp9", "am:fp9:t0", {}), AlertJob("web02", "x", "explode", "f", "k", {})]
    with pytest.raises(ValueError, match="mode must be one of"):
        ledger.submit_alerts(bad)
    assert [(j.host, j.data["alerts"]) for j in ledger.jobs()] == [("web01", 5)]


def test_one_job_at_a_time_per_host_in_order(store: str | Path) -> None:
    """Workers claim the oldest pending job of a host with nothing running: web01's jobs wait for each other
    in order, web02's runs beside them."""
    ledger = Ledger(store)
    a1, a2, b1 = _submit(ledger, "web01"), _submit(ledger, "web01"), _submit(ledger, "web02")
    first = ledger.claim("w1")
    second = ledger.claim("w2")
    assert first is not None and second is not None and (first.id, second.id) == (a1, b1)
    assert ledger.claim("w3") is None, "web01 is busy and web02 has nothing more"
    ledger.finish(a1, "fixed", run_id="r1")
    third = ledger.claim("w3")
    assert third is not None and third.id == a2


def test_twenty_workers_never_run_two_jobs_of_one_host_at_once(store: str | Path) -> None:
    """Twenty alerts for one host and eight workers claiming at once: never two running, all done, in order."""
    Ledger(store).close()
    setup = Ledger(store)
    ids = [_submit(setup, "web01") for _ in range(20)]
    running: list[str] = []
    order: list[str] = []
    overlap: list[int] = []
    lock = threading.Lock()

    def worker(name: str) -> None:
        ledger = Ledger(store)
        idle = 0
        while idle < 50:
            job = ledger.claim(name)
            if job is None:
                idle += 1
                time.sleep(0.005)
                continue
            with lock:
                running.append(job.id)
                overlap.append(len(running))
                order.append(job.id)
            time.sleep(0.002)
            with lock:
                running.remove(job.id)
            ledger.finish(job.id, "nothing-to-do")
        ledger.close()

    threads = [threading.Thread(target=worker, args=(f"w{i}",)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert order == ids and max(overlap) == 1
    assert all(j.state == "done" for j in setup.jobs())


def test_a_job_recorded_survives_the_service_being_killed(store: str | Path) -> None:
    """A process records a job and is SIGKILLed the moment submit returns (as if right after answering 2xx):
    the job is in the ledger. One that was running when the service died is pending again on start."""
    script = (
        "import os, signal, sys\n"
        "from remediate.stores.ledger import Ledger\n"
        "ledger = Ledger(sys.argv[1])\n"
        "job, _ = ledger.submit('web01', 'socket', 'fix', trigger='alertmanager', requested_by='fp', dedupe='k')\n"
        "ledger.claim('dying')\n"
        "print(job.id, flush=True)\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(store)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        check=False,
    )
    assert done.returncode == -signal.SIGKILL
    job_id = done.stdout.strip()
    ledger = Ledger(store)
    assert ledger.get(job_id).state == "running"
    resumed = ledger.resume()
    assert [j.id for j in resumed] == [job_id] and ledger.get(job_id).state == "pending"
    claimed = ledger.claim("new")
    assert claimed is not None and claimed.id == job_id


def test_loop_breaker_and_hourly_cap_read_the_ledger(store: str | Path) -> None:
    """The same host and cause fixed inside the cool-down is found (the service escalates instead of fixing);
    runs per host in the last hour are counted."""
    ledger = Ledger(store)
    job = ledger.claim("w") if _submit(ledger, "web01") else None
    assert job is not None
    ledger.finish(job.id, "fixed", run_id="r1")
    assert ledger.recent_fix("web01", "auto", within=1800) is not None
    assert ledger.recent_fix("web01", "auto", within=1800, before=job.id) is None
    assert ledger.recent_fix("web02", "auto", within=1800) is None
    assert ledger.runs_since("web01", time.time() - 3600) == 1


def test_an_unknown_mode_is_refused(store: str | Path) -> None:
    with pytest.raises(ValueError, match="mode must be one of"):
        Ledger(store).submit("web01", "auto", "explode", trigger="api", requested_by="x")
