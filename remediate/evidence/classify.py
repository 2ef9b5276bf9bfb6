"""Label nginx error-log lines with the runbook cause they show, from a table of nginx's own messages.

An error-log line is ``DATE TIME [level] PID#TID: [*CONN ]MESSAGE[ (ERRNO: TEXT)][ while ACTION]
[, client: …, server: …, request: "…", upstream: "…", host: "…"]`` (src/core/ngx_log.c,
ngx_log_error_core; " while ACTION" and the fields come from the log handler,
ngx_http_log_error / ngx_stream_log_error / ngx_resolver_log_error). Messages nginx prints to
stderr at startup read ``nginx: [emerg] MESSAGE`` (the end of ngx_log_error_core). Real logs
often carry a prefix before either form: syslog (``Nov 21 10:00:01 web01 nginx: ``, from
ngx_syslog_add_header), journald ``-o short``, Docker and compose (``web-1  | ``, json-file
``{"log":"``), Kubernetes CRI (``2026-11-21T10:00:01.1Z stderr F ``).

Only MESSAGE is classified, and only from the first head on its line (the first ``] PID#TID: ``
or ``nginx: [level] ``): nginx writes the head before anything a client controls, so a request
line, URI or header that contains a whole fake head cannot fool it. A line cut at nginx's
2048-byte cap (NGX_MAX_ERROR_STR) classifies by its head like any other.

:data:`MESSAGES` is the table: every message nginx logs while it talks to an upstream that says
which cause is behind a 502, with the source file and function that logs it. Several rows depend
on the errno nginx appends (``(111: Connection refused)`` on Linux, ``(61: Connection refused)``
on FreeBSD and macOS, ``(113: Host is unreachable)`` with musl) and on the action after
``while``: :data:`ERRNOS` maps every spelling to one name, and :func:`decide` turns (row, errno,
action) into a label. Lines from other phases that look alike (``client timed out``, a client's
TLS handshake, ``FastCGI sent in stderr`` whose text mentions a refused connection, a duplicate
header nginx ignored) stay ``other``.

A refused TCP connect is labelled ``down``: from the line alone ``down`` and ``proxy-pass`` look
the same; the evidence step tells them apart. Classification works on text decoded with
surrogateescape (or latin-1), so any byte sequence is a line and nothing is lost.
"""

from __future__ import annotations

import heapq
import re
from collections.abc import Iterator
from dataclasses import dataclass

__all__ = ["ERRNOS", "LABELS", "MESSAGES", "Line", "Message", "classify", "classify_text", "decide", "label_of"]

LABELS = ("socket", "down", "timeout", "dns", "invalid-response", "workers", "no-live-upstreams", "other")


@dataclass(frozen=True)
class Message:
    """One row of the table: a message nginx logs, where, and what it means."""

    name: str  # the regex group that finds it
    label: str  # a label, or "by errno" / "by action": decide() reads the errno and the action
    pattern: str  # the MESSAGE's start, as a regex
    source: str  # file: function(s) that log it (nginx 1.27)
    nginx: str  # the format string, as written in the source


