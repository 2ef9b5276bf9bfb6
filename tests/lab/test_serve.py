"""`remediate serve` on the real lab: Slack approvals, a real Alertmanager, storms, restarts and the audit chain.

The service is a real process; requests to it are signed with Slack's real scheme; what it posts
goes to a fake Slack Web API on loopback; alerts come from Debian's prometheus-alertmanager.
"""

from __future__ import annotations

import itertools
import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.incidents import answers, break_lab, children, plan_post, thread_says
from support.lab import remediate_cli
from support.serving import (
    CHANNEL,
    Alertmanager,
    FakeSlack,
    Service,
    alert,
    alert_payload,
    click_body,
    http,
    slash_body,
)

from remediate.lab.core import PROBES, Lab, LabConfig

pytestmark = pytest.mark.lab


@pytest.fixture
def service(tmp_path: Path, lab: Lab, fake_slack: FakeSlack) -> Iterator[Service]:
    svc = Service(tmp_path / "svc", lab.inventory, fake_slack.url, approval_ttl="10m").start()
    yield svc
    svc.stop()
    assert "Traceback" not in svc.log.read_text(), svc.log.read_text()[-3000:]


def _files(lab: Lab) -> dict[str, tuple[bytes, int]]:
    """Every file of web01's nginx and php config: bytes and mode (what "changed nothing" means)."""
    out = {}
    for path in sorted((lab.dir / "web01").rglob("*")):
        if path.is_file() and path.suffix in {".conf", ""} and "logs" not in path.parts and "run" not in path.parts:
            out[str(path)] = (path.read_bytes(), path.stat().st_mode)
    return out


def test_a_chat_run_posts_a_plan_and_an_approver_fixes_it(
    service: Service, fake_slack: FakeSlack, lab: Lab, lab_cfg: LabConfig
) -> None:
    break_lab(lab, lab_cfg)
    since = len(fake_slack.posts())
    status, ack = service.slack(slash_body("run web01 auto", "U111"))
    assert status == 200 and isinstance(ack, dict) and "planning" in ack["text"], ack
    post, approval = plan_post(fake_slack, since)
    assert post["channel"] == "C0CHAT" and "*web01*: socket" in post["text"] and "asked by <@U111>" in post["text"]
    assert "restart php-fpm" in json.dumps(post["blocks"])
    before = _files(lab)

    # The requester, a user without approve, a user not in the policy: refused, nothing runs.
    for user, says in [
        ("U111", "U111 may not approve"),
        ("U333", "U333 may not approve"),
        ("U999", "U999 is not in remediate's policy"),
    ]:
        assert service.slack(click_body(approval, user))[0] == 200
        refusal = thread_says(fake_slack, says, timeout=15)
        assert refusal["text"].endswith("nothing was changed") and refusal["thread_ts"]
    assert answers(lab, lab_cfg) == 502 and _files(lab) == before

    # U444 approves through the S0LEADS user group (asked of Slack's usergroups.users.list).
    assert service.slack(click_body(approval, "U444"))[0] == 200
    thread_says(fake_slack, "approved by <@U444>", timeout=15)
    fixed = thread_says(fake_slack, "*web01* socket: *fixed*")
    assert "/remediate rollback web01" in fixed["text"]
    assert answers(lab, lab_cfg) == 200

    # A second click on the same button: already approved, nothing runs again.
    assert service.slack(click_body(approval, "U222"))[0] == 200
    thread_says(fake_slack, "this approval was already approved by U444", timeout=15)
    jobs = service.wait_jobs_done()
    assert [(j["mode"], j["outcome"]) for j in jobs] == [("run", "fixed"), ("approve", "awaiting-approval")]
    assert jobs[0]["requested_by"] == "U111" and jobs[0]["data"]["approved_by"] == "U444"

    # status names the run; rollback (oncall may) undoes it from the host's journal.
    run_id = jobs[0]["run_id"]
    status_ack = service.slack(slash_body(f"status {run_id}", "U111"))[1]
    assert isinstance(status_ack, dict) and f"run `{run_id}`" in status_ack["text"] and "*fixed*" in status_ack["text"]
    assert "rolling back" in str(service.slack(slash_body(f"rollback web01 {run_id}", "U111"))[1])
    undone = thread_says(fake_slack, f"*web01* rollback {run_id}: *restored*")
    assert "nothing to restore: the files already hold their original bytes" in undone["text"]  # a restart only

    verify = remediate_cli("audit", "verify", "--state", str(service.dir / "state"))
    assert verify.returncode == 0, verify.stdout + verify.stderr
    shown = remediate_cli("audit", "show", "--state", str(service.dir / "state"), "--json")
    kinds = [r["kind"] for r in json.loads(shown.stdout)["records"]]
    for kind in ("trigger", "decision", "approval-asked", "refused", "approval", "start", "outcome"):
        assert kind in kinds, kinds


