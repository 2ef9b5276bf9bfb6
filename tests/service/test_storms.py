"""An alert storm against the running service: alerts for one host and cause coalesce into the job that
is waiting or running, instead of a backlog of jobs that would run one after another."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from support.serving import FakeSlack, Service, alert, alert_payload

INVENTORY = """\
all:
  hosts:
    web01: {ansible_host: 127.0.99.1}
    web02: {ansible_host: 127.0.99.2}
"""


def test_a_storm_for_one_host_is_a_handful_of_jobs_each_counting_its_alerts(
    tmp_path: Path, fake_slack: FakeSlack
) -> None:
    """Three webhooks of 100 distinct alerts each for web01's socket, and 10 for web02: every alert is in
    the answer and in the ledger, counted by the job it joined; web01's storm is at most a handful of jobs
    (one, unless a job ended while the storm went on), web02's its own; the audit has one record per job a
    webhook created and one per job its other alerts joined, not one per alert, and the chain verifies."""
    inventory = tmp_path / "inventory.yml"
    inventory.write_text(INVENTORY)
    svc = Service(tmp_path / "svc", inventory, fake_slack.url).start()
    try:
        answered = []
        for webhook in range(3):
            alerts = [
                alert({"alertname": "Nginx502", "instance": "web01", "remediate_cause": "socket"}, f"fp{webhook}-{n}")
                for n in range(100)
            ]
            if webhook == 0:
                alerts += [alert({"alertname": "Nginx502", "instance": "web02", "remediate_cause": "socket"},
                                 f"fp-web02-{n}") for n in range(10)]  # fmt: skip
            status, answer = svc.alert(alert_payload(*alerts))
            assert status == 200 and isinstance(answer, dict), answer
            answered += answer["alerts"]
        assert len(answered) == 310 and all(a["result"] == "recorded" or a["result"].startswith("joined job ")
                                            for a in answered)  # fmt: skip
        jobs = svc.wait_jobs_done()
        web01 = [j for j in jobs if j["host"] == "web01"]
        web02 = [j for j in jobs if j["host"] == "web02"]
        assert 1 <= len(web01) <= 5 and len(web02) == 1, [(j["host"], j["data"].get("alerts")) for j in jobs]
        assert sum(j["data"]["alerts"] for j in web01) == 300 and web02[0]["data"]["alerts"] == 10
        shown = subprocess.run(
            [sys.executable, "-m", "remediate.cli", "audit", "show", "--state", str(svc.dir / "state"), "--json"],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        records = json.loads(shown.stdout)["records"]
        triggers = [r for r in records if r["kind"] == "trigger"]
        coalesced = [r["data"] for r in records if r["kind"] == "coalesced"]
        assert len(triggers) == len(jobs) and sum(c["joined"] for c in coalesced) == 310 - len(jobs)
        assert len(coalesced) <= 3 * len(jobs)  # at most one per job and webhook
        verify = subprocess.run(
            [sys.executable, "-m", "remediate.cli", "audit", "verify", "--state", str(svc.dir / "state")],
            capture_output=True, text=True,
        )  # fmt: skip
        assert verify.returncode == 0, verify.stdout + verify.stderr
    finally:
        svc.stop()


def test_a_200_means_every_alert_of_the_webhook_is_recorded_even_if_the_service_dies_at_once(
    tmp_path: Path, fake_slack: FakeSlack
) -> None:
    """The service is killed (SIGKILL) the moment Alertmanager has its 200 for a webhook of 200 alerts; after a
    restart the ledger holds every one of them (counted in its jobs), and the same webhook again is all
    duplicates, not a second count."""
    import signal

    inventory = tmp_path / "inventory.yml"
    inventory.write_text(INVENTORY)
    svc = Service(tmp_path / "svc", inventory, fake_slack.url).start()
    labels = {"alertname": "Nginx502", "instance": "web01", "remediate_cause": "socket"}
    payload = alert_payload(*[alert(labels, f"kill-{n}") for n in range(200)])
    try:
        status, _ = svc.alert(payload)
        assert svc.proc is not None
        svc.proc.send_signal(signal.SIGKILL)  # at once: no shutdown, no flush beyond what was committed
        svc.proc.wait(10)
        assert status == 200
        svc.start()
        jobs = svc.jobs()
        assert sum(j["data"]["alerts"] for j in jobs) == 200, [(j["id"], j["data"].get("alerts")) for j in jobs]
        status, again = svc.alert(payload)
        assert status == 200 and isinstance(again, dict)
        assert all(a["result"].startswith("duplicate") for a in again["alerts"]), again["alerts"][:3]
        assert sum(j["data"]["alerts"] for j in svc.jobs()) == 200
    finally:
        svc.stop()
