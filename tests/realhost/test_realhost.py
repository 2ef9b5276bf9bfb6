"""remediate against a stock Debian bookworm host booted with systemd as PID 1 (the reference).

Each test boots its own host from the cached root file system on a throwaway overlay, so every
test starts from a stock server: Debian's nginx, php8.2-fpm with its www pool, journald, sshd,
and a backend under its own unit. The inventory names only what a user knows (address, user,
key, restartable_services): no probe_urls, no services, no pools.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import ROOT
from support.lab import make_lab_dir, remediate_cli

from remediate.lab.realbreaks import PROBES, REAL_BREAKS, RealBreak
from remediate.lab.realhost import RealHost, RealHostConfig

pytestmark = [pytest.mark.realhost, pytest.mark.usefixtures("state_dir")]


@pytest.fixture
def debian() -> Iterator[tuple[RealHost, RealHostConfig]]:
    if not shutil.which("systemd-nspawn") or not shutil.which("debootstrap"):
        pytest.fail("the real-host tests need systemd-container and debootstrap (scripts/setup.sh)", pytrace=False)
    directory = make_lab_dir("remediate-test-debian-")
    host = RealHost(directory)
    # Named and addressed by this process, so a second test run (or `lab up --os debian`) never collides.
    cfg = host.up(subnet=2 + os.getpid() % 240, name=f"rmd-t{os.getpid() % 100000}", say=lambda *_: None)
    try:
        yield host, cfg
    finally:
        host.down()
        shutil.rmtree(directory, ignore_errors=True)


def _run(host: RealHost, *args: str, **kwargs: object) -> tuple[int, dict[str, object]]:
    done = remediate_cli(*args, "-i", str(host.inventory), "--host", RealHost.hostname, "--json", **kwargs)
    assert done.stdout.strip(), done.stderr
    return done.returncode, json.loads(done.stdout)


def test_stock_host_answers_and_auto_has_nothing_to_do(debian: tuple[RealHost, RealHostConfig]) -> None:
    """A healthy stock host: every probe 200, and `run --cause auto` says nothing-to-do with exit 0 (not refused)."""
    host, cfg = debian
    assert host.status(cfg) == {name: 200 for name in PROBES}
    code, report = _run(host, "run", "--cause", "auto", "--yes")
    assert (code, report["outcome"]) == (0, "nothing-to-do"), report["message"]


#: Breaks remediate must refuse, and the words of the real reason.
REFUSED = {
    ("dns", "nxdomain"): "ghost.internal",
    # No tls_ca_bundle in the inventory: remediate will not guess whom to trust (see the test below).
    ("invalid-response", "tls"): "issued by CN = remediate lab internal-ca",
}


@pytest.mark.parametrize("brk", REAL_BREAKS, ids=lambda b: f"{b.cause}-{b.variant}")
def test_each_break_is_fixed_by_one_auto_run(debian: tuple[RealHost, RealHostConfig], brk: RealBreak) -> None:
    """Each break, made as it happens on a systemd host, is fixed by one `run --cause auto --yes` (or refused
    with the real reason); "fixed" only after the failing request itself was replayed through nginx."""
    host, cfg = debian
    host.break_(brk.cause, brk.variant)  # it returns once nginx answered brk.status and logged the signature
    if brk.cause != "workers":  # (under load, a request now and then finds a free slot in the other worker)
        assert host.probe(cfg, PROBES[brk.probe]) == brk.status
    code, report = _run(host, "run", "--cause", "auto", "--yes")
    if (brk.cause, brk.variant) in REFUSED:
        assert (code, report["outcome"]) == (3, "refused"), report["message"]
        assert REFUSED[brk.cause, brk.variant] in str(report["message"])
        assert f"the diagnosis is {brk.cause}" in str(report["message"])
        return
    assert (code, report["outcome"], report["cause"]) == (0, "fixed", brk.cause), report["message"]
    probe = next(s for s in report["steps"] if s["step"] == "probe")  # type: ignore[attr-defined]
    assert re.search(rf"GET http://[^ ]+{re.escape(PROBES[brk.probe])}( \(Host: [^)]+\))? -> 200", probe["detail"])
    assert host.status(cfg) == {name: 200 for name in PROBES}
    code, again = _run(host, "run", "--cause", brk.cause, "--yes")
    assert (code, again["outcome"]) == (0, "nothing-to-do"), again["message"]


def test_killed_php_fpm_master_is_named_and_restarted(debian: tuple[RealHost, RealHostConfig]) -> None:
    """A SIGKILLed php-fpm master leaves its socket file: diagnose names socket from a connect, not a stat."""
    host, cfg = debian
    host.break_("socket", "killed")
    assert host.read(cfg, "/proc/1/comm")  # the guest is up
    done = remediate_cli("diagnose", "-i", str(host.inventory), "--host", RealHost.hostname, "--json")
    diagnosis = json.loads(done.stdout)
    assert diagnosis["verdict"] == "socket", diagnosis["reason"]
    code, report = _run(host, "run", "--cause", "socket", "--yes")
    assert report["decision"]["name"] == "socket-dead"  # type: ignore[index]
    assert "111: Connection refused" in report["decision"]["reason"]  # type: ignore[index]
    assert code == 0


def test_stopped_backend_unit_is_found_from_systemd(debian: tuple[RealHost, RealHostConfig]) -> None:
    """No `services:` in the inventory: the failed unit whose command line names the port is found and said so."""
    host, _cfg = debian
    host.break_("down", "crash")
    code, report = _run(host, "run", "--cause", "down", "--check")
    assert code == 0
    reason = report["decision"]["reason"]  # type: ignore[index]
    assert "backend.service is failed" in reason and "names port 8001" in reason


def test_nothing_replayable_is_applied_unverified_not_fixed(debian: tuple[RealHost, RealHostConfig]) -> None:
    """When no failing request can be replayed (only a POST failed) and no probe_urls exist, the outcome is
    applied-unverified with exit 7, never fixed."""
    host, cfg = debian
    host.sh(cfg, ["systemctl", "kill", "--signal=KILL", "php8.2-fpm"], check=False)
    time.sleep(0.5)
    conn = http.client.HTTPConnection(cfg.guest_address, 80, timeout=5)
    conn.request("POST", "/index.php", body=b"x=1", headers={"Host": RealHost.hostname})
    assert conn.getresponse().status == 502
    conn.close()
    code, report = _run(host, "run", "--cause", "socket", "--yes")
    assert (code, report["outcome"]) == (7, "applied-unverified"), report["message"]
    assert "NOT VERIFIED" in str(report["message"])
    assert not any(s["step"] == "probe" for s in report["steps"])  # type: ignore[attr-defined]


def test_harden_restart_policy_drop_in_on_real_host(debian: tuple[RealHost, RealHostConfig]) -> None:
    """`harden --fix upstream-service-no-restart` writes a drop-in into a directory a stock host lacks; the
    killed php-fpm then comes back by itself; rolling back removes the file and the directory it made."""
    host, cfg = debian
    drop_in = "/etc/systemd/system/php8.2-fpm.service.d"
    assert host.sh(cfg, ["test", "-e", drop_in], check=False).returncode == 1
    code, answer = _run(host, "harden", "--fix", "upstream-service-no-restart", "--yes")
    report = answer["runs"][0]  # type: ignore[index]
    assert (code, report["outcome"]) == (0, "fixed"), report.get("message")
    shown = host.sh(cfg, ["systemctl", "show", "-p", "Restart", "php8.2-fpm"]).stdout.strip()
    assert shown == "Restart=on-failure"
    host.sh(cfg, ["systemctl", "kill", "--signal=KILL", "php8.2-fpm"], check=False)
    deadline = time.monotonic() + 20
    while host.probe(cfg, PROBES["php"]) != 200:
        assert time.monotonic() < deadline, "php-fpm did not come back by itself"
        time.sleep(0.2)
    done = remediate_cli("rollback", "-i", str(host.inventory), "--host", RealHost.hostname, str(report["run_id"]))
    assert done.returncode == 0, done.stderr
    assert host.sh(cfg, ["test", "-e", drop_in], check=False).returncode == 1, "rollback left the drop-in directory"


def test_default_key_without_key_file_var(debian: tuple[RealHost, RealHostConfig], tmp_path: Path) -> None:
    """An inventory with no ansible_ssh_private_key_file uses ~/.ssh/id_* (the documented default), no TypeError."""
    host, _cfg = debian
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    shutil.copy(host.key, home / ".ssh" / "id_ed25519")
    (home / ".ssh" / "id_ed25519").chmod(0o600)
    inventory = tmp_path / "inventory.yml"
    text = host.inventory.read_text()
    inventory.write_text("\n".join(ln for ln in text.splitlines() if "private_key_file" not in ln) + "\n")
    env = {**os.environ, "HOME": str(home), "SSH_AUTH_SOCK": ""}
    done = remediate_cli("diagnose", "-i", str(inventory), "--host", RealHost.hostname, "--json", env=env)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["verdict"] == "unknown"


SHOP_POOL = """\
[shop]
user = www-data
group = www-data
listen = /run/php/shop.sock
listen.owner = www-data
listen.group = www-data
pm = ondemand
pm.max_children = 2
"""
# A site laid out unlike the lab's: an upstream block whose server is a socket, directives split over
# lines, and Debian's alternatives symlink /run/php/php-fpm.sock instead of the versioned socket.
SHOP_SITE = """\
upstream shop_php {
\tserver
\t\tunix:/run/php/shop.sock;
}
server {
\tlisten 8080;
\tserver_name shop;
\troot /var/www/html;
\tlocation ~ \\.php$ {
\t\tinclude snippets/fastcgi-php.conf;
\t\tfastcgi_pass
\t\t\tshop_php;
\t}
\tlocation /alt/ {
\t\tinclude fastcgi_params;
\t\tfastcgi_param SCRIPT_FILENAME /var/www/html/index.php;
\t\tfastcgi_pass unix:/run/php/php-fpm.sock;
\t}
}
"""


def _get(cfg: RealHostConfig, port: int, path: str, host: str) -> int | str:
    """The status nginx answers, or the error's name (a reload opens a new listen a moment later)."""
    conn = http.client.HTTPConnection(cfg.guest_address, port, timeout=5)
    try:
        conn.request("GET", path, headers={"Host": host})
        return conn.getresponse().status
    except OSError as exc:
        return type(exc).__name__
    finally:
        conn.close()


