"""Evidence: named collectors, batched into one round trip to the host helper, then interpreted.

A collector says what it needs from the host (commands, files, stats, log
tails) and how to read the answer into a value the playbook's Jinja can use.
All the collectors of a run ask in one request, so evidence costs one SSH
round trip however many there are.
"""

from __future__ import annotations

import base64
import math
import posixpath
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from remediate.errors import RemediateError
from remediate.inventory import Host, Inventory
from remediate.nginx import NginxConfig, route
from remediate.services import status_argv

__all__ = [
    "COLLECTORS",
    "Collector",
    "Context",
    "Hit",
    "Log",
    "build_request",
    "enclosing",
    "in_effect",
    "interpret",
    "location_for",
    "log_hits",
    "new_request",
    "no_ask",
    "pid_file",
    "probes_under",
    "summary",
]


@dataclass
class Context:
    """Everything a playbook may look at: the host's vars and each named piece of evidence."""

    host: Host
    values: dict[str, Any] = field(default_factory=dict)
    files: dict[str, bytes] = field(default_factory=dict)  # exact bytes, for planning edits
    stats: dict[str, dict[str, Any]] = field(default_factory=dict)
    config: NginxConfig | None = None
    by_collector: dict[str, Any] = field(default_factory=dict)
    inventory: Inventory | None = None
    #: location_for's answers, by (config, uri): collectors route the same log URIs many times.
    routes: dict[tuple[int, str], Any] = field(default_factory=dict, repr=False)

    def jinja(self) -> dict[str, Any]:
        return {"host": self.host.vars, "inventory_hostname": self.host.name, **self.values}


class Log:
    """The error-log tail, with a ``grep`` playbooks can call."""

    def __init__(self, path: str, text: str) -> None:
        self.path = path
        self.lines = [line for line in text.splitlines() if line.strip()]

    def grep(self, pattern: str) -> list[str]:
        regex = re.compile(pattern)
        return [line for line in self.lines if regex.search(line)]

    def __bool__(self) -> bool:
        return bool(self.lines)

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "lines": len(self.lines), "last": self.lines[-3:]}


Request = dict[str, Any]


def new_request(**extra: Any) -> Request:
    """An empty ``collect`` request for the host helper; collectors add to it."""
    return {"op": "collect", "commands": {}, "files": [], "stats": [], "logs": [], **extra}


Asker = Callable[[Host, dict[str, Any], Request], None]
Reader = Callable[[Context, dict[str, Any], dict[str, Any]], Any]


@dataclass(frozen=True)
class Collector:
    name: str
    doc: str
    ask: Asker
    read: Reader
    #: Second phase: asks another host, using first-phase values. Returns (host, request) or None.
    remote: Callable[[Context, dict[str, Any]], tuple[Host, Request] | None] | None = None
    #: For a second-phase collector: reads what its own ``ask`` fetched in the first phase.
    first: Callable[[Context, dict[str, Any], dict[str, Any]], None] | None = None


# -- nginx_config ------------------------------------------------------------------------


def _ask_nginx(host: Host, args: dict[str, Any], req: Request) -> None:
    req["commands"]["nginx_T"] = [*host.nginx_base_argv, "-T"]


def _read_nginx(ctx: Context, args: dict[str, Any], resp: dict[str, Any]) -> Any:
    dump = resp["commands"]["nginx_T"]
    if dump["exit"] != 0:
        # nginx's [emerg] line names the file and line at fault; its last line only says "test failed".
        lines = [ln.strip() for ln in dump["stderr"].splitlines() if ln.strip()]
        named = [ln for ln in lines if "[emerg]" in ln] or lines[-1:] or ["no output"]
        raise RemediateError(f"{ctx.host.name}: `nginx -T` failed (exit {dump['exit']}): {named[0]}")
    ctx.config = NginxConfig.from_dump(dump["stdout"].encode("utf-8", "surrogateescape"))
    facts = resp.get("nginx", {})
    return {
        "files": list(ctx.config.files),
        "user": facts.get("user", "nobody"),
        "group": facts.get("group", "nogroup"),
        "groups": facts.get("groups", []),
    }


# -- php_fpm_pools ---------------------------------------------------------------------

