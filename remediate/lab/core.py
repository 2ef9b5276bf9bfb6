"""The lab: real nginx, sshd, php-fpm, supervisord, dnsmasq and backends on loopback.

A fleet of web hosts and one app host on one machine, each with its own address, sshd and
service manager (see remediate.lab.webhost):

* ``web01`` (NET.1), and with ``--web-hosts N`` also ``web02``..``webNN`` (NET.12 upwards): nginx
  under its own prefix (Debian-like layout), php-fpm on a unix socket and sshd, run by the host's
  supervisord inside a private mount namespace whose /etc/resolv.conf points at the lab's dnsmasq.
  They are the inventory's group ``web``;
* ``app01`` (NET.2, plus NET.5 and NET.6 for the DNS story): the backends every web host proxies
  to, and sshd, run by app01's supervisord;
* dnsmasq on NET.3:53 answers for ``*.lab``.

This module keeps the lab's state (lab.json) and its life cycle: up, break, reset, status, down.
The files come from remediate.lab.files, the breaks from remediate.lab.breaks, the processes are
found and stopped with remediate.lab.procs. Every process the lab starts carries
REMEDIATE_LAB=<dir>; ``down`` stops the service managers, then sweeps any process that carries
the mark or descends from one, so nothing is left behind.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from remediate.errors import LabError, UsageError
from remediate.lab import files, procs
from remediate.lab.breaks import BREAKS, CAUSES, Break, find_break
from remediate.lab.probes import PROBES, wait_healthy
from remediate.lab.webhost import MAX_WEB_HOSTS, AppHost, LabConfig, WebHost, each

__all__ = ["APT_PACKAGES", "BREAKS", "CAUSES", "PROBES", "Break", "Lab", "LabConfig", "find_break"]

APT_PACKAGES = (
    "nginx",
    "openssh-server",
    "php-fpm",
    "supervisor",
    "dnsmasq-base",
    "dnsutils",
    "iproute2",
    "procps",
    "util-linux",
    "curl",
    "sudo",
)
_PROGRAMS = {
    "nginx": "/usr/sbin/nginx",
    "sshd": "/usr/sbin/sshd",
    "supervisord": "supervisord",
    "supervisorctl": "supervisorctl",
    "dnsmasq": "dnsmasq",
    "unshare": "unshare",
}
# Kept for callers of the old names.
_pid_alive = procs.alive


@dataclass
class _State:
    config: LabConfig
    roots: dict[str, int] = field(default_factory=dict)  # name → pid of each process we started
    broken: list[str] = field(default_factory=list)  # "web03 socket/missing", "app01 down/crash"


class Lab:
    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.dir = Path(directory).resolve()
        self.state_file = self.dir / "lab.json"

    # -- state ---------------------------------------------------------------------

    def _load(self) -> _State:
        try:
            raw = json.loads(self.state_file.read_text())
        except FileNotFoundError:
            raise LabError(f"no lab in {self.dir}; create one with `remediate lab up --dir {self.dir}`") from None
        return _State(LabConfig(**raw["config"]), raw.get("roots", {}), raw.get("broken", []))

    def _save(self, state: _State) -> None:
        data = {"config": asdict(state.config), "roots": state.roots, "broken": state.broken}
        self.state_file.write_text(json.dumps(data, indent=2) + "\n")

    @property
    def inventory(self) -> Path:
        return self.dir / "inventory.yml"

    def web(self, cfg: LabConfig) -> WebHost:
        """The first web host, web01."""
        return cfg.web(1)

    def app(self, cfg: LabConfig) -> AppHost:
        return cfg.app()

    def webs(self, limit: str | None = None) -> list[WebHost]:
        """The running lab's web hosts that the Ansible host pattern ``limit`` selects (None: web01)."""
        cfg = self.config()
        if limit is None:
            return [cfg.web(1)]
        from remediate.hosts.inventory import load_inventory
        from remediate.hosts.patterns import select

        names = {h.name for h in select(load_inventory(self.inventory), limit)}
        chosen = [w for w in cfg.webs() if w.name in names]
        if not chosen:
            known = ", ".join(w.name for w in cfg.webs())
            raise UsageError(f"--limit {limit!r} selects no web host of the lab (web hosts: {known})")
        return chosen

    # -- up ------------------------------------------------------------------------

    def up(self, config: LabConfig | None = None, progress: Callable[[str], None] = lambda _: None) -> LabConfig:
        cfg = config or LabConfig(dir=str(self.dir))
        self._preflight(cfg)
        if self.state_file.exists():
            state = self._load()
            if self._alive(state):
                raise LabError(f"a lab is already running in {self.dir}; `remediate lab down --dir {self.dir}` first")
        progress("writing keys, certificates and configs")
        cfg = files.build(cfg)
        state = _State(cfg)
        self._save(state)
        try:
            progress(f"starting dnsmasq on {cfg.addr(3)}:53")
            state.roots["dnsmasq"] = procs.spawn(
                self.dir,
                [
                    "dnsmasq",
                    "--keep-in-foreground",
                    "--no-resolv",
                    "--no-hosts",
                    f"--addn-hosts={self.dir}/dns/hosts",
                    f"--listen-address={cfg.addr(3)}",
                    "--bind-interfaces",
                    "--port=53",
                    "--local-ttl=1",
                    "--local=/lab/",
                    "--user=nobody",
                    "--group=nogroup",
                    f"--pid-file={self.dir}/dns/dnsmasq.pid",
                    f"--log-facility={self.dir}/dns/dnsmasq.log",
                ],
                self.dir / "dns" / "dnsmasq.out",
            )
            self._save(state)
            procs.wait_port(cfg.addr(3), 53, "dnsmasq", udp=True)
            app = cfg.app()
            progress(f"starting app01 ({app.addr}): sshd and backends under supervisord")
            state.roots["app01"] = app.start()
            self._save(state)
            app.wait_up()
            webs = cfg.webs()
            names = webs[0].name if len(webs) == 1 else f"{webs[0].name}..{webs[-1].name}"
            progress(f"starting {names}: sshd, nginx and php-fpm under each host's supervisord")
            for web in webs:  # all start at once; then each is waited for
                state.roots[web.name] = web.start()
            self._save(state)
            for web in webs:
                web.wait_up()
            progress("checking every probe answers 200")
            wait_healthy(webs)
        except BaseException:
            self._stop(state)
            raise
        return cfg

    def _preflight(self, cfg: LabConfig) -> None:
        if os.geteuid() != 0:
            raise LabError("the lab needs root: it binds port 53, runs sshd and nginx, and uses a mount namespace")
        missing = [name for name, prog in _PROGRAMS.items() if shutil.which(prog) is None]
        if not cfg.php_fpm and not procs.find_php_fpm():
            missing.append("php-fpm")
        if missing:
            raise LabError(
                f"the lab needs {', '.join(missing)}; install with: apt-get install {' '.join(APT_PACKAGES)}"
            )
        for parent in [self.dir, *self.dir.parents]:
            if parent.exists() and not parent.stat().st_mode & 0o001:
                raise LabError(
                    f"{parent} is not traversable by other users, and nginx's workers (www-data) must reach "
                    f"the lab; pick a --dir such as /tmp/remediate-lab"
                )
        # sshd refuses to start without its privilege-separation directory (normally made by systemd).
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        if not re.fullmatch(r"127\.\d{1,3}\.\d{1,3}", cfg.net):
            raise LabError(f"--net must be three octets inside 127.0.0.0/8, like 127.0.10 (got {cfg.net})")
        if not 1 <= cfg.web_hosts <= MAX_WEB_HOSTS:
            raise UsageError(f"--web-hosts must be 1 to {MAX_WEB_HOSTS} (got {cfg.web_hosts})")

    # -- processes -----------------------------------------------------------------

    def _alive(self, state: _State) -> bool:
        return any(procs.alive(pid) for pid in state.roots.values())

    def ctl(self, cfg: LabConfig, host: str, *args: str, check: bool = True) -> str:
        """supervisorctl for one of the lab hosts."""
        target = cfg.host(host)
        if target is None:
            raise UsageError(f"the lab has no host {host!r}")
        return target.ctl(*args, check=check)

    def processes(self) -> dict[int, str]:
        """Every live process this lab started: marked ones and all their descendants."""
        return procs.marked(self.dir)

    def start_load(self, web: WebHost, argv: list[str], log: Path) -> int:
        """Start a load generator against ``web`` (for the workers break), remembered until reset."""
        pid = procs.spawn(self.dir, argv, log)
        state = self._load()
        state.roots[f"load-{web.name}"] = pid
        self._save(state)
        return pid

    def _stop(self, state: _State) -> list[int]:
        for pid in state.roots.values():
            procs.send(pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(procs.alive(p) for p in state.roots.values()):
            time.sleep(0.1)
        leftovers = self.processes()
        for pid in leftovers:
            procs.send(pid, signal.SIGKILL)
        for pid in list(state.roots.values()) + list(leftovers):
            procs.reap(pid)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and self.processes():
            time.sleep(0.1)
        return sorted(leftovers)

    def down(self) -> list[int]:
        """Stop everything; return the pids that needed SIGKILL."""
        state = self._load()
        killed = self._stop(state)
        state.roots = {}
        state.broken = []
        self._save(state)
        left = self.processes()
        if left:
            raise LabError(f"processes survived `lab down`: {sorted(left)}")
        return killed

    # -- reset and break -----------------------------------------------------------

    def config(self) -> LabConfig:
        state = self._load()
        if not self._alive(state):
            raise LabError(f"the lab in {self.dir} is not running; `remediate lab up --dir {self.dir}`")
        return state.config

    def reset(self, limit: str | None = None) -> list[WebHost]:
        """Put app01, the DNS and the web hosts ``limit`` selects (default: all) back to healthy; wait for 200s."""
        cfg = self.config()
        webs = cfg.webs() if limit is None else self.webs(limit)
        state = self._load()
        for name in [n for n in state.roots if n.startswith("load-") and n[5:] in {w.name for w in webs}]:
            pid = state.roots.pop(name)
            procs.send(pid, signal.SIGTERM)
            procs.reap(pid)
        self._save(state)
        files.write_shared_baseline(cfg)
        procs.send(procs.read_pid(self.dir / "dns" / "dnsmasq.pid"), signal.SIGHUP)
        app = cfg.app()
        app.ctl("stop", "svc-green", "app-canary", check=False)
        for program in ("app", "tls", "flaky", "svc-blue"):
            app.ctl("restart", program, check=False)

        def reset_web(web: WebHost) -> None:
            files.write_web_baseline(web)
            web.ctl("restart", "php-fpm", check=False)
            web.reload_nginx()

        each(webs, reset_web)
        names = {w.name for w in webs}
        state.broken = [b for b in state.broken if b.split()[0] not in names and not b.startswith("app01 ")]
        self._save(state)
        wait_healthy(webs)
        return webs

    def break_(self, cause: str, variant: str | None = None, *, keep: bool = False, limit: str | None = None) -> Break:
        """Put ``cause`` in place (after a reset unless ``keep``) on the web hosts ``limit`` selects (web01)."""
        spec = find_break(cause, variant)
        webs = self.webs(limit)
        if not keep:
            self.reset(limit)
        from remediate.lab import breaks

        breaks.apply(self, spec, webs)
        state = self._load()
        where = [w.name for w in webs] if spec.where == "web" else [spec.where]
        state.broken += [f"{name} {spec.cause}/{spec.variant}" for name in where]
        self._save(state)
        return spec

    def reload_nginx(self, cfg: LabConfig) -> None:
        """HUP web01's nginx and wait until the new config is live."""
        cfg.web(1).reload_nginx()

    # -- status --------------------------------------------------------------------

    def probe(self, cfg: LabConfig, path: str, timeout: float = 8.0, *, host: str = "web01") -> int | str:
        web = cfg.host(host)
        if not isinstance(web, WebHost):
            raise UsageError(f"the lab has no web host {host!r}")
        return web.probe(path, timeout)

    def status(self, limit: str | None = None) -> dict[str, Any]:
        """Which processes run, what is broken, and each probe's status on the web hosts ``limit`` selects."""
        state = self._load()
        running = {name: procs.alive(pid) for name, pid in state.roots.items()}
        probes: dict[str, dict[str, int | str]] = {}
        if self._alive(state):
            for web in self.webs(limit):
                probes[web.name] = {name: web.probe(path) for name, path in PROBES.items()}
        return {
            "dir": str(self.dir),
            "running": running,
            "broken": state.broken,
            "probes": probes,
            "inventory": str(self.inventory),
        }

    def new_log_text(self, cfg: LabConfig, which: str, since: int) -> str:
        with cfg.web(1).log_path(which).open("rb") as fh:
            fh.seek(since)
            return fh.read().decode("utf-8", "replace")

    def log_size(self, cfg: LabConfig, which: str) -> int:
        path = cfg.web(1).log_path(which)
        return path.stat().st_size if path.exists() else 0