def test_pools_from_php_fpm_conf_and_sockets_from_the_config_model(debian: tuple[RealHost, RealHostConfig]) -> None:
    """A second pool found through php-fpm.conf's include= (nothing in the inventory), a socket named by an
    upstream block split over lines, and Debian's php-fpm.sock alternatives symlink: all found, all fixed."""
    host, cfg = debian
    host.write(cfg, "/etc/php/8.2/fpm/pool.d/shop.conf", SHOP_POOL)
    host.write(cfg, "/etc/nginx/conf.d/shop.conf", SHOP_SITE)
    host.sh(cfg, ["systemctl", "restart", "php8.2-fpm"])
    host.sh(cfg, ["systemctl", "reload", "nginx"])
    deadline = time.monotonic() + 10
    while (_get(cfg, 8080, "/index.php", "shop"), _get(cfg, 8080, "/alt/", "shop")) != (200, 200):
        assert time.monotonic() < deadline, "the shop site did not come up"
        time.sleep(0.2)
    host.sh(cfg, ["systemctl", "stop", "php8.2-fpm"])
    assert (_get(cfg, 8080, "/index.php", "shop"), _get(cfg, 8080, "/alt/", "shop")) == (502, 502)
    code, check = _run(host, "run", "--cause", "socket", "--check")
    evidence = check["evidence"]["sockets"]  # type: ignore[index]
    pools = {s["path"]: (s["pool"] or {}).get("name") for s in evidence["all"]}
    assert pools["/run/php/shop.sock"] == "shop"
    assert pools["/run/php/php-fpm.sock"] == "www"  # through the alternatives symlink
    assert "pool.d/shop.conf" in evidence["pool_files"]
    code, report = _run(host, "run", "--cause", "auto", "--yes")
    assert (code, report["outcome"]) == (0, "fixed"), report["message"]
    probe = next(s for s in report["steps"] if s["step"] == "probe")  # type: ignore[attr-defined]
    assert ":8080/index.php (Host: shop) -> 200" in probe["detail"]
    assert (_get(cfg, 8080, "/index.php", "shop"), _get(cfg, 8080, "/alt/", "shop")) == (200, 200)