_SECTION = re.compile(r"^\s*\[([^\]]+)\]\s*$")
_KEY = re.compile(r"^\s*([A-Za-z0-9_.\[\]]+)\s*=\s*(.*?)\s*(;.*)?$")


def parse_ini_sections(text: str) -> dict[str, dict[str, str]]:
    """Flat ``key = value`` per ``[section]`` (php-fpm pool files): the last value of a key wins."""
    sections: dict[str, dict[str, str]] = {}
    current = ""
    for line in text.splitlines():
        if line.lstrip().startswith((";", "#")):
            continue
        if m := _SECTION.match(line):
            current = m.group(1)
            sections.setdefault(current, {})
        elif (m := _KEY.match(line)) and current:
            sections[current][m.group(1)] = m.group(2).strip("\"'")
    return sections


def _ask_pools(host: Host, args: dict[str, Any], req: Request) -> None:
    req["files"] += list(host["php_fpm_pools"])


def _read_pools(ctx: Context, args: dict[str, Any], resp: dict[str, Any]) -> Any:
    pools = []
    for path in ctx.host["php_fpm_pools"]:
        entry = resp["files"].get(path)
        if not entry or "b64" not in entry:
            continue
        data = base64.b64decode(entry["b64"])
        ctx.files[path] = data
        ctx.stats[path] = entry["stat"]
        for name, values in parse_ini_sections(data.decode("utf-8", "replace")).items():
            if name == "global":
                continue
            pools.append({"path": path, "name": name, "listen": values.get("listen", ""), "settings": values})
    return pools


# -- unix_sockets ----------------------------------------------------------------------


def _ask_sockets(host: Host, args: dict[str, Any], req: Request) -> None:
    _ask_nginx(host, args, req)  # the helper finds the sockets in nginx -T and stats them


def _read_sockets(ctx: Context, args: dict[str, Any], resp: dict[str, Any]) -> Any:
    pools = ctx.by_collector.get("php_fpm_pools") or []
    sockets = []
    for raw in resp.get("nginx", {}).get("unix_sockets", []):
        pool = next((p for p in pools if p["listen"] == raw["path"]), None)
        sockets.append({**raw, "pool": pool, "probes": _probes_for(ctx, "unix:" + raw["path"])})
    return {
        "all": sockets,
        "missing": [s for s in sockets if not s["exists"]],
        "denied": [s for s in sockets if s["exists"] and not s["nginx_may_connect"]],
    }


def _probes_for(ctx: Context, target_fragment: str) -> list[str]:
    """The inventory's probe URLs that nginx routes to a location passing to ``target_fragment``."""
    return _probes_where(ctx, lambda d: target_fragment in " ".join(d.args))


def _probes_where(ctx: Context, passes_there: Callable[[Any], bool]) -> list[str]:
    """The inventory's probe URLs that nginx routes to a location with a *_pass that ``passes_there``."""
    if ctx.config is None:
        return []
    found = []
    for url in ctx.host["probe_urls"]:
        parts = urlsplit(url)
        host = parts.hostname or ""
        addr = host if host.replace(".", "").isdigit() else None
        match = route(ctx.config, host, parts.path or "/", parts.port or 80, addr)
        if match is None or match.location is None:
            continue
        passes = [d for d, _ in ctx.config.walk() if d.name.endswith("_pass") and _inside(d, match.location)]
        if any(passes_there(d) for d in passes):
            found.append(url)
    return found


def _inside(directive: Any, block: Any) -> bool:
    node = directive.parent
    while node is not None:
        if node is block:
            return True
        node = node.parent
    return False


# -- error_log --------------------------------------------------------------------------


def _log_collector(var: str) -> tuple[Asker, Reader]:
    """Ask for, and read, the tail of the log the inventory var ``var`` names (error or access log)."""

    def ask(host: Host, args: dict[str, Any], req: Request) -> None:
        req["logs"].append(host[var])
        req["log_bytes"] = max(req.get("log_bytes", 0), int(args.get("bytes", 262144)))

    def read(ctx: Context, args: dict[str, Any], resp: dict[str, Any]) -> Any:
        entry = resp["logs"][ctx.host[var]]
        return Log(entry["path"], entry.get("text", ""))

    return ask, read


