"""The table of breaks: each runbook cause the lab can reproduce, and how it is put in place.

A break is data first (which probe fails, what nginx answers, the log line that proves it) and
then one function that makes it so. Breaks of a web host's own files or processes (``where ==
"web"``) apply to each web host asked for; the others change app01 or the DNS, which every web host
shares, so they apply once and show on every web host.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from remediate.errors import LabError, UsageError
from remediate.lab import files, procs
from remediate.lab.probes import PROBES
from remediate.lab.webhost import WebHost, each


class Lab(Protocol):
    """What a break needs of the lab (remediate.lab.core.Lab is one): a load generator it remembers."""

    def start_load(self, web: WebHost, argv: list[str], log: Path) -> int: ...


__all__ = ["BREAKS", "CAUSES", "Break", "apply", "find_break"]


@dataclass(frozen=True)
class Break:
    cause: str
    variant: str
    probe: str  # which probe now fails
    status: int  # what nginx answers
    signature: str  # regex over the new error-log text ("" = none: see log)
    log: str = "error"  # which nginx log holds the signature
    summary: str = ""
    where: str = "web"  # "web": each web host in the limit; "app01": app01 or the DNS, so every web host


BREAKS: tuple[Break, ...] = (
    Break(
        "down",
        "crash",
        "app",
        502,
        r"connect\(\) failed \(111: Connection refused\) while connecting to upstream",
        summary="app01's app crashed (SIGKILL); supervisor shows it EXITED",
        where="app01",
    ),
    Break(
        "proxy-pass",
        "port",
        "api",
        502,
        r"connect\(\) failed \(111: Connection refused\) while connecting to upstream.*upstream: \"http://[0-9.]+:8081",
        summary="location /api/ proxies to port 8081; the app listens on 8080",
    ),
    Break(
        "proxy-pass",
        "slash",
        "api",
        502,
        r"\"GET /api/users HTTP/1\.1\" 502",
        log="access",
        summary="proxy_pass has a trailing slash: /api/users reaches the app as /users (404, shown as 502)",
    ),
    Break(
        "dns",
        "no-resolver",
        "dyn",
        502,
        r"no resolver defined to resolve app01\.lab",
        summary="location /dyn/ proxies to a variable but has no resolver",
    ),
    Break(
        "dns",
        "stale",
        "svc",
        502,
        r"connect\(\) failed \(111: Connection refused\) while connecting to upstream.*upstream: \"http://[0-9.]+\.5:",
        summary="svc.lab moved to .6; nginx still uses the .5 it resolved at start",
        where="app01",
    ),
    Break(
        "dns",
        "nxdomain",
        "dyn",
        502,
        r"ghost\.lab could not be resolved \(3: Host not found\)",
        summary="location /dyn/ proxies to ghost.lab, a name the lab's DNS does not know",
    ),
    Break(
        "timeout",
        "read",
        "reports",
        504,
        r"upstream timed out \(110: Connection timed out\) while reading response header from upstream",
        summary="/reports/ now takes 4s; proxy_read_timeout is 2s",
        where="app01",
    ),
    Break(
        "invalid-response",
        "empty",
        "healthz",
        502,
        r"upstream prematurely closed connection while reading response header from upstream",
        summary="the flaky backend accepts and closes without a byte",
        where="app01",
    ),
    Break(
        "invalid-response",
        "tls",
        "secure",
        502,
        r"upstream SSL certificate verify error",
        summary="the TLS backend's certificate is now from the internal CA nginx does not trust",
        where="app01",
    ),
    Break(
        "socket",
        "missing",
        "php",
        502,
        r"\[crit\].*connect\(\) to unix:\S+php-fpm\.sock failed \(2: No such file or directory\)",
        summary="php-fpm is stopped; its socket is gone",
    ),
    Break(
        "socket",
        "permission",
        "php",
        502,
        r"\[crit\].*connect\(\) to unix:\S+php-fpm\.sock failed \(13: Permission denied\)",
        summary="the pool's socket belongs to nobody:nogroup; nginx runs as www-data",
    ),
    # nginx answers 500 here, not the runbook's 502: ngx_http_upstream_connect() finalizes
    # with NGX_HTTP_INTERNAL_SERVER_ERROR when ngx_event_connect_peer() finds no free connection.
    Break(
        "workers",
        "load",
        "app",
        500,
        r"worker_connections are not enough while connecting to upstream",
        summary="a bounded background load holds all but one of worker_connections (nginx answers 500)",
    ),
)
CAUSES = tuple(dict.fromkeys(b.cause for b in BREAKS))


def find_break(cause: str, variant: str | None) -> Break:
    matches = [b for b in BREAKS if b.cause == cause]
    if not matches:
        raise UsageError(f"unknown cause {cause!r}; causes: {', '.join(CAUSES)}")
    if variant is None:
        if len(matches) > 1:
            names = ", ".join(b.variant for b in matches)
            raise UsageError(f"cause {cause!r} has variants ({names}); pick one with --variant")
        return matches[0]
    for b in matches:
        if b.variant == variant:
            return b
    names = ", ".join(b.variant for b in matches)
    raise UsageError(f"cause {cause!r} has no variant {variant!r}; variants: {names}")


def apply(lab: Lab, spec: Break, webs: Sequence[WebHost]) -> None:
    """Put ``spec`` in place: on each of ``webs`` (in parallel), or once on app01 / the DNS."""
    make = _MAKERS[spec.cause]
    if spec.where != "web":
        make(lab, webs[0], spec.variant)
        return
    each(webs, lambda web: make(lab, web, spec.variant))


def _down(lab: Lab, web: WebHost, variant: str) -> None:
    cfg = web.cfg
    cfg.app().ctl("signal", "KILL", "app")
    procs.wait_closed(cfg.addr(2), cfg.app_port)


def _proxy_pass(lab: Lab, web: WebHost, variant: str) -> None:
    cfg = web.cfg
    api = f"http://{cfg.addr(2)}:{8081 if variant == 'port' else cfg.app_port}"
    files.rewrite_site(web, api_pass=api + ("/" if variant == "slash" else ""))
    web.reload_nginx()


def _dns(lab: Lab, web: WebHost, variant: str) -> None:
    if variant in ("no-resolver", "nxdomain"):
        files.rewrite_site(web, **({"dyn_resolver": False} if variant == "no-resolver" else {"dyn_name": "ghost.lab"}))
        web.reload_nginx()
        return
    # stale: the record moves to .6 where a new instance starts; the old one at .5 goes away.
    cfg = web.cfg
    app = cfg.app()
    app.ctl("start", "svc-green")
    procs.wait_port(cfg.addr(6), cfg.app_port, "svc-green")
    files.write_shared_baseline(cfg, svc_addr=cfg.addr(6))
    procs.send(procs.read_pid(Path(cfg.dir) / "dns" / "dnsmasq.pid"), signal.SIGHUP)
    app.ctl("stop", "svc-blue")
    procs.wait_closed(cfg.addr(5), cfg.app_port)


def _timeout(lab: Lab, web: WebHost, variant: str) -> None:
    cfg = web.cfg
    (Path(cfg.app().root) / "state" / "reports_delay").write_text(f"{cfg.read_timeout * 2}\n")


def _invalid_response(lab: Lab, web: WebHost, variant: str) -> None:
    app = web.cfg.app()
    if variant == "empty":
        app.ctl("signal", "USR1", "flaky")
        return
    (Path(app.root) / "state" / "tls_issuer").write_text("internal\n")
    app.ctl("restart", "tls")
    procs.wait_port(app.addr, web.cfg.tls_port, "tls")


def _socket(lab: Lab, web: WebHost, variant: str) -> None:
    if variant == "missing":
        web.ctl("stop", "php-fpm")
        web.php_socket.unlink(missing_ok=True)
        return
    files.write_web_baseline(web, listen_owner="nobody", listen_group="nogroup")
    web.ctl("restart", "php-fpm")
    procs.wait_path(web.php_socket, f"{web.name}'s php-fpm socket")


def _workers(lab: Lab, web: WebHost, variant: str) -> None:
    cfg = web.cfg
    status = Path(cfg.dir) / "load" / f"{web.name}.status"
    status.unlink(missing_ok=True)
    argv = [
        cfg.python,
        "-m",
        "remediate.lab.backend",
        "load",
        "--target",
        f"{web.addr}:{cfg.http_port}",
        "--probe",
        PROBES["app"],
        "--status",
        str(status),
        "--max-conns",
        str(cfg.worker_connections * 4),
        "--duration",
        "600",
    ]
    pid = lab.start_load(web, argv, Path(cfg.dir) / "load" / f"{web.name}.log")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if status.exists() and '"holding"' in status.read_text():
            return
        if not procs.alive(pid):
            raise LabError(f"the load generator died; see {cfg.dir}/load/{web.name}.log")
        time.sleep(0.2)
    raise LabError("the load generator did not reach its level within 120s")


_MAKERS: dict[str, Callable[[Lab, WebHost, str], None]] = {
    "down": _down,
    "proxy-pass": _proxy_pass,
    "dns": _dns,
    "timeout": _timeout,
    "invalid-response": _invalid_response,
    "socket": _socket,
    "workers": _workers,
}
