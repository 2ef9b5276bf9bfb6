"""The lab: real nginx, sshd, php-fpm, supervisord, dnsmasq and backends on loopback.

Two hosts on one machine, each with its own address, sshd and service manager:

* ``web01`` (NET.1): nginx under its own prefix (Debian-like layout), php-fpm
  on a unix socket, sshd, all run by web01's supervisord inside a private
  mount namespace whose /etc/resolv.conf points at the lab's dnsmasq;
* ``app01`` (NET.2, plus NET.5 and NET.6 for the DNS story): the backends
  and sshd, run by app01's supervisord;
* dnsmasq on NET.3:53 answers for ``*.lab``.

The lab is the machine's own operator, not a remote host, so it starts
processes itself (subprocess) rather than through a Transport. Every process
it starts carries REMEDIATE_LAB=<dir> in its environment; ``down`` stops the
service managers, then sweeps any process that carries the mark or descends
from one, so nothing is left behind.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from remediate.errors import LabError, UsageError

__all__ = ["BREAKS", "PROBES", "Break", "Lab", "LabConfig"]

ENV_MARK = "REMEDIATE_LAB"
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

    def addr(self, n: int) -> str:
        return f"{self.net}.{n}"


#: name → path requested through nginx on web01.
PROBES: dict[str, str] = {
    "app": "/",
    "api": "/api/users",
    "reports": "/reports/daily",
    "php": "/index.php",
    "healthz": "/healthz",
    "secure": "/secure/",
    "dyn": "/dyn/",
    "svc": "/svc/",
}


@dataclass(frozen=True)
class Break:
    cause: str
    variant: str
    probe: str  # which probe now fails
    status: int  # what nginx answers
    signature: str  # regex over the new error-log text ("" = none: see log)
    log: str = "error"  # which nginx log holds the signature
    summary: str = ""


BREAKS: tuple[Break, ...] = (
    Break(
        "down",
        "crash",
        "app",
        502,
        r"connect\(\) failed \(111: Connection refused\) while connecting to upstream",
        summary="app01's app crashed (SIGKILL); supervisor shows it EXITED",
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
    ),
    Break(
        "invalid-response",
        "empty",
        "healthz",
        502,
        r"upstream prematurely closed connection while reading response header from upstream",
        summary="the flaky backend accepts and closes without a byte",
    ),
    Break(
        "invalid-response",
        "tls",
        "secure",
        502,
        r"upstream SSL certificate verify error",
        summary="the TLS backend's certificate is now from the internal CA nginx does not trust",
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


@dataclass
class _HostLayout:
    name: str
    addr: str
    root: str
    nginx: str = ""


@dataclass
class _State:
    config: LabConfig
    roots: dict[str, int] = field(default_factory=dict)  # name → pid of each process we started
    broken: list[str] = field(default_factory=list)


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

    def web(self, cfg: LabConfig) -> _HostLayout:
        root = str(self.dir / "web01")
        return _HostLayout("web01", cfg.addr(1), root, nginx=f"{root}/nginx")

    def app(self, cfg: LabConfig) -> _HostLayout:
        return _HostLayout("app01", cfg.addr(2), str(self.dir / "app01"))

    # -- up ------------------------------------------------------------------------

    def up(self, config: LabConfig | None = None, progress: Callable[[str], None] = lambda _: None) -> LabConfig:
        cfg = config or LabConfig(dir=str(self.dir))
        self._preflight(cfg)
        if self.state_file.exists():
            state = self._load()
            if self._alive(state):
                raise LabError(f"a lab is already running in {self.dir}; `remediate lab down --dir {self.dir}` first")
        progress("writing keys, certificates and configs")
        cfg = self._build(cfg)
        state = _State(cfg)
        self._save(state)
        try:
            progress(f"starting dnsmasq on {cfg.addr(3)}:53")
            state.roots["dnsmasq"] = self._spawn(
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
            _wait_port(cfg.addr(3), 53, "dnsmasq", udp=True)
            progress(f"starting app01 ({cfg.addr(2)}): sshd and backends under supervisord")
            app = self.app(cfg)
            state.roots["app01"] = self._spawn(
                ["supervisord", "-n", "-c", f"{app.root}/supervisor/supervisord.conf"],
                Path(app.root) / "supervisor" / "console.log",
            )
            self._save(state)
            for port, program in (
                (cfg.ssh_port, "sshd"),
                (cfg.app_port, "app"),
                (cfg.tls_port, "tls"),
                (cfg.flaky_port, "flaky"),
            ):
                self._wait_program(cfg, "app01", program, cfg.addr(2), port)
            self._wait_program(cfg, "app01", "svc-blue", cfg.addr(5), cfg.app_port)
            progress(f"starting web01 ({cfg.addr(1)}): sshd, nginx and php-fpm under supervisord")
            web = self.web(cfg)
            state.roots["web01"] = self._spawn(
                [
                    "unshare",
                    "--mount",
                    "--propagation",
                    "private",
                    "--",
                    "sh",
                    f"{web.root}/bin/enter",
                    "supervisord",
                    "-n",
                    "-c",
                    f"{web.root}/supervisor/supervisord.conf",
                ],
                Path(web.root) / "supervisor" / "console.log",
            )
            self._save(state)
            self._wait_program(cfg, "web01", "sshd", cfg.addr(1), cfg.ssh_port)
            self._wait_program(cfg, "web01", "nginx", cfg.addr(1), cfg.http_port)
            _wait_path(Path(web.root) / "php" / "run" / "php-fpm.sock", "php-fpm socket")
            progress("checking every probe answers 200")
            self._wait_healthy(cfg)
        except BaseException:
            self._stop(state)
            raise
        return cfg

    def _preflight(self, cfg: LabConfig) -> None:
        if os.geteuid() != 0:
            raise LabError("the lab needs root: it binds port 53, runs sshd and nginx, and uses a mount namespace")
        missing = [name for name, prog in _PROGRAMS.items() if shutil.which(prog) is None]
        if not cfg.php_fpm and not _php_fpm():
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

    # -- building the files --------------------------------------------------------

    def _render(self, name: str, **context: Any) -> str:
        import jinja2

        env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(str(Path(__file__).parent / "templates")),
            keep_trailing_newline=True,
            undefined=jinja2.StrictUndefined,
            autoescape=False,
        )
        return env.get_template(name).render(**context)

    def _context(self, cfg: LabConfig) -> dict[str, Any]:
        return {
            "web": self.web(cfg),
            "app": self.app(cfg),
            "dns": {"addr": cfg.addr(3)},
            "ports": {
                "ssh": cfg.ssh_port,
                "http": cfg.http_port,
                "app": cfg.app_port,
                "tls": cfg.tls_port,
                "flaky": cfg.flaky_port,
            },
            "worker_connections": cfg.worker_connections,
            "read_timeout": cfg.read_timeout,
            "api_pass": f"http://{cfg.addr(2)}:{cfg.app_port}",
            "dyn_resolver": True,
            "dyn_name": "app01.lab",
            "listen_owner": "www-data",
            "listen_group": "www-data",
        }

    def _build(self, cfg: LabConfig) -> LabConfig:
        from remediate.lab import pki

        cfg = LabConfig(**{**asdict(cfg), "php_fpm": cfg.php_fpm or _php_fpm() or ""})
        if self.dir.exists():
            shutil.rmtree(self.dir)
        web, app = self.web(cfg), self.app(cfg)
        for path in (
            "ssh",
            "pki",
            "dns",
            "load",
            "web01/ssh",
            "web01/supervisor/log",
            "web01/etc",
            "web01/bin",
            "web01/www",
            "web01/nginx/conf.d",
            "web01/nginx/sites-available",
            "web01/nginx/sites-enabled",
            "web01/nginx/logs",
            "web01/nginx/ssl",
            "web01/php/pool.d",
            "web01/php/run",
            "web01/php/log",
            "app01/ssh",
            "app01/supervisor/log",
            "app01/state",
        ):
            (self.dir / path).mkdir(parents=True, exist_ok=True)
            (self.dir / path).chmod(0o755)
        self.dir.chmod(0o755)
        # SSH: one client key, a host key per host, and the lab's own known_hosts.
        client_pub = pki.make_ssh_key(self.dir / "ssh" / "id_ed25519")
        known = []
        for host in (web, app):
            host_pub = pki.make_ssh_key(Path(host.root) / "ssh" / "ssh_host_ed25519_key")
            (Path(host.root) / "ssh" / "authorized_keys").write_text(client_pub + "\n")
            known.append(f"[{host.addr}]:{cfg.ssh_port} {host_pub}")
        (self.dir / "ssh" / "known_hosts").write_text("\n".join(known) + "\n")
        # TLS: a "public" CA nginx trusts and an "internal" one it does not.
        pki_dir = self.dir / "pki"
        for ca_name in ("public-ca", "internal-ca"):
            ca = pki.make_ca(pki_dir, ca_name)
            pki.make_leaf(pki_dir, f"app01-{ca_name.removesuffix('-ca')}", ca, "app01.lab", cfg.addr(2))
        for key_file in pki_dir.glob("*.key"):
            key_file.chmod(0o600)
        shutil.copy(pki_dir / "public-ca.crt", Path(web.nginx) / "ssl" / "public-ca.crt")
        # web01's view of /etc: names resolve through the lab's dnsmasq.
        (Path(web.root) / "etc" / "resolv.conf").write_text(f"nameserver {cfg.addr(3)}\noptions timeout:1\n")
        (Path(web.root) / "etc" / "hosts").write_text(f"127.0.0.1\tlocalhost\n{cfg.addr(1)}\tweb01.lab web01\n")
        enter = Path(web.root) / "bin" / "enter"
        enter.write_text(self._render("enter-web01.sh.j2", **self._context(cfg)))
        enter.chmod(0o755)
        (Path(web.root) / "www" / "index.php").write_text(self._render("index.php.j2"))
        (Path(web.root) / "www" / "50x.html").write_text("<h1>502 Bad Gateway</h1>\n")
        for host in (web, app):
            (Path(host.root) / "ssh" / "sshd_config").write_text(
                self._render("sshd_config.j2", host=host, ports={"ssh": cfg.ssh_port})
            )
        self._write_supervisors(cfg)
        self._write_baseline(cfg)
        os.symlink("../sites-available/lab.conf", Path(web.nginx) / "sites-enabled" / "lab.conf")
        self._write_inventory(cfg)
        return cfg

    def _write_supervisors(self, cfg: LabConfig) -> None:
        web, app = self.web(cfg), self.app(cfg)
        py = cfg.python
        state = f"{app.root}/state"

        def backend(role: str, name: str, listen: str, extra: str = "") -> str:
            return (
                f"{py} -m remediate.lab.backend serve --role {role} --name {name} --listen {listen} "
                f"--state {state} --pki {self.dir}/pki{extra}"
            )

        sshd = "/usr/sbin/sshd -D -e -f {root}/ssh/sshd_config"
        web_programs = [
            {"name": "sshd", "command": sshd.format(root=web.root), "autostart": True},
            {
                "name": "nginx",
                "command": f"/usr/sbin/nginx -p {web.nginx} -c {web.nginx}/nginx.conf -g 'daemon off;'",
                "autostart": True,
                "stopsignal": "QUIT",
            },
            {
                "name": "php-fpm",
                "command": f"{cfg.php_fpm} -F -y {web.root}/php/php-fpm.conf",
                "autostart": True,
                "stopsignal": "QUIT",
            },
        ]
        app_programs = [
            {"name": "sshd", "command": sshd.format(root=app.root), "autostart": True},
            {"name": "app", "command": backend("app", "app", f"{app.addr}:{cfg.app_port}"), "autostart": True},
            {
                "name": "tls",
                "command": backend("app", "tls", f"{app.addr}:{cfg.tls_port}", " --tls"),
                "autostart": True,
            },
            {"name": "flaky", "command": backend("flaky", "flaky", f"{app.addr}:{cfg.flaky_port}"), "autostart": True},
            {
                "name": "svc-blue",
                "command": backend("app", "svc-blue", f"{cfg.addr(5)}:{cfg.app_port}"),
                "autostart": True,
            },
            {
                # A second copy of the app, stopped: started, it makes "which port?" ambiguous.
                "name": "app-canary",
                "command": backend("app", "app-canary", f"{app.addr}:{cfg.app_port + 2}"),
                "autostart": False,
            },
            {
                "name": "svc-green",
                "command": backend("app", "svc-green", f"{cfg.addr(6)}:{cfg.app_port}"),
                "autostart": False,
            },
        ]
        for host, programs in ((web, web_programs), (app, app_programs)):
            (Path(host.root) / "supervisor" / "supervisord.conf").write_text(
                self._render("supervisord.conf.j2", host=host, programs=programs)
            )

    def _write_baseline(self, cfg: LabConfig, **overrides: Any) -> None:
        """Write every file a break may change, in its healthy form (or with ``overrides``)."""
        ctx = {**self._context(cfg), **overrides}
        web = self.web(cfg)
        nginx = Path(web.nginx)
        files = {
            nginx / "nginx.conf": "nginx.conf.j2",
            nginx / "mime.types": "mime.types.j2",
            nginx / "fastcgi_params": "fastcgi_params.j2",
            nginx / "conf.d" / "proxy.conf": "proxy.conf.j2",
            nginx / "conf.d" / "upstreams.conf": "upstreams.conf.j2",
            nginx / "sites-available" / "lab.conf": "site.conf.j2",
            Path(web.root) / "php" / "php-fpm.conf": "php-fpm.conf.j2",
            Path(web.root) / "php" / "pool.d" / "www.conf": "pool.conf.j2",
        }
        for path, template in files.items():
            path.write_text(self._render(template, **ctx))
            path.chmod(0o644)
        (self.dir / "dns" / "hosts").write_text(
            f"{cfg.addr(2)}\tapp01.lab\n{ctx.get('svc_addr', cfg.addr(5))}\tsvc.lab\n"
        )
        state = Path(self.app(cfg).root) / "state"
        for name in ("reports_delay", "tls_issuer", "flaky_mode", "crash_on_start"):
            (state / name).unlink(missing_ok=True)

    def _write_inventory(self, cfg: LabConfig) -> None:
        web, app = self.web(cfg), self.app(cfg)
        base = f"http://{web.addr}:{cfg.http_port}"
        probes = "\n".join(f"        - {base}{path}" for path in PROBES.values())
        text = f"""\
