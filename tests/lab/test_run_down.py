"""`remediate run --cause down` end to end on the real lab: the backend on app01 crashed; restart it there."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support.lab import inventory_with, remediate_cli

from remediate.engine.run import RunOptions, run
from remediate.errors import EXIT_OK, EXIT_REFUSED, EXIT_ROLLED_BACK
from remediate.hosts.inventory import load_inventory
from remediate.lab.core import Lab, LabConfig

pytestmark = pytest.mark.usefixtures("state_dir")


def test_down_fixed_end_to_end_then_nothing_to_do(lab: Lab, lab_cfg: LabConfig) -> None:
    """502 before; run --yes restarts app01's app and nginx answers 200; a second run has nothing to do."""
    lab.reset()
    lab.break_("down", "crash", keep=True)
    assert lab.probe(lab_cfg, "/") == 502
    done = remediate_cli("run", "-i", str(lab.inventory), "--host", "web01", "--cause", "down", "--yes", "--json")
    assert done.returncode == EXIT_OK, done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert report["outcome"] == "fixed"
    assert report["evidence"]["refused"]["latest"]["address"] == f"{lab_cfg.addr(2)}:{lab_cfg.app_port}"
    assert report["evidence"]["backend"]["host"] == "app01" and report["evidence"]["backend"]["service"] == "app"
    assert "EXITED" in report["decision"]["reason"]
    assert "app01: restart app" in [s["step"] for s in report["steps"]]
    assert report["round_trips"] <= 4
    assert lab.probe(lab_cfg, "/") == 200
    again = remediate_cli("run", "-i", str(lab.inventory), "--host", "web01", "--cause", "down", "--yes", "--json")
    assert json.loads(again.stdout)["outcome"] == "nothing-to-do"


def test_check_changes_nothing(lab: Lab, lab_cfg: LabConfig) -> None:
    """--check shows the restart it would do, and the backend stays down."""
    lab.reset()
    lab.break_("down", "crash", keep=True)
    done = remediate_cli("run", "-i", str(lab.inventory), "--host", "web01", "--cause", "down", "--check")
    assert done.returncode == EXIT_OK
    assert "restart app on app01" in done.stdout
    assert lab.probe(lab_cfg, "/") == 502


def test_service_not_restartable_is_refused(lab: Lab, lab_cfg: LabConfig, tmp_path: Path) -> None:
    """When the owning service is not in restartable_services, the run refuses and the backend stays down."""
    lab.reset()
    lab.break_("down", "crash", keep=True)
    inventory = inventory_with(lab, tmp_path, "restartable_services: [app, tls,", "restartable_services: [tls,")
    report = run(inventory.host("web01"), "down", RunOptions(yes=True), inventory=inventory)
    assert report.outcome == "refused" and report.exit_code == EXIT_REFUSED
    assert "'app', which is not in restartable_services" in report.message
    assert lab.probe(lab_cfg, "/") == 502


def test_address_no_inventory_host_owns_is_refused(lab: Lab, lab_cfg: LabConfig, tmp_path: Path) -> None:
    """When no inventory host has the refused address, the run refuses and names the address."""
    lab.reset()
    lab.break_("down", "crash", keep=True)
    inventory = inventory_with(lab, tmp_path, f"ansible_host: {lab_cfg.addr(2)}", "ansible_host: 127.0.20.77")
    report = run(inventory.host("web01"), "down", RunOptions(yes=True), inventory=inventory)
    assert report.outcome == "refused"
    assert f"{lab_cfg.addr(2)}:{lab_cfg.app_port} is down, but no inventory host owns" in report.message
    assert lab.probe(lab_cfg, "/") == 502


def test_failed_restart_shows_the_service_log_and_stops(lab: Lab, lab_cfg: LabConfig) -> None:
    """A backend that cannot start: the run stops after one restart and shows the service's own stderr."""
    lab.reset()
    lab.break_("down", "crash", keep=True)
    (lab.dir / "app01" / "state" / "crash_on_start").write_text("app\n")
    inventory = load_inventory(lab.inventory)
    report = run(inventory.host("web01"), "down", RunOptions(yes=True), inventory=inventory)
    assert report.outcome == "rolled-back" and report.exit_code == EXIT_ROLLED_BACK
    assert "restart on app01 failed" in report.message
    assert "cannot load configuration" in report.message  # the tail of app's own stderr log
    assert [s["step"] for s in report.steps].count("app01: restart") == 1  # no retry loop
    lab.reset()