def _error_log(ctx: Context) -> Log | None:
    log = ctx.by_collector.get("error_log")
    return log if isinstance(log, Log) else None


# -- refused_upstreams -------------------------------------------------------------------

_REFUSED = re.compile(r"connect\(\) failed \(111: Connection refused\) while connecting to upstream")
_FIELD_UPSTREAM = re.compile(r', upstream: "(?P<scheme>[a-z]+)://(?P<address>[^/"]+)(?P<path>[^"]*)"')
_FIELD_REQUEST = re.compile(r', request: "(?P<method>[A-Z]+) (?P<uri>\S+)')
_TIME = re.compile(r"^(\d{4}/\d\d/\d\d \d\d:\d\d:\d\d)")


def pass_addresses(config: NginxConfig, target: str) -> list[str]:
    """The host:port addresses a *_pass target reaches: itself, or the servers of its upstream block."""
    m = re.match(r"^(?:[a-z]+://)?([^/]+)", target)
    if not m or target.startswith("unix:"):
        return []
    name = m.group(1)
    block = config.upstreams().get(name)
    if block is None:
        return [name if ":" in name else name + ":80"]
    return [d.args[0] if ":" in d.args[0] else d.args[0] + ":80" for d in config.find("server", block) if d.args]


def _read_refused(ctx: Context, args: dict[str, Any], resp: dict[str, Any]) -> Any:
    """The most recent refused upstream in the log, how often, and where the config sends traffic there."""
    log = _error_log(ctx)
    hits = []
    for line in log.lines if log else []:
        if not _REFUSED.search(line) or not (up := _FIELD_UPSTREAM.search(line)):
            continue
        req = _FIELD_REQUEST.search(line)
        when = _TIME.match(line)
        hits.append(
            {
                "address": up.group("address"),
                "uri": req.group("uri") if req else "/",
                "time": when.group(1) if when else "",
                "line": line,
            }
        )
    if not hits:
        return {"latest": None, "addresses": {}}
    latest = hits[-1]
    same = [h for h in hits if h["address"] == latest["address"]]
    host, _, port = latest["address"].rpartition(":")
    passes = []
    if ctx.config is not None:
        for p in ctx.config.passes():
            if latest["address"] in pass_addresses(ctx.config, p.target):
                passes.append(
                    {
                        "target": p.target,
                        "where": p.directive.where,
                        "location": " ".join(p.location.args) if p.location else None,
                    }
                )
    counts: dict[str, int] = {}
    for h in hits:
        counts[h["address"]] = counts.get(h["address"], 0) + 1
    return {
        "latest": {
            "address": latest["address"],
            "ip": host.strip("[]"),
            "port": int(port or 80),
            "uri": latest["uri"],
            "count": len(same),
            "first": same[0]["time"],
            "last": same[-1]["time"],
            "example": latest["line"],
            "in_config": bool(passes),
            "passes": passes,
            "probes": _probes_for_address(ctx, latest["address"]),
        },
        "addresses": counts,
    }


def _probes_for_address(ctx: Context, address: str) -> list[str]:
    config = ctx.config
    if config is None:
        return []
    return _probes_where(ctx, lambda d: address in pass_addresses(config, d.args[0] if d.args else ""))


def pid_file(host: Host, config: NginxConfig | None) -> str:
    """nginx's pid file: the inventory's, else the config's ``pid``, else Debian's default."""
    if host["nginx_pid_file"]:
        return str(host["nginx_pid_file"])
    found = config.directive_value("pid") if config else None
    path = found[0] if found else "/run/nginx.pid"
    if not path.startswith("/"):
        path = posixpath.join(host["nginx_prefix"] or "/usr/share/nginx", path)
    return path


# -- upstream_host (second phase: the host that owns the failing address) -----------------


def owner_of(inventory: Inventory | None, web: Host, ip: str) -> Host | None:
    """The inventory host whose address is ``ip``; a loopback address with no owner is the web host itself."""
    if inventory is not None:
        for host in inventory:
            if host.address == ip:
                return host
    # The web host's own loopback: the backend runs beside nginx. Any other unknown address has no owner.
    return web if ip in ("127.0.0.1", "::1", "localhost") else None


