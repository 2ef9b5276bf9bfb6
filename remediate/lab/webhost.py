"""The lab's hosts: where each lives (address, directory) and how to drive its processes.

A host is a directory, an address on loopback and its own supervisord, which runs that host's
sshd and services. Web hosts (``web01``, ``web02``, ...) run nginx and php-fpm inside a private
mount namespace, so that their /etc/resolv.conf points at the lab's dnsmasq; ``app01`` runs the
backends every web host proxies to. The lab is the machine's own operator, not a remote host,
so it drives them with subprocess (supervisorctl, signals), never through a Transport.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from remediate.errors import LabError
from remediate.lab import probes, procs

__all__ = ["MAX_WEB_HOSTS", "AppHost", "LabConfig", "LabHost", "WebHost", "each"]

#: web01 is NET.1; web02..webNN are NET.12..NET.(10+N), consecutive, clear of app01 (.2), dns (.3), svc (.5, .6).
MAX_WEB_HOSTS = 60


@dataclass(frozen=True)
class LabConfig:
    dir: str
    net: str = "127.0.10"
    ssh_port: int = 2222
    http_port: int = 8080
    app_port: int = 8080
    tls_port: int = 8443
    flaky_port: int = 9000
    worker_connections: int = 64
    read_timeout: int = 2
    python: str = sys.executable
    php_fpm: str = ""
    web_hosts: int = 1

    def addr(self, n: int) -> str:
        return f"{self.net}.{n}"

    def webs(self) -> list[WebHost]:
        """Every web host of the lab, web01 first."""
        return [self.web(n) for n in range(1, self.web_hosts + 1)]

    def web(self, n: int = 1) -> WebHost:
        name = f"web{n:02d}"
        root = f"{self.dir}/{name}"
        return WebHost(name, self.addr(1 if n == 1 else 10 + n), root, self, nginx=f"{root}/nginx")

    def app(self) -> AppHost:
        return AppHost("app01", self.addr(2), f"{self.dir}/app01", self)

    def host(self, name: str) -> LabHost | None:
        """The lab host called ``name`` (app01 or a web host), or None."""
        return next((h for h in (*self.webs(), self.app()) if h.name == name), None)


@dataclass(frozen=True)
class LabHost:
    name: str
    addr: str
    root: str
    cfg: LabConfig

    @property
    def supervisor_conf(self) -> str:
        return f"{self.root}/supervisor/supervisord.conf"

    def argv(self) -> list[str]:
        """How this host's supervisord is started."""
        return ["supervisord", "-n", "-c", self.supervisor_conf]

    def start(self) -> int:
        """Start this host's supervisord (it starts the host's programs); its pid."""
        return procs.spawn(Path(self.cfg.dir), self.argv(), Path(self.root) / "supervisor" / "console.log")

    def ctl(self, *args: str, check: bool = True) -> str:
        """supervisorctl on this host."""
        done = subprocess.run(  # noqa: S603 - argv list, no shell
            ["supervisorctl", "-c", self.supervisor_conf, *args],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if check and done.returncode != 0:
            said = (done.stdout + done.stderr).strip()
            raise LabError(f"supervisorctl {' '.join(args)} on {self.name} failed: {said}")
        return done.stdout

    def wait_program(self, program: str, port: int, addr: str | None = None) -> None:
        """Wait until ``program`` listens; fail at once, with its stderr, if it died."""
        addr = addr or self.addr
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                procs.wait_port(addr, port, program, timeout=1.0)
                return
            except LabError:
                pass
            state = self.ctl("status", program, check=False)
            if any(word in state for word in ("EXITED", "FATAL", "BACKOFF")):
                log = Path(self.root) / "supervisor" / "log" / f"{program}.err.log"
                tail = log.read_text(errors="replace").strip().splitlines()[-3:] if log.exists() else []
                raise LabError(f"{self.name}'s {program} died at start: {' | '.join(tail) or state.strip()}")
        raise LabError(f"{self.name}'s {program} is not listening on {addr}:{port} after 20s")


@dataclass(frozen=True)
class AppHost(LabHost):
    def wait_up(self) -> None:
        cfg = self.cfg
        for port, program in ((cfg.ssh_port, "sshd"), (cfg.app_port, "app"), (cfg.tls_port, "tls")):
            self.wait_program(program, port)
        self.wait_program("flaky", cfg.flaky_port)
        self.wait_program("svc-blue", cfg.app_port, cfg.addr(5))


@dataclass(frozen=True)
class WebHost(LabHost):
    nginx: str = ""

    def argv(self) -> list[str]:
        # Inside a private mount namespace: bin/enter bind-mounts the host's resolv.conf and hosts.
        enter = ["unshare", "--mount", "--propagation", "private", "--", "sh", f"{self.root}/bin/enter"]
        return [*enter, *super().argv()]

    @property
    def php_socket(self) -> Path:
        return Path(self.root) / "php" / "run" / "php-fpm.sock"

    def log_path(self, which: str) -> Path:
        return Path(self.nginx) / "logs" / f"{which}.log"

    def wait_up(self) -> None:
        self.wait_program("sshd", self.cfg.ssh_port)
        self.wait_program("nginx", self.cfg.http_port)
        procs.wait_path(self.php_socket, f"{self.name}'s php-fpm socket")

    def probe(self, path: str, timeout: float = 8.0) -> int | str:
        """The status nginx on this host answers for ``path`` (or the error's name)."""
        return probes.probe(self.addr, self.cfg.http_port, path, f"{self.name}.lab", timeout)

    def reload_nginx(self) -> None:
        """HUP nginx's master and wait for a new worker: proof the new config is live."""
        master = int(self.ctl("pid", "nginx").strip() or 0)
        if not master:
            raise LabError(f"nginx is not running on {self.name}")
        before = set(procs.children(master))
        os.kill(master, signal.SIGHUP)
        # Live means: a new worker exists and every old one stopped accepting
        # (gone, or retitled "shutting down" after the master's QUIT).
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            now = set(procs.children(master))
            if now - before and all(
                procs.cmdline(pid) in ("", None) or "shutting down" in (procs.cmdline(pid) or "") for pid in before
            ):
                return
            time.sleep(0.02)
        log = self.log_path("error")
        tail = log.read_text(errors="replace").strip().splitlines()[-2:] if log.exists() else []
        raise LabError(f"{self.name}'s nginx did not start a new worker after reload; {log}: {' | '.join(tail)}")


def each(webs: Sequence[WebHost], work: Callable[[WebHost], None]) -> None:
    """``work`` on every host, several at once; the first failure is raised once all are done."""
    with ThreadPoolExecutor(max_workers=min(8, len(webs))) as pool:
        for done in [pool.submit(work, web) for web in webs]:
            done.result()
