"""Build from-source.tsv: error-log lines as nginx writes them, labelled, from nginx's source texts.

    python tests/corpus/errorlog/build.py   # rewrites from-source.tsv beside this file

Each instance below is one ngx_log_error / ngx_connection_error / ngx_ssl_error call reachable
while nginx talks to an upstream (or a look-alike from another phase), written from the format
string in nginx's source with the errno and action it can carry. It is filled in for each
platform whose errno spelling differs (glibc, musl, FreeBSD, macOS), for each kind of upstream
(proxy, fastcgi, uwsgi, scgi, grpc, memcached, stream), and wrapped in the prefixes real logs
carry (syslog, journald, Docker/compose, Kubernetes CRI, nginx's stderr form), so the corpus
tests the classifier's reading of the line, not the classifier against itself: this file does
not import remediate.

Columns: label, source (file: function), errno, platform, prefix, line.
"""

from __future__ import annotations

import itertools
import json
import zlib
from pathlib import Path

OUT = Path(__file__).with_name("from-source.tsv")

# errno → platform → (number, strerror text): glibc, musl, FreeBSD and macOS headers.
ERRNO = {
    "ECONNREFUSED": {"linux": (111, "Connection refused"), "musl": (111, "Connection refused"),
                     "freebsd": (61, "Connection refused"), "macos": (61, "Connection refused")},
    "EHOSTUNREACH": {"linux": (113, "No route to host"), "musl": (113, "Host is unreachable"),
                     "freebsd": (65, "No route to host"), "macos": (65, "No route to host")},
    "ENETUNREACH": {"linux": (101, "Network is unreachable"), "musl": (101, "Network unreachable"),
                    "freebsd": (51, "Network is unreachable"), "macos": (51, "Network is unreachable")},
    "EHOSTDOWN": {"linux": (112, "Host is down"), "freebsd": (64, "Host is down")},
    "ENETDOWN": {"linux": (100, "Network is down"), "macos": (50, "Network is down")},
    "ECONNRESET": {"linux": (104, "Connection reset by peer"), "musl": (104, "Connection reset by peer"),
                   "freebsd": (54, "Connection reset by peer"), "macos": (54, "Connection reset by peer")},
    "EPIPE": {"linux": (32, "Broken pipe"), "freebsd": (32, "Broken pipe")},
    "ENOTCONN": {"linux": (107, "Transport endpoint is not connected"), "musl": (107, "Socket not connected"),
                 "macos": (57, "Socket is not connected")},
    "ETIMEDOUT": {"linux": (110, "Connection timed out"), "musl": (110, "Operation timed out"),
                  "freebsd": (60, "Operation timed out"), "macos": (60, "Operation timed out")},
    "EADDRNOTAVAIL": {"linux": (99, "Cannot assign requested address"), "musl": (99, "Address not available"),
                      "freebsd": (49, "Can't assign requested address")},
    "EAGAIN": {"linux": (11, "Resource temporarily unavailable")},  # unix socket, listen queue full: Linux only
    "EMFILE": {"linux": (24, "Too many open files"), "musl": (24, "No file descriptors available"),
               "freebsd": (24, "Too many open files"), "macos": (24, "Too many open files")},
    "ENFILE": {"linux": (23, "Too many open files in system"), "freebsd": (23, "Too many open files in system")},
    "ENOENT": {"linux": (2, "No such file or directory"), "musl": (2, "No such file or directory"),
               "freebsd": (2, "No such file or directory"), "macos": (2, "No such file or directory")},
    "EACCES": {"linux": (13, "Permission denied"), "musl": (13, "Permission denied"),
               "freebsd": (13, "Permission denied"), "macos": (13, "Permission denied")},
    "ENOTSOCK": {"linux": (88, "Socket operation on non-socket"), "musl": (88, "Not a socket"),
                 "freebsd": (38, "Socket operation on non-socket")},
}  # fmt: skip

