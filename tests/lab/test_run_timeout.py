"""`remediate run --cause timeout` on the real lab, and the timeout edit on text."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support.lab import remediate_cli, site_conf

from remediate.engine.run import RunOptions, run
from remediate.errors import EXIT_OK
from remediate.hosts.inventory import load_inventory
from remediate.lab.core import Lab, LabConfig
from remediate.nginx import MARKER

pytestmark = pytest.mark.usefixtures("state_dir")


def test_slow_prefix_gets_its_own_location(lab: Lab, lab_cfg: LabConfig) -> None:
    """504 before; a dedicated /reports/ location with 2x the measured TTFB, the global default untouched; 200 after."""
    lab.reset()
    lab.break_("timeout", "read", keep=True)
    before = site_conf(lab).read_bytes()
    proxy_conf = (lab.dir / "web01" / "nginx" / "conf.d" / "proxy.conf").read_bytes()
    assert lab.probe(lab_cfg, "/reports/daily") == 504
    done = remediate_cli("run", "-i", str(lab.inventory), "--host", "web01", "--cause", "timeout", "--yes", "--json")
    assert done.returncode == EXIT_OK, done.stdout + done.stderr
    report = json.loads(done.stdout)
    slow = report["evidence"]["slow"]
    assert slow["directive"] == "proxy_read_timeout" and slow["current"] == lab_cfg.read_timeout
    assert 2 * lab_cfg.read_timeout <= slow["ttfb"] < 2 * lab_cfg.read_timeout + 2
    assert "the backend is slow" in report["decision"]["reason"] and "workaround" in report["decision"]["reason"]
    after = site_conf(lab).read_bytes()
    added = (
        f"    location /reports/ {{  {MARKER}: backend TTFB {slow['ttfb']}s\n"
        f"        proxy_pass http://app_pool;\n"
        f"        proxy_read_timeout {slow['value']}s;  {MARKER}\n"
        f"    }}\n\n"
    ).encode()
    assert after == before.replace(b"    location / {", added + b"    location / {", 1)  # golden: only that block
    assert (lab.dir / "web01" / "nginx" / "conf.d" / "proxy.conf").read_bytes() == proxy_conf
    assert lab.probe(lab_cfg, "/reports/daily") == 200
    assert lab.probe(lab_cfg, "/") == 200
    again = remediate_cli("run", "-i", str(lab.inventory), "--host", "web01", "--cause", "timeout", "--yes", "--json")
    assert json.loads(again.stdout)["outcome"] == "nothing-to-do"
    assert site_conf(lab).read_bytes() == after


def test_backend_slower_than_the_ceiling_is_refused(lab: Lab, lab_cfg: LabConfig, tmp_path: Path) -> None:
    """When twice the measured TTFB is above timeout_ceiling, the run refuses and changes nothing."""
    lab.reset()
    lab.break_("timeout", "read", keep=True)
    before = site_conf(lab).read_bytes()
    path = tmp_path / "inventory.yml"
    path.write_text(
        lab.inventory.read_text().replace("      journal_dir: ", "      timeout_ceiling: 6\n      journal_dir: ", 1)
    )
    inventory = load_inventory(path)
    report = run(inventory.host("web01"), "timeout", RunOptions(yes=True), inventory=inventory)
    assert report.outcome == "refused"
    assert "too slow for any timeout remediate may set (timeout_ceiling 6.0s)" in report.message
    assert site_conf(lab).read_bytes() == before
    assert lab.probe(lab_cfg, "/reports/daily") == 504
