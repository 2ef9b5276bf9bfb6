"""The second lab kind: a stock Debian bookworm host, booted with systemd as PID 1.

The loopback lab proves the logic; this host is the reference. It is what people run:

* a root file system made by ``debootstrap`` from Debian's own packages (the mirror apt already
  uses): systemd, openssh-server, nginx 1.22, php8.2-fpm with its stock ``www`` pool, journald,
  and a small backend under its own systemd unit (``backend.service``, no ``Restart=``, as units
  people write usually are). Built once into a cache directory, rebuilt when missing or when its
  recipe changes (``RECIPE``);
* booted with ``systemd-nspawn -b`` on a throwaway overlay (``--volatile=overlay``), so every
  ``up`` starts from a stock host and nothing a test does reaches the cached tree. Machines here
  have no systemd as PID 1 and no D-Bus, so nspawn runs with ``--register=no --keep-unit
  --console=read-only``;
* in its own network namespace (``--network-veth``): the guest's default binds (nginx on :80,
  sshd on :22) never meet another lab's. The host side of the veth is configured here, by hand.
  Test traffic goes only to the guest's address inside that namespace.

Breaks are made the way they happen on such a host: ``systemctl kill -s KILL``, ``systemctl
stop``, pool edits followed by a restart, unit files, ``error_log syslog:``.

The lab drives the guest with ``nsenter`` into its namespaces (no SSH needed for the lab's own
work); remediate itself reaches it over SSH as a user would, with a key the lab makes at ``up``
and the host keys the image was built with.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from remediate.errors import LabError, UsageError
from remediate.lab import procs
from remediate.lab.breaks import Break

__all__ = ["CACHE", "PACKAGES", "REAL_BREAKS", "RealBreak", "RealHost", "RealHostConfig", "build_rootfs"]

#: Where the root file system is cached (outside any clone, so CI and later runs reuse it).
CACHE = Path(os.environ.get("REMEDIATE_ROOTFS_CACHE", "/var/cache/remediate/debian-bookworm"))

#: Debian's packages on the host, as a user installs them (``apt-get install nginx php8.2-fpm``).
PACKAGES = (
    "systemd",
    "systemd-sysv",
    "dbus",
    "openssh-server",
    "nginx",
    "php8.2-fpm",
    "python3",
    "python3-venv",  # a venv for remediate itself (the example units' /opt/remediate)
    "iproute2",
    "procps",
    "curl",
    "dnsutils",
    "sudo",
    "ca-certificates",
    "less",
    "dnsmasq-base",
)

_BACKEND = Path(__file__).with_name("backend.py")

# The site a Debian administrator writes for PHP and a few backends behind nginx: Debian's default
# server with PHP switched on (snippets/fastcgi-php.conf and the versioned socket, as the comments in
# Debian's own default site show), an API and a slow reports endpoint on a local backend, a health
# check on a second one, a name resolved at request time (/dyn/) and one resolved at start (/svc/).
_SITE = """\
server {
\tlisten 80 default_server;
\tlisten [::]:80 default_server;

\troot /var/www/html;
\tindex index.php index.html index.htm index.nginx-debian.html;

\tserver_name _;

\tlocation / {
\t\ttry_files $uri $uri/ =404;
\t}

\tlocation /api/ {
\t\tproxy_pass http://127.0.0.1:8001;
\t\tproxy_intercept_errors on;
\t\terror_page 404 =502 /50x.html;
\t}

\tlocation /reports/ {
\t\tproxy_pass http://127.0.0.1:8001;
\t\tproxy_read_timeout 3s;
\t}

\tlocation /hold/ {
\t\tproxy_pass http://127.0.0.1:8001;
\t\tproxy_read_timeout 15m;
\t}

\tlocation = /healthz {
\t\tproxy_pass http://127.0.0.1:9000;
\t}

\tlocation /secure/ {
\t\tproxy_pass https://127.0.0.1:8443;
\t\tproxy_ssl_verify on;
\t\tproxy_ssl_trusted_certificate /etc/lab-pki/public-ca.crt;
\t\tproxy_ssl_name app01.lab;
\t\tproxy_ssl_server_name on;
\t}

\tlocation /dyn/ {
\t\tresolver 127.0.0.2 valid=10s;
\t\tset $dyn app.internal;
\t\tproxy_pass http://$dyn:8001;
\t}

\tlocation /svc/ {
\t\tproxy_pass http://svc.internal:8001;
\t}

\tlocation = /50x.html {
\t\tinternal;
\t}

\tlocation ~ \\.php$ {
\t\tinclude snippets/fastcgi-php.conf;
\t\tfastcgi_pass unix:/run/php/php8.2-fpm.sock;
\t}
}
"""


def _unit(description: str, argv: str, *, after: str = "network.target", install: bool = True) -> str:
    return (
        f"[Unit]\nDescription={description}\nAfter={after}\n\n"
        f"[Service]\nExecStart={argv}\nStateDirectory=lab-backend\n"
        + ("\n[Install]\nWantedBy=multi-user.target\n" if install else "")
    )


_PY = "/usr/bin/python3 /usr/local/lib/lab-backend/backend.py serve --state /var/lib/lab-backend"
_DNS_UNIT = """\
[Unit]
Description=The site's internal DNS (dnsmasq on 127.0.0.2: *.internal)
Before=nginx.service
After=network.target

