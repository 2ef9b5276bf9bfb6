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
""".replace("ADDR", ADDR).replace("PORT", str(PORT))

# PCRE-only syntax (remediate.nginx.pcre translates it or refuses), port ranges, and "." segments.
PCRE_SITE = r"""
    server {
        listen ADDR:PORT;
        listen ADDR:8100-8102;
        server_name pcre.test;
        location / { return 200 "p-root"; }
        location ~ ^/h\hx$ { return 200 "h-space"; }
        location ~ "^/x\x{41}$" { return 200 "hex-brace"; }
        location ~ ^/q\Q.+\E$ { return 200 "quoted"; }
        location ~ ^/z/end\z { return 200 "end-z"; }
        location ~ ^/(?i)caseless/ { return 200 "inline-caseless"; }
        location ~ ^/mid/(?i)x$ { return 200 "mid-flag"; }
        location ~ ^/posix/[[:digit:]]+$ { return 200 "posix-digit"; }
        location ~ ^/names/(?<a>[a-z]+)/\k<a>$ { return 200 "backref"; }
        location ~ "^/notspace/[[:^space:]]{2}$" { return 200 "posix-negated"; }
        location ~ ^/dots/a/b/$ { return 200 "dots-slash"; }
        location /dots/ { return 200 "dots-prefix"; }
    }
    server { listen ADDR:PORT; server_name ~^(?i)UPPER\.test$; location / { return 200 "inline-server"; } }
    server {
        listen ADDR:PORT;
        server_name unicode.test;
        location = /exact { return 200 "u-exact"; }
        location ^~ /plain/ { return 200 "u-plain"; }
        location / { return 200 "u-root"; }
        location ~ "^/unicode/\p{Lu}" { return 200 "unicode"; }
        location ~ ^/(?|a(x)|b(y))$ { return 200 "branch-reset"; }
    }
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


def _serve(d: Path, site: str) -> Iterator[NginxConfig]:
    """A real nginx running ``site`` in ``d`` until the module's tests end: the oracle."""
    nginx_bin = shutil.which("nginx") or "/usr/sbin/nginx"
    if not Path(nginx_bin).exists():
        pytest.fail("nginx is not installed: apt-get install nginx", pytrace=False)
    conf = d / "nginx.conf"
    conf.write_text(site.replace("{d}", str(d)))
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


@pytest.fixture(scope="module")
def nginx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NginxConfig]:
    yield from _serve(tmp_path_factory.mktemp("nginx-match"), SITE + PCRE_SITE)


def _nginx_says(host: str, uri: str, port: int = PORT) -> str:
    conn = http.client.HTTPConnection(ADDR, port, timeout=5)
    try:
        conn.request("GET", uri, headers={"Host": host})
        return conn.getresponse().read().decode()
    finally:
        conn.close()


def _we_say(config: NginxConfig, host: str, uri: str, port: int = PORT) -> str:
    match = route(config, host, uri, port, ADDR)
    assert match is not None and match.location is not None
    returns = [d for d in match.location.children if d.name == "return"]
    return returns[0].args[1]


@pytest.mark.parametrize(("host", "uri"), CASES, ids=[f"{h}{u}" for h, u in CASES])
def test_location_matching_agrees_with_nginx(nginx: NginxConfig, host: str, uri: str) -> None:
    """Our choice of server and location for (host, uri) is the one real nginx makes."""
    assert _we_say(nginx, host, uri) == _nginx_says(host, uri)