# Written by `remediate lab up`: the lab's two hosts, ready for `-i`.
all:
  vars:
    ansible_user: root
    ansible_port: {cfg.ssh_port}
    ansible_ssh_private_key_file: {self.dir}/ssh/id_ed25519
    known_hosts: {self.dir}/ssh/known_hosts
    service_manager: supervisor
  hosts:
    web01:
      ansible_host: {web.addr}
      nginx_prefix: {web.nginx}
      nginx_conf: {web.nginx}/nginx.conf
      nginx_error_log: {web.nginx}/logs/error.log
      nginx_access_log: {web.nginx}/logs/access.log
      nginx_reload: [/usr/sbin/nginx, -p, {web.nginx}, -c, {web.nginx}/nginx.conf, -s, reload]
      supervisor_config: {web.root}/supervisor/supervisord.conf
      restartable_services: [php-fpm]
      php_fpm_bin: {cfg.php_fpm}
      php_fpm_conf: {web.root}/php/php-fpm.conf
      php_fpm_service: php-fpm
      php_fpm_pools: [{web.root}/php/pool.d/www.conf]
      journal_dir: {web.root}/journal
      resolvers: ["{cfg.addr(3)}"]
      tls_ca_bundle: {self.dir}/pki/internal-ca.crt
      probe_urls:
{probes}
    app01:
      ansible_host: {app.addr}
      journal_dir: {app.root}/journal
      supervisor_config: {app.root}/supervisor/supervisord.conf
      restartable_services: [app, tls, flaky, svc-blue, svc-green, app-canary]
      restart_wait: 10
      services:
        app: {{port: {cfg.app_port}}}
        tls: {{port: {cfg.tls_port}}}
        flaky: {{port: {cfg.flaky_port}}}
        app-canary: {{port: {cfg.app_port + 2}}}
