"""The lab's files: keys, certificates, every host's configs (from templates/) and the inventory.

``build`` writes a fresh lab directory; the baselines rewrite, in their healthy form (or with a
break's overrides), every file a break may change.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Any

from remediate.lab import procs
from remediate.lab.probes import PROBES
from remediate.lab.webhost import AppHost, LabConfig, WebHost

__all__ = ["build", "render", "rewrite_site", "write_shared_baseline", "write_web_baseline"]

_APP_STATE = ("reports_delay", "tls_issuer", "flaky_mode", "crash_on_start")


def render(name: str, **context: Any) -> str:
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(Path(__file__).parent / "templates")),
        keep_trailing_newline=True,
        undefined=jinja2.StrictUndefined,
        autoescape=False,
    )
    return env.get_template(name).render(**context)


def context(web: WebHost, **overrides: Any) -> dict[str, Any]:
    """What the templates of ``web`` see; a break overrides some of it."""
    cfg = web.cfg
    app = cfg.app()
    return {
        "web": web,
        "app": app,
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
        "api_pass": f"http://{app.addr}:{cfg.app_port}",
        "dyn_resolver": True,
        "dyn_name": "app01.lab",
        "listen_owner": "www-data",
        "listen_group": "www-data",
        **overrides,
    }


def build(cfg: LabConfig) -> LabConfig:
    """Write a fresh lab in ``cfg.dir`` (removing what was there); the config, with php-fpm found."""
    from remediate.lab import pki

    cfg = LabConfig(**{**asdict(cfg), "php_fpm": cfg.php_fpm or procs.find_php_fpm() or ""})
    lab = Path(cfg.dir)
    if lab.exists():
        shutil.rmtree(lab)
    webs, app = cfg.webs(), cfg.app()
    dirs = ["ssh", "pki", "dns", "load", "app01/ssh", "app01/supervisor/log", "app01/state"]
    for web in webs:
        dirs += [
            f"{web.name}/{sub}"
            for sub in (
                "ssh",
                "supervisor/log",
                "etc",
                "bin",
                "www",
                "nginx/conf.d",
                "nginx/sites-available",
                "nginx/sites-enabled",
                "nginx/logs",
                "nginx/ssl",
                "php/pool.d",
                "php/run",
                "php/log",
            )
        ]
    for path in dirs:
        (lab / path).mkdir(parents=True, exist_ok=True)
        (lab / path).chmod(0o755)
    lab.chmod(0o755)
    for host in (*webs, app):
        (lab / host.name).chmod(0o755)
    # SSH: one client key, a host key per host, and the lab's own known_hosts.
    client_pub = pki.make_ssh_key(lab / "ssh" / "id_ed25519")
    known = []
    for host in (*webs, app):
        host_pub = pki.make_ssh_key(Path(host.root) / "ssh" / "ssh_host_ed25519_key")
        (Path(host.root) / "ssh" / "authorized_keys").write_text(client_pub + "\n")
        known.append(f"[{host.addr}]:{cfg.ssh_port} {host_pub}")
        (Path(host.root) / "ssh" / "sshd_config").write_text(
            render("sshd_config.j2", host=host, ports={"ssh": cfg.ssh_port})
        )
    (lab / "ssh" / "known_hosts").write_text("\n".join(known) + "\n")
    # TLS: a "public" CA nginx trusts and an "internal" one it does not.
    pki_dir = lab / "pki"
    for ca_name in ("public-ca", "internal-ca"):
        ca = pki.make_ca(pki_dir, ca_name)
        pki.make_leaf(pki_dir, f"app01-{ca_name.removesuffix('-ca')}", ca, "app01.lab", app.addr)
    for key_file in pki_dir.glob("*.key"):
        key_file.chmod(0o600)
    for web in webs:
        _build_web(web)
        write_web_baseline(web)
    _write_app_supervisor(app)
    write_shared_baseline(cfg)
    _write_inventory(cfg)
    return cfg


def _build_web(web: WebHost) -> None:
    root, nginx, cfg = Path(web.root), Path(web.nginx), web.cfg
    shutil.copy(Path(cfg.dir) / "pki" / "public-ca.crt", nginx / "ssl" / "public-ca.crt")
    # The host's view of /etc: names resolve through the lab's dnsmasq.
    (root / "etc" / "resolv.conf").write_text(f"nameserver {cfg.addr(3)}\noptions timeout:1\n")
    (root / "etc" / "hosts").write_text(f"127.0.0.1\tlocalhost\n{web.addr}\t{web.name}.lab {web.name}\n")
    enter = root / "bin" / "enter"
    enter.write_text(render("enter-web.sh.j2", **context(web)))
    enter.chmod(0o755)
    (root / "www" / "index.php").write_text(render("index.php.j2"))
    (root / "www" / "50x.html").write_text("<h1>502 Bad Gateway</h1>\n")
    sshd = f"/usr/sbin/sshd -D -e -f {web.root}/ssh/sshd_config"
    programs = [
        {"name": "sshd", "command": sshd, "autostart": True},
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
    (root / "supervisor" / "supervisord.conf").write_text(render("supervisord.conf.j2", host=web, programs=programs))
    os.symlink("../sites-available/lab.conf", nginx / "sites-enabled" / "lab.conf")


def _write_app_supervisor(app: AppHost) -> None:
    cfg = app.cfg
    state = f"{app.root}/state"

    def backend(role: str, name: str, listen: str, extra: str = "") -> str:
        return (
            f"{cfg.python} -m remediate.lab.backend serve --role {role} --name {name} --listen {listen} "
            f"--state {state} --pki {cfg.dir}/pki{extra}"
        )

    programs = [
        {"name": "sshd", "command": f"/usr/sbin/sshd -D -e -f {app.root}/ssh/sshd_config", "autostart": True},
        {"name": "app", "command": backend("app", "app", f"{app.addr}:{cfg.app_port}"), "autostart": True},
        {"name": "tls", "command": backend("app", "tls", f"{app.addr}:{cfg.tls_port}", " --tls"), "autostart": True},
        {"name": "flaky", "command": backend("flaky", "flaky", f"{app.addr}:{cfg.flaky_port}"), "autostart": True},
        {"name": "svc-blue", "command": backend("app", "svc-blue", f"{cfg.addr(5)}:{cfg.app_port}"), "autostart": True},
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
    Path(app.supervisor_conf).write_text(render("supervisord.conf.j2", host=app, programs=programs))


def write_web_baseline(web: WebHost, **overrides: Any) -> None:
    """Write every file of ``web`` a break may change, in its healthy form (or with ``overrides``)."""
    ctx = context(web, **overrides)
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
        path.write_text(render(template, **ctx))
        path.chmod(0o644)


def rewrite_site(web: WebHost, **overrides: Any) -> None:
    """Rewrite ``web``'s site config with ``overrides`` (the caller reloads nginx)."""
    (Path(web.nginx) / "sites-available" / "lab.conf").write_text(render("site.conf.j2", **context(web, **overrides)))