def _inventory_with(host: RealHost, tmp_path: Path, *lines: str, drop: tuple[str, ...] = ()) -> Path:
    """The lab's inventory for the Debian host, some of its vars dropped and others added."""
    kept = [ln for ln in host.inventory.read_text().splitlines() if not any(f"{d}:" in ln for d in drop)]
    path = tmp_path / "inventory.yml"
    path.write_text("\n".join(kept + [f"      {line}" for line in lines]) + "\n")
    return path


def test_through_a_bastion_with_proxyjump_and_proxycommand(
    debian: tuple[RealHost, RealHostConfig], tmp_path: Path
) -> None:
    """ansible_ssh_common_args as Ansible users write them: -o ProxyJump= and -o ProxyCommand= reach a host
    that is only reachable from the bastion (here the guest's own 127.0.0.1:22, seen from the guest), host keys
    checked at each hop."""
    host, cfg = debian
    known = tmp_path / "known_hosts"
    keys = (host.dir / "known_hosts").read_text()
    known.write_text(keys + keys.replace(cfg.guest_address, "127.0.0.1"))  # the target, as the bastion reaches it
    common = [f"known_hosts: {known}", "ansible_host: 127.0.0.1"]
    jump = _inventory_with(
        host, tmp_path, *common, f"ansible_ssh_common_args: '-o ProxyJump=root@{cfg.guest_address}'",
        drop=("known_hosts", "ansible_host"),
    )  # fmt: skip
    done = remediate_cli("diagnose", "-i", str(jump), "--host", RealHost.hostname, "--json")
    assert done.returncode == 0, done.stderr
    direct = _inventory_with(host, tmp_path, *common, drop=("known_hosts", "ansible_host"))
    done = remediate_cli("diagnose", "-i", str(direct), "--host", RealHost.hostname)
    assert done.returncode == 6 and "127.0.0.1:22" in done.stderr  # nothing there without the bastion
    proxy = (
        f"ssh -i {host.key} -o UserKnownHostsFile={host.dir / 'known_hosts'} -o BatchMode=yes"
        f" -W %h:%p root@{cfg.guest_address}"
    )
    command = _inventory_with(
        host, tmp_path, *common, f'ansible_ssh_extra_args: "-o ProxyCommand=\'{proxy}\'"',
        drop=("known_hosts", "ansible_host"),
    )  # fmt: skip
    done = remediate_cli("diagnose", "-i", str(command), "--host", RealHost.hostname, "--json")
    assert done.returncode == 0, done.stderr


