"""The Debian host's breaks: the table (what fails, what nginx answers, the log line that shows it) and
how each is made, the way it happens on such a host (systemctl kill, a stopped unit, an edited file)."""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from remediate.errors import LabError, UsageError
from remediate.lab import procs
from remediate.lab.breaks import Break


class GuestConfig(Protocol):
    """What a break needs of the host's state (remediate.lab.realhost.RealHostConfig is one)."""

    load_pid: int

    @property
    def guest_address(self) -> str: ...


class Guest(Protocol):
    """What a break needs of the host (remediate.lab.realhost.RealHost is one)."""

    dir: Path

    def sh(self, cfg: Any, argv: list[str], *, check: bool = True) -> Any: ...

    def read(self, cfg: Any, path: str) -> bytes: ...

    def write(self, cfg: Any, path: str, data: str) -> None: ...

    def probe(self, cfg: Any, path: str, timeout: float = 8.0) -> int | str: ...

    def save(self, cfg: Any) -> None: ...


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


# -- how each break is made ------------------------------------------------------


def _socket_killed(guest: Guest, cfg: GuestConfig) -> None:
    # systemd 252 may report EIO for workers that died with their master; the probe says if it took.
    guest.sh(cfg, ["systemctl", "kill", "--signal=KILL", "php8.2-fpm"], check=False)


def _socket_missing(guest: Guest, cfg: GuestConfig) -> None:
    guest.sh(cfg, ["systemctl", "stop", "php8.2-fpm"])


def _socket_permission(guest: Guest, cfg: GuestConfig) -> None:
    pool = "/etc/php/8.2/fpm/pool.d/www.conf"
    text = guest.read(cfg, pool).decode()
    text = re.sub(r"(?m)^listen\.owner = .*$", "listen.owner = root", text)
    text = re.sub(r"(?m)^listen\.group = .*$", "listen.group = root", text)
    guest.write(cfg, pool, text)
    guest.sh(cfg, ["systemctl", "restart", "php8.2-fpm"])


def _edit(guest: Guest, cfg: GuestConfig, path: str, old: str, new: str) -> None:
    text = guest.read(cfg, path).decode()
    if old not in text:
        raise LabError(f"{path} has no {old!r} to change")
    guest.write(cfg, path, text.replace(old, new, 1))


def _reload_nginx(guest: Guest, cfg: GuestConfig) -> None:
    guest.sh(cfg, ["systemctl", "reload", "nginx"])
    time.sleep(0.3)  # the new workers take over


def _socket_killed_journald(guest: Guest, cfg: GuestConfig) -> None:
    _edit(guest, cfg, "/etc/nginx/nginx.conf", "error_log /var/log/nginx/error.log;",
               "error_log syslog:server=unix:/dev/log;")  # fmt: skip
    _reload_nginx(guest, cfg)
    _socket_killed(guest, cfg)


def _site(guest: Guest, cfg: GuestConfig, old: str, new: str) -> None:
    _edit(guest, cfg, "/etc/nginx/sites-available/default", old, new)
    _reload_nginx(guest, cfg)


def _proxy_pass_port(guest: Guest, cfg: GuestConfig) -> None:
    _site(
        guest,
        cfg,
        "\tlocation /api/ {\n\t\tproxy_pass http://127.0.0.1:8001;",
        "\tlocation /api/ {\n\t\tproxy_pass http://127.0.0.1:8002;",
    )


def _proxy_pass_slash(guest: Guest, cfg: GuestConfig) -> None:
    _site(
        guest,
        cfg,
        "\tlocation /api/ {\n\t\tproxy_pass http://127.0.0.1:8001;",
        "\tlocation /api/ {\n\t\tproxy_pass http://127.0.0.1:8001/;",
    )


def _dns_no_resolver(guest: Guest, cfg: GuestConfig) -> None:
    _site(guest, cfg, "\t\tresolver 127.0.0.2 valid=10s;\n", "")