def test_deny_and_expiry_change_nothing(tmp_path: Path, fake_slack: FakeSlack, lab: Lab, lab_cfg: LabConfig) -> None:
    svc = Service(tmp_path / "svc", lab.inventory, fake_slack.url, approval_ttl=2).start()
    try:
        break_lab(lab, lab_cfg)
        before = _files(lab)
        since = len(fake_slack.posts())
        svc.slack(slash_body("run web01 socket", "U111"))
        _, first = plan_post(fake_slack, since)
        svc.slack(click_body(first, "U222", approve=False))
        thread_says(fake_slack, "denied by <@U222>; nothing was changed on web01", timeout=15)

        since = len(fake_slack.posts())
        svc.slack(slash_body("run web01 socket", "U111"))
        _, second = plan_post(fake_slack, since)
        time.sleep(2.5)
        svc.slack(click_body(second, "U222"))
        thread_says(fake_slack, "this approval expired; ask for the run again", timeout=15)
        svc.wait_jobs_done()
        assert answers(lab, lab_cfg) == 502 and _files(lab) == before
        assert not any(j["mode"] == "run" for j in svc.jobs())
    finally:
        svc.stop()


def test_approval_after_the_host_changed_under_the_plan_is_refused(
    service: Service, fake_slack: FakeSlack, lab: Lab, lab_cfg: LabConfig
) -> None:
    break_lab(lab, lab_cfg, "permission")  # the plan: change the pool's listen.mode
    since = len(fake_slack.posts())
    service.slack(slash_body("run web01 socket", "U111"))
    _, approval = plan_post(fake_slack, since)
    pool = lab.dir / "web01" / "php" / "pool.d" / "www.conf"
    text = pool.read_bytes()
    assert b"listen.owner = nobody\n" in text
    pool.write_bytes(text.replace(b"listen.owner = nobody\n", b"listen.owner = daemon\n"))  # someone else's edit
    before = _files(lab)
    service.slack(click_body(approval, "U222"))
    refused = thread_says(fake_slack, "the plan changed since it was approved")
    assert "*refused*" in refused["text"] and "nothing was changed" in refused["text"]
    assert _files(lab) == before and answers(lab, lab_cfg) == 502
    run = next(j for j in service.wait_jobs_done() if j["mode"] == "run")
    assert run["outcome"] == "refused" and run["run_id"] is None


def _am_jobs(service: Service) -> list[dict[str, Any]]:
    return [j for j in service.jobs() if j["trigger"] == "alertmanager"]


def test_a_real_alertmanager_alert_fixes_the_lab_once(
    service: Service, fake_slack: FakeSlack, lab: Lab, lab_cfg: LabConfig, tmp_path: Path
) -> None:
    break_lab(lab, lab_cfg)
    am = Alertmanager(tmp_path / "am", service.url, service.dir / "secrets" / "am.token").start()
    try:
        am.add("alertname=Nginx502", "instance=127.0.20.1:8080", "severity=page")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and answers(lab, lab_cfg) != 200:
            time.sleep(0.5)
        assert answers(lab, lab_cfg) == 200, service.log.read_text()[-2000:]
        posted = thread_says(fake_slack, "*web01* socket: *fixed*")
        assert posted["channel"] == CHANNEL

        time.sleep(4)  # Alertmanager repeats the firing alert every 2 s (repeat_interval): duplicates
        service.stop()
        service.start()
        time.sleep(4)  # ... and again after the restart
        jobs = service.wait_jobs_done()
        assert len(_am_jobs(service)) == 1 and jobs[0]["outcome"] == "fixed", jobs
        records = _records(service)
        repeats = [r["data"] for r in records if r["kind"] == "coalesced"]  # one record per webhook, with the count
        assert sum(r["duplicates"] for r in repeats) >= 2 and all(r["job"] == jobs[0]["id"] for r in repeats), records
        verify = remediate_cli("audit", "verify", "--state", str(service.dir / "state"))
        assert verify.returncode == 0, verify.stdout + verify.stderr
    finally:
        am.stop()