def test_ssh_args_that_weaken_host_keys_are_refused(debian: tuple[RealHost, RealHostConfig], tmp_path: Path) -> None:
    """-o StrictHostKeyChecking=no in ansible_ssh_common_args is refused in one line (exit 5), never obeyed."""
    host, _ = debian
    inventory = _inventory_with(host, tmp_path, "ansible_ssh_common_args: '-o StrictHostKeyChecking=no'")
    done = remediate_cli("diagnose", "-i", str(inventory), "--host", RealHost.hostname)
    assert done.returncode == 5
    assert "StrictHostKeyChecking is refused" in done.stderr and "Traceback" not in done.stderr


def test_a_user_without_become_is_told_to_set_it(debian: tuple[RealHost, RealHostConfig], tmp_path: Path) -> None:
    """A non-root login that may not read nginx's logs gets a one-line hint naming ansible_become, not a traceback."""
    host, cfg = debian
    host.sh(cfg, ["useradd", "-m", "-s", "/bin/bash", "deploy"])
    host.sh(cfg, ["install", "-d", "-o", "deploy", "-m", "700", "/home/deploy/.ssh"])
    host.write(cfg, "/home/deploy/.ssh/authorized_keys", (host.dir / "authorized_keys").read_text())
    host.sh(cfg, ["chown", "deploy", "/home/deploy/.ssh/authorized_keys"])
    inventory = _inventory_with(
        host, tmp_path, "ansible_user: deploy", "journal_dir: /home/deploy/remediate", drop=("ansible_user",)
    )
    done = remediate_cli("diagnose", "-i", str(inventory), "--host", RealHost.hostname)
    assert done.returncode == 1, done.stdout
    assert "ansible_become: true" in done.stderr and "Traceback" not in done.stderr


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """remediate's own wheel, built from this tree (what `pip install remediate` installs)."""
    import subprocess
    import sys

    out = tmp_path_factory.mktemp("wheel")
    root = ROOT
    argv = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), str(root)]
    subprocess.run(argv, check=True, capture_output=True, timeout=300)
    return next(out.glob("remediate-*.whl"))