def _dns_nxdomain(guest: Guest, cfg: GuestConfig) -> None:
    _site(guest, cfg, "set $dyn app.internal;", "set $dyn ghost.internal;")


def _dns_stale(guest: Guest, cfg: GuestConfig) -> None:
    guest.write(cfg, "/etc/lab-dns.hosts", "127.0.0.1 app.internal\n127.0.0.6 svc.internal\n")
    guest.sh(cfg, ["systemctl", "restart", "lab-dns"])
    guest.sh(cfg, ["systemctl", "start", "backend-green"])
    guest.sh(cfg, ["systemctl", "stop", "backend-blue"])


def _timeout_read(guest: Guest, cfg: GuestConfig) -> None:
    guest.write(cfg, "/var/lib/lab-backend/reports_delay", "6\n")


def _invalid_response_empty(guest: Guest, cfg: GuestConfig) -> None:
    guest.sh(cfg, ["systemctl", "kill", "--signal=USR1", "flaky"])


def _invalid_response_tls(guest: Guest, cfg: GuestConfig) -> None:
    guest.write(cfg, "/var/lib/lab-backend/tls_issuer", "internal\n")
    guest.sh(cfg, ["systemctl", "restart", "tls"])
    time.sleep(0.5)


def _workers_load(guest: Guest, cfg: GuestConfig) -> None:
    _edit(guest, cfg, "/etc/nginx/nginx.conf", "worker_connections 768;", "worker_connections 32;")
    _reload_nginx(guest, cfg)
    status = guest.dir / "load.status"
    status.unlink(missing_ok=True)
    argv = [sys.executable, "-m", "remediate.lab.backend", "load", "--target", f"{cfg.guest_address}:80",
            "--probe", PROBES["api"], "--status", str(status), "--max-conns", "256",
            "--duration", "600"]  # fmt: skip
    cfg.load_pid = procs.spawn(guest.dir, argv, guest.dir / "load.log")
    guest.save(cfg)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if status.exists() and '"holding"' in status.read_text():
            return
        if not procs.alive(cfg.load_pid):
            raise LabError(f"the load generator died; see {guest.dir / 'load.log'}")
        time.sleep(0.2)
    raise LabError("the load generator did not reach its level within 120s")


def _socket_saturated(guest: Guest, cfg: GuestConfig) -> None:
    pool = "/etc/php/8.2/fpm/pool.d/www.conf"
    text = guest.read(cfg, pool).decode()
    text = re.sub(r"(?m)^pm = .*$", "pm = static", text)
    text = re.sub(r"(?m)^pm\.max_children = .*$", "pm.max_children = 2", text)
    text = re.sub(r"(?m)^;?listen\.backlog = .*$", "listen.backlog = 8", text)
    guest.write(cfg, pool, text)
    guest.write(cfg, "/var/www/html/slow.php", '<?php\nsleep(20);\necho "slow\\n";\n')
    guest.sh(cfg, ["systemctl", "restart", "php8.2-fpm"])
    # 16 slow requests: 2 children busy, 8 waiting in the queue, the rest refused with EAGAIN. Each
    # thread ends by itself within 30 s.
    import threading

    for _ in range(16):
        threading.Thread(target=guest.probe, args=(cfg, "/slow.php", 30.0), daemon=True).start()
    time.sleep(1.0)


def _down_crash(guest: Guest, cfg: GuestConfig) -> None:
    guest.sh(cfg, ["systemctl", "kill", "--signal=KILL", "backend"], check=False)


#: (cause, variant) → how it is made.
MAKERS: dict[tuple[str, str], Callable[[Guest, GuestConfig], None]] = {
    (b.cause, b.variant): globals()["_" + f"{b.cause}_{b.variant}".replace("-", "_")] for b in REAL_BREAKS
}


def make(guest: Guest, cfg: GuestConfig, brk: RealBreak) -> None:
    """Make ``brk`` on ``guest``; the caller waits for nginx to answer as the break says."""
    MAKERS[(brk.cause, brk.variant)](guest, cfg)


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
