"""The Debian host's root file system: what it holds, and its build (debootstrap, then the lab's files).

Debian bookworm from the mirror apt already uses: systemd, openssh-server, nginx 1.22, php8.2-fpm
with its stock ``www`` pool, journald, dnsmasq, and the lab's backends as systemd units with no
``Restart=``. Built once into ``CACHE`` (``REMEDIATE_ROOTFS_CACHE``), rebuilt when missing or when
``RECIPE`` (a hash of everything here) changes. remediate.lab.realhost boots it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

from remediate.errors import LabError

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
