"""`remediate harden --host` and `--fix` on the real lab: before and after, nginx -t, the lab still answers 200,
and a second fix run finds nothing to do. Also `--limit` on the fleet lab, and `harden_skip` in the inventory."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.lab import FLEET_SIZE, inventory_with, remediate_cli

from remediate import harden
from remediate.errors import EXIT_OK, EXIT_REFUSED, EXIT_USAGE
from remediate.lab.core import PROBES, Lab, LabConfig

pytestmark = pytest.mark.lab
SERVICES = "upstream-service-no-restart"

#: Weaknesses the lab's baseline does not have, added for the fixes to find: an upstream of two servers on
#: nginx's defaults, and a server that passes to a variable with no resolver (on a port of its own).
EXTRA = """\
upstream harden_pair {{
    server {app}:{port};
    server {app}:{spare};
}}
server {{
    listen {web}:{other};
    location / {{
        proxy_pass http://$arg_backend;
    }}
}}
"""


def _harden(lab: Lab, *args: str, inventory: Path | None = None) -> subprocess.CompletedProcess[str]:
    return remediate_cli("harden", "-i", str(inventory or lab.inventory), *args)


def _findings(lab: Lab, inventory: Path | None = None) -> dict[str, list[dict[str, Any]]]:
    done = _harden(lab, "--host", "web01", "--json", inventory=inventory)
    assert done.returncode in (EXIT_OK, EXIT_REFUSED), done.stderr
    by_rule: dict[str, list[dict[str, Any]]] = {}
    for f in json.loads(done.stdout)["findings"]:
        by_rule.setdefault(f["rule"], []).append(f)
    return by_rule


def _fixable(by_rule: dict[str, list[dict[str, Any]]], rule: str) -> list[dict[str, Any]]:
    """The rule's findings a fix has a target for (a lone upstream server, say, is only noted)."""
    return [f for f in by_rule.get(rule, []) if f["at"]]


def _nginx_files(lab: Lab) -> dict[str, tuple[bytes, int]]:
    root = lab.dir / "web01" / "nginx"
    return {
        str(p): (p.read_bytes(), p.stat().st_mode)
        for p in sorted(root.rglob("*"))
        if p.is_file() and "logs" not in p.parts and p.suffix != ".pid"
    }


def _all_200(lab: Lab, cfg: LabConfig) -> dict[str, int | str]:
    return {name: lab.probe(cfg, path) for name, path in PROBES.items()}


def _nginx_t(lab: Lab, cfg: LabConfig) -> subprocess.CompletedProcess[str]:
    """nginx -t on web01's config, in web01's own namespace (its names resolve through the lab's DNS)."""
    web = cfg.web(1)
    enter = ["unshare", "--mount", "--propagation", "private", "--", "sh", f"{web.root}/bin/enter"]
    argv = [*enter, "/usr/sbin/nginx", "-t", "-p", web.nginx, "-c", f"{web.nginx}/nginx.conf"]
    return subprocess.run(argv, capture_output=True, text=True, check=False)


@pytest.fixture
def weak_lab(lab: Lab, lab_cfg: LabConfig) -> Iterator[Lab]:
    """The lab with every fixable weakness: the baseline's, the EXTRA file, and a low worker_rlimit_nofile."""
    lab.reset()
    nginx = lab.dir / "web01" / "nginx"
    extra = nginx / "conf.d" / "harden-extra.conf"
    app = lab_cfg.app()
    extra.write_text(EXTRA.format(app=app.addr, port=lab_cfg.app_port, spare=lab_cfg.app_port + 2,
                                  web=lab_cfg.web(1).addr, other=8099))  # fmt: skip
    main = nginx / "nginx.conf"
    main.write_text(main.read_text().replace("events {", "worker_rlimit_nofile 100;\n\nevents {", 1))
    lab.reload_nginx(lab_cfg)
    try:
        yield lab
    finally:
        extra.unlink(missing_ok=True)
        lab.reset()


def test_harden_a_live_host_fix_every_fixable_rule_and_find_nothing_the_second_time(
    weak_lab: Lab, lab_cfg: LabConfig
) -> None:
    """Acceptance: each fixable rule is found on the lab (file:line on the host), `--fix R --check` writes
    nothing, `--fix R --yes` fixes it through the guarded run (nginx -t passes, every lab URL still 200),
    harden no longer finds R, and a second `--fix R --yes` is nothing-to-do."""
    lab = weak_lab
    before = _findings(lab)
    for rule in harden.FIXABLE:
        assert _fixable(before, rule), (rule, sorted(before))
    assert before["variable-pass-without-resolver"][0]["file"].endswith("conf.d/harden-extra.conf")
    assert "upstream-service-no-restart" in before, "app01's programs have autorestart=false"
    assert _all_200(lab, lab_cfg) == dict.fromkeys(PROBES, 200)

    for rule in [r for r in harden.FIXABLE if r != SERVICES]:  # SERVICES changes app01: its own test
        files = _nginx_files(lab)
        checked = _harden(lab, "--host", "web01", "--fix", rule, "--check")
        assert checked.returncode == EXIT_OK and "+++ b/" in checked.stdout, checked.stdout + checked.stderr
        assert f"{rule}: planned" in checked.stdout and _nginx_files(lab) == files, rule

        fixed = _harden(lab, "--host", "web01", "--fix", rule, "--yes")
        assert fixed.returncode == EXIT_OK and f"{rule}: fixed" in fixed.stdout, fixed.stdout + fixed.stderr
        assert _nginx_t(lab, lab_cfg).returncode == 0
        assert _all_200(lab, lab_cfg) == dict.fromkeys(PROBES, 200), rule
        assert _fixable(_findings(lab), rule) == [], rule

        again = _harden(lab, "--host", "web01", "--fix", rule, "--yes")
        assert again.returncode == EXIT_OK and f"{rule}: nothing-to-do" in again.stdout, again.stdout
    after = _findings(lab)
    assert all(_fixable(after, rule) == [] for rule in harden.FIXABLE if rule != SERVICES), after
    assert [f["severity"] for f in after.get("upstream-no-passive-health", [])] == ["info"], "the lone app_pool server"
    assert "# managed by remediate" in (lab.dir / "web01" / "nginx" / "nginx.conf").read_text()