def service_on_port(host: Host, port: int) -> str | None:
    return next((name for name, spec in host["services"].items() if spec.get("port") == port), None)


def _remote_backend(ctx: Context, args: dict[str, Any]) -> tuple[Host, Request] | None:
    latest = (ctx.by_collector.get("refused_upstreams") or {}).get("latest")
    host = owner_of(ctx.inventory, ctx.host, latest["ip"]) if latest else None
    if latest is None or host is None:
        return None
    req = new_request(commands={"ss": ["ss", "-Htlnp"]})
    service = service_on_port(host, latest["port"])
    if service:
        req["commands"]["status"] = status_argv(host, service)
    # Ask each of the host's services, directly, for the URI nginx failed on: which of them serves it?
    for name, spec in host["services"].items():
        if spec.get("port"):
            req.setdefault("http", {})[name] = f"http://{latest['ip']}:{spec['port']}{latest['uri']}"
    return host, req


def _read_backend(ctx: Context, args: dict[str, Any], resp: dict[str, Any]) -> Any:
    latest = (ctx.by_collector.get("refused_upstreams") or {}).get("latest")
    host = owner_of(ctx.inventory, ctx.host, latest["ip"]) if latest else None
    if latest is None or host is None or not resp:
        return {"host": None, "service": None, "listening": False, "restartable": False}
    service = service_on_port(host, latest["port"])
    listeners: dict[int, str] = {}
    for line in resp["commands"]["ss"]["stdout"].splitlines():
        fields = line.split()
        if len(fields) >= 4:
            addr, _, port = fields[3].rpartition(":")
            if port.isdigit() and addr.strip("[]") in (latest["ip"], "0.0.0.0", "*", "::"):
                listeners[int(port)] = " ".join([fields[3], *fields[5:6]])
    listener = listeners.get(latest["port"])
    services = []
    for name, spec in host["services"].items():
        answer = resp.get("http", {}).get(name, {})
        status = answer.get("status")
        services.append(
            {
                "service": name,
                "port": spec.get("port"),
                "listening": spec.get("port") in listeners,
                "answer": status if status is not None else answer.get("error", "not asked"),
                "serves_uri": isinstance(status, int) and 200 <= status < 400,
            }
        )
    status = resp["commands"].get("status")
    state = " ".join((status["stdout"] or status["stderr"]).split()) if status else "unknown"
    return {
        "host": host.name,
        "service": service,
        "restartable": bool(service and service in host["restartable_services"]),
        "listening": listener is not None,
        "listener": listener,
        "state": state,
        "services": services,
        # Where the URI nginx failed on is really served: listening, and answering it with 2xx/3xx.
        "candidates": [s for s in services if s["listening"] and s["serves_uri"]],
    }


# -- access_log and stripped_prefix (proxy-pass, slash variant) ----------------------------

_ACCESS = re.compile(r'"(?P<method>[A-Z]+) (?P<uri>\S+) HTTP/[\d.]+" (?P<status>\d{3}) ')


def _stripping_request(ctx: Context) -> dict[str, Any] | None:
    """The latest 502 request whose location's proxy_pass replaces the location prefix in the URI."""
    access = ctx.by_collector.get("access_log")
    if ctx.config is None or not isinstance(access, Log):
        return None
    from remediate.nginx.match import find_server, normalize_uri, parse_location

    server = find_server(ctx.config, "", *_probe_port(ctx))
    for line in reversed(access.lines):
        m = _ACCESS.search(line)
        if not m or m.group("status") != "502" or server is None:
            continue
        uri = normalize_uri(m.group("uri"))
        match = route(ctx.config, "", uri, *_probe_port(ctx))
        if match is None or match.location is None:
            continue
        loc = parse_location(match.location)
        passes = [d for d in match.location.children if d.name == "proxy_pass" and d.args]
        if loc.modifier not in ("", "^~") or not passes:
            continue
        target = passes[0].args[0]
        parts = re.match(r"^(?P<base>[a-z]+://[^/]+)(?P<uri>/.*)?$", target)
        if not parts or parts.group("uri") is None or "$" in target:
            continue  # no URI part: nginx passes the request URI unchanged
        rewritten = parts.group("uri") + uri[len(loc.pattern) :]
        if rewritten == uri:
            continue
        addresses = pass_addresses(ctx.config, target)
        return {
            "uri": uri,
            "rewritten": rewritten,
            "location": loc.pattern,
            "target": target,
            "base": parts.group("base"),
            "kept": parts.group("base") + loc.pattern,
            "where": passes[0].where,
            "direct": "http://" + addresses[0] if addresses else None,
            "probes": _probes_where(ctx, _targets(target)),
        }
    return None