[Service]
Type=forking
PIDFile=/run/lab-dns.pid
ExecStart=/usr/sbin/dnsmasq --conf-file=/etc/lab-dns.conf --pid-file=/run/lab-dns.pid

[Install]
WantedBy=multi-user.target
"""
_DNS_CONF = """\
listen-address=127.0.0.2
bind-interfaces
no-resolv
no-hosts
addn-hosts=/etc/lab-dns.hosts
local=/internal/
user=nobody
"""

_PHP_INDEX = "<?php\nheader('Content-Type: text/plain');\necho \"php ok\\n\";\n"

#: Changes to the image that are not packages; part of the recipe, so editing them rebuilds.
_CUSTOM = {
    "etc/nginx/sites-available/default": _SITE,
    "etc/systemd/system/backend.service": _unit(
        "Example backend (the API nginx proxies /api/ to)", f"{_PY} --role app --name backend --listen 127.0.0.1:8001"
    ),
    "etc/systemd/system/flaky.service": _unit(
        "Health-check backend (/healthz)", f"{_PY} --role flaky --name flaky --listen 127.0.0.1:9000"
    ),
    "etc/systemd/system/tls.service": _unit(
        "HTTPS backend (/secure/), its certificate from /etc/lab-pki",
        f"{_PY} --role app --name tls --listen 127.0.0.1:8443 --pki /etc/lab-pki --tls",
    ),
    "etc/systemd/system/backend-blue.service": _unit(
        "svc.internal, blue", f"{_PY} --role app --name blue --listen 127.0.0.5:8001"
    ),
    "etc/systemd/system/backend-green.service": _unit(
        "svc.internal, green (started by a deploy)",
        f"{_PY} --role app --name green --listen 127.0.0.6:8001",
        install=False,
    ),
    "etc/systemd/system/lab-dns.service": _DNS_UNIT,
    "etc/lab-dns.conf": _DNS_CONF,
    "etc/lab-dns.hosts": "127.0.0.1 app.internal\n127.0.0.5 svc.internal\n",
    "etc/resolv.conf": "nameserver 127.0.0.2\n",
    "var/www/html/index.php": _PHP_INDEX,
    "var/www/html/50x.html": "<html><body><h1>Something went wrong.</h1></body></html>\n",
    "etc/hostname": "debian-web\n",
    "etc/hosts": "127.0.0.1\tlocalhost\n127.0.1.1\tdebian-web\n::1\tlocalhost ip6-localhost ip6-loopback\n",
}
_ENABLED = {
    f"etc/systemd/system/multi-user.target.wants/{unit}": f"/etc/systemd/system/{unit}"
    for unit in ("backend.service", "flaky.service", "tls.service", "backend-blue.service", "lab-dns.service")
}

RECIPE = hashlib.sha256(
    json.dumps(
        {"suite": "bookworm", "packages": PACKAGES, "custom": _CUSTOM, "enabled": _ENABLED, "v": 3},
        sort_keys=True,
    ).encode()
    + _BACKEND.read_bytes()
).hexdigest()[:16]

#: name → path the lab asks through nginx on the host; every one answers 200 when healthy.
PROBES: dict[str, str] = {
    "php": "/index.php",
    "api": "/api/users",
    "static": "/index.nginx-debian.html",
    "reports": "/reports/daily",
    "healthz": "/healthz",
    "dyn": "/dyn/",
    "svc": "/svc/",
    "secure": "/secure/",
}


def _mirror() -> str:
    """The Debian mirror apt on this machine already uses (deb822 or one-line sources)."""
    for path in [*sorted(Path("/etc/apt/sources.list.d").glob("*.sources")), Path("/etc/apt/sources.list")]:
        with contextlib.suppress(OSError):
            text = path.read_text()
            if m := re.search(r"^URIs:\s*(\S+/debian)/?\s*$", text, re.M):
                return m.group(1)
            if m := re.search(r"^deb\s+(?:\[[^]]*\]\s+)?(\S+/debian)/?\s+bookworm\b", text, re.M):
                return m.group(1)
    return "http://deb.debian.org/debian"


def _need(program: str, package: str) -> str:
    found = shutil.which(program)
    if not found:
        raise LabError(f"`{program}` is not installed; apt-get install {package} (scripts/setup.sh does)")
    return found


def build_rootfs(cache: Path = CACHE, *, log: Path | None = None, say: Any = print) -> Path:
    """The cached root file system, built when missing or when the recipe changed; returns its path."""
    rootfs = cache / "rootfs"
    stamp = cache / "recipe"
    if rootfs.is_dir() and stamp.is_file() and stamp.read_text().strip() == RECIPE:
        return rootfs
    debootstrap = _need("debootstrap", "debootstrap")
    cache.mkdir(parents=True, exist_ok=True)
    new = cache / "rootfs.new"
    shutil.rmtree(new, ignore_errors=True)
    log = log or cache / "build.log"
    say(f"building the Debian bookworm host in {rootfs} (once; a few minutes; log: {log})")
    started = time.monotonic()
    argv = [
        debootstrap,
        "--variant=minbase",
        "--include=" + ",".join(PACKAGES),
        "bookworm",
        str(new),
        _mirror(),
    ]
    with log.open("wb") as out:
        done = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, check=False)  # noqa: S603
    if done.returncode != 0:
        tail = log.read_text(errors="replace").strip().splitlines()[-3:]
        raise LabError(f"debootstrap failed ({done.returncode}): {' | '.join(tail)}; see {log}")
    for rel, text in _CUSTOM.items():
        path = new / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    for rel, target in _ENABLED.items():
        link = new / rel
        link.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            link.unlink()
        link.symlink_to(target)
    (new / "usr/local/lib/lab-backend").mkdir(parents=True, exist_ok=True)
    shutil.copy(_BACKEND, new / "usr/local/lib/lab-backend/backend.py")
    # apt's caches are not part of a stock host's state and only make the tree bigger.
    shutil.rmtree(new / "var/cache/apt/archives", ignore_errors=True)
    (new / "var/cache/apt/archives/partial").mkdir(parents=True, exist_ok=True)
    shutil.rmtree(rootfs, ignore_errors=True)
    new.rename(rootfs)
    stamp.write_text(RECIPE + "\n")
    say(f"built in {time.monotonic() - started:.0f}s")
    return rootfs


#: A break of the Debian host: the loopback lab's Break (what fails, what nginx answers, the signature, which
#: log shows it: "error", "access", or "journal"), made on the one host ("debian").
RealBreak = Break


def _brk(cause: str, variant: str, probe: str, status: int, signature: str, summary: str, log: str = "error") -> Break:
    return Break(cause, variant, probe, status, signature, log=log, summary=summary, where="debian")


_SOCK = r"connect\(\) to unix:/run/php/php8\.2-fpm\.sock failed"
_REFUSED = r"connect\(\) failed \(111: Connection refused\) while connecting to upstream"
REAL_BREAKS: tuple[RealBreak, ...] = (
    _brk(
        "socket",
        "killed",
        "php",
        502,
        _SOCK + r" \(111: Connection refused\)",
        "php-fpm's master SIGKILLed (systemctl kill -s KILL, as the OOM killer does): the socket file stays",
    ),
    _brk(
        "socket",
        "killed-journald",
        "php",
        502,
        _SOCK + r" \(111: Connection refused\)",
        "as killed, with nginx's error_log sent to journald (syslog:server=unix:/dev/log)",
        log="journal",
    ),
    _brk(
        "socket",
        "missing",
        "php",
        502,
        _SOCK + r" \(2: No such file or directory\)",
        "php8.2-fpm stopped (systemctl stop): the socket is gone",
    ),
    _brk(
        "socket",
        "permission",
        "php",
        502,
        _SOCK + r" \(13: Permission denied\)",
        "the www pool hands its socket to root:root (listen.owner/group), so www-data may not connect",
    ),
    _brk(
        "socket",
        "saturated",
        "php",
        502,
        _SOCK + r" \(11: Resource temporarily unavailable\)",
        "the www pool has pm = static, pm.max_children = 2, listen.backlog 8; slow requests hold every child"
        " and the queue",
    ),
    _brk(
        "down",
        "crash",
        "api",
        502,
        _REFUSED + r'.*upstream: "http://127\.0\.0\.1:8001',
        "backend.service SIGKILLed (systemctl kill -s KILL): the unit is failed, nothing on :8001",
    ),
    _brk(
        "proxy-pass",
        "port",
        "api",
        502,
        _REFUSED + r'.*upstream: "http://127\.0\.0\.1:8002',
        "location /api/ proxies to port 8002; the backend listens on 8001",
    ),
    _brk(
        "proxy-pass",
        "slash",
        "api",
        502,
        r'"GET /api/users HTTP/1\.1" 502',
        "proxy_pass has a trailing slash: /api/users reaches the backend as /users (404, shown as 502)",
        log="access",
    ),
    _brk(
        "dns",
        "no-resolver",
        "dyn",
        502,
        r"no resolver defined to resolve app\.internal",
        "location /dyn/ proxies to a variable but its resolver line is gone",
    ),
    _brk(
        "dns",
        "nxdomain",
        "dyn",
        502,
        r"ghost\.internal could not be resolved \(3: Host not found\)",
        "location /dyn/ names ghost.internal, which the site's DNS does not know",
    ),
    _brk(
        "dns",
        "stale",
        "svc",
        502,
        _REFUSED + r'.*upstream: "http://127\.0\.0\.5:8001',
        "svc.internal moved to 127.0.0.6 (a deploy); nginx still uses 127.0.0.5, resolved at start, now stopped",
    ),
    _brk(
        "timeout",
        "read",
        "reports",
        504,
        r"upstream timed out \(110: Connection timed out\) while reading response header",
        "the backend now takes 6 s for /reports/; the location's proxy_read_timeout is 3s",
    ),
    _brk(
        "invalid-response",
        "empty",
        "healthz",
        502,
        r"upstream prematurely closed connection while reading response header",
        "flaky.service (on :9000) accepts and closes without a byte (SIGUSR1)",
    ),
    _brk(
        "invalid-response",
        "tls",
        "secure",
        502,
        r"upstream SSL certificate verify error",
        "tls.service now presents a certificate from the internal CA, which nginx does not trust",
    ),
    _brk(
        "workers",
        "load",
        "api",
        500,  # one proxy_pass address: ngx_http_upstream_connect fails outright (the lab's pool says 502)
        r"worker_connections are not enough",
        "worker_connections 32 in nginx.conf, and a load holds every slot",
    ),
)
CAUSES = tuple(dict.fromkeys(b.cause for b in REAL_BREAKS))


def find_real_break(cause: str, variant: str | None) -> RealBreak:
    matches = [b for b in REAL_BREAKS if b.cause == cause and (variant is None or b.variant == variant)]
    if not matches:
        known = ", ".join(f"{b.cause}/{b.variant}" for b in REAL_BREAKS)
        raise UsageError(f"the Debian host has no break {cause}/{variant or '*'} (it has: {known})")
    return matches[0]


@dataclass
class RealHostConfig:
    dir: str
    name: str = "rmd-deb"  # the machine's name; the host side of the veth is ve-<name>
    subnet: int = 1  # the veth pair's /30: 10.231.<subnet>.0
    nspawn_pid: int = 0
    leader_pid: int = 0
    load_pid: int = 0
    broken: list[str] = field(default_factory=list)

    @property
    def guest_address(self) -> str:
        return f"10.231.{self.subnet}.2"

    @property
    def host_address(self) -> str:
        return f"10.231.{self.subnet}.1"

    @property
    def veth(self) -> str:
        return ("ve-" + self.name)[:15]


class RealHost:
    """One Debian host under systemd: up, run in it, break, status, down."""

    hostname = "debian-web"

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.dir = Path(directory).resolve()
        self.state_file = self.dir / "realhost.json"

    # -- state ---------------------------------------------------------------------

    def load(self) -> RealHostConfig:
        try:
            return RealHostConfig(**json.loads(self.state_file.read_text()))
        except FileNotFoundError:
            raise LabError(f"no Debian host is up in {self.dir}; run `remediate lab up --os debian`") from None

    def save(self, cfg: RealHostConfig) -> None:
        self.state_file.write_text(json.dumps(asdict(cfg), indent=2) + "\n")

    @property
    def inventory(self) -> Path:
        return self.dir / "inventory.yml"

    @property
    def key(self) -> Path:
        return self.dir / "id_ed25519"

    # -- life cycle ----------------------------------------------------------------

    def up(self, *, subnet: int = 1, name: str = "rmd-deb", say: Any = print, timeout: float = 90.0) -> RealHostConfig:
        if os.geteuid() != 0:
            raise LabError("the Debian host needs root (systemd-nspawn, a network namespace)")
        nspawn = _need("systemd-nspawn", "systemd-container")
        with contextlib.suppress(LabError):
            if procs.alive(self.load().nspawn_pid):
                raise LabError(f"a Debian host is already up in {self.dir}; `remediate lab down --os debian` first")
        rootfs = build_rootfs(say=say)
        self.dir.mkdir(parents=True, exist_ok=True)
        cfg = RealHostConfig(dir=str(self.dir), name=name, subnet=subnet)
        self._write_access(rootfs)
        argv = [
            nspawn,
            "--boot",
            f"--directory={rootfs}",
            "--volatile=overlay",
            "--register=no",
            "--keep-unit",
            "--console=read-only",
            f"--machine={name}",
            "--network-veth",
            "--resolv-conf=off",  # the image's own resolv.conf: the site's resolver, as on the host it stands for
            f"--bind-ro={self.dir / 'authorized_keys'}:/root/.ssh/authorized_keys",
            f"--bind-ro={self.dir / 'pki'}:/etc/lab-pki",  # made at each up: never stale, never in the image
        ]
        log = self.dir / "console.log"
        log.write_bytes(b"")
        cfg.nspawn_pid = procs.spawn(self.dir, argv, log, before_exec=_entering(_own_cgroups(name)))
        self.save(cfg)
        try:
            cfg.leader_pid = self._leader(cfg, log, timeout)
            self.save(cfg)
            self._network(cfg)
            self._wait_booted(cfg, log, timeout)
            self._write_inventory(cfg)
            self.wait_healthy(cfg)
        except BaseException:
            self.down()
            raise
        return cfg

    def down(self) -> None:
        try:
            cfg = self.load()
        except LabError:
            return
        procs.send(cfg.load_pid, signal.SIGTERM)
        if procs.alive(cfg.nspawn_pid):
            # nspawn turns SIGTERM into an orderly poweroff of the guest's systemd.
            with contextlib.suppress(ProcessLookupError):
                os.kill(cfg.nspawn_pid, signal.SIGTERM)
            deadline = time.monotonic() + 20
            while procs.alive(cfg.nspawn_pid) and time.monotonic() < deadline:
                time.sleep(0.1)
            if procs.alive(cfg.nspawn_pid):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(cfg.nspawn_pid, signal.SIGKILL)
                    os.kill(cfg.nspawn_pid, signal.SIGKILL)
        with contextlib.suppress(FileNotFoundError):
            self.state_file.unlink()
        for group in _own_cgroups(cfg.name, create=False):
            _remove_cgroup(group)

    def _leader(self, cfg: RealHostConfig, log: Path, timeout: float) -> int:
        """The guest's PID 1 (systemd), as this machine's pid: nspawn's descendant named systemd."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not procs.alive(cfg.nspawn_pid):
                raise LabError(f"systemd-nspawn exited while booting: {self._tail(log)}")
            todo = [cfg.nspawn_pid]
            while todo:
                pid = todo.pop()
                for child in procs.children(pid):
                    with contextlib.suppress(OSError):
                        if Path(f"/proc/{child}/comm").read_text().strip() == "systemd":
                            return child
                    todo.append(child)
            time.sleep(0.05)
        raise LabError(f"the guest's systemd did not start within {timeout:g}s: {self._tail(log)}")

    def _network(self, cfg: RealHostConfig) -> None:
        """Address both ends of the veth pair: this side by hand, the guest's host0 from inside."""
        ip = _need("ip", "iproute2")
        deadline = time.monotonic() + 10
        while not Path(f"/sys/class/net/{cfg.veth}").exists():
            if time.monotonic() > deadline:
                raise LabError(f"nspawn made no {cfg.veth} interface")
            time.sleep(0.05)
        for argv in (
            [ip, "addr", "replace", f"{cfg.host_address}/30", "dev", cfg.veth],
            [ip, "link", "set", cfg.veth, "up"],
        ):
            _run(argv)
        self.sh(cfg, ["ip", "addr", "replace", f"{cfg.guest_address}/30", "dev", "host0"])
        self.sh(cfg, ["ip", "link", "set", "host0", "up"])

    def _wait_booted(self, cfg: RealHostConfig, log: Path, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        state = ""
        while time.monotonic() < deadline:
            if not procs.alive(cfg.nspawn_pid):
                raise LabError(f"systemd-nspawn exited while booting: {self._tail(log)}")
            res = self.sh(cfg, ["systemctl", "is-system-running"], check=False)
            state = res.stdout.strip()
            if state in ("running", "degraded"):
                break
            time.sleep(0.2)
        else:
            raise LabError(f"the guest did not finish booting within {timeout:g}s (systemd says {state!r})")
        if state == "degraded":
            failed = self.sh(cfg, ["systemctl", "--failed", "--plain", "--no-legend"], check=False).stdout.strip()
            raise LabError(f"the guest booted degraded; failed units: {failed}")
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                socket.create_connection((cfg.guest_address, 22), timeout=1).close()
                return
            time.sleep(0.1)
        raise LabError(f"sshd on {cfg.guest_address}:22 does not answer")

    @staticmethod
    def _tail(log: Path) -> str:
        lines = [ln for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
        return " | ".join(lines[-3:])

    def _write_access(self, rootfs: Path) -> None:
        """A fresh key for this boot, and known_hosts from the image's host keys (verified, never trusted)."""
        for path in (self.key, self.key.with_suffix(".pub")):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        _run(
            [
                _need("ssh-keygen", "openssh-client"),
                "-q",
                "-t",
                "ed25519",
                "-N",
                "",
                "-C",
                "remediate-lab",
                "-f",
                str(self.key),
            ]
        )
        # TLS: a "public" CA nginx trusts, an "internal" one it does not (the tls break switches to it).
        from remediate.lab import pki

        shutil.rmtree(self.dir / "pki", ignore_errors=True)
        (self.dir / "pki").mkdir(mode=0o755)
        for ca_name in ("public-ca", "internal-ca"):
            ca = pki.make_ca(self.dir / "pki", ca_name)
            pki.make_leaf(self.dir / "pki", f"app01-{ca_name.removesuffix('-ca')}", ca, "app01.lab", "127.0.0.1")
        auth = self.dir / "authorized_keys"
        auth.write_text(self.key.with_suffix(".pub").read_text())
        auth.chmod(0o600)
        self._host_keys = [
            (rootfs / "etc/ssh" / n).read_text().split()[:2]
            for n in ("ssh_host_ed25519_key.pub", "ssh_host_rsa_key.pub", "ssh_host_ecdsa_key.pub")
            if (rootfs / "etc/ssh" / n).exists()
        ]

    def _write_inventory(self, cfg: RealHostConfig) -> None:
        known = self.dir / "known_hosts"
        known.write_text("".join(f"{cfg.guest_address} {kind} {b64}\n" for kind, b64 in self._host_keys))
        # What a user writes for such a host: its address, how to log in, what may be restarted.
        self.inventory.write_text(
            "# The Debian host of `remediate lab up --os debian`: only what a user knows about it.\n"
            "all:\n"
            "  hosts:\n"
            f"    {self.hostname}:\n"
            f"      ansible_host: {cfg.guest_address}\n"
            "      ansible_user: root\n"
            f"      ansible_ssh_private_key_file: {self.key}\n"
            f"      known_hosts: {known}\n"
            "      restartable_services: [php8.2-fpm, nginx, backend, flaky]\n"
        )

    # -- inside the guest ----------------------------------------------------------

    def sh(
        self,
        cfg: RealHostConfig,
        argv: list[str],
        *,
        check: bool = True,
        stdin: bytes | None = None,
        timeout: float = 60,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` inside the guest (all its namespaces), as root."""
        nsenter = _need("nsenter", "util-linux")
        full = [nsenter, "-t", str(cfg.leader_pid), "-m", "-u", "-i", "-n", "-p", "--", *argv]
        try:
            done = subprocess.run(  # noqa: S603 - argv list, no shell
                full,
                input=stdin.decode() if stdin else None,
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise LabError(f"`{' '.join(argv)}` in the guest ran longer than {timeout:g}s") from None
        if check and done.returncode != 0:
            raise LabError(f"`{' '.join(argv)}` in the guest exited {done.returncode}: {done.stderr.strip()[-300:]}")
        return done

    def read(self, cfg: RealHostConfig, path: str) -> bytes:
        return (Path(f"/proc/{cfg.leader_pid}/root") / path.lstrip("/")).read_bytes()

    def write(self, cfg: RealHostConfig, path: str, data: str) -> None:
        self.sh(cfg, ["tee", path], stdin=data.encode())

    def probe(self, cfg: RealHostConfig, path: str, timeout: float = 8.0) -> int | str:
        from remediate.lab.probes import probe

        return probe(cfg.guest_address, 80, path, self.hostname, timeout)

    def status(self, cfg: RealHostConfig | None = None) -> dict[str, int | str]:
        cfg = cfg or self.load()
        return {name: self.probe(cfg, path) for name, path in PROBES.items()}

    def wait_healthy(self, cfg: RealHostConfig | None = None, timeout: float = 30.0) -> None:
        cfg = cfg or self.load()
        deadline = time.monotonic() + timeout
        bad: dict[str, int | str] = {}
        while time.monotonic() < deadline:
            bad = {k: v for k, v in self.status(cfg).items() if v != 200}
            if not bad:
                return
            time.sleep(0.2)
        raise LabError(f"the Debian host is not healthy after {timeout:g}s: {bad}")

    # -- breaks --------------------------------------------------------------------

    def _log_text(self, cfg: RealHostConfig, which: str) -> str:
        if which == "journal":
            return self.sh(cfg, ["journalctl", "-q", "--no-pager", "-o", "cat", "-u", "nginx.service"]).stdout
        with contextlib.suppress(OSError):
            return self.read(cfg, f"/var/log/nginx/{which}.log").decode(errors="replace")
        return ""

    def break_(self, cause: str, variant: str | None = None) -> RealBreak:
        """Make one break the way it happens on such a host; returns it once nginx answers as it says."""
        cfg = self.load()
        brk = find_real_break(cause, variant)
        before = len(self._log_text(cfg, brk.log))
        getattr(self, "_break_" + f"{brk.cause}_{brk.variant}".replace("-", "_"))(cfg)
        cfg.broken.append(f"{brk.cause}/{brk.variant}")
        self.save(cfg)
        deadline = time.monotonic() + 20
        status: int | str = ""
        while time.monotonic() < deadline:
            status = self.probe(cfg, PROBES[brk.probe])
            if status == brk.status and re.search(brk.signature, self._log_text(cfg, brk.log)[before:]):
                return brk
            time.sleep(0.2)
        raise LabError(f"break {brk.cause}/{brk.variant} did not take: {brk.probe} answers {status}")

    def _break_socket_killed(self, cfg: RealHostConfig) -> None:
        # systemd 252 may report EIO for workers that died with their master; the probe says if it took.
        self.sh(cfg, ["systemctl", "kill", "--signal=KILL", "php8.2-fpm"], check=False)

    def _break_socket_missing(self, cfg: RealHostConfig) -> None:
        self.sh(cfg, ["systemctl", "stop", "php8.2-fpm"])

    def _break_socket_permission(self, cfg: RealHostConfig) -> None:
        pool = "/etc/php/8.2/fpm/pool.d/www.conf"
        text = self.read(cfg, pool).decode()
        text = re.sub(r"(?m)^listen\.owner = .*$", "listen.owner = root", text)
        text = re.sub(r"(?m)^listen\.group = .*$", "listen.group = root", text)
        self.write(cfg, pool, text)
        self.sh(cfg, ["systemctl", "restart", "php8.2-fpm"])

    def _edit(self, cfg: RealHostConfig, path: str, old: str, new: str) -> None:
        text = self.read(cfg, path).decode()
        if old not in text:
            raise LabError(f"{path} has no {old!r} to change")
        self.write(cfg, path, text.replace(old, new, 1))

    def _reload_nginx(self, cfg: RealHostConfig) -> None:
        self.sh(cfg, ["systemctl", "reload", "nginx"])
        time.sleep(0.3)  # the new workers take over

    def _break_socket_killed_journald(self, cfg: RealHostConfig) -> None:
        self._edit(cfg, "/etc/nginx/nginx.conf", "error_log /var/log/nginx/error.log;",
                   "error_log syslog:server=unix:/dev/log;")  # fmt: skip
        self._reload_nginx(cfg)
        self._break_socket_killed(cfg)

    def _site(self, cfg: RealHostConfig, old: str, new: str) -> None:
        self._edit(cfg, "/etc/nginx/sites-available/default", old, new)
        self._reload_nginx(cfg)

    def _break_proxy_pass_port(self, cfg: RealHostConfig) -> None:
        self._site(
            cfg,
            "\tlocation /api/ {\n\t\tproxy_pass http://127.0.0.1:8001;",
            "\tlocation /api/ {\n\t\tproxy_pass http://127.0.0.1:8002;",
        )

    def _break_proxy_pass_slash(self, cfg: RealHostConfig) -> None:
        self._site(
            cfg,
            "\tlocation /api/ {\n\t\tproxy_pass http://127.0.0.1:8001;",
            "\tlocation /api/ {\n\t\tproxy_pass http://127.0.0.1:8001/;",
        )

    def _break_dns_no_resolver(self, cfg: RealHostConfig) -> None:
        self._site(cfg, "\t\tresolver 127.0.0.2 valid=10s;\n", "")

    def _break_dns_nxdomain(self, cfg: RealHostConfig) -> None:
        self._site(cfg, "set $dyn app.internal;", "set $dyn ghost.internal;")

    def _break_dns_stale(self, cfg: RealHostConfig) -> None:
        self.write(cfg, "/etc/lab-dns.hosts", "127.0.0.1 app.internal\n127.0.0.6 svc.internal\n")
        self.sh(cfg, ["systemctl", "restart", "lab-dns"])
        self.sh(cfg, ["systemctl", "start", "backend-green"])
        self.sh(cfg, ["systemctl", "stop", "backend-blue"])

    def _break_timeout_read(self, cfg: RealHostConfig) -> None:
        self.write(cfg, "/var/lib/lab-backend/reports_delay", "6\n")

    def _break_invalid_response_empty(self, cfg: RealHostConfig) -> None:
        self.sh(cfg, ["systemctl", "kill", "--signal=USR1", "flaky"])

    def _break_invalid_response_tls(self, cfg: RealHostConfig) -> None:
        self.write(cfg, "/var/lib/lab-backend/tls_issuer", "internal\n")
        self.sh(cfg, ["systemctl", "restart", "tls"])
        time.sleep(0.5)

    def _break_workers_load(self, cfg: RealHostConfig) -> None:
        self._edit(cfg, "/etc/nginx/nginx.conf", "worker_connections 768;", "worker_connections 32;")
        self._reload_nginx(cfg)
        status = self.dir / "load.status"
        status.unlink(missing_ok=True)
        argv = [sys.executable, "-m", "remediate.lab.backend", "load", "--target", f"{cfg.guest_address}:80",
                "--probe", PROBES["api"], "--status", str(status), "--max-conns", "256",
                "--duration", "600"]  # fmt: skip
        cfg.load_pid = procs.spawn(self.dir, argv, self.dir / "load.log")
        self.save(cfg)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if status.exists() and '"holding"' in status.read_text():
                return
            if not procs.alive(cfg.load_pid):
                raise LabError(f"the load generator died; see {self.dir / 'load.log'}")
            time.sleep(0.2)
        raise LabError("the load generator did not reach its level within 120s")

    def _break_socket_saturated(self, cfg: RealHostConfig) -> None:
        pool = "/etc/php/8.2/fpm/pool.d/www.conf"
        text = self.read(cfg, pool).decode()
        text = re.sub(r"(?m)^pm = .*$", "pm = static", text)
        text = re.sub(r"(?m)^pm\.max_children = .*$", "pm.max_children = 2", text)
        text = re.sub(r"(?m)^;?listen\.backlog = .*$", "listen.backlog = 8", text)
        self.write(cfg, pool, text)
        self.write(cfg, "/var/www/html/slow.php", '<?php\nsleep(20);\necho "slow\\n";\n')
        self.sh(cfg, ["systemctl", "restart", "php8.2-fpm"])
        # 16 slow requests: 2 children busy, 8 waiting in the queue, the rest refused with EAGAIN. Each
        # thread ends by itself within 30 s.
        import threading

        for _ in range(16):
            threading.Thread(target=self.probe, args=(cfg, "/slow.php", 30.0), daemon=True).start()
        time.sleep(1.0)

    def _break_down_crash(self, cfg: RealHostConfig) -> None:
        self.sh(cfg, ["systemctl", "kill", "--signal=KILL", "backend"], check=False)


# -- cgroups --------------------------------------------------------------------------
#
# With --keep-unit and no systemd on this machine, nspawn puts the guest's systemd under the
# caller's own cgroup ("…/payload"). Two guests started from the same cgroup would then share one
# tree, and each guest's systemd would manage (and kill) the other's services. Each guest gets a
# cgroup of its own, in every hierarchy systemd uses (name=systemd v1, and the unified v2 one).


def _own_cgroups(name: str, create: bool = True) -> list[Path]:
    found = []
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            fields = line.split()
            sep = fields.index("-")
            kind, options = fields[sep + 1], fields[sep + 3] if len(fields) > sep + 3 else ""
            if kind == "cgroup2" or (kind == "cgroup" and "name=systemd" in options.split(",")):
                found.append(Path(fields[4]) / "remediate-lab" / name)
    groups = []
    for group in found:
        if create:
            try:
                group.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise LabError(f"cannot make the guest's cgroup {group}: {exc.strerror}") from None
        if group.is_dir():
            groups.append(group)
    return groups


def _remove_cgroup(group: Path) -> None:
    """Remove a cgroup and everything the guest's systemd made under it (deepest first); leave busy ones."""
    for sub in sorted((p for p in group.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
        with contextlib.suppress(OSError):
            sub.rmdir()
    with contextlib.suppress(OSError):
        group.rmdir()


def _entering(groups: list[Path]) -> Callable[[], None]:
    """What the child does before it execs nspawn: move itself into ``groups``."""

    def enter() -> None:
        for group in groups:
            (group / "cgroup.procs").write_text(str(os.getpid()))

    return enter


def _run(argv: list[str]) -> None:
    done = subprocess.run(argv, capture_output=True, text=True, check=False)  # noqa: S603 - argv list
    if done.returncode != 0:
        raise LabError(f"`{' '.join(argv)}` exited {done.returncode}: {done.stderr.strip()[-300:]}")
