"""--check, for every cause and variant remediate fixes: it shows the plan and writes nothing on the host."""

from __future__ import annotations

import hashlib

import pytest
from support.lab import remediate_cli

from remediate.errors import EXIT_OK
from remediate.lab.core import PROBES, Lab, LabConfig, find_break

CASES = [
    ("socket", "missing", "then: restart php-fpm"),
    ("socket", "permission", "+listen.owner = www-data"),
    ("down", "crash", "then: restart app on app01"),
    ("proxy-pass", "port", "+        proxy_pass http://"),
    ("proxy-pass", "slash", "/api/;"),
    ("timeout", "read", "+    location /reports/ {"),
    ("dns", "no-resolver", "+    resolver "),
    ("dns", "stale", "+        proxy_pass http://$remediate_svc_lab:"),
    ("invalid-response", "empty", "then: restart flaky on app01"),
    ("invalid-response", "tls", "+        proxy_ssl_trusted_certificate "),
    ("workers", "load", "+worker_rlimit_nofile "),
]


def _checksums(lab: Lab) -> dict[str, str]:
    out = {}
    for root in (lab.dir / "web01" / "nginx", lab.dir / "web01" / "php", lab.dir / "web01" / "journal"):
        for path in sorted(root.rglob("*")):
            if path.is_file() and "logs" not in path.parts and "log" not in path.parts and "run" not in path.parts:
                out[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


pytestmark = pytest.mark.usefixtures("state_dir")


@pytest.mark.parametrize(("cause", "variant", "shown"), CASES, ids=[f"{c}-{v}" for c, v, _ in CASES])
def test_check_shows_the_plan_and_writes_nothing(
    lab: Lab, lab_cfg: LabConfig, cause: str, variant: str, shown: str
) -> None:
    """--check prints the diff or action, exits 0, leaves every file's checksum as it was, and fixes nothing."""
    lab.reset()
    spec = lab.break_(cause, variant, keep=True)
    probe = PROBES[find_break(cause, variant).probe]
    assert lab.probe(lab_cfg, probe) == spec.status  # the failing traffic that writes nginx's log line
    before = _checksums(lab)
    done = remediate_cli("run", "-i", str(lab.inventory), "--host", "web01", "--cause", cause, "--check")
    assert done.returncode == EXIT_OK, done.stdout + done.stderr
    assert shown in done.stdout
    assert "planned: --check: nothing was written" in done.stdout
    assert _checksums(lab) == before
    assert lab.probe(lab_cfg, probe) == spec.status