# The upstream field each module logs (ngx_http_upstream_log_error / ngx_stream_proxy_log_error).
UPSTREAMS = {
    "proxy": 'upstream: "http://10.10.10.20:8080/api/orders?id=7"',
    "proxy6": 'upstream: "http://[2001:db8::20]:8080/"',
    "fastcgi": 'upstream: "fastcgi://127.0.0.1:9000"',
    "uwsgi": 'upstream: "uwsgi://10.0.3.4:3031"',
    "scgi": 'upstream: "scgi://127.0.0.1:4000"',
    "grpc": 'upstream: "grpc://10.0.0.7:50051"',
    "memcached": 'upstream: "memcached://127.0.0.1:11211"',
    "https": 'upstream: "https://10.10.10.30:443/login"',
}
UNIX_UPSTREAMS = {
    "fastcgi": 'upstream: "fastcgi://unix:/run/php/php8.2-fpm.sock:"',
    "uwsgi": 'upstream: "uwsgi://unix:/run/uwsgi/app.sock:"',
    "proxy": 'upstream: "http://unix:/run/gunicorn.sock:/api/v1/items"',
    "scgi": 'upstream: "scgi://unix:/var/run/scgi.sock:"',
    "grpc": 'upstream: "grpc://unix:/run/grpc/api.sock:"',
}
SOCKET_PATHS = {
    "fastcgi": "/run/php/php8.2-fpm.sock",
    "uwsgi": "/run/uwsgi/app.sock",
    "proxy": "/run/gunicorn.sock",
    "scgi": "/var/run/scgi.sock",
    "grpc": "/run/grpc/api.sock",
}
REQUESTS = [
    "GET /api/orders?id=7 HTTP/1.1",
    "POST /index.php HTTP/2.0",
    "GET /(111: Connection refused) HTTP/1.1",  # a cause's words inside the request never count
    "GET /wp-login.php HTTP/1.1",
    "PUT /v2/items/9 HTTP/1.1",
]
PREFIXES = {
    "none": "{line}",
    "syslog": "Nov 21 10:{mm}:01 web01 nginx: {line}",
    "journald-short": "Nov 21 10:{mm}:01 web01 nginx[812]: {line}",
    "journald-cat": "{line}",
    "compose": "web-1  | {line}",
    "docker-json": "{json}",
    "docker-timestamps": "2026-11-21T10:{mm}:01.123456789Z {line}",
    "cri": "2026-11-21T10:{mm}:01.123456789+00:00 stderr F {line}",
}
_counter = itertools.count(1)
_prefix_cycle = itertools.cycle(PREFIXES)


def _pick(*parts: str) -> int:
    """A stable number from ``parts`` (the corpus must not change between runs, so no hash())."""
    return zlib.crc32("/".join(parts).encode())


def stamp() -> tuple[str, int]:
    n = next(_counter)
    return f"2026/11/21 10:{n % 60:02d}:{(n * 7) % 60:02d}", n


def errno_text(name: str, platform: str) -> str:
    number, text = ERRNO[name][platform]
    return f" ({number}: {text})"


def http(level: str, message: str, action: str, upstream: str, *, fields: bool = True) -> str:
    """A line from ngx_http_log_error: the message, " while ACTION", client, server, request, upstream, host."""
    ts, n = stamp()
    line = f"{ts} [{level}] 2210#2210: *{1000 + n} {message}"
    if action:
        line += f" while {action}"
    if fields:
        line += (
            f', client: 192.168.10.{n % 250}, server: shop.example.com, request: "{REQUESTS[n % len(REQUESTS)]}"'
            + (f", {upstream}" if upstream else "")
            + ', host: "shop.example.com"'
        )
    return line


def stream(level: str, message: str, action: str) -> str:
    """A line from ngx_stream_log_error + ngx_stream_proxy_log_error."""
    ts, n = stamp()
    return (
        f"{ts} [{level}] 31#31: *{n} {message} while {action}, client: 10.1.1.{n % 250}, server: 0.0.0.0:3306, "
        f'upstream: "10.0.5.{n % 250}:3306", bytes from/to client:0/0, bytes from/to upstream:0/0'
    )


def plain(level: str, message: str, *, conn: bool = False) -> str:
    """A line with no http fields (startup, resolver, accept)."""
    ts, n = stamp()
    return f"{ts} [{level}] 1187#1187: " + (f"*{n} " if conn else "") + message


def wrap(line: str, prefix: str) -> str:
    mm = f"{next(_counter) % 60:02d}"
    if prefix == "docker-json":
        body = json.dumps({"log": line + "\n", "stream": "stderr", "time": f"2026-11-21T10:{mm}:01.1Z"})
        return body
    return PREFIXES[prefix].format(line=line, mm=mm)


Row = tuple[str, str, str, str, str]  # label, source, errno, platform, line


