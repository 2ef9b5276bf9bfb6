"""`remediate run --cause dns` on the real lab (no resolver, stale record, unknown name), and the edits on text."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from support.lab import broken, inventory_with, ran, run_cli, site_conf

from remediate.engine.run import RunOptions, run
from remediate.errors import EXIT_OK, EXIT_REFUSED
from remediate.lab.core import Lab, LabConfig
from remediate.nginx import MARKER

pytestmark = pytest.mark.usefixtures("state_dir")


def _path_seen(lab: Lab, lab_cfg: LabConfig, path: str) -> str:
    """The path the backend saw for a request through nginx (the lab's app echoes it)."""
    import http.client

    conn = http.client.HTTPConnection(lab_cfg.addr(1), lab_cfg.http_port, timeout=5)
    conn.request("GET", path, headers={"Host": "web01.lab"})
    resp = conn.getresponse()
    assert resp.status == 200, resp.status
    return str(json.loads(resp.read())["path"])


def _resolver_lines(lab_cfg: LabConfig) -> bytes:
    """The server block's first line and the two lines the fix adds after it."""
    resolver = f"    resolver {lab_cfg.addr(3)} valid=30s;  {MARKER}\n"
    return f"server {{\n{resolver}    resolver_timeout 5s;  {MARKER}\n".encode()


def test_no_resolver_gets_one_from_the_inventory(lab: Lab, lab_cfg: LabConfig) -> None:
    """502 before; a resolver (the inventory's nameservers, valid=30s) and resolver_timeout in the server; 200 after."""
    before = broken(lab, lab_cfg, "dns", "no-resolver", "/dyn/")
    report = ran(lab, "dns", EXIT_OK)
    dns = report["evidence"]["dns"]
    assert dns["kind"] == "no-resolver" and dns["name"] == "app01.lab"
    assert dns["addresses"] == [lab_cfg.addr(2)] and dns["resolvers_from"] == "inventory"
    assert "no resolver is in effect" in report["decision"]["reason"]
    added = _resolver_lines(lab_cfg)
    assert site_conf(lab).read_bytes() == before.replace(b"server {\n", added, 1)  # golden
    assert lab.probe(lab_cfg, "/dyn/") == 200
    again = run_cli(lab, "dns")
    assert json.loads(again.stdout)["outcome"] == "nothing-to-do"
    assert site_conf(lab).read_bytes() == before.replace(b"server {\n", added, 1)


def test_stale_record_is_re_resolved_and_the_backend_sees_the_same_path(lab: Lab, lab_cfg: LabConfig) -> None:
    """svc.lab moved: the name goes into a variable with a resolver; the backend sees the same path as before."""
    lab.reset()
    seen_before = _path_seen(lab, lab_cfg, "/svc/a/b?x=1")
    lab.break_("dns", "stale", keep=True)
    before = site_conf(lab).read_bytes()
    assert lab.probe(lab_cfg, "/svc/") == 502
    done = run_cli(lab, "dns")
    assert done.returncode == EXIT_OK, done.stdout + done.stderr
    report = json.loads(done.stdout)
    dns = report["evidence"]["dns"]
    assert dns["kind"] == "stale" and dns["nginx_uses"] == lab_cfg.addr(5) and dns["addresses"] == [lab_cfg.addr(6)]
    assert "the record moved" in report["decision"]["reason"]
    after = site_conf(lab).read_bytes()
    golden = before.replace(
        f"        proxy_pass http://svc.lab:{lab_cfg.app_port};\n".encode(),
        (
            f'        set $remediate_svc_lab "svc.lab";  {MARKER}: re-resolve svc.lab per request\n'
            f"        proxy_pass http://$remediate_svc_lab:{lab_cfg.app_port};\n"
        ).encode(),
    ).replace(
        b"server {\n",
        _resolver_lines(lab_cfg),
        1,
    )
    assert after == golden
    assert _path_seen(lab, lab_cfg, "/svc/a/b?x=1") == seen_before == "/svc/a/b"
    assert json.loads(run_cli(lab, "dns").stdout)["outcome"] == "nothing-to-do"
    assert site_conf(lab).read_bytes() == after


def test_stale_record_pinned_when_the_inventory_says_pin(lab: Lab, lab_cfg: LabConfig, tmp_path: Path) -> None:
    """dns_strategy: pin replaces the name with the address the resolver gives now, and nothing else."""
    lab.reset()
    lab.break_("dns", "stale", keep=True)
    before = site_conf(lab).read_bytes()
    assert lab.probe(lab_cfg, "/svc/") == 502
    inventory = inventory_with(lab, tmp_path, "      resolvers:", "      dns_strategy: pin\n      resolvers:")
    report = run(inventory.host("web01"), "dns", RunOptions(yes=True), inventory=inventory)
    assert report.outcome == "fixed", report.message
    assert site_conf(lab).read_bytes() == before.replace(
        f"http://svc.lab:{lab_cfg.app_port};".encode(), f"http://{lab_cfg.addr(6)}:{lab_cfg.app_port};".encode()
    )
    assert lab.probe(lab_cfg, "/svc/") == 200
    assert run(inventory.host("web01"), "dns", RunOptions(yes=True), inventory=inventory).outcome == "nothing-to-do"


def test_a_name_the_resolver_does_not_know_is_refused(lab: Lab, lab_cfg: LabConfig) -> None:
    """ghost.lab is NXDOMAIN: the run reports what the resolver answered, refuses (exit 3), and changes nothing."""
    before = broken(lab, lab_cfg, "dns", "nxdomain", "/dyn/")
    report = ran(lab, "dns", EXIT_REFUSED)
    assert report["outcome"] == "refused"
    assert f"ghost.lab does not resolve ({lab_cfg.addr(3)}: NXDOMAIN)" in report["message"]
    assert site_conf(lab).read_bytes() == before


def test_host_not_found_at_reload_is_refused_with_the_resolver_answer(lab: Lab, lab_cfg: LabConfig) -> None:
    """[emerg] host not found in upstream (a reload that failed): refused with what the resolver says."""
    lab.reset()
    log = lab.dir / "web01" / "nginx" / "logs" / "error.log"
    with log.open("a") as fh:
        fh.write(
            time.strftime("%Y/%m/%d %H:%M:%S")
            + f' [emerg] 1#1: host not found in upstream "ghost.lab:8080" in {site_conf(lab)}:40\n'
        )
    done = run_cli(lab, "dns")
    assert done.returncode == EXIT_REFUSED, done.stdout + done.stderr
    assert f"ghost.lab does not resolve ({lab_cfg.addr(3)}: NXDOMAIN)" in json.loads(done.stdout)["message"]
