"""Which ``server`` and ``location`` handle a request, by nginx's rules.

Server (ngx_http_find_virtual_server): among the servers listening on the
address:port (a specific address beats a wildcard one), the exact name wins,
then the longest ``*.`` wildcard, then the longest ``.*`` wildcard, then the
first regex in config order, then the ``default_server``, then the first.

Location (ngx_http_core_find_location): an ``=`` exact match ends the search;
otherwise the longest prefix wins, and when it is ``^~`` the search ends;
nested locations of that prefix are searched the same way; then regexes
(``~``, ``~*``) are tried in config order, the deepest level first, and the
first to match wins; if none does, the longest prefix stands.
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass
from urllib.parse import unquote_to_bytes

from remediate.errors import Refused
from remediate.nginx.config import NginxConfig
from remediate.nginx.parser import Directive
from remediate.nginx.pcre import Untranslatable, compile_pcre

__all__ = ["CannotRoute", "Location", "Match", "Route", "normalize_uri", "parse_location", "route"]


@dataclass(frozen=True)
class Location:
    directive: Directive
    modifier: str  # "", "=", "^~", "~", "~*", "@"
    pattern: str

    def regex(self) -> re.Pattern[str]:
        try:
            return compile_pcre(self.pattern, caseless=self.modifier == "~*")
        except Untranslatable as exc:
            where = self.directive.where
            raise CannotRoute(f"cannot route: location {self.modifier} {self.pattern} ({where}) uses {exc}") from None


class CannotRoute(Refused):
    """A regex nginx would test here is one remediate cannot match exactly: it will not guess the route."""


def pcre(pattern: str, *, caseless: bool = False, where: str = "") -> re.Pattern[str]:
    """A PCRE pattern as nginx matches it (remediate.nginx.pcre), or CannotRoute."""
    try:
        return compile_pcre(pattern, caseless=caseless)
    except Untranslatable as exc:
        raise CannotRoute(f"cannot route: the regex {pattern} ({where or 'server_name'}) uses {exc}") from None


def parse_location(d: Directive) -> Location:
    args = d.args
    if len(args) >= 2 and args[0] in ("=", "^~", "~", "~*"):
        return Location(d, args[0], args[1])
    arg = args[0] if args else ""
    for modifier in ("^~", "~*", "=", "~", "@"):
        if arg.startswith(modifier) and len(arg) > len(modifier):
            return Location(d, modifier, arg[len(modifier) :] if modifier != "@" else arg)
    return Location(d, "", arg)


@dataclass(frozen=True)
class Match:
    server: Directive
    location: Directive | None


Route = Match


def normalize_uri(uri: str) -> str:
    """The URI locations are matched against: path only, percent-decoded, dots resolved, slashes merged."""
    path = uri.split("?", 1)[0].split("#", 1)[0] or "/"
    decoded = unquote_to_bytes(path).decode("utf-8", "surrogateescape")
    merged = re.sub(r"/{2,}", "/", decoded)
    normal = posixpath.normpath(merged)
    # ngx_http_parse_complex_uri keeps the slash a "." or ".." segment leaves: /a/b/. is /a/b/, /a/b/.. is /a/
    if (merged.endswith(("/", "/.", "/..")) or merged in (".", "..")) and normal != "/":
        normal += "/"
    return normal if normal.startswith("/") else "/" + normal


def route(config: NginxConfig, host: str, uri: str, port: int = 80, addr: str | None = None) -> Match | None:
    server = find_server(config, host, port, addr)
    if server is None:
        return None
    return Match(server, find_location(config, server, normalize_uri(uri)))


# -- servers ---------------------------------------------------------------------


@dataclass(frozen=True)
class _Listen:
    addr: str  # "*" for a wildcard
    port: int
    default: bool


_PORTS = re.compile(r"(\d+)(?:-(\d+))?")


def _listens(config: NginxConfig, server: Directive) -> list[_Listen]:
    found = []
    for d in config.find("listen", server):
        if not d.args:
            continue
        spec = d.args[0]
        default = "default_server" in d.args[1:] or "default" in d.args[1:]
        if spec.startswith("unix:"):
            continue
        if spec.startswith("["):
            addr, _, rest = spec[1:].partition("]")
            ports = rest[1:] if rest.startswith(":") else "80"
        elif ":" in spec:
            addr, _, ports = spec.rpartition(":")
        elif _PORTS.fullmatch(spec):
            addr, ports = "*", spec
        else:
            addr, ports = spec, "80"
        m = _PORTS.fullmatch(ports)
        if m is None:
            continue  # a variable or a typo: nginx -T would not have printed it
        first, last = int(m.group(1)), int(m.group(2) or m.group(1))  # "listen 8000-8010": a port range
        for port in range(first, min(last, first + 65535) + 1):
            found.append(_Listen("*" if addr in ("*", "0.0.0.0", "::") else addr, port, default))
    return found or [_Listen("*", 80, False)]


def find_server(config: NginxConfig, host: str, port: int = 80, addr: str | None = None) -> Directive | None:
    servers = [(s, _listens(config, s)) for s in config.servers()]
    specific = [(s, ls) for s, ls in servers if any(ls_.port == port and ls_.addr == addr for ls_ in ls)]
    if specific:
        candidates = specific
        listen_addr = addr
    elif addr is None:
        # The address the request arrived on is unknown: any listen on the port may serve it.
        candidates = [(s, ls) for s, ls in servers if any(ls_.port == port for ls_ in ls)]
        listen_addr = None
    else:
        candidates = [(s, ls) for s, ls in servers if any(ls_.port == port and ls_.addr == "*" for ls_ in ls)]
        listen_addr = "*"
    if not candidates:
        return None
    name = host.split(":", 1)[0].rstrip(".").lower() if not host.startswith("[") else host
    exact, head, tail, regex = [], [], [], []
    for server, _ in candidates:
        for d in config.find("server_name", server):
            for raw in d.args:
                sn = raw.lower()
                if sn.startswith("~"):
                    regex.append((server, raw[1:]))
                elif sn.startswith("*."):
                    head.append((server, sn[1:]))
                elif sn.startswith("."):
                    exact.append((server, sn[1:]))
                    head.append((server, sn))
                elif sn.endswith(".*"):
                    tail.append((server, sn[:-1]))
                else:
                    exact.append((server, sn))
    for server, sn in exact:
        if sn == name:
            return server
    best = max(((len(sn), s) for s, sn in head if name.endswith(sn)), key=lambda t: t[0], default=None)
    if best:
        return best[1]
    best = max(((len(sn), s) for s, sn in tail if name.startswith(sn)), key=lambda t: t[0], default=None)
    if best:
        return best[1]
    for server, pattern in regex:
        # nginx compiles server_name regexes caseless
        if pcre(pattern, caseless=True, where=f"server_name ~{pattern}").search(name):
            return server
    for server, listens in candidates:
        if any(ls.default and ls.port == port and listen_addr in (None, ls.addr) for ls in listens):
            return server
    return candidates[0][0]


# -- locations -------------------------------------------------------------------


def find_location(config: NginxConfig, block: Directive, uri: str) -> Directive | None:
    """The location that handles ``uri`` inside ``block`` (a server), or None."""
    return _find(config, block, uri, None)[0]


def _find(config: NginxConfig, block: Directive, uri: str, current: Directive | None) -> tuple[Directive | None, bool]:
    """One level of ngx_http_core_find_location: (the location chosen so far, final?)."""
    locations = [parse_location(d) for d in config.find("location", block)]
    for loc in locations:
        if loc.modifier == "=" and loc.pattern == uri:
            return loc.directive, True
    prefixes = [loc for loc in locations if loc.modifier in ("", "^~") and uri.startswith(loc.pattern)]
    best = max(prefixes, key=lambda loc: len(loc.pattern), default=None)
    noregex = False
    if best is not None:
        noregex = best.modifier == "^~"
        current, final = _find(config, best.directive, uri, best.directive)
        if final:
            return current, True
    if not noregex:
        for loc in locations:
            if loc.modifier in ("~", "~*") and loc.regex().search(uri):
                return _find(config, loc.directive, uri, loc.directive)[0], True
    return current, False