MESSAGES: tuple[Message, ...] = (
    # The two forms a storm is made of, with their errnos spelled out so the scan alone decides them
    # (the same calls as the "unix" and "connect" rows below, which decide every other errno).
    Message(
        "unix_file",
        "socket",
        r"connect\(\) to unix:[^ ]*+ failed \((?:1|2|13|111|61|88|38): [^)]*+\) while connecting to upstream",
        "src/event/ngx_event_connect.c: ngx_event_connect_peer",
        "connect() to unix:PATH failed (ENOENT|EACCES|EPERM|ECONNREFUSED|ENOTSOCK) while connecting to upstream",
    ),
    Message(
        "refused",
        "down",
        r"connect\(\) failed \((?:111|61|113|65|101|51|112|64|100|50|104|54): [^)]*+\) while connecting to upstream",
        "src/http/ngx_http_upstream.c: ngx_http_upstream_test_connect",
        "connect() failed (ECONNREFUSED|EHOSTUNREACH|ENETUNREACH|EHOSTDOWN|ENETDOWN|ECONNRESET) while connecting "
        "to upstream",
    ),
    Message(
        "unix",
        "by errno",
        r"connect\(\) to unix:",
        "src/event/ngx_event_connect.c: ngx_event_connect_peer",
        'connect() to %V failed  (%V = "unix:PATH"; ERR, CRIT for errnos outside the "refused" set)',
    ),
    Message(
        "connect",
        "by errno",
        r"(?:connect\(\)(?: to [^ ]+)? failed|kevent\(\) reported that connect\(\) failed) \(",
        "src/http/ngx_http_upstream.c: ngx_http_upstream_test_connect; src/event/ngx_event_connect.c: "
        "ngx_event_connect_peer; src/stream/ngx_stream_proxy_module.c: ngx_stream_proxy_test_connect; "
        "src/core/ngx_resolver.c: ngx_tcp_connect",
        "connect() failed / connect() to %V failed / kevent() reported that connect() failed",
    ),
    Message(
        "limit",
        "workers",
        r'\d++ worker_connections are not enough|[a-z0-9_]++\(\)(?: "[^"\n]*+")? failed \((?:23|24): ',
        "src/core/ngx_connection.c: ngx_get_connection, ngx_drain_connections; src/event/ngx_event_accept.c: "
        "ngx_event_accept; src/event/ngx_event_connect.c: ngx_event_connect_peer (socket())",
        "%ui worker_connections are not enough / accept4() failed / socket() failed  (EMFILE, ENFILE)",
    ),
    Message(
        "io",
        "by errno",
        r"(?:recv|readv|send|writev|sendfile|sendmsg|recvmsg|SSL_read|SSL_write|SSL_do_handshake|SSL_sendfile)"
        r"\(\) failed \(",
        "src/os/unix/ngx_recv.c, ngx_readv_chain.c, ngx_send.c, ngx_writev_chain.c, ngx_udp_recv.c: "
        "ngx_connection_error; src/event/ngx_event_openssl.c: ngx_ssl_handle_recv, ngx_ssl_write, "
        "ngx_ssl_handshake (ngx_ssl_connection_error)",
        "recv() failed / writev() failed / SSL_do_handshake() failed  (the action says which side)",
    ),
    Message(
        "timed",
        "timeout",
        r"upstream timed out \(",
        "src/http/ngx_http_upstream.c: ngx_http_upstream_next (NGX_HTTP_UPSTREAM_FT_TIMEOUT), "
        "ngx_http_upstream_process_non_buffered_request, ngx_http_upstream_process_upstream; "
        "src/stream/ngx_stream_proxy_module.c: ngx_stream_proxy_process_connection",
        "upstream timed out  (NGX_ETIMEDOUT appended)",
    ),
    Message(
        "no_live",
        "no-live-upstreams",
        r"no live upstreams",
        "src/http/ngx_http_upstream.c: ngx_http_upstream_connect; src/stream/ngx_stream_proxy_module.c: "
        "ngx_stream_proxy_connect",
        "no live upstreams",
    ),
    Message(
        "dns",
        "dns",
        r"no resolver defined to resolve |[^ ,()\n]++ could not be resolved \(|host not found in (?:upstream|resolver) "
        r"|DNS error \(|unexpected DNS response for |wrong ident \d+ in DNS response|invalid (?:UDP|TCP) DNS response"
        r"|no (?:A or CNAME|SRV) types? in DNS response",
        "src/http/ngx_http_upstream.c: ngx_http_upstream_init_request, ngx_http_upstream_resolve_handler; "
        "src/core/ngx_inet.c: ngx_parse_inet_url (via ngx_http_upstream_add, ngx_http_core_resolver); "
        "src/core/ngx_resolver.c: ngx_resolver_process_response, ngx_resolver_process_a; src/stream/",
        '%V could not be resolved (%i: %s) / no resolver defined to resolve %V / host not found in upstream "%V"',
    ),
    Message(
        "sent",
        "invalid-response",
        r"upstream (?:sent (?!duplicate header line)|prematurely closed |rejected request with error )"
        r"|memcached sent invalid |upstream SSL certificate (?:verify error|does not match)",
        "src/http/ngx_http_upstream.c: ngx_http_upstream_process_header, ngx_http_upstream_ssl_handshake, "
        "ngx_http_upstream_process_headers; src/http/modules/ngx_http_proxy_module.c, ngx_http_fastcgi_module.c, "
        "ngx_http_uwsgi_module.c, ngx_http_scgi_module.c, ngx_http_grpc_module.c, ngx_http_memcached_module.c "
        "(their process_header/filter functions)",
        "upstream sent invalid header / upstream prematurely closed connection / upstream sent invalid FastCGI "
        "record type / upstream rejected request with error %ui / upstream SSL certificate verify error",
    ),
    Message(
        "sent_or_not",
        "by action",
        r"upstream sent duplicate header line|peer closed connection in SSL handshake",
        "src/http/ngx_http_upstream.c: ngx_http_upstream_process_header_line (a duplicate is ignored unless it "
        "is Content-Length and the like); src/event/ngx_event_openssl.c: ngx_ssl_handshake (either side)",
        'upstream sent duplicate header line: "%V: %V", previous value: "%V: %V"[, ignored] / peer closed '
        "connection in SSL handshake",
    ),
)