PCRE_CASES = [
    ("pcre.test", "/h%20x", PORT),
    ("pcre.test", "/h%09x", PORT),
    ("pcre.test", "/hx", PORT),
    ("pcre.test", "/xA", PORT),
    ("pcre.test", "/xa", PORT),
    ("pcre.test", "/q.+", PORT),
    ("pcre.test", "/qa+", PORT),
    ("pcre.test", "/z/end", PORT),
    ("pcre.test", "/CASELESS/x", PORT),
    ("pcre.test", "/mid/X", PORT),
    ("pcre.test", "/MID/x", PORT),
    ("pcre.test", "/posix/123", PORT),
    ("pcre.test", "/posix/12a", PORT),
    ("pcre.test", "/names/ab/ab", PORT),
    ("pcre.test", "/names/ab/cd", PORT),
    ("pcre.test", "/notspace/ab", PORT),
    ("pcre.test", "/notspace/a%20", PORT),
    ("pcre.test", "/dots/a/b/.", PORT),
    ("pcre.test", "/dots/a/b/c/..", PORT),
    ("pcre.test", "/dots/a/b/c/../", PORT),
    ("pcre.test", "/dots/a/b", PORT),
    ("pcre.test", "/posix/7", 8101),
    ("unknown.test", "/mid/x", 8102),
    ("upper.test", "/", PORT),
    ("unicode.test", "/exact", PORT),
    ("unicode.test", "/plain/x", PORT),
]


@pytest.mark.parametrize(("host", "uri", "port"), PCRE_CASES, ids=[f"{h}:{p}{u}" for h, u, p in PCRE_CASES])
def test_pcre_only_syntax_port_ranges_and_dot_segments_agree_with_nginx(
    nginx: NginxConfig, host: str, uri: str, port: int
) -> None:
    """PCRE syntax Python's re spells differently is translated exactly; a listen port range serves each of its
    ports; "/a/b/." keeps its slash and "/a/b/c/.." resolves to "/a/b/", as nginx does."""
    assert _we_say(nginx, host, uri, port) == _nginx_says(host, uri, port)


@pytest.mark.parametrize("uri", ["/unicode/A", "/unicode/a", "/ax", "/other"])
def test_a_regex_remediate_cannot_read_is_cannot_route_never_a_guess(nginx: NginxConfig, uri: str) -> None:
    """\\p{Lu} and a branch reset (?|...) have no exact Python spelling: any URI nginx would test against them
    is "cannot route" (a refusal), never a location nginx might not choose; URIs decided before them still route."""
    from remediate.nginx.match import CannotRoute

    assert _nginx_says("unicode.test", uri) in ("unicode", "u-root", "branch-reset")
    with pytest.raises(CannotRoute, match=r"cannot route: location ~ .*\\p|branch reset"):
        route(nginx, "unicode.test", uri, PORT, ADDR)


def test_memcached_and_tunnel_pass_are_upstream_passes() -> None:
    """memcached_pass and tunnel_pass hand the request to an upstream like proxy_pass does."""
    site = (
        b"http { server { listen 80; location /m { memcached_pass 127.0.0.1:11211; }"
        b" location /t { tunnel_pass 10.0.0.3:22; } location /p { proxy_pass http://b; } } }\n"
    )
    config = NginxConfig.from_files({"/n.conf": site}, "/n.conf")
    assert [(p.directive.name, p.target) for p in config.passes()] == [
        ("memcached_pass", "127.0.0.1:11211"),
        ("tunnel_pass", "10.0.0.3:22"),
        ("proxy_pass", "http://b"),
    ]


def test_a_playbook_whose_route_is_unknown_refuses(tmp_path: Path) -> None:
    """A collector that must route a failing request through a regex remediate cannot read refuses (exit 3) with
    the location and the reason; it does not pick a location nginx might not."""
    from support.lab import text_context

    from remediate.errors import EXIT_REFUSED, Refused
    from remediate.evidence.framework import Log
    from remediate.evidence.timeout import _latest_timeout
    from remediate.nginx.match import CannotRoute

    site = b"http { server { listen 80; location / { proxy_pass http://a; }\n"
    site += b'location ~ "^/\\p{Lu}" { return 404; } } }\n'
    ctx = text_context(tmp_path, site)
    ctx.by_collector["error_log"] = Log(
        "/e.log",
        "2026/11/21 10:00:03 [error] 5#5: *3 upstream timed out (110: Connection timed out) while reading response "
        'header from upstream, client: ::1, server: x, request: "GET /Slow HTTP/1.1", upstream: "http://a/Slow"\n',
    )
    with pytest.raises(CannotRoute, match=r"location ~ \^/\\p\{Lu\} \(/n.conf:2\) uses a Unicode property") as caught:
        _latest_timeout(ctx)
    assert isinstance(caught.value, Refused) and caught.value.exit_code == EXIT_REFUSED