def test_the_restart_policy_fix_changes_the_backend_hosts_and_holds(lab: Lab, lab_cfg: LabConfig) -> None:
    """upstream-service-no-restart: app01's programs and web01's php-fpm get autorestart = true, each host in
    its own guarded transaction (--check writes nothing on either); supervisord runs with it (the app, killed,
    comes back by itself); the lab answers 200; a second run is nothing-to-do."""
    lab.reset()
    hosts = {name: lab_cfg.host(name) for name in ("app01", "web01")}
    confs = {name: Path(h.supervisor_conf) for name, h in hosts.items()}
    saved = {name: path.read_bytes() for name, path in confs.items()}
    try:
        checked = _harden(lab, "--host", "web01", "--fix", SERVICES, "--check")
        assert checked.returncode == EXIT_OK and f"+++ app01:{confs['app01']}" in checked.stdout, checked.stdout
        assert "then: restart app on app01: supervisorctl" in checked.stdout
        assert {name: path.read_bytes() for name, path in confs.items()} == saved

        fixed = _harden(lab, "--host", "web01", "--fix", SERVICES, "--yes")
        assert fixed.returncode == EXIT_OK and f"{SERVICES}: fixed" in fixed.stdout, fixed.stdout + fixed.stderr
        assert confs["app01"].read_text().count("autorestart = true") == 3  # app, tls, flaky: behind nginx
        assert "[program:php-fpm]\n" in confs["web01"].read_text() and _fixable(_findings(lab), SERVICES) == []
        assert _all_200(lab, lab_cfg) == dict.fromkeys(PROBES, 200)

        app = hosts["app01"]
        pid = int(app.ctl("pid", "app").strip())
        os.kill(pid, signal.SIGKILL)  # a crash: supervisord now starts it again
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and app.ctl("pid", "app", check=False).strip() in ("0", str(pid), ""):
            time.sleep(0.2)
        assert app.ctl("pid", "app").strip() not in ("0", str(pid))
        again = _harden(lab, "--host", "web01", "--fix", SERVICES, "--yes")
        assert again.returncode == EXIT_OK and f"{SERVICES}: nothing-to-do" in again.stdout, again.stdout
    finally:
        for name, path in confs.items():
            path.write_bytes(saved[name])
            hosts[name].ctl("update", check=False)  # supervisord back to the lab's own settings
        lab.reset()


def test_harden_json_sarif_and_exit_codes_on_a_host(lab: Lab, lab_cfg: LabConfig) -> None:
    lab.reset()
    done = _harden(lab, "--host", "web01", "--json")
    data = json.loads(done.stdout)
    assert done.returncode == EXIT_REFUSED and data["host"] == "web01" and data["facts"]["nofile"] > 0
    assert data["round_trips"] >= 2  # nginx's host, then the hosts behind it (and nginx's master's limits)
    assert _harden(lab, "--host", "web01", "--fail-on", "error").returncode == EXIT_OK
    sarif = json.loads(_harden(lab, "--host", "web01", "--sarif").stdout)
    assert sarif["version"] == "2.1.0" and sarif["runs"][0]["results"]


def test_harden_skip_in_the_inventory_switches_a_rule_off(lab: Lab, tmp_path: Path) -> None:
    lab.reset()
    assert "no-custom-502-page" in _findings(lab)
    inventory_with(
        lab, tmp_path, "    web01:\n", "    web01:\n      harden_skip: [no-custom-502-page, no-stub-status]\n"
    )
    skipped = _findings(lab, inventory=tmp_path / "inventory.yml")
    assert "no-custom-502-page" not in skipped and "hostname-without-resolver" in skipped
    inventory_with(lab, tmp_path, "    web01:\n", "    web01:\n      harden_skip: [no-such-rule]\n")
    done = _harden(lab, "--host", "web01", inventory=tmp_path / "inventory.yml")
    assert done.returncode == 5 and "harden_skip names no rule 'no-such-rule'" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["--host", "web01", "--fix", "global-timeout-raised", "--check"], "no automatic fix"),
        (["--host", "web01", "--check"], "--check and --yes go with --fix RULE"),
        (["--file", "/etc/nginx/nginx.conf", "--fix", "worker-sizing", "--yes"], "give --host NAME or --limit"),
    ],
)
def test_fix_usage_errors_are_one_line(lab: Lab, argv: list[str], says: str) -> None:
    done = _harden(lab, *argv)
    assert done.returncode == EXIT_USAGE and says in done.stderr and len(done.stderr.strip().splitlines()) == 1


def test_harden_a_fleet(fleet_lab: Lab) -> None:
    """--limit web: every web host audited (a line per host and a summary); --json one object per host."""
    done = _harden(fleet_lab, "--limit", "web", "--json", "--forks", "10")
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.strip()]
    hosts = [line for line in lines if "host" in line]
    assert len(hosts) == FLEET_SIZE and {h["outcome"] for h in hosts} == {"findings"}, lines[-1]
    assert lines[-1]["summary"]["hosts"] == FLEET_SIZE and done.returncode == EXIT_REFUSED