#: errno name → (spellings nginx prints: its number and strerror text on glibc, musl, FreeBSD, macOS).
ERRNOS: dict[str, dict[str, tuple[int, str]]] = {
    "ECONNREFUSED": {"linux": (111, "Connection refused"), "musl": (111, "Connection refused"),
                     "freebsd": (61, "Connection refused"), "macos": (61, "Connection refused")},
    "EHOSTUNREACH": {"linux": (113, "No route to host"), "musl": (113, "Host is unreachable"),
                     "freebsd": (65, "No route to host"), "macos": (65, "No route to host")},
    "ENETUNREACH": {"linux": (101, "Network is unreachable"), "musl": (101, "Network unreachable"),
                    "freebsd": (51, "Network is unreachable"), "macos": (51, "Network is unreachable")},
    "EHOSTDOWN": {"linux": (112, "Host is down"), "musl": (112, "Host is down"),
                  "freebsd": (64, "Host is down"), "macos": (64, "Host is down")},
    "ENETDOWN": {"linux": (100, "Network is down"), "musl": (100, "Network is down"),
                 "freebsd": (50, "Network is down"), "macos": (50, "Network is down")},
    "ECONNRESET": {"linux": (104, "Connection reset by peer"), "musl": (104, "Connection reset by peer"),
                   "freebsd": (54, "Connection reset by peer"), "macos": (54, "Connection reset by peer")},
    "EPIPE": {"linux": (32, "Broken pipe"), "musl": (32, "Broken pipe"),
              "freebsd": (32, "Broken pipe"), "macos": (32, "Broken pipe")},
    "ENOTCONN": {"linux": (107, "Transport endpoint is not connected"), "musl": (107, "Socket not connected"),
                 "freebsd": (57, "Socket is not connected"), "macos": (57, "Socket is not connected")},
    "ETIMEDOUT": {"linux": (110, "Connection timed out"), "musl": (110, "Operation timed out"),
                  "freebsd": (60, "Operation timed out"), "macos": (60, "Operation timed out")},
    "EADDRNOTAVAIL": {"linux": (99, "Cannot assign requested address"), "musl": (99, "Address not available"),
                      "freebsd": (49, "Can't assign requested address"),
                      "macos": (49, "Can't assign requested address")},
    "EAGAIN": {"linux": (11, "Resource temporarily unavailable"), "musl": (11, "Resource temporarily unavailable"),
               "freebsd": (35, "Resource temporarily unavailable"),
               "macos": (35, "Resource temporarily unavailable")},
    "EMFILE": {"linux": (24, "Too many open files"), "musl": (24, "No file descriptors available"),
               "freebsd": (24, "Too many open files"), "macos": (24, "Too many open files")},
    "ENFILE": {"linux": (23, "Too many open files in system"), "musl": (23, "Too many open files in system"),
               "freebsd": (23, "Too many open files in system"), "macos": (23, "Too many open files in system")},
    "ENOENT": {"linux": (2, "No such file or directory"), "musl": (2, "No such file or directory"),
               "freebsd": (2, "No such file or directory"), "macos": (2, "No such file or directory")},
    "EACCES": {"linux": (13, "Permission denied"), "musl": (13, "Permission denied"),
               "freebsd": (13, "Permission denied"), "macos": (13, "Permission denied")},
    "EPERM": {"linux": (1, "Operation not permitted"), "musl": (1, "Operation not permitted"),
              "freebsd": (1, "Operation not permitted"), "macos": (1, "Operation not permitted")},
    "ENOTSOCK": {"linux": (88, "Socket operation on non-socket"), "musl": (88, "Not a socket"),
                 "freebsd": (38, "Socket operation on non-socket"), "macos": (38, "Socket operation on non-socket")},
}  # fmt: skip
_ERRNO_BY_TEXT = {text: name for name, spellings in ERRNOS.items() for _, text in spellings.values()}
_ERRNO_BY_NUMBER = {num: name for name, sp in ERRNOS.items() for num, _ in (sp["linux"], sp["freebsd"])}