def _targets(target: str) -> Callable[[Any], bool]:
    def check(directive: Any) -> bool:
        return bool(directive.args) and directive.args[0] == target

    return check


def _probe_port(ctx: Context) -> tuple[int, str | None]:
    for url in ctx.host["probe_urls"]:
        parts = urlsplit(url)
        host = parts.hostname or ""
        return parts.port or 80, host if host.replace(".", "").isdigit() else None
    return 80, None


def _remote_stripped(ctx: Context, args: dict[str, Any]) -> tuple[Host, Request] | None:
    found = _stripping_request(ctx)
    if not found or not found["direct"]:
        return None
    req = new_request()
    req["http"] = {"original": found["direct"] + found["uri"], "rewritten": found["direct"] + found["rewritten"]}
    return ctx.host, req  # asked from the web host: nginx's own view of the backend


def _read_stripped(ctx: Context, args: dict[str, Any], resp: dict[str, Any]) -> Any:
    found = _stripping_request(ctx)
    if not found:
        return {"found": False}
    answers = resp.get("http", {}) if resp else {}

    def served(name: str) -> bool:
        status = answers.get(name, {}).get("status")
        return isinstance(status, int) and 200 <= status < 400

    return {
        **found,
        "found": True,
        "original_answer": answers.get("original", {"status": None, "error": "not asked"}),
        "rewritten_answer": answers.get("rewritten", {"status": None, "error": "not asked"}),
        "original_served": served("original"),
        "rewritten_served": served("rewritten"),
    }


# -- timed_out (the timeout cause) ----------------------------------------------------------

_TIMED = re.compile(
    r"upstream timed out \(110: Connection timed out\) while (?P<phase>connecting to upstream|"
    r"reading response header from upstream|sending request to upstream|reading upstream)"
)
_PHASE_DIRECTIVE = {
    "connecting to upstream": "proxy_connect_timeout",
    "reading response header from upstream": "proxy_read_timeout",
    "reading upstream": "proxy_read_timeout",
    "sending request to upstream": "proxy_send_timeout",
}
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}


def nginx_seconds(value: str) -> float:
    """nginx's time syntax: 500ms, 30s, 5m, 1h, or a bare number of seconds."""
    m = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)?", value.strip())
    if not m:
        raise ValueError(f"not an nginx time: {value!r}")
    return float(m.group(1)) * _UNITS[m.group(2) or "s"]


def in_effect(config: NginxConfig, block: Any, name: str) -> Any:
    """The directive ``name`` that applies inside ``block``: set there, or inherited from server and http."""
    chain = next((ctx for d, ctx in config.walk() if d is block), ())
    for level in reversed((*chain, block)):
        found = config.find(name, level)
        if found and found[-1].args:
            return found[-1]
    return None


def enclosing(config: NginxConfig, block: Any, name: str) -> Any:
    """The nearest block named ``name`` (``server``, ``http``) around ``block``."""
    chain = next((ctx for d, ctx in config.walk() if d is block), ())
    return next((level for level in reversed(chain) if level.name == name), None)


def timeout_in_effect(config: NginxConfig, location: Any, name: str) -> tuple[float, str | None]:
    """The value of ``name`` for a location: set there, or inherited from server and http; nginx's default 60s."""
    found = in_effect(config, location, name)
    return (nginx_seconds(found.args[0]), found.where) if found is not None else (60.0, None)


@dataclass(frozen=True)
class Hit:
    """One error-log line that matched a signature, with the fields nginx appends."""

    line: str
    match: re.Match[str]
    uri: str
    upstream: str  # the whole upstream URL nginx used, "" when the line has none
    time: str


