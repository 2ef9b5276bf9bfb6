"""Server and location matching agrees with a real nginx on a table of cases.

Every location in the config answers its own label; for each (host, URI) the
label our matcher predicts must be the one nginx itself returns.
"""

from __future__ import annotations

import http.client
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from remediate.nginx import NginxConfig, route

ADDR, PORT = "127.0.20.97", 8097

SITE = """\
events {}
error_log {d}/error.log;
pid {d}/nginx.pid;
http {
    access_log off;
    server {
        listen ADDR:PORT default_server;
        server_name main.test;
        location / { return 200 "root"; }
        location = / { return 200 "exact-root"; }
        location /images/ { return 200 "images"; }
        location ^~ /static/ { return 200 "static-noregex"; }
        location ~* \\.(gif|jpg|png)$ { return 200 "regex-img"; }
        location ~ ^/api/v[0-9]+/ { return 200 "regex-api"; }
        location /api/ { return 200 "api"; }
        location = /api/exact { return 200 "api-exact"; }
        location /nested/ {
            location /nested/deep/ { return 200 "nested-deep"; }
            location ~ \\.json$ { return 200 "nested-json"; }
            return 200 "nested";
        }
        location ^~ /caret/ {
            location ~ \\.txt$ { return 200 "caret-txt"; }
            return 200 "caret";
        }
        location /outer/ {
            location ^~ /outer/in/ { return 200 "outer-in-caret"; }
            return 200 "outer";
        }
        location ~ \\.php$ { return 200 "php"; }
        location ~ /outer/in/x { return 200 "regex-outer-in"; }
        location /case/ { return 200 "case"; }
        location ~ (?<name>named)/(?<v>\\d+)$ { return 200 "named-capture"; }
        location @named { return 200 "named"; }
    }
    server { listen ADDR:PORT; server_name *.example.com; location / { return 200 "wild-head"; } }
    server { listen ADDR:PORT; server_name www.example.*; location / { return 200 "wild-tail"; } }
    server { listen ADDR:PORT; server_name ~^(?<sub>.+)\\.regex\\.test$; location / { return 200 "regex-server"; } }
    server { listen ADDR:PORT; server_name exact.example.com; location / { return 200 "exact-server"; } }
    server { listen ADDR:PORT; server_name .dot.test; location / { return 200 "dot-server"; } }
}
""".replace("ADDR", ADDR).replace("PORT", str(PORT))

CASES = [
    ("main.test", "/"),
    ("main.test", "/index.html"),
    ("main.test", "/images/a.gif"),
    ("main.test", "/images/a.txt"),
    ("main.test", "/static/a.gif"),
    ("main.test", "/api/v1/users"),
    ("main.test", "/api/users"),
    ("main.test", "/api/exact"),
    ("main.test", "/api/exact/more"),
    ("main.test", "/nested/deep/x"),
    ("main.test", "/nested/a.json"),
    ("main.test", "/nested/deep/a.json"),
    ("main.test", "/nested/x"),
    ("main.test", "/caret/a.txt"),
    ("main.test", "/caret/a.gif"),
    ("main.test", "/outer/in/x"),
    ("main.test", "/outer/in/y"),
    ("main.test", "/outer/z.php"),
    ("main.test", "/outer/plain"),
    ("main.test", "/CASE/"),
    ("main.test", "/case/x"),
    ("main.test", "/a.GIF"),
    ("main.test", "/a/named/42"),
    ("main.test", "/images/../static/x.gif"),
    ("main.test", "//images//a.txt"),
    ("main.test", "/%69mages/x"),
    ("main.test", "/index.php?next=/static/"),
    ("a.example.com", "/"),
    ("www.example.org", "/"),
    ("www.example.com", "/"),
    ("x.regex.test", "/"),
    ("exact.example.com", "/"),
    ("dot.test", "/"),
    ("a.dot.test", "/"),
    ("unknown.test", "/images/"),
    ("MAIN.TEST", "/api/users"),
]


@pytest.fixture(scope="module")
def nginx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NginxConfig]:
    nginx_bin = shutil.which("nginx") or "/usr/sbin/nginx"
    if not Path(nginx_bin).exists():
        pytest.fail("nginx is not installed: apt-get install nginx", pytrace=False)
    d = tmp_path_factory.mktemp("nginx-match")
    conf = d / "nginx.conf"
    conf.write_text(SITE.replace("{d}", str(d)))
    proc = subprocess.Popen(
        [nginx_bin, "-p", str(d), "-c", str(conf), "-g", "daemon off; master_process off;"],
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            http.client.HTTPConnection(ADDR, PORT, timeout=1).request("GET", "/")
            break
        except OSError:
            if proc.poll() is not None:
                pytest.fail(f"nginx did not start: {proc.stderr.read().decode() if proc.stderr else ''}")
            time.sleep(0.05)
    try:
        yield NginxConfig.from_files({str(conf): conf.read_bytes()}, str(conf))
    finally:
        proc.send_signal(signal.SIGQUIT)
        proc.wait(10)


def _nginx_says(host: str, uri: str) -> str:
    conn = http.client.HTTPConnection(ADDR, PORT, timeout=5)
    try:
        conn.request("GET", uri, headers={"Host": host})
        return conn.getresponse().read().decode()
    finally:
        conn.close()


def _we_say(config: NginxConfig, host: str, uri: str) -> str:
    match = route(config, host, uri, PORT, ADDR)
    assert match is not None and match.location is not None
    returns = [d for d in match.location.children if d.name == "return"]
    return returns[0].args[1]


@pytest.mark.parametrize(("host", "uri"), CASES, ids=[f"{h}{u}" for h, u in CASES])
def test_location_matching_agrees_with_nginx(nginx: NginxConfig, host: str, uri: str) -> None:
    """Our choice of server and location for (host, uri) is the one real nginx makes."""
    assert _we_say(nginx, host, uri) == _nginx_says(host, uri)