# What each errno means, by where nginx was.
_UNREACHABLE = {"ECONNREFUSED", "EHOSTUNREACH", "ENETUNREACH", "EHOSTDOWN", "ENETDOWN", "ECONNRESET"}
_CUT_OFF = {"ECONNRESET", "EPIPE", "ENOTCONN"}  # the backend closed or reset a connection it had accepted
_SOCKET_FILE = {"ENOENT", "EACCES", "EPERM", "ECONNREFUSED", "ENOTSOCK"}  # the socket file is missing, or refuses
_EXHAUSTED = {"EADDRNOTAVAIL", "EMFILE", "ENFILE"}  # no local port, no descriptor: a connection limit
#: The actions of a connection to an upstream (c->log->action in src/http/ngx_http_upstream.c and
#: src/stream/ngx_stream_proxy_module.c). Anything else (reading client request headers, sending to
#: client, SSL handshaking) is the client's side of the request.
UPSTREAM_ACTIONS = frozenset(
    {
        "connecting to upstream",
        "SSL handshaking to upstream",
        "sending request to upstream",
        "reading response header from upstream",
        "reading upstream",
        "proxying and reading from upstream",
        "proxying and sending to upstream",
    }
)

_ALTERNATIVES = "|".join(f"(?P<{m.name}>{m.pattern})" for m in MESSAGES)
# A head: "] PID#TID: [*CONN ]" (the log file form) or "nginx: [level] " (the stderr form). Two
# regexes, not one alternation: a pattern that starts with a literal is found at C speed.
_MESSAGE = re.compile(r"\] \d++#\d++: (?:\*\d++ )?(?:" + _ALTERNATIVES + ")")
_STDERR_MESSAGE = re.compile(r"nginx: \[(?:emerg|alert|crit|error|warn)\] (?:" + _ALTERNATIVES + ")")
_FIRST_HEAD = re.compile(r"\] \d+#\d+: |nginx: \[(?:emerg|alert|crit|error|warn)\] ")
_STAMP_LEVEL = re.compile(r"(?P<time>\d{4}/\d\d/\d\d \d\d:\d\d:\d\d) \[(?P<level>[a-z]+)\] \d+#\d+: ")
_STDERR_LEVEL = re.compile(r"nginx: \[(?P<level>[a-z]+)\] ")
_ERRNO = re.compile(r"\((?P<num>\d+): (?P<text>[^)]*)\)")
_FIELDS = re.compile(r", (?:client|resolver): |\n")
_UPSTREAM = re.compile(
    r', upstream: \\?"(?:(?P<scheme>[a-z]+)://)?(?P<peer>unix:[^"\\]*?(?=:?\\?")|\[[^\]]+\](?::\d+)?|[^/"\\ ]+)'
)


def errno_of(text: str) -> str | None:
    """The errno name behind ``(N: TEXT)``: by its text (every platform's spelling), else its number.
    Only the message counts, never the fields after it (a request line may hold "(111: …)")."""
    m = _ERRNO.search(_FIELDS.split(text, 1)[0])
    if m is None:
        return None
    return _ERRNO_BY_TEXT.get(m.group("text")) or _ERRNO_BY_NUMBER.get(int(m.group("num")))


def action_of(text: str) -> str:
    """The action after `` while `` (c->log->action), or "" when the line has none.

    The last " while " before the fields (", client: ", ", resolver: "): an OpenSSL reason in the
    parentheses may say "while" itself, and what follows is the request, which a client wrote."""
    message = _FIELDS.split(text, 1)[0]
    _, found, action = message.rpartition(" while ")
    return action.strip() if found else ""