def log_hits(ctx: Context, regex: re.Pattern[str]) -> list[Hit]:
    """The error-log lines matching ``regex``, oldest first."""
    log = _error_log(ctx)
    hits = []
    for line in log.lines if log else []:
        if m := regex.search(line):
            req = _FIELD_REQUEST.search(line)
            up = re.search(r', upstream: "([^"]+)"', line)
            when = _TIME.match(line)
            hits.append(
                Hit(line, m, req.group("uri") if req else "/", up.group(1) if up else "", when.group(1) if when else "")
            )
    return hits


def location_for(ctx: Context, uri: str) -> Any:
    """The location nginx picks for ``uri`` on the server the probe URLs reach, or None."""
    if ctx.config is None:
        return None
    key = (id(ctx.config), uri)
    if key not in ctx.routes:
        from remediate.nginx.match import normalize_uri

        port, addr = _probe_port(ctx)
        match = route(ctx.config, "", normalize_uri(uri), port, addr)
        ctx.routes[key] = match.location if match is not None else None
    return ctx.routes[key]


def summary(hits: list[Hit]) -> dict[str, Any]:
    """How many lines, first and last seen, one example: the proof behind a verdict."""
    return {"count": len(hits), "first": hits[0].time, "last": hits[-1].time, "example": hits[-1].line}


def probes_under(ctx: Context, location: Any) -> list[str]:
    """The inventory's probe URLs that nginx routes to ``location``."""
    return [u for u in ctx.host["probe_urls"] if location_for(ctx, urlsplit(u).path or "/") is location]


def _latest_timeout(ctx: Context) -> dict[str, Any] | None:
    log = _error_log(ctx)
    hits = [(line, m) for line in (log.lines if log else []) if (m := _TIMED.search(line))]
    if not hits or ctx.config is None:
        return None
    line, m = hits[-1]
    req = _FIELD_REQUEST.search(line)
    up = re.search(r', upstream: "([^"]+)"', line)
    uri = req.group("uri") if req else "/"
    from remediate.nginx.match import normalize_uri, parse_location

    port, addr = _probe_port(ctx)
    match = route(ctx.config, "", normalize_uri(uri), port, addr)
    if match is None or match.location is None or up is None:
        return None
    directive = _PHASE_DIRECTIVE[m.group("phase")]
    current, current_where = timeout_in_effect(ctx.config, match.location, directive)
    loc = parse_location(match.location)
    path = normalize_uri(uri)
    broad = loc.modifier == "" and loc.pattern == "/"
    prefix = "/" + path.strip("/").split("/")[0] + "/" if broad and path.strip("/") else loc.pattern
    same = [h for h in hits if _FIELD_REQUEST.search(h[0]) and _FIELD_REQUEST.search(h[0]).group("uri") == uri]  # type: ignore[union-attr]
    return {
        "phase": m.group("phase"),
        "directive": directive,
        "uri": uri,
        "upstream_url": up.group(1),
        "count": len(same),
        "example": line,
        "location": " ".join(match.location.args),
        "location_where": match.location.where,
        "current": current,
        "current_where": current_where or "nginx's default",
        "broad": broad,
        "prefix": prefix,
        "probes": [u for u in ctx.host["probe_urls"] if (urlsplit(u).path or "/").startswith(prefix)],
    }


def _remote_timed(ctx: Context, args: dict[str, Any]) -> tuple[Host, Request] | None:
    found = _latest_timeout(ctx)
    if not found:
        return None
    req = new_request()
    # The backend asked directly, bypassing nginx, and never for longer than the ceiling allows.
    req["http"] = {"ttfb": found["upstream_url"]}
    req["http_timeout"] = float(ctx.host["timeout_ceiling"]) / 2 + 1
    return ctx.host, req