@pytest.mark.parametrize("unit", ["remediate-serve.service", "remediate-worker.service"])
def test_example_units_pass_systemd_analyze_verify(
    debian: tuple[RealHost, RealHostConfig], wheel: Path, unit: str
) -> None:
    """examples/*.service, installed as the README says (a venv in /opt/remediate, a system user, secrets
    in /etc/remediate), pass `systemd-analyze verify` on the real host, and systemd rates their exposure OK."""
    host, cfg = debian
    root = Path(f"/proc/{cfg.leader_pid}/root")
    shutil.copy(wheel, root / "tmp" / wheel.name)
    host.sh(cfg, ["python3", "-m", "venv", "/opt/remediate"], timeout=120)  # pip from ensurepip: no network
    # --no-deps: the guest has no network; `systemd-analyze verify` needs the real console script, not its imports
    host.sh(cfg, ["/opt/remediate/bin/pip", "install", "-q", "--no-index", "--no-deps", f"/tmp/{wheel.name}"],
            timeout=120)  # fmt: skip
    host.sh(cfg, ["useradd", "--system", "--home-dir", "/var/lib/remediate", "--shell", "/usr/sbin/nologin",
                  "remediate"])  # fmt: skip
    host.sh(cfg, ["install", "-d", "-m", "0700", "/etc/remediate"])
    for name in ("slack.secret", "slack.token", "am.token", "api.token", "id_ed25519", "pgpass"):
        host.write(cfg, f"/etc/remediate/{name}", "not-a-real-secret\n")
        host.sh(cfg, ["chmod", "0600", f"/etc/remediate/{name}"])
    text = (ROOT / "examples" / unit).read_text()
    host.write(cfg, f"/etc/systemd/system/{unit}", text)
    done = host.sh(cfg, ["systemd-analyze", "verify", f"/etc/systemd/system/{unit}"], check=False)
    assert done.returncode == 0, done.stderr
    assert unit not in done.stderr, done.stderr  # no warning about our unit (other units' are not ours)
    score = host.sh(cfg, ["systemd-analyze", "security", "--no-pager", unit], check=False).stdout
    exposure = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", score)
    assert exposure and float(exposure.group(1)) < 3.0, score[-400:]  # systemd calls < 3.0 "OK"


def test_a_unit_that_cannot_start_is_reported_at_once(debian: tuple[RealHost, RealHostConfig]) -> None:
    """The backend crashed and now fails at start (a bad deploy): systemd says failed within a second, so the
    run stops waiting and says so with the unit's own log, instead of waiting out restart_wait."""
    host, cfg = debian
    host.break_("down", "crash")
    host.write(cfg, "/var/lib/lab-backend/crash_on_start", "backend\n")
    code, report = _run(host, "run", "--cause", "auto", "--yes")
    assert code != 0 and report["outcome"] in ("failed", "rolled-back"), report["message"]
    message = str(report["message"])
    assert "backend failed to start" in message and "FATAL: cannot load configuration" in message