def rows() -> list[Row]:
    out: list[Row] = []

    def add(label: str, source: str, line: str, errno: str = "-", platform: str = "-") -> None:
        out.append((label, source, errno, platform, line))

    ev_connect = "src/event/ngx_event_connect.c: ngx_event_connect_peer"
    up_test = "src/http/ngx_http_upstream.c: ngx_http_upstream_test_connect"
    # socket: connect() to unix:PATH failed; CRIT unless the errno is in the "refused" set (then ERR)
    for errno in ("ENOENT", "EACCES", "ECONNREFUSED", "ENOTSOCK"):
        for platform in ERRNO[errno]:
            for kind in UNIX_UPSTREAMS:
                if (_pick(errno, platform, kind) % 2) and kind != "fastcgi":
                    continue
                level = "error" if errno == "ECONNREFUSED" else "crit"
                message = f"connect() to unix:{SOCKET_PATHS[kind]} failed{errno_text(errno, platform)}"
                add(
                    "socket",
                    ev_connect,
                    http(level, message, "connecting to upstream", UNIX_UPSTREAMS[kind]),
                    errno,
                    platform,
                )
    # down: the asynchronous connect() failed (Linux epoll: SO_ERROR), the synchronous one naming the
    # peer (BSD loopback refuses at once), kevent()'s report (FreeBSD, macOS), stream's own.
    for errno in ("ECONNREFUSED", "EHOSTUNREACH", "ENETUNREACH", "EHOSTDOWN", "ENETDOWN", "ECONNRESET"):
        for platform in ERRNO[errno]:
            for kind in ("proxy", "proxy6", "fastcgi", "grpc", "uwsgi"):
                if _pick(errno, platform, kind) % 3 and kind != "proxy":
                    continue
                message = f"connect() failed{errno_text(errno, platform)}"
                add("down", up_test, http("error", message, "connecting to upstream", UPSTREAMS[kind]), errno, platform)
    for platform in ("freebsd", "macos", "linux"):
        message = f"connect() to 10.10.10.20:8080 failed{errno_text('ECONNREFUSED', platform)}"
        add(
            "down",
            ev_connect,
            http("error", message, "connecting to upstream", UPSTREAMS["proxy"]),
            "ECONNREFUSED",
            platform,
        )
        if platform != "linux":
            for errno in ("ECONNREFUSED", "EHOSTUNREACH"):
                message = f"kevent() reported that connect() failed{errno_text(errno, platform)}"
                add(
                    "down",
                    "src/http/ngx_http_upstream.c: ngx_http_upstream_test_connect (NGX_HAVE_KQUEUE)",
                    http("error", message, "connecting to upstream", UPSTREAMS["proxy"]),
                    errno,
                    platform,
                )
    for platform in ("linux", "freebsd"):
        add(
            "down",
            "src/stream/ngx_stream_proxy_module.c: ngx_stream_proxy_test_connect",
            stream("error", f"connect() failed{errno_text('ECONNREFUSED', platform)}", "connecting to upstream"),
            "ECONNREFUSED",
            platform,
        )
        add(
            "down",
            "src/os/unix/ngx_recv.c: ngx_unix_recv (refused seen on the first read)",
            http(
                "error",
                f"recv() failed{errno_text('ECONNREFUSED', platform)}",
                "reading response header from upstream",
                UPSTREAMS["uwsgi"],
            ),
            "ECONNREFUSED",
            platform,
        )
        add(
            "down",
            "src/os/unix/ngx_writev_chain.c: ngx_writev",
            http(
                "error",
                f"writev() failed{errno_text('ECONNREFUSED', platform)}",
                "sending request to upstream",
                UPSTREAMS["fastcgi"],
            ),
            "ECONNREFUSED",
            platform,
        )
    # timeout: ngx_http_upstream_next(NGX_HTTP_UPSTREAM_FT_TIMEOUT) and the read/write handlers
    up_timeout = "src/http/ngx_http_upstream.c: ngx_http_upstream_next, ngx_http_upstream_process_upstream"
    actions = (
        "connecting to upstream",
        "reading response header from upstream",
        "sending request to upstream",
        "reading upstream",
        "SSL handshaking to upstream",
    )
    for platform in ("linux", "musl", "freebsd", "macos"):
        for action in actions:
            for kind in ("proxy", "fastcgi", "grpc", "https", "uwsgi", "scgi"):
                if _pick(platform, action, kind) % 4 and kind != "proxy":
                    continue
                message = f"upstream timed out{errno_text('ETIMEDOUT', platform)}"
                add("timeout", up_timeout, http("error", message, action, UPSTREAMS[kind]), "ETIMEDOUT", platform)
        add(
            "timeout",
            "src/stream/ngx_stream_proxy_module.c: ngx_stream_proxy_process_connection",
            stream("error", f"upstream timed out{errno_text('ETIMEDOUT', platform)}", "connecting to upstream"),
            "ETIMEDOUT",
            platform,
        )
        add(
            "timeout",
            up_test,
            http(
                "error",
                f"connect() failed{errno_text('ETIMEDOUT', platform)}",
                "connecting to upstream",
                UPSTREAMS["proxy"],
            ),
            "ETIMEDOUT",
            platform,
        )
    # dns: the upstream's and the resolver's own messages
    resolver = "src/core/ngx_resolver.c"
    for name, code, text in (
        ("api.internal", 3, "Host not found"),
        ("api.internal", 2, "Server failure"),
        ("backend.svc.cluster.local", 110, "Operation timed out"),
        ("db.example.org", 5, "Operation refused"),
        ("x.example.org", 1, "Format error"),
        ("app", 4, "Unimplemented"),
    ):
        add(
            "dns",
            "src/http/ngx_http_upstream.c: ngx_http_upstream_resolve_handler",
            http("error", f"{name} could not be resolved ({code}: {text})", "", UPSTREAMS["proxy"]),
        )
        add(
            "dns",
            "src/stream/ngx_stream_proxy_module.c: ngx_stream_proxy_resolve_handler",
            stream("error", f"{name} could not be resolved ({code}: {text})", "connecting to upstream"),
        )
    for name in ("api.internal", "backend", "auth.svc.cluster.local", "cdn-origin.example.com"):
        add(
            "dns",
            "src/http/ngx_http_upstream.c: ngx_http_upstream_init_request",
            http("error", f"no resolver defined to resolve {name}", "", ""),
        )
    for where in ("/etc/nginx/conf.d/default.conf:12", "/etc/nginx/sites-enabled/shop:40", "/etc/nginx/nginx.conf:88"):
        add(
            "dns",
            "src/http/ngx_http_upstream.c: ngx_http_upstream_add (ngx_parse_url: host not found)",
            plain("emerg", f'host not found in upstream "app:8080" in {where}'),
        )
        add(
            "dns",
            "src/core/ngx_log.c: ngx_log_error_core (stderr form) via ngx_http_upstream_add",
            f'nginx: [emerg] host not found in upstream "backend.internal:9000" in {where}',
        )
    add(
        "dns",
        "src/http/ngx_http_core_module.c: ngx_http_core_resolver (ngx_parse_url)",
        'nginx: [emerg] host not found in resolver "dns.internal" in /etc/nginx/nginx.conf:30',
    )
    for platform in ("linux", "freebsd", "musl"):
        for fn in ("send", "recv"):
            message = f"{fn}() failed{errno_text('ECONNREFUSED', platform)} while resolving, resolver: 127.0.0.53:53"
            add(
                "dns",
                f"{resolver}: ngx_resolver_send_udp_query / ngx_resolver_udp_read (ngx_resolver_log_error)",
                plain("error", message),
                "ECONNREFUSED",
                platform,
            )
        message = (
            f"connect() to 10.0.0.2:53 failed{errno_text('ETIMEDOUT', platform)} while resolving, resolver: 10.0.0.2:53"
        )
        add("dns", f"{resolver}: ngx_tcp_connect", plain("error", message), "ETIMEDOUT", platform)
    for message in (
        'DNS error (2: Server failure), query id:4242, name:"api.internal"',
        "unexpected DNS response for api.internal",
        "wrong ident 17 in DNS response for api.internal, expect 42",
        "invalid UDP DNS response 4242 fl:8180",
        "DNS error (5: Operation refused), query id:777",
    ):
        add("dns", f"{resolver}: ngx_resolver_process_response", plain("error", message + ", resolver: 10.0.0.2:53"))
    # invalid-response: what the upstream sent, by module
    proxy = "src/http/modules/ngx_http_proxy_module.c: ngx_http_proxy_process_status_line / process_header"
    header = "reading response header from upstream"
    for message, kind, source in (
        ("upstream sent no valid HTTP/1.0 header", "proxy", proxy),
        ("upstream sent invalid header", "proxy", proxy),
        ('upstream sent invalid header: "X-Bad\\x00Header:..."', "proxy", proxy),
        (
            "upstream sent invalid chunked response",
            "proxy",
            "src/http/modules/ngx_http_proxy_module.c: ngx_http_proxy_chunked_filter",
        ),
        ("upstream sent too big header", "proxy", "src/http/ngx_http_upstream.c: ngx_http_upstream_process_header"),
        ("upstream sent too big header", "fastcgi", "src/http/ngx_http_upstream.c: ngx_http_upstream_process_header"),
        (
            'upstream sent more data than specified in "Content-Length" header',
            "proxy",
            "src/http/ngx_http_upstream.c: ngx_http_upstream_process_non_buffered_request",
        ),
        (
            'upstream sent "Content-Length" and "Transfer-Encoding" headers at the same time',
            "proxy",
            "src/http/ngx_http_upstream.c: ngx_http_upstream_process_headers",
        ),
        (
            'upstream sent unknown "Transfer-Encoding": "gzip"',
            "proxy",
            "src/http/ngx_http_upstream.c: ngx_http_upstream_process_transfer_encoding",
        ),
        (
            'upstream sent invalid "Content-Length" header: "Content-Length: -1"',
            "proxy",
            "src/http/ngx_http_upstream.c: ngx_http_upstream_process_content_length",
        ),
        (
            'upstream sent duplicate header line: "Content-Length: 10", previous value: "Content-Length: 12"',
            "proxy",
            "src/http/ngx_http_upstream.c: ngx_http_upstream_process_content_length",
        ),
        (
            'upstream sent invalid status "abc OK"',
            "uwsgi",
            "src/http/modules/ngx_http_uwsgi_module.c: ngx_http_uwsgi_process_status_line",
        ),
        (
            'upstream sent invalid status "2000 OK"',
            "scgi",
            "src/http/modules/ngx_http_scgi_module.c: ngx_http_scgi_process_status_line",
        ),
        (
            "upstream sent no valid HTTP/1.0 header",
            "uwsgi",
            "src/http/modules/ngx_http_uwsgi_module.c: ngx_http_uwsgi_process_status_line",
        ),
        (
            "upstream sent unsupported FastCGI protocol version: 72",
            "fastcgi",
            "src/http/modules/ngx_http_fastcgi_module.c: ngx_http_fastcgi_process_record",
        ),
        (
            "upstream sent invalid FastCGI record type: 11",
            "fastcgi",
            "src/http/modules/ngx_http_fastcgi_module.c: ngx_http_fastcgi_process_record",
        ),
        (
            "upstream sent unexpected FastCGI request id high byte: 1",
            "fastcgi",
            "src/http/modules/ngx_http_fastcgi_module.c: ngx_http_fastcgi_process_record",
        ),
        (
            "upstream prematurely closed FastCGI stdout",
            "fastcgi",
            "src/http/modules/ngx_http_fastcgi_module.c: ngx_http_fastcgi_process_header",
        ),
        (
            "upstream prematurely closed FastCGI request",
            "fastcgi",
            "src/http/modules/ngx_http_fastcgi_module.c: ngx_http_fastcgi_input_filter",
        ),
        (
            'upstream sent invalid header: "Status: 99x"',
            "fastcgi",
            "src/http/modules/ngx_http_fastcgi_module.c: ngx_http_fastcgi_process_header",
        ),
        (
            "upstream rejected request with error 2",
            "grpc",
            "src/http/modules/ngx_http_grpc_module.c: ngx_http_grpc_process_header",
        ),
        (
            "upstream sent frame for unknown stream 3",
            "grpc",
            "src/http/modules/ngx_http_grpc_module.c: ngx_http_grpc_process_header",
        ),
        (
            "upstream sent goaway with error 11",
            "grpc",
            "src/http/modules/ngx_http_grpc_module.c: ngx_http_grpc_parse_goaway",
        ),
        ("upstream prematurely closed stream", "grpc", "src/http/modules/ngx_http_grpc_module.c: ngx_http_grpc_filter"),
        (
            "upstream sent invalid http2 table index: 70",
            "grpc",
            "src/http/modules/ngx_http_grpc_module.c: ngx_http_grpc_parse_header",
        ),
        (
            "upstream sent no :status header",
            "grpc",
            "src/http/modules/ngx_http_grpc_module.c: ngx_http_grpc_process_header",
        ),
        (
            "upstream sent too large http2 frame: 16777215",
            "grpc",
            "src/http/modules/ngx_http_grpc_module.c: ngx_http_grpc_parse_frame",
        ),
        (
            'memcached sent invalid response: "SERVER_ERROR out of memory"',
            "memcached",
            "src/http/modules/ngx_http_memcached_module.c: ngx_http_memcached_process_header",
        ),
        (
            "memcached sent invalid trailer",
            "memcached",
            "src/http/modules/ngx_http_memcached_module.c: ngx_http_memcached_filter",
        ),
        (
            'memcached sent invalid length in response "VALUE k 0 x" for key "k"',
            "memcached",
            "src/http/modules/ngx_http_memcached_module.c: ngx_http_memcached_process_header",
        ),
    ):
        add("invalid-response", source, http("error", message, header, UPSTREAMS[kind]))
    closed = "src/http/ngx_http_upstream.c: ngx_http_upstream_process_header, ngx_http_upstream_process_upstream"
    for action in (header, "reading upstream"):
        for kind in ("proxy", "uwsgi", "scgi"):
            add(
                "invalid-response",
                closed,
                http("error", "upstream prematurely closed connection", action, UPSTREAMS[kind]),
            )
    ssl = "src/http/ngx_http_upstream.c: ngx_http_upstream_ssl_handshake"
    openssl = "src/event/ngx_event_openssl.c: ngx_ssl_handshake (ngx_ssl_connection_error)"
    for message, source in (
        ("upstream SSL certificate verify error: (10:certificate has expired)", ssl),
        ("upstream SSL certificate verify error: (20:unable to get local issuer certificate)", ssl),
        ("upstream SSL certificate verify error: (18:self-signed certificate)", ssl),
        ('upstream SSL certificate does not match "backend.internal"', ssl),
        ("SSL_do_handshake() failed (SSL: error:0A00010B:SSL routines::wrong version number)", openssl),
        (
            "SSL_do_handshake() failed (SSL: error:0A000410:SSL routines::sslv3 alert handshake failure:SSL alert number 40)",
            openssl,
        ),
        ("SSL_do_handshake() failed (SSL: error:1408F10B:SSL routines:ssl3_get_record:wrong version number)", openssl),
        ("SSL_do_handshake() failed (SSL: error:0A000086:SSL routines::certificate verify failed)", openssl),
        (
            "peer closed connection in SSL handshake (104: Connection reset by peer)",
            "src/event/ngx_event_openssl.c: ngx_ssl_handshake",
        ),
        ("peer closed connection in SSL handshake", "src/event/ngx_event_openssl.c: ngx_ssl_handshake"),
    ):
        add("invalid-response", source, http("error", message, "SSL handshaking to upstream", UPSTREAMS["https"]))
    add(
        "invalid-response",
        "src/stream/ngx_stream_proxy_module.c: ngx_stream_proxy_ssl_handshake",
        stream(
            "error",
            "upstream SSL certificate verify error: (19:self-signed certificate in certificate chain)",
            "SSL handshaking to upstream",
        ),
    )
    add(
        "invalid-response",
        "src/event/ngx_event_openssl.c: ngx_ssl_handle_recv",
        http(
            "error",
            "SSL_read() failed (SSL: error:0A000126:SSL routines::unexpected eof while reading)",
            "reading upstream",
            UPSTREAMS["https"],
        ),
    )
    for errno in ("ECONNRESET", "EPIPE", "ENOTCONN"):
        for platform in ERRNO[errno]:
            fn, action = {
                "ECONNRESET": ("recv", header),
                "EPIPE": ("writev", "sending request to upstream"),
                "ENOTCONN": ("readv", "reading upstream"),
            }[errno]
            add(
                "invalid-response",
                f"src/os/unix/ngx_{fn}.c: ngx_connection_error",
                http("error", f"{fn}() failed{errno_text(errno, platform)}", action, UPSTREAMS["proxy"]),
                errno,
                platform,
            )
    add(
        "invalid-response",
        "src/os/unix/ngx_send.c: ngx_unix_send",
        http(
            "error",
            f"send() failed{errno_text('ECONNRESET', 'linux')}",
            "sending request to upstream",
            UPSTREAMS["fastcgi"],
        ),
        "ECONNRESET",
        "linux",
    )
    # workers: no connection, no descriptor, no local port
    limits = "src/core/ngx_connection.c: ngx_get_connection"
    for n in (512, 768, 1024, 4096):
        add(
            "workers",
            limits,
            http("alert", f"{n} worker_connections are not enough", "connecting to upstream", UPSTREAMS["proxy"]),
        )
        add(
            "workers",
            "src/core/ngx_connection.c: ngx_drain_connections",
            plain("warn", f"{n} worker_connections are not enough, reusing connections"),
        )
    add(
        "workers",
        "src/event/ngx_event_accept.c: ngx_event_accept (ngx_get_connection)",
        plain("alert", "1024 worker_connections are not enough"),
    )
    for errno in ("EMFILE", "ENFILE"):
        for platform in ERRNO[errno]:
            spelled = errno_text(errno, platform)
            add(
                "workers",
                ev_connect,
                http("alert", f"socket() failed{spelled}", "connecting to upstream", UPSTREAMS["proxy"]),
                errno,
                platform,
            )
            add(
                "workers",
                "src/event/ngx_event_accept.c: ngx_event_accept",
                plain("crit", f"accept4() failed{spelled}"),
                errno,
                platform,
            )
            if platform in ("freebsd", "macos"):
                add(
                    "workers",
                    "src/event/ngx_event_accept.c: ngx_event_accept",
                    plain("crit", f"accept() failed{spelled}"),
                    errno,
                    platform,
                )
    add(
        "workers",
        "src/os/unix/ngx_files.c: ngx_open_tempfile (ngx_create_temp_file)",
        http(
            "crit",
            f'open() "/var/cache/nginx/proxy_temp/1/00/0000000001" failed{errno_text("EMFILE", "linux")}',
            "reading upstream",
            UPSTREAMS["proxy"],
        ),
        "EMFILE",
        "linux",
    )
    for platform in ERRNO["EADDRNOTAVAIL"]:
        message = f"connect() to 10.10.10.20:8080 failed{errno_text('EADDRNOTAVAIL', platform)}"
        add(
            "workers",
            ev_connect,
            http("crit", message, "connecting to upstream", UPSTREAMS["proxy"]),
            "EADDRNOTAVAIL",
            platform,
        )
    for kind in ("fastcgi", "uwsgi", "proxy"):
        message = f"connect() to unix:{SOCKET_PATHS[kind]} failed{errno_text('EAGAIN', 'linux')}"
        add(
            "socket",  # the backend is not accepting (php-fpm's pm.max_children saturated), not nginx's workers
            ev_connect + " (EAGAIN: a unix socket's listen queue is full, Linux)",
            http("error", message, "connecting to upstream", UNIX_UPSTREAMS[kind]),
            "EAGAIN",
            "linux",
        )
    # no-live-upstreams: every peer is marked failed
    no_live = "src/http/ngx_http_upstream.c: ngx_http_upstream_connect"
    for kind in ("proxy", "fastcgi", "grpc", "uwsgi", "scgi", "https", "memcached", "proxy6"):
        for _ in range(2):
            add(
                "no-live-upstreams",
                no_live,
                http(
                    "error",
                    "no live upstreams",
                    "connecting to upstream",
                    UPSTREAMS[kind].replace("10.10.10.20:8080", "backend_pool"),
                ),
            )
    for _ in range(4):
        add(
            "no-live-upstreams",
            "src/stream/ngx_stream_proxy_module.c: ngx_stream_proxy_connect",
            stream("error", "no live upstreams", "connecting to upstream"),
        )
    # other: the same words from other phases, and messages that are not a 502's cause
    client = "src/http/ngx_http_request.c / ngx_http_upstream.c (the client's side)"
    for message, action, source in (
        (f"client timed out{errno_text('ETIMEDOUT', 'linux')}", "reading client request headers", client),
        (
            f"client timed out{errno_text('ETIMEDOUT', 'freebsd')}",
            "reading upstream",
            "src/http/ngx_http_upstream.c: ngx_http_upstream_process_non_buffered_request",
        ),
        (
            "client prematurely closed connection",
            "reading upstream",
            "src/http/ngx_http_upstream.c: ngx_http_upstream_check_broken_connection",
        ),
        (
            "epoll_wait() reported that client prematurely closed connection, so upstream connection is closed too",
            "sending request to upstream",
            "src/http/ngx_http_upstream.c: ngx_http_upstream_check_broken_connection",
        ),
        (
            "kevent() reported that client prematurely closed connection, so upstream connection is closed too",
            "connecting to upstream",
            "src/http/ngx_http_upstream.c: ngx_http_upstream_check_broken_connection",
        ),
        (
            'FastCGI sent in stderr: "PHP message: PHP Warning: mysqli::__construct(): (HY000/2002): Connection refused"',
            header,
            "src/http/modules/ngx_http_fastcgi_module.c: ngx_http_fastcgi_process_header",
        ),
        (
            'FastCGI sent in stderr: "Primary script unknown"',
            header,
            "src/http/modules/ngx_http_fastcgi_module.c: ngx_http_fastcgi_process_header",
        ),
        (
            'FastCGI sent in stderr: "connect() failed (111: Connection refused) while connecting to upstream"',
            header,
            "src/http/modules/ngx_http_fastcgi_module.c: ngx_http_fastcgi_process_header",
        ),
        (f"recv() failed{errno_text('ECONNRESET', 'linux')}", "reading client request line", client),
        (f"recv() failed{errno_text('ECONNRESET', 'macos')}", "reading client request headers", client),
        (f"writev() failed{errno_text('EPIPE', 'linux')}", "sending to client", client),
        (f"sendfile() failed{errno_text('EPIPE', 'freebsd')}", "sending response to client", client),
        (
            'upstream sent duplicate header line: "X-Trace: a", previous value: "X-Trace: b", ignored',
            header,
            "src/http/ngx_http_upstream.c: ngx_http_upstream_process_header_line",
        ),
        (
            "an upstream response is buffered to a temporary file /var/cache/nginx/proxy_temp/2/00/0000000002",
            "reading upstream",
            "src/event/ngx_event_pipe.c: ngx_event_pipe_write_chain_to_temp_file",
        ),
        (
            "upstream server temporarily disabled",
            "connecting to upstream",
            "src/http/ngx_http_upstream_round_robin.c: ngx_http_upstream_free_round_robin_peer",
        ),
        (
            'key: "page:/home" was not found by memcached',
            header,
            "src/http/modules/ngx_http_memcached_module.c: ngx_http_memcached_process_header",
        ),
        (
            f'open() "/usr/share/nginx/html/favicon.ico" failed{errno_text("ENOENT", "linux")}',
            "",
            "src/http/modules/ngx_http_static_module.c",
        ),
        (
            f"connect() to 10.10.10.20:8080 failed{errno_text('EACCES', 'linux')}",
            "connecting to upstream",
            ev_connect + " (SELinux or a firewall, not one of the seven causes)",
        ),
        ('limiting requests, excess: 10.500 by zone "api"', "", "src/http/modules/ngx_http_limit_req_module.c"),
        ("access forbidden by rule", "", "src/http/modules/ngx_http_access_module.c"),
        ("client intended to send too large body: 10485761 bytes", "", "src/http/ngx_http_core_module.c"),
        ("upstream response cannot be cached", header, "src/http/ngx_http_upstream.c"),
    ):
        add("other", source, http("error", message, action, UPSTREAMS["proxy"]))
    for message in (
        "SSL_do_handshake() failed (SSL: error:0A00006C:SSL routines::bad key share) while SSL handshaking",
        "SSL_do_handshake() failed (SSL: error:0A000102:SSL routines::unsupported protocol) while SSL handshaking",
        "peer closed connection in SSL handshake (104: Connection reset by peer) while SSL handshaking",
        "peer closed connection in SSL handshake while SSL handshaking",
        "SSL_read() failed (SSL: error:0A000126:SSL routines::unexpected eof while reading) while waiting for request",
    ):
        ts, n = stamp()
        add(
            "other",
            "src/event/ngx_event_openssl.c: ngx_ssl_handshake (a client's handshake)",
            f"{ts} [info] 2210#2210: *{n} {message}, client: 203.0.113.{n % 250}, server: 0.0.0.0:443",
        )
    for message in (
        "bind() to 0.0.0.0:80 failed (98: Address already in use)",
        "still could not bind()",
        'invalid host in upstream "http://app:80x" in /etc/nginx/conf.d/app.conf:3',
        'no port in upstream "backend" in /etc/nginx/conf.d/app.conf:9',
        'unknown directive "proxy_pas" in /etc/nginx/conf.d/app.conf:5',
    ):
        add("other", "src/core/ngx_log.c: ngx_log_error_core (stderr form)", f"nginx: [emerg] {message}")
    add(
        "other",
        "src/stream/ngx_stream_proxy_module.c: ngx_stream_proxy_process (proxy_timeout, an idle session)",
        stream("info", f"connection timed out{errno_text('ETIMEDOUT', 'linux')}", "proxying connection"),
    )
    add(
        "other",
        "src/core/ngx_resolver.c: ngx_resolve_name_done",
        plain("alert", "could not cancel api.internal resolving"),
    )
    add("other", "src/os/unix/ngx_process_cycle.c", plain("notice", "signal process started"))
    add("other", "src/os/unix/ngx_process.c", plain("notice", "start worker process 2211"))
    return out


def truncate(line: str) -> str:
    """nginx cuts a line at NGX_MAX_ERROR_STR (2048 bytes, with the newline): a long request is cut."""
    return (line + " " + "x" * 2100)[:2047]


def main() -> None:
    lines = []
    for n, (label, source, errno, platform, line) in enumerate(rows()):
        prefix = "none" if line.startswith("nginx: [") and n % 2 else next(_prefix_cycle)
        if n % 11 == 5:
            line, prefix = truncate(line), prefix + "+cut"
        lines.append("\t".join((label, source, errno, platform, prefix, wrap(line, prefix.removesuffix("+cut")))))
    header = "# label\tsource\terrno\tplatform\tprefix\tline  (built by build.py from nginx's source texts)\n"
    OUT.write_text(header + "\n".join(lines) + "\n")
    print(f"{len(lines)} lines → {OUT}")


if __name__ == "__main__":
    main()