def _read_timed(ctx: Context, args: dict[str, Any], resp: dict[str, Any]) -> Any:
    found = _latest_timeout(ctx)
    if not found:
        return {"found": False}
    answer = (resp or {}).get("http", {}).get("ttfb", {})
    ceiling = float(ctx.host["timeout_ceiling"])
    ttfb = answer.get("seconds") if answer.get("status") is not None else None
    needed = max(1, math.ceil(2 * ttfb)) if ttfb is not None else None
    value = max(needed, math.ceil(found["current"])) if needed is not None else None
    return {
        **found,
        "found": True,
        "ttfb": ttfb,
        "answer": answer,
        "needed": needed,
        "value": value,
        "ceiling": ceiling,
        "over_ceiling": value is None or value > ceiling,
    }


def no_ask(host: Host, args: dict[str, Any], req: Request) -> None:
    """Reads what other collectors fetched; asks the host for nothing more."""


COLLECTORS: dict[str, Collector] = {
    c.name: c
    for c in (
        Collector("nginx_config", "nginx -T, parsed; the worker user and its groups", _ask_nginx, _read_nginx),
        Collector(
            "php_fpm_pools", "the inventory's pool files: each pool's listen and settings", _ask_pools, _read_pools
        ),
        Collector(
            "unix_sockets",
            "every unix socket nginx passes to: exists, owner, mode, may nginx connect",
            _ask_sockets,
            _read_sockets,
        ),
        Collector("error_log", "the tail of nginx's error log (args: bytes)", *_log_collector("nginx_error_log")),
        Collector(
            "refused_upstreams",
            "the latest upstream that refused nginx (111), from the log and config",
            no_ask,
            _read_refused,
        ),
        Collector(
            "timed_out",
            "the latest upstream timeout: its location, the timeout in effect, the backend's measured TTFB",
            no_ask,
            _read_timed,
            remote=_remote_timed,
        ),
        Collector("access_log", "the tail of nginx's access log (args: bytes)", *_log_collector("nginx_access_log")),
        Collector(
            "stripped_prefix",
            "the latest 502 whose proxy_pass URI strips the location prefix; both paths asked of the backend",
            no_ask,
            _read_stripped,
            remote=_remote_stripped,
        ),
        Collector(
            "upstream_host",
            "the inventory host that owns the refused address: listeners, its service",
            no_ask,
            _read_backend,
            remote=_remote_backend,
        ),
    )
}


def build_request(host: Host, steps: list[tuple[str, str, dict[str, Any]]]) -> Request:
    req = new_request()
    for _, collect, args in steps:
        COLLECTORS[collect].ask(host, args, req)
    req["files"] = list(dict.fromkeys(req["files"]))
    return req


_LATE = ("unix_sockets", "refused_upstreams", "upstream_host")  # read after what they build on, in this order


def interpret(
    ctx: Context,
    steps: list[tuple[str, str, dict[str, Any]]],
    resp: dict[str, Any],
    remote: dict[str, dict[str, Any]] | None = None,
) -> Context:
    """Read every step's answer into ctx.values; ``remote`` holds second-phase answers by step name."""
    if any(s[1] == "unix_sockets" for s in steps) and not any(s[1] == "nginx_config" for s in steps):
        _read_nginx(ctx, {}, resp)
    order = sorted(steps, key=lambda s: (s[1] != "nginx_config", _LATE.index(s[1]) + 1 if s[1] in _LATE else 0))
    for name, collect, args in order:
        if COLLECTORS[collect].remote is not None:
            if remote is None:
                if COLLECTORS[collect].first is not None:
                    COLLECTORS[collect].first(ctx, args, resp)  # type: ignore[misc]
                continue  # second phase: read once the other host answered
            answer = remote.get(name, {})
        else:
            answer = resp
        ctx.values[name] = ctx.by_collector[collect] = COLLECTORS[collect].read(ctx, args, answer)
    return ctx


def to_json(value: Any) -> Any:
    """Evidence as JSON for --json and the journal."""
    if isinstance(value, Log):
        return value.to_json()
    if isinstance(value, dict):
        return {k: to_json(v) for k, v in value.items() if k != "settings"}
    if isinstance(value, list):
        return [to_json(v) for v in value]
    return value


def _register_cause_collectors() -> None:
    """The collectors of the later causes live in remediate.collect, one module per cause."""
    from remediate.collect import dns, response, workers

    for module in (dns, response, workers):
        for collector in module.COLLECTORS:
            COLLECTORS[collector.name] = collector


_register_cause_collectors()