def test_a_private_ca_backend_is_trusted_with_the_inventorys_bundle(
    debian: tuple[RealHost, RealHostConfig], tmp_path: Path
) -> None:
    """The backend's certificate now comes from the internal CA: with tls_ca_bundle naming that CA on the host,
    nginx is made to trust it (proxy_ssl_verify stays on) and /secure/ answers again."""
    host, cfg = debian
    host.break_("invalid-response", "tls")
    inventory = _inventory_with(host, tmp_path, "tls_ca_bundle: /etc/lab-pki/internal-ca.crt")
    done = remediate_cli("run", "-i", str(inventory), "--host", RealHost.hostname, "--cause", "auto", "--yes")
    assert done.returncode == 0, done.stdout + done.stderr
    assert host.probe(cfg, PROBES["secure"]) == 200
    site = host.read(cfg, "/etc/nginx/sites-available/default").decode()
    assert "proxy_ssl_verify on;" in site and "/etc/lab-pki/internal-ca.crt" in site


def test_a_new_log_file_is_owned_like_debians_logs(debian: tuple[RealHost, RealHostConfig]) -> None:
    """`harden --fix no-upstream-timing-log` adds a log beside access.log: it is made www-data:adm 0640 like
    Debian's own logs (nginx would create it root:root 0644), and nginx writes to it after the reload."""
    host, cfg = debian
    code, answer = _run(host, "harden", "--fix", "no-upstream-timing-log", "--yes")
    report = answer["runs"][0]  # type: ignore[index]
    assert (code, report["outcome"]) == (0, "fixed"), report.get("message")
    shown = host.sh(cfg, ["stat", "-c", "%U:%G %a", "/var/log/nginx/upstream_timing.log"]).stdout.split()
    assert shown == ["www-data:adm", "640"]
    assert host.probe(cfg, PROBES["api"]) == 200
    deadline = time.monotonic() + 5
    while b"upstream" not in host.read(cfg, "/var/log/nginx/upstream_timing.log") and time.monotonic() < deadline:
        time.sleep(0.1)
    assert b"127.0.0.1:8001" in host.read(cfg, "/var/log/nginx/upstream_timing.log")


def test_an_openssh_config_is_honoured_when_the_inventory_says_so(
    debian: tuple[RealHost, RealHostConfig], tmp_path: Path
) -> None:
    """`ssh_config: FILE`: the host's alias, HostName, User and IdentityFile come from an OpenSSH client config,
    as `ssh debian-alias` would read them; without the var the alias means nothing (the inventory is the truth)."""
    host, cfg = debian
    config = tmp_path / "ssh_config"
    config.write_text(f"Host debian-alias\n  HostName {cfg.guest_address}\n  User root\n  IdentityFile {host.key}\n")
    inventory = _inventory_with(
        host, tmp_path, "ansible_host: debian-alias", f"ssh_config: {config}",
        drop=("ansible_host", "ansible_user", "ansible_ssh_private_key_file"),
    )  # fmt: skip
    env = {**os.environ, "SSH_AUTH_SOCK": "", "HOME": str(tmp_path)}  # no agent, no ~/.ssh keys: only the config
    done = remediate_cli("diagnose", "-i", str(inventory), "--host", RealHost.hostname, "--json", env=env)
    assert done.returncode == 0, done.stderr
    without = _inventory_with(
        host,
        tmp_path,
        "ansible_host: debian-alias",
        drop=("ansible_host", "ansible_user", "ansible_ssh_private_key_file"),
    )
    done = remediate_cli("diagnose", "-i", str(without), "--host", RealHost.hostname, env=env)
    assert done.returncode == 6, done.stderr


def test_one_break_after_another_each_fixed_by_one_auto_run(debian: tuple[RealHost, RealHostConfig]) -> None:
    """Five incidents in a row on one host, the older ones' lines still in the window: each is fixed by one
    auto run. (Two defects this found: a stopped unit bound to another address was taken as a port's owner,
    and an older refused line hid a slash 502 that only the access log shows.)"""
    host, cfg = debian
    for cause, variant in (("dns", "stale"), ("proxy-pass", "port"), ("down", "crash"), ("socket", "killed"),
                           ("proxy-pass", "slash")):  # fmt: skip
        host.break_(cause, variant)
        code, report = _run(host, "run", "--cause", "auto", "--yes")
        assert (code, report["outcome"], report["cause"]) == (0, "fixed", cause), report["message"]
    assert host.status(cfg) == {name: 200 for name in PROBES}
