"""`remediate run --cause proxy-pass` (port variant) on the real lab, and the retarget edit on text."""

from __future__ import annotations

import json

import pytest
from support.lab import remediate_cli, site_conf

from remediate.errors import EXIT_OK, EXIT_REFUSED
from remediate.lab.core import Lab, LabConfig

pytestmark = pytest.mark.usefixtures("state_dir")


def test_wrong_port_fixed_with_a_one_line_patch(lab: Lab, lab_cfg: LabConfig) -> None:
    """502 before; the run patches only that proxy_pass, reloads, 200 after; a second run has nothing to do."""
    lab.reset()
    lab.break_("proxy-pass", "port", keep=True)
    broken = site_conf(lab).read_bytes()
    assert lab.probe(lab_cfg, "/api/users") == 502
    done = remediate_cli("run", "-i", str(lab.inventory), "--host", "web01", "--cause", "proxy-pass", "--yes", "--json")
    assert done.returncode == EXIT_OK, done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert report["outcome"] == "fixed"
    wrong, right = f"{lab_cfg.addr(2)}:8081", f"{lab_cfg.addr(2)}:{lab_cfg.app_port}"
    assert f"app01's app listens on port {lab_cfg.app_port}" in report["decision"]["reason"]
    # Golden diff: exactly that one address changed; every other byte of the file is as it was.
    assert site_conf(lab).read_bytes() == broken.replace(
        f"proxy_pass http://{wrong};".encode(), f"proxy_pass http://{right};".encode(), 1
    )
    assert {s["step"] for s in report["steps"]} >= {"nginx -t", "reload", "probe"}
    assert lab.probe(lab_cfg, "/api/users") == 200
    again = remediate_cli(
        "run", "-i", str(lab.inventory), "--host", "web01", "--cause", "proxy-pass", "--yes", "--json"
    )
    assert json.loads(again.stdout)["outcome"] == "nothing-to-do"
    assert site_conf(lab).read_bytes() == broken.replace(wrong.encode(), right.encode(), 1)


def test_check_shows_the_diff_and_writes_nothing(lab: Lab, lab_cfg: LabConfig) -> None:
    """--check prints the one-line diff and leaves the file as it was."""
    lab.reset()
    lab.break_("proxy-pass", "port", keep=True)
    before = site_conf(lab).read_bytes()
    done = remediate_cli("run", "-i", str(lab.inventory), "--host", "web01", "--cause", "proxy-pass", "--check")
    assert done.returncode == EXIT_OK
    assert f"-        proxy_pass http://{lab_cfg.addr(2)}:8081;" in done.stdout
    assert f"+        proxy_pass http://{lab_cfg.addr(2)}:{lab_cfg.app_port};" in done.stdout
    assert site_conf(lab).read_bytes() == before


def test_two_candidate_ports_are_refused(lab: Lab, lab_cfg: LabConfig) -> None:
    """When two services of the backend host serve the URI, the run refuses and lists both ports."""
    lab.reset()
    lab.break_("proxy-pass", "port", keep=True)
    lab.ctl(lab_cfg, "app01", "start", "app-canary")
    try:
        before = site_conf(lab).read_bytes()
        done = remediate_cli("run", "-i", str(lab.inventory), "--host", "web01", "--cause", "proxy-pass", "--yes")
        assert done.returncode == EXIT_REFUSED
        assert f"more than one port could be meant ({lab_cfg.app_port}, {lab_cfg.app_port + 2})" in done.stderr
        assert site_conf(lab).read_bytes() == before
    finally:
        lab.reset()


def test_stripped_prefix_fixed_by_keeping_it(lab: Lab, lab_cfg: LabConfig) -> None:
    """slash: the backend is asked for both paths; the run keeps the prefix in that one proxy_pass; 200 after."""
    lab.reset()
    lab.break_("proxy-pass", "slash", keep=True)
    broken = site_conf(lab).read_bytes()
    assert lab.probe(lab_cfg, "/api/users") == 502
    done = remediate_cli("run", "-i", str(lab.inventory), "--host", "web01", "--cause", "proxy-pass", "--yes", "--json")
    assert done.returncode == EXIT_OK, done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert report["decision"]["name"] == "prefix-stripped"
    slash = report["evidence"]["slash"]
    assert (slash["uri"], slash["rewritten"]) == ("/api/users", "/users")
    assert (slash["original_answer"]["status"], slash["rewritten_answer"]["status"]) == (200, 404)
    base = f"http://{lab_cfg.addr(2)}:{lab_cfg.app_port}"
    assert site_conf(lab).read_bytes() == broken.replace(
        f"proxy_pass {base}/;".encode(), f"proxy_pass {base}/api/;".encode()
    )
    assert lab.probe(lab_cfg, "/api/users") == 200
    again = remediate_cli(
        "run", "-i", str(lab.inventory), "--host", "web01", "--cause", "proxy-pass", "--yes", "--json"
    )
    assert json.loads(again.stdout)["outcome"] == "nothing-to-do"


def test_rewrite_that_would_not_help_is_refused(lab: Lab, lab_cfg: LabConfig) -> None:
    """When the backend does not serve the original path either, keeping the prefix is refused, and nothing changes."""
    lab.reset()
    lab.break_("proxy-pass", "slash", keep=True)
    lab.ctl(lab_cfg, "app01", "stop", "app")
    lab.ctl(lab_cfg, "app01", "start", "app-canary")  # a backend that is up but is not where nginx points
    try:
        before = site_conf(lab).read_bytes()
        done = remediate_cli("run", "-i", str(lab.inventory), "--host", "web01", "--cause", "proxy-pass", "--yes")
        assert done.returncode == EXIT_REFUSED, done.stdout + done.stderr
        assert "keeping the prefix would not fix this 502" in done.stderr
        assert site_conf(lab).read_bytes() == before
    finally:
        lab.reset()