def write_shared_baseline(cfg: LabConfig, svc_addr: str | None = None) -> None:
    """The DNS records (svc.lab at ``svc_addr``, healthy: NET.5) and app01's backends' state, healthy."""
    (Path(cfg.dir) / "dns" / "hosts").write_text(f"{cfg.addr(2)}\tapp01.lab\n{svc_addr or cfg.addr(5)}\tsvc.lab\n")
    for name in _APP_STATE:
        (Path(cfg.app().root) / "state" / name).unlink(missing_ok=True)


def _write_inventory(cfg: LabConfig) -> None:
    app, webs = cfg.app(), cfg.webs()
    blocks = []
    for web in webs:
        base = f"http://{web.addr}:{cfg.http_port}"
        probes = "\n".join(f"        - {base}{path}" for path in PROBES.values())
        blocks.append(f"""\
    {web.name}:
      ansible_host: {web.addr}
      nginx_prefix: {web.nginx}
      nginx_conf: {web.nginx}/nginx.conf
      nginx_error_log: {web.nginx}/logs/error.log
      nginx_access_log: {web.nginx}/logs/access.log
      nginx_reload: [/usr/sbin/nginx, -p, {web.nginx}, -c, {web.nginx}/nginx.conf, -s, reload]
      supervisor_config: {web.supervisor_conf}
      restartable_services: [php-fpm]
      php_fpm_bin: {cfg.php_fpm}
      php_fpm_conf: {web.root}/php/php-fpm.conf
      php_fpm_service: php-fpm
      php_fpm_pools: [{web.root}/php/pool.d/www.conf]
      journal_dir: {web.root}/journal
      resolvers: ["{cfg.addr(3)}"]
      tls_ca_bundle: {cfg.dir}/pki/internal-ca.crt
      probe_urls:
{probes}
""")
    members = "".join(f"    {web.name}:\n" for web in webs)
    text = f"""\
# Written by `remediate lab up`: the lab's hosts, ready for `-i`; the web hosts are group `web`.
all:
  vars:
    ansible_user: root
    ansible_port: {cfg.ssh_port}
    ansible_ssh_private_key_file: {cfg.dir}/ssh/id_ed25519
    known_hosts: {cfg.dir}/ssh/known_hosts
    service_manager: supervisor
  hosts:
{"".join(blocks)}    app01:
      ansible_host: {app.addr}
      journal_dir: {app.root}/journal
      supervisor_config: {app.supervisor_conf}
      restartable_services: [app, tls, flaky, svc-blue, svc-green, app-canary]
      restart_wait: 10
      services:
        app: {{port: {cfg.app_port}}}
        tls: {{port: {cfg.tls_port}}}
        flaky: {{port: {cfg.flaky_port}}}
        app-canary: {{port: {cfg.app_port + 2}}}
web:
  hosts:
{members}"""
    (Path(cfg.dir) / "inventory.yml").write_text(text)