"""
        self.inventory.write_text(text)

    # -- processes -----------------------------------------------------------------

    def _spawn(self, argv: list[str], log: Path) -> int:
        env = {**os.environ, ENV_MARK: str(self.dir)}
        with log.open("ab") as out:
            proc = subprocess.Popen(  # noqa: S603 - argv list, no shell
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
                cwd=str(self.dir),
            )
        time.sleep(0.05)
        if proc.poll() is not None:
            tail = log.read_text(errors="replace").strip().splitlines()[-3:]
            raise LabError(f"`{argv[0]}` exited at once ({proc.returncode}): {' | '.join(tail)}")
        return proc.pid

    def _wait_program(self, cfg: LabConfig, host: str, program: str, addr: str, port: int) -> None:
        """Wait until ``program`` listens; fail at once, with its stderr, if it died."""
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                _wait_port(addr, port, program, timeout=1.0)
                return
            except LabError:
                pass
            state = self.ctl(cfg, host, "status", program, check=False)
            if any(word in state for word in ("EXITED", "FATAL", "BACKOFF")):
                log = self.dir / host / "supervisor" / "log" / f"{program}.err.log"
                tail = log.read_text(errors="replace").strip().splitlines()[-3:] if log.exists() else []
                raise LabError(f"{host}'s {program} died at start: {' | '.join(tail) or state.strip()}")
        raise LabError(f"{host}'s {program} is not listening on {addr}:{port} after 20s")

    def _alive(self, state: _State) -> bool:
        return any(_pid_alive(pid) for pid in state.roots.values())

    def ctl(self, cfg: LabConfig, host: str, *args: str, check: bool = True) -> str:
        """supervisorctl for one of the lab hosts."""
        conf = f"{self.dir}/{host}/supervisor/supervisord.conf"
        done = subprocess.run(  # noqa: S603 - argv list, no shell
            ["supervisorctl", "-c", conf, *args], capture_output=True, text=True, timeout=60, check=False
        )
        if check and done.returncode not in (0,):
            raise LabError(f"supervisorctl {' '.join(args)} on {host} failed: {(done.stdout + done.stderr).strip()}")
        return done.stdout

    def processes(self) -> dict[int, str]:
        """Every live process this lab started: marked ones and all their descendants."""
        marked: set[int] = set()
        parents: dict[int, int] = {}
        names: dict[int, str] = {}
        mark = f"{ENV_MARK}={self.dir}".encode()
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            pid = int(entry.name)
            try:
                stat = Path(f"/proc/{pid}/stat").read_text()
                env = Path(f"/proc/{pid}/environ").read_bytes()
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except (FileNotFoundError, ProcessLookupError, PermissionError):
                continue
            parents[pid] = int(stat.rsplit(")", 1)[1].split()[1])
            names[pid] = cmdline.strip() or stat.split("(", 1)[1].split(")")[0]
            if mark in env.split(b"\0") or str(self.dir) in cmdline:
                marked.add(pid)
        changed = True
        while changed:
            changed = False
            for pid, ppid in parents.items():
                if ppid in marked and pid not in marked:
                    marked.add(pid)
                    changed = True
        marked.discard(os.getpid())
        return {pid: names[pid] for pid in marked if pid in names}

    def _stop(self, state: _State) -> list[int]:
        for pid in state.roots.values():
            _signal(pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(_pid_alive(p) for p in state.roots.values()):
            time.sleep(0.1)
        leftovers = self.processes()
        for pid in leftovers:
            _signal(pid, signal.SIGKILL)
        for pid in list(state.roots.values()) + list(leftovers):
            _reap(pid)
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

    def reset(self) -> None:
        """Put every file and process back to the healthy baseline and wait until all probes answer 200."""
        cfg = self.config()
        self._stop_load()
        state = self._load()  # after _stop_load, which saves its own change
        self._write_baseline(cfg)
        _signal(_read_pid(self.dir / "dns" / "dnsmasq.pid"), signal.SIGHUP)
        self.ctl(cfg, "app01", "stop", "svc-green", "app-canary", check=False)
        for program in ("app", "tls", "flaky", "svc-blue"):
            self.ctl(cfg, "app01", "restart", program, check=False)
        self.ctl(cfg, "web01", "restart", "php-fpm", check=False)
        self.reload_nginx(cfg)
        state.broken = []
        self._save(state)
        self._wait_healthy(cfg)

    def break_(self, cause: str, variant: str | None = None, *, keep: bool = False) -> Break:
        spec = find_break(cause, variant)
        if not keep:
            self.reset()
        cfg = self.config()
        getattr(self, "_break_" + spec.cause.replace("-", "_"))(cfg, spec.variant)
        state = self._load()
        state.broken.append(f"{spec.cause}/{spec.variant}")
        self._save(state)
        return spec

    def _break_down(self, cfg: LabConfig, variant: str) -> None:
        self.ctl(cfg, "app01", "signal", "KILL", "app")
        _wait_closed(cfg.addr(2), cfg.app_port)

    def _break_proxy_pass(self, cfg: LabConfig, variant: str) -> None:
        api = f"http://{cfg.addr(2)}:{8081 if variant == 'port' else cfg.app_port}"
        self._rewrite_nginx(cfg, api_pass=api + ("/" if variant == "slash" else ""))

    def _break_dns(self, cfg: LabConfig, variant: str) -> None:
        if variant == "no-resolver":
            self._rewrite_nginx(cfg, dyn_resolver=False)
            return
        if variant == "nxdomain":
            self._rewrite_nginx(cfg, dyn_name="ghost.lab")
            return
        # The record moves to .6 where a new instance starts; the old one at .5 goes away.
        self.ctl(cfg, "app01", "start", "svc-green")
        _wait_port(cfg.addr(6), cfg.app_port, "svc-green")
        (self.dir / "dns" / "hosts").write_text(f"{cfg.addr(2)}\tapp01.lab\n{cfg.addr(6)}\tsvc.lab\n")
        _signal(_read_pid(self.dir / "dns" / "dnsmasq.pid"), signal.SIGHUP)
        self.ctl(cfg, "app01", "stop", "svc-blue")
        _wait_closed(cfg.addr(5), cfg.app_port)

    def _break_timeout(self, cfg: LabConfig, variant: str) -> None:
        (Path(self.app(cfg).root) / "state" / "reports_delay").write_text(f"{cfg.read_timeout * 2}\n")

    def _break_invalid_response(self, cfg: LabConfig, variant: str) -> None:
        if variant == "empty":
            self.ctl(cfg, "app01", "signal", "USR1", "flaky")
        else:
            (Path(self.app(cfg).root) / "state" / "tls_issuer").write_text("internal\n")
            self.ctl(cfg, "app01", "restart", "tls")
            _wait_port(cfg.addr(2), cfg.tls_port, "tls")

    def _break_socket(self, cfg: LabConfig, variant: str) -> None:
        sock = Path(self.web(cfg).root) / "php" / "run" / "php-fpm.sock"
        if variant == "missing":
            self.ctl(cfg, "web01", "stop", "php-fpm")
            sock.unlink(missing_ok=True)
            return
        self._write_baseline(cfg, listen_owner="nobody", listen_group="nogroup")
        self.ctl(cfg, "web01", "restart", "php-fpm")
        _wait_path(sock, "php-fpm socket")

    def _break_workers(self, cfg: LabConfig, variant: str) -> None:
        status = self.dir / "load" / "status"
        status.unlink(missing_ok=True)
        pid = self._spawn(
            [
                cfg.python,
                "-m",
                "remediate.lab.backend",
                "load",
                "--target",
                f"{cfg.addr(1)}:{cfg.http_port}",
                "--probe",
                PROBES["app"],
                "--status",
                str(status),
                "--max-conns",
                str(cfg.worker_connections * 4),
                "--duration",
                "600",
            ],
            self.dir / "load" / "load.log",
        )
        state = self._load()
        state.roots["load"] = pid
        self._save(state)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if status.exists() and '"holding"' in status.read_text():
                return
            if not _pid_alive(pid):
                raise LabError(f"the load generator died; see {self.dir}/load/load.log")
            time.sleep(0.2)
        raise LabError("the load generator did not reach its level within 120s")

    def _stop_load(self) -> None:
        state = self._load()
        pid = state.roots.pop("load", None)
        if pid is not None:
            _signal(pid, signal.SIGTERM)
            _reap(pid)
            self._save(state)

    def _rewrite_nginx(self, cfg: LabConfig, **overrides: Any) -> None:
        web = self.web(cfg)
        site = Path(web.nginx) / "sites-available" / "lab.conf"
        site.write_text(self._render("site.conf.j2", **{**self._context(cfg), **overrides}))
        self.reload_nginx(cfg)

    def reload_nginx(self, cfg: LabConfig) -> None:
        """HUP nginx's master and wait for a new worker: proof the new config is live."""
        master = int(self.ctl(cfg, "web01", "pid", "nginx").strip() or 0)
        if not master:
            raise LabError("nginx is not running on web01")
        before = set(_children(master))
        os.kill(master, signal.SIGHUP)
        # Live means: a new worker exists and every old one stopped accepting
        # (gone, or retitled "shutting down" after the master's QUIT).
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            now = set(_children(master))
            if now - before and all(
                _cmdline(pid) in ("", None) or "shutting down" in (_cmdline(pid) or "") for pid in before
            ):
                return
            time.sleep(0.02)
        log = Path(web_log := f"{self.web(cfg).nginx}/logs/error.log")
        tail = log.read_text(errors="replace").strip().splitlines()[-2:] if log.exists() else []
        raise LabError(f"nginx did not start a new worker after reload; {web_log}: {' | '.join(tail)}")

    # -- status --------------------------------------------------------------------

    def probe(self, cfg: LabConfig, path: str, timeout: float = 8.0) -> int | str:
        conn = http.client.HTTPConnection(cfg.addr(1), cfg.http_port, timeout=timeout)
        try:
            conn.request("GET", path, headers={"Host": "web01.lab"})
            return conn.getresponse().status
        except TimeoutError:
            return "timeout"
        except OSError as exc:
            return type(exc).__name__
        finally:
            conn.close()

    def status(self) -> dict[str, Any]:
        state = self._load()
        running = {name: _pid_alive(pid) for name, pid in state.roots.items()}
        probes: dict[str, int | str] = {}
        if self._alive(state):
            probes = {name: self.probe(state.config, path) for name, path in PROBES.items()}
        return {
            "dir": str(self.dir),
            "running": running,
            "broken": state.broken,
            "probes": probes,
            "inventory": str(self.inventory),
        }

    def _wait_healthy(self, cfg: LabConfig, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        bad: dict[str, int | str] = {}
        while time.monotonic() < deadline:
            bad = {name: s for name, path in PROBES.items() if (s := self.probe(cfg, path, 5.0)) != 200}
            if not bad:
                return
            time.sleep(0.2)
        detail = ", ".join(f"{k}={v}" for k, v in bad.items())
        raise LabError(f"the lab is not healthy after {timeout:g}s: {detail}; see {self.dir}/*/supervisor/log")

    def new_log_text(self, cfg: LabConfig, which: str, since: int) -> str:
        path = Path(self.web(cfg).nginx) / "logs" / f"{which}.log"
        with path.open("rb") as fh:
            fh.seek(since)
            return fh.read().decode("utf-8", "replace")

    def log_size(self, cfg: LabConfig, which: str) -> int:
        path = Path(self.web(cfg).nginx) / "logs" / f"{which}.log"
        return path.stat().st_size if path.exists() else 0


# -- helpers -----------------------------------------------------------------------


def _php_fpm() -> str | None:
    for name in ("php-fpm", *(f"php-fpm8.{n}" for n in range(4, -1, -1)), "php-fpm7.4"):
        found = shutil.which(name) or (f"/usr/sbin/{name}" if Path(f"/usr/sbin/{name}").exists() else None)
        if found:
            return found
    return None


def _pid_alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _signal(pid: int | None, sig: int) -> None:
    if pid:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None


def _children(pid: int) -> Iterator[int]:
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                stat = Path(f"/proc/{entry.name}/stat").read_text()
            except (FileNotFoundError, ProcessLookupError):
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                yield int(entry.name)


def _cmdline(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except (FileNotFoundError, ProcessLookupError):
        return None


def _wait_until(ready: Callable[[], bool], timeout: float, failure: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready():
            return
        time.sleep(0.05)
    raise LabError(f"{failure} after {timeout:g}s")


def _accepts(addr: str, port: int) -> bool:
    try:
        with socket.create_connection((addr, port), timeout=1):
            return True
    except OSError:
        return False


def _wait_port(addr: str, port: int, what: str, timeout: float = 20.0, udp: bool = False) -> None:
    check = (lambda: _udp_bound(addr, port)) if udp else (lambda: _accepts(addr, port))
    _wait_until(check, timeout, f"{what} is not listening on {addr}:{port}")


def _udp_bound(addr: str, port: int) -> bool:
    hex_addr = "".join(f"{int(o):02X}" for o in reversed(addr.split(".")))
    needle = f"{hex_addr}:{port:04X}"
    try:
        return any(line.split()[1] == needle for line in Path("/proc/net/udp").read_text().splitlines()[1:])
    except (FileNotFoundError, IndexError):
        return False


def _wait_closed(addr: str, port: int, timeout: float = 10.0) -> None:
    _wait_until(lambda: not _accepts(addr, port), timeout, f"{addr}:{port} still accepts connections")


def _wait_path(path: Path, what: str, timeout: float = 20.0) -> None:
    _wait_until(path.exists, timeout, f"{what} did not appear at {path}")