def _records(service: Service) -> list[dict[str, Any]]:
    shown = remediate_cli("audit", "show", "--state", str(service.dir / "state"), "--json")
    return list(json.loads(shown.stdout)["records"])


def test_twenty_alerts_are_one_fix_and_the_loop_breaker_stops_the_second(
    service: Service, fake_slack: FakeSlack, lab: Lab, lab_cfg: LabConfig
) -> None:
    break_lab(lab, lab_cfg)
    results: list[int] = []

    def deliver(i: int) -> None:
        labels = {"alertname": "Nginx502", "instance": "web01:9113", "path": f"/p{i}"}
        results.append(service.alert(alert_payload(alert(labels, f"storm-{i:02d}")))[0])

    threads = [threading.Thread(target=deliver, args=(i,)) for i in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [200] * 20
    jobs = service.wait_jobs_done(timeout=180)
    # storm coalescing: the alerts join the job waiting or running for web01, so the twenty are a handful
    # of jobs at most (one, unless one ended while alerts still came), each counting the alerts it answers
    assert 1 <= len(jobs) <= 5 and sum(j["data"]["alerts"] for j in jobs) == 20, jobs
    outcomes = sorted(j["outcome"] for j in jobs)
    assert outcomes.count("fixed") == 1 and outcomes.count("covered") == len(jobs) - 1, outcomes
    spans = sorted((j["started"], j["ended"]) for j in jobs)
    assert all(a[1] <= b[0] for a, b in itertools.pairwise(spans)), "two jobs of web01 overlapped"
    assert answers(lab, lab_cfg) == 200
    first_run = next(j["run_id"] for j in jobs if j["outcome"] == "fixed")

    # The same cause comes back inside the cool-down: not fixed again; escalated with both runs.
    time.sleep(1.1)  # the new incident starts after the fix
    lab.break_("socket", "missing", keep=True)
    assert answers(lab, lab_cfg) == 502
    start = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    labels = {"alertname": "Nginx502", "instance": "web01:9113"}
    assert service.alert(alert_payload(alert(labels, "comes-back", starts=start)))[0] == 200
    loop = thread_says(fake_slack, "socket is back")
    assert first_run in loop["text"] and "Not fixing it again" in loop["text"]
    assert loop["channel"] == CHANNEL
    last = service.wait_jobs_done()[0]
    assert last["outcome"] == "loop-stopped" and last["data"]["previous"] == first_run
    assert answers(lab, lab_cfg) == 502  # left for a human, as the message says
    _status, text = http("GET", service.url + "/metrics")
    covered = outcomes.count("covered")
    assert not covered or f'remediate_jobs_total{{outcome="covered",trigger="alertmanager"}} {covered}.0' in str(text)
    assert 'remediate_jobs_total{outcome="loop-stopped",trigger="alertmanager"} 1.0' in str(text)


def test_a_restart_resumes_recorded_jobs(service: Service, lab: Lab, lab_cfg: LabConfig) -> None:
    """Jobs recorded (or running) when the service died run after the next start."""
    break_lab(lab, lab_cfg)
    service.stop()
    state = service.dir / "state" / "ledger.db"
    from remediate.stores.ledger import Ledger

    ledger = Ledger(state.parent)
    job, _ = ledger.submit("web01", "auto", "fix", trigger="alertmanager", requested_by="fp-before-crash")
    claimed = ledger.claim("worker-that-died")
    assert claimed is not None and claimed.id == job.id  # it was running when the service was killed
    ledger.close()
    service.start()
    done = service.wait_jobs_done()
    assert [(j["id"], j["outcome"]) for j in done] == [(job.id, "fixed")]
    assert answers(lab, lab_cfg) == 200
    assert any(r["kind"] == "resume" and r["data"]["job"] == job.id for r in _records(service))


def test_tampering_with_one_audit_record_is_named(service: Service) -> None:
    service.slack(slash_body("status", "U111"))
    service.slack(slash_body("diagnose web99", "U111"))
    service.stop()
    db = sqlite3.connect(service.dir / "state" / "audit.db")
    db.execute("DROP TRIGGER audit_no_update")  # what someone editing the file behind remediate's back does
    db.execute("UPDATE audit SET actor = 'U222' WHERE seq = 2")
    db.commit()
    db.close()
    verify = remediate_cli("audit", "verify", "--state", str(service.dir / "state"))
    assert verify.returncode == 1
    assert "record 2" in verify.stdout + verify.stderr
    service.start()  # for the fixture's stop


def test_a_killed_worker_process_is_replaced_and_its_job_finishes(
    service: Service, lab: Lab, lab_cfg: LabConfig
) -> None:
    """SIGKILL the worker process mid-job: the service starts another, the job goes back to pending and
    ends fixed; the host is as its journal says (fixed, not half-applied)."""
    import os
    import signal

    break_lab(lab, lab_cfg)
    assert service.proc is not None
    (worker,) = children(service.proc.pid)
    labels = {"alertname": "Nginx502", "instance": "web01:9113"}
    assert service.alert(alert_payload(alert(labels, "fp-kill")))[0] == 200
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not any(j["state"] == "running" for j in service.jobs()):
        time.sleep(0.01)
    os.kill(worker, signal.SIGKILL)
    jobs = service.wait_jobs_done()
    assert [j["outcome"] for j in jobs] == ["fixed"], jobs
    assert answers(lab, lab_cfg) == 200
    assert any(r["kind"] == "resume" and r["data"]["job"] == jobs[0]["id"] for r in _records(service))
    (replacement,) = children(service.proc.pid)
    assert replacement != worker
    assert '"event": "worker-died"' in service.log.read_text()
    assert http("GET", service.url + "/healthz")[0] == 200


def test_the_hourly_cap_stops_runs_and_says_so(
    tmp_path: Path, fake_slack: FakeSlack, lab: Lab, lab_cfg: LabConfig
) -> None:
    """max_runs_per_hour: 1 and no cool-down: the second incident within the hour is escalated, not run."""
    svc = Service(tmp_path / "svc", lab.inventory, fake_slack.url, max_runs_per_hour=1, cooldown=0).start()
    try:
        labels = {"alertname": "Nginx502", "instance": "web01:9113"}
        break_lab(lab, lab_cfg)
        assert svc.alert(alert_payload(alert(labels, "cap-1")))[0] == 200
        assert [j["outcome"] for j in svc.wait_jobs_done()] == ["fixed"]
        time.sleep(1.1)
        break_lab(lab, lab_cfg)
        assert svc.alert(alert_payload(alert(labels, "cap-2")))[0] == 200
        capped = thread_says(fake_slack, "runs in the last hour (cap 1); not running again")
        assert capped["channel"] == CHANNEL
        assert [j["outcome"] for j in svc.wait_jobs_done()] == ["capped", "fixed"]
        assert answers(lab, lab_cfg) == 502
    finally:
        svc.stop()


def test_a_rollback_is_authorised_against_the_cause_of_the_run_it_undoes(
    tmp_path: Path, lab: Lab, lab_cfg: LabConfig, fake_slack: FakeSlack
) -> None:
    """A role that may roll back only socket fixes cannot undo a `down` fix (the hole: rollback was authorised for
    "some cause"); the refusal says why, the audit records the cause, and nothing on the host changes."""
    policy = {
        "roles": {
            "oncall": {"verbs": ["diagnose", "check", "run", "rollback"], "hosts": "all", "causes": "all"},
            "socket-undo": {"verbs": ["rollback"], "hosts": "all", "causes": ["socket"]},
        },
        "users": {"U111": ["oncall"], "U555": ["socket-undo"]},
    }
    lab.reset()
    lab.break_("down", "crash", keep=True)
    assert lab.probe(lab_cfg, PROBES["app"]) == 502  # the failing request that puts the line in the log
    done = remediate_cli("run", "-i", str(lab.inventory), "--host", "web01", "--cause", "down", "--yes", "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    run_id = json.loads(done.stdout)["run_id"]
    svc = Service(tmp_path / "svc", lab.inventory, fake_slack.url, policy=policy).start()
    try:
        assert "rolling back" in str(svc.slack(slash_body(f"rollback web01 {run_id}", "U555"))[1])
        refused = thread_says(fake_slack, f"*web01* rollback {run_id}: *refused*")
        assert "may rollback on web01, but not for cause down" in refused["text"]
        shown = remediate_cli("audit", "show", "--state", str(svc.dir / "state"), "--json")
        decisions = [r["data"] for r in json.loads(shown.stdout)["records"] if r["kind"] == "decision"]
        assert any(d.get("run_id") == run_id and d.get("cause") == "down" and not d["allowed"] for d in decisions)
        # Someone whose role covers `down` may undo it.
        svc.slack(slash_body(f"rollback web01 {run_id}", "U111"))
        thread_says(fake_slack, f"*web01* rollback {run_id}: *restored*")
    finally:
        svc.stop()
    assert "Traceback" not in svc.log.read_text()
