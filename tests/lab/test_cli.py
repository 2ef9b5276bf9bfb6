"""The command line as a user meets it: help, one-line errors with exit codes, and real output."""

from __future__ import annotations

import json

from support.lab import remediate_cli

from remediate.hosts.inventory import Inventory
from remediate.lab.core import Lab


def test_config_lists_passes_over_ssh(lab: Lab, lab_inventory: Inventory) -> None:
    """`remediate config` reads nginx -T over SSH and reports every *_pass with file:line and the route."""
    done = remediate_cli(
        "config",
        "-i",
        str(lab.inventory),
        "--host",
        "web01",
        "--json",
        "--route",
        "http://web01.lab:8080/index.php",
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    kinds = {(p["directive"], p["location"]) for p in report["passes"]}
    assert ("fastcgi_pass", "~ \\.php$") in kinds and ("proxy_pass", "/api/") in kinds
    assert report["user"] == ["www-data", "www-data"]
    assert report["route"]["location"] == "~ \\.php$"
    assert any(f.endswith("sites-enabled/lab.conf") for f in report["files"])


def test_lab_status_json(lab: Lab) -> None:
    """`lab status --json` reports each probe's status code."""
    lab.reset()
    done = remediate_cli("lab", "status", "--dir", str(lab.dir), "--json")
    report = json.loads(done.stdout)
    assert set(report["probes"]["web01"].values()) == {200}
    assert all(report["running"].values())
