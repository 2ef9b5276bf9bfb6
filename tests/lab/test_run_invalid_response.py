"""`remediate run --cause invalid-response` on the real lab: an empty reply, and a TLS backend from a private CA."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support.lab import broken, inventory_with, ran, run_cli, site_conf

from remediate.engine.run import RunOptions, run
from remediate.errors import EXIT_OK, EXIT_REFUSED
from remediate.lab.core import Lab, LabConfig
from remediate.nginx import MARKER

pytestmark = pytest.mark.usefixtures("state_dir")


def test_empty_reply_is_cured_by_a_restart(lab: Lab, lab_cfg: LabConfig) -> None:
    """The backend, asked directly, sends nothing; restarting it on app01 gives valid HTTP; 502 → 200."""
    before = broken(lab, lab_cfg, "invalid-response", "empty", "/healthz")
    report = ran(lab, "invalid-response", EXIT_OK)
    backend = report["evidence"]["backend"]
    assert backend["kind"] == "empty" and backend["answer"]["bytes"] == 0
    assert backend["signature"] == "upstream prematurely closed connection while reading response header from upstream"
    assert (backend["owner"], backend["service"]) == ("app01", "flaky")
    assert "app01: restart flaky" in [s["step"] for s in report["steps"]]
    assert site_conf(lab).read_bytes() == before  # a restart, no file change
    assert lab.probe(lab_cfg, "/healthz") == 200
    again = json.loads(run_cli(lab, "invalid-response").stdout)
    assert again["outcome"] == "nothing-to-do" and "answers valid HTTP now (200)" in again["message"]


def test_garbage_after_a_restart_is_refused_with_the_raw_excerpt(lab: Lab, lab_cfg: LabConfig) -> None:
    """A backend broken in itself still sends garbage after the restart: refused (exit 3), the bytes shown."""
    lab.reset()
    lab.break_("invalid-response", "empty", keep=True)
    (lab.dir / "app01" / "state" / "flaky_mode").write_text("garbage\n")  # broken from its start, too
    before = site_conf(lab).read_bytes()
    assert lab.probe(lab_cfg, "/healthz") == 502
    done = run_cli(lab, "invalid-response")
    assert done.returncode == EXIT_REFUSED, done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert report["outcome"] == "refused"
    assert "flaky still answers garbage after a restart" in report["message"]
    assert "garbage, not HTTP" in report["message"]
    assert site_conf(lab).read_bytes() == before


def test_private_ca_is_trusted_and_verification_stays_on(lab: Lab, lab_cfg: LabConfig) -> None:
    """TLS verify failure: the certificate's subject and issuer are shown; the inventory's CA is trusted; 200."""
    before = broken(lab, lab_cfg, "invalid-response", "tls", "/secure/")
    report = ran(lab, "invalid-response", EXIT_OK)
    backend = report["evidence"]["backend"]
    assert backend["tls_failure"] and backend["kind"] == "tls"
    assert backend["certificate"] == {"subject": "CN = app01.lab", "issuer": "CN = remediate lab internal-ca"}
    assert backend["trusted_error"] == "unable to get local issuer certificate"
    after = site_conf(lab).read_bytes()
    old_ca = f"proxy_ssl_trusted_certificate {lab.dir}/web01/nginx/ssl/public-ca.crt;".encode()
    new_ca = f"proxy_ssl_trusted_certificate {lab.dir}/pki/internal-ca.crt;  {MARKER}".encode()
    assert after == before.replace(old_ca, new_ca)
    assert b"proxy_ssl_verify on;" in after
    assert lab.probe(lab_cfg, "/secure/") == 200
    assert json.loads(run_cli(lab, "invalid-response").stdout)["outcome"] == "nothing-to-do"


def test_tls_without_a_ca_bundle_is_refused(lab: Lab, lab_cfg: LabConfig, tmp_path: Path) -> None:
    """No tls_ca_bundle in the inventory: refused (never verify off by itself), nothing changed."""
    lab.reset()
    lab.break_("invalid-response", "tls", keep=True)
    before = site_conf(lab).read_bytes()
    assert lab.probe(lab_cfg, "/secure/") == 502
    inventory = inventory_with(lab, tmp_path, "      tls_ca_bundle: ", "      unused_ca_bundle: ")
    report = run(inventory.host("web01"), "invalid-response", RunOptions(yes=True), inventory=inventory)
    assert report.outcome == "refused" and report.exit_code == EXIT_REFUSED
    assert "inventory names no tls_ca_bundle" in report.message and "--insecure-tls" in report.message
    assert site_conf(lab).read_bytes() == before
    # Only the explicit flag turns verification off, and it says so loudly.
    insecure = run(
        inventory.host("web01"), "invalid-response", RunOptions(yes=True, insecure_tls=True), inventory=inventory
    )
    assert insecure.outcome == "fixed", insecure.message
    assert "TEMPORARY WORKAROUND" in insecure.decision["reason"]
    assert site_conf(lab).read_bytes() == before.replace(
        b"        proxy_ssl_verify on;\n",
        f"        proxy_ssl_verify off;  {MARKER}: TEMPORARY, verification disabled by --insecure-tls; "
        f"trust the CA instead\n".encode(),
    )
    assert lab.probe(lab_cfg, "/secure/") == 200
