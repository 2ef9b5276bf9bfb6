"""remediate.api, the entry point under every trigger, on the real lab: what a user's incident script does."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from support import ROOT

from remediate import api
from remediate.errors import UsageError
from remediate.lab.core import PROBES, Lab, LabConfig

pytestmark = pytest.mark.usefixtures("state_dir")


def test_an_incident_script_diagnoses_plans_fixes_and_rolls_back(lab: Lab, lab_cfg: LabConfig, state_dir: Path) -> None:
    """The README's script: diagnose, plan, run, rollback through one Remediate, each returning the report the
    CLI prints as --json; each run records who asked and why, in its report, the controller's journal and
    the host's journal; the host's connection is opened once and kept for all four calls."""
    lab.reset()
    for name in ("error", "access"):  # a new incident's window: only its own lines
        (lab.dir / "web01" / "nginx" / "logs" / f"{name}.log").write_bytes(b"")
    lab.break_("socket", "missing")
    assert lab.probe(lab_cfg, PROBES["php"]) == 502
    with api.open(lab.inventory, requested_by="incident-4711") as rem:
        diagnosis = rem.diagnose("web01")
        assert diagnosis.verdict == "socket" and diagnosis.to_json()["round_trips"] == 1
        kept = rem.connections._kept["web01"]
        plan = rem.plan("web01", diagnosis.verdict)
        assert plan.outcome == "planned" and plan.plan.actions, plan.message
        report = rem.run("web01", diagnosis.verdict, yes=True)
        assert report.outcome == "fixed" and lab.probe(lab_cfg, PROBES["php"]) == 200
        assert (report.requested_by, report.trigger) == ("incident-4711", "api")
        assert report.to_json()["requested_by"] == "incident-4711"
        start = json.loads((state_dir / "runs" / f"{report.run_id}.jsonl").read_text().splitlines()[0])
        assert (start["requested_by"], start["trigger"]) == ("incident-4711", "api")
        web01 = rem.host("web01")
        meta = json.loads((Path(web01["journal_dir"]) / "runs" / report.run_id / "meta.json").read_text())
        assert (meta["requested_by"], meta["trigger"]) == ("incident-4711", "api")
        undone = rem.rollback("web01", report.run_id)
        assert undone.outcome in ("restored", "nothing-to-do"), undone.message
        assert rem.connections._kept["web01"] is kept, "one connection for every call"
    assert not len(rem.connections), "closed at the end of the with"


def test_a_trigger_that_is_not_one_of_the_four_is_a_usage_error(lab: Lab) -> None:
    with pytest.raises(UsageError, match="trigger must be one of cli, slack, alertmanager, api"):
        api.Remediate(lab.inventory, trigger="cron")


def test_the_cli_records_itself_as_the_trigger(lab: Lab, lab_cfg: LabConfig) -> None:
    """`remediate run` goes through the same API, as trigger cli and the local user."""
    import getpass

    from support.lab import remediate_cli

    lab.reset()
    lab.break_("socket", "missing")
    done = remediate_cli("run", "-i", str(lab.inventory), "--host", "web01", "--cause", "socket", "--check", "--json")
    report = json.loads(done.stdout)
    assert (report["trigger"], report["requested_by"]) == ("cli", getpass.getuser())
    lab.reset()


def test_the_readme_incident_script_runs_as_written(lab: Lab, lab_cfg: LabConfig, tmp_path: Path) -> None:
    """The README's incident script, copied out of the README, fixes a broken lab and exits 0."""
    import re
    import subprocess
    import sys

    readme = (ROOT / "README.md").read_text()
    script = re.search(r"<!-- incident-script -->\n```python\n(.*?)```", readme, re.S)
    assert script is not None, "the README lost its incident script"
    (tmp_path / "incident.py").write_text(script.group(1))
    lab.reset()
    for name in ("error", "access"):
        (lab.dir / "web01" / "nginx" / "logs" / f"{name}.log").write_bytes(b"")
    lab.break_("socket", "missing")
    assert lab.probe(lab_cfg, PROBES["php"]) == 502
    done = subprocess.run(
        [sys.executable, str(tmp_path / "incident.py"), str(lab.inventory), "web01"],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "web01: socket" in done.stdout and "fixed:" in done.stdout
    assert lab.probe(lab_cfg, PROBES["php"]) == 200


def test_a_kept_connection_that_died_is_replaced_and_idle_ones_close(lab: Lab, lab_cfg: LabConfig) -> None:
    """The service keeps connections: one the peer dropped is reopened, not used dead; idle ones are closed."""
    with api.open(lab.inventory) as rem:
        rem.diagnose("web01", since="1m")
        first = rem.connections._kept["web01"]
        first._conn.client.get_transport().close()  # type: ignore[attr-defined]  # sshd went away
        assert not first.alive()
        rem.diagnose("web01", since="1m")
        second = rem.connections._kept["web01"]
        assert second is not first and second.alive()
        other = rem.acting_for("U111", "slack")
        assert other.connections is rem.connections and other.trigger == "slack"
        assert rem.connections.close_idle(3600) == []
        assert rem.connections.close_idle(0) == ["web01"] and not len(rem.connections)