def decide(row: str, message: str) -> str:
    """The label of a line whose MESSAGE (the text after the head) starts with table row ``row``."""
    if row in ("unix", "connect", "io"):
        action = action_of(message)
        if action == "resolving":
            return "dns"  # the resolver's own socket: src/core/ngx_resolver.c, ngx_resolver_log_error
        errno = errno_of(message)
        if row == "unix":
            if errno in _SOCKET_FILE or errno == "EAGAIN":
                # EAGAIN on a unix socket: the backend's listen queue is full (php-fpm's pm.max_children
                # saturated); the backend is not accepting, and more nginx workers would not help.
                return "socket"
            return "workers" if errno in _EXHAUSTED else "other"
        if action not in UPSTREAM_ACTIONS and row == "io":
            return "other"  # the client's side: reading its request, sending to it, its TLS handshake
        if errno == "ETIMEDOUT":
            return "timeout"
        if errno in _EXHAUSTED:
            return "workers"
        if row == "connect":
            return "down" if errno in _UNREACHABLE else "other"  # EACCES on TCP: SELinux or a firewall
        if errno in _CUT_OFF:
            return "invalid-response"
        if errno in _UNREACHABLE:
            return "down"
        # An SSL_*() failure towards the upstream carries OpenSSL's reason, not an errno.
        return "invalid-response" if message.startswith("SSL_") and errno is None else "other"
    if row == "sent_or_not":
        if message.startswith("upstream sent duplicate header line") and '", ignored' in message:
            return "other"  # a warning: nginx dropped the duplicate and went on
        if message.startswith("peer closed connection") and action_of(message) not in UPSTREAM_ACTIONS:
            return "other"  # a client gave up its TLS handshake
        return "invalid-response"
    return next(m.label for m in MESSAGES if m.name == row)


@dataclass(frozen=True)
class Line:
    number: int  # 1-based, in the text given
    label: str
    time: str
    level: str
    text: str

    @property
    def peer(self) -> str | None:
        """The upstream peer nginx was talking to, from the ``upstream:`` field."""
        m = _UPSTREAM.search(self.text)
        return m.group("peer") if m else None


def label_of(line: str) -> str:
    """One line's label."""
    found = next(classify_text(line.split("\n", 1)[0]), None)
    return found.label if found is not None else "other"


def _hits(text: str) -> Iterator[tuple[int, int, str]]:
    """(line number, line start, label) of every line whose message shows a cause.

    One regex scan over the whole text instead of a Python loop per line: the cost is in the
    regex engine, not the interpreter. A hit counts only when its head is the first head of its
    line: text inside a request line or URI never counts.
    """
    number, pos = 1, 0
    rfind, find, count, first = text.rfind, text.find, text.count, _FIRST_HEAD.search
    found: Iterator[re.Match[str]] = _MESSAGE.finditer(text)
    stderr = "nginx: [" in text
    if stderr:
        found = heapq.merge(found, _STDERR_MESSAGE.finditer(text), key=lambda m: m.start())
    if len(_DECIDED) > 1024:
        _DECIDED.clear()
    decided, fixed = _DECIDED, _FIXED
    for m in found:
        at = m.start()
        start = rfind("\n", 0, at) + 1
        # the first head of its line: no "] " before it (the common case, checked at C speed), else by regex
        if find("] ", start, at) >= 0 or (stderr and find("nginx: [", start, at) >= 0):
            end = find("\n", at)
            head = first(text, start, end if end >= 0 else len(text))
            if head is None or head.start() != at:
                continue
        row = m.lastgroup or ""
        label = fixed.get(row)
        if label is None:
            begin, end = m.start(row), find("\n", at)
            end = len(text) if end < 0 else end
            fields = find(", client: ", begin, end)
            key = text[begin:fields] if fields >= 0 else None
            label = decided.get(key) if key is not None else None
            if label is None:
                label = decide(row, text[begin:end])
                if key is not None:  # the message before the fields decides; the lines of a storm share it
                    decided[key] = label
            if label == "other":
                continue
        number += count("\n", pos, start)
        pos = start
        yield number, start, label


#: decide()'s answers by message (the text before ", client: "), shared by every scan; bounded.
_DECIDED: dict[str, str] = {}
#: The rows whose label needs no decide(): the scan alone says it.
_FIXED = {m.name: m.label for m in MESSAGES if not m.label.startswith("by ")}


def classify_text(text: str) -> Iterator[Line]:
    """Every line that shows a cause, with its 1-based number (lines labelled ``other`` are skipped)."""
    for number, start, label in _hits(text):
        end = text.find("\n", start)
        line = text[start : end if end >= 0 else None]
        head = _STAMP_LEVEL.search(line)
        if head is not None:
            time, level = head.group("time"), head.group("level")
        else:
            stderr = _STDERR_LEVEL.search(line)
            time, level = "", stderr.group("level") if stderr else ""
        yield Line(number, label, time, level, line)


def classify(text: str) -> list[str]:
    """The label of every line of ``text``, in order (``other`` where no cause shows)."""
    count = text.count("\n") + (0 if text.endswith("\n") or not text else 1)
    labels = ["other"] * count
    for number, _, label in _hits(text):
        labels[number - 1] = label
    return labels
