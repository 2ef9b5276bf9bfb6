"""The requests that failed, replayed through nginx after a fix: what "fixed" is checked against.

A fix is only *fixed* when the requests that failed now succeed. nginx logs each failing request
with its method, URI and Host header (``request: "GET /index.php HTTP/1.1", host: "shop"``); the
window remediate read already holds them. After a fix the helper on the host asks nginx for the
same method, URI and Host again, on the port and address of the server block that answered
(from the parsed config), beside the inventory's ``probe_urls``.

Bounded and harmless by construction: GET and HEAD only (never a request that could change
state), at most ``MAX_REPLAYS`` distinct requests, the most recent first, only the lines of the
cause being fixed (a second, unrelated failure in the same window does not roll a good fix back),
and a URI is never sent as anything but the request target.
"""

from __future__ import annotations

import re
from typing import Any

from remediate.evidence.classify import Line
from remediate.nginx import NginxConfig

__all__ = ["MAX_REPLAYS", "replay_uris", "replays"]

MAX_REPLAYS = 5


_REQUEST = re.compile(r', request: \\?"(?P<method>[A-Z]+) (?P<uri>/[^\s"\\]*) HTTP/[0-9.]+\\?"')
_HOST = re.compile(r', host: \\?"(?P<host>[A-Za-z0-9.\-\[\]:]+)\\?"')
_SAFE = ("GET", "HEAD")


def replays(config: NginxConfig | None, lines: list[Line], labels: tuple[str, ...]) -> list[dict[str, Any]]:
    """Probe specs ({"url", "host", "method"}) for the failing requests of lines labelled ``labels`` (a
    playbook's ``replays:``), newest first."""
    seen: dict[tuple[str, str, str], dict[str, Any]] = {}
    for line in reversed(lines):
        if line.label not in labels:
            continue
        req, host = _REQUEST.search(line.text), _HOST.search(line.text)
        if req is None or req.group("method") not in _SAFE:
            continue
        header = host.group("host") if host else ""
        key = (req.group("method"), header, req.group("uri"))
        if key in seen:
            continue
        target = _listen_for(config, header)
        if target is None:
            continue
        seen[key] = {
            "url": f"http://{target}{req.group('uri')}",
            "host": header or None,
            "method": req.group("method"),
        }
        if len(seen) >= MAX_REPLAYS:
            break
    return list(seen.values())


def replay_uris(config: NginxConfig | None, uris: list[str]) -> list[dict[str, Any]]:
    """Probe specs for URIs a playbook names (a failure seen in the access log only): GET, the default server."""
    target = _listen_for(config, "")
    if target is None:
        return []
    return [{"url": f"http://{target}{uri}", "host": None, "method": "GET"} for uri in uris if uri.startswith("/")]


def _listen_for(config: NginxConfig | None, header: str) -> str | None:
    """``address:port`` of a plain-HTTP listen that serves the Host ``header``, as reached from the host."""
    port_in_header = None
    name = header
    if m := re.fullmatch(r"(.*?):(\d+)", header):
        name, port_in_header = m.group(1), int(m.group(2))
    listens: list[tuple[str, int, bool]] = []  # (address, port, serves the name)
    if config is None:
        return None
    for server in config.servers():
        names = [a for d in config.find("server_name", server) for a in d.args]
        for listen in config.find("listen", server):
            if not listen.args or "ssl" in listen.args[1:] or "quic" in listen.args[1:]:
                continue
            parsed = _address(listen.args[0])
            if parsed is not None:
                listens.append((*parsed, name in names))
    if not listens:
        return None
    if port_in_header is not None:
        listens = [entry for entry in listens if entry[1] == port_in_header] or listens
    best = sorted(listens, key=lambda e: (not e[2], e[1] != 80))[0]
    address = best[0]
    return f"[{address}]:{best[1]}" if ":" in address else f"{address}:{best[1]}"


def _address(arg: str) -> tuple[str, int] | None:
    """nginx's listen argument → (address to connect to, port); None for unix sockets and ranges."""
    if arg.startswith("unix:"):
        return None
    if m := re.fullmatch(r"\[([0-9a-fA-F:.]+)\](?::(\d+))?", arg):
        address = m.group(1)
        return ("::1" if address == "::" else address), int(m.group(2) or 80)
    host, _, port_text = arg.rpartition(":")
    if not host:
        return ("127.0.0.1", int(arg)) if arg.isdigit() else (_loopback_for(arg), 80)
    if not port_text.isdigit():
        return None
    return _loopback_for(host), int(port_text)


def _loopback_for(host: str) -> str:
    return "127.0.0.1" if host in ("*", "0.0.0.0", "localhost") else host
