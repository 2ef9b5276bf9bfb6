"""Evidence: named collectors, batched into one round trip to the host helper, then interpreted.

A collector says what it needs from the host (commands, files, stats, log
tails) and how to read the answer into a value the playbook's Jinja can use.
All the collectors of a run ask in one request, so evidence costs one SSH
round trip however many there are.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from remediate.errors import RemediateError
from remediate.inventory import Host
from remediate.nginx import NginxConfig, route

__all__ = ["COLLECTORS", "Context", "Log", "build_request", "interpret"]


@dataclass
class Context:
    """Everything a playbook may look at: the host's vars and each named piece of evidence."""

    host: Host
    values: dict[str, Any] = field(default_factory=dict)
    files: dict[str, bytes] = field(default_factory=dict)  # exact bytes, for planning edits
    stats: dict[str, dict[str, Any]] = field(default_factory=dict)
    config: NginxConfig | None = None
    by_collector: dict[str, Any] = field(default_factory=dict)

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
Asker = Callable[[Host, dict[str, Any], Request], None]
Reader = Callable[[Context, dict[str, Any], dict[str, Any]], Any]


@dataclass(frozen=True)
class Collector:
    name: str
    doc: str
    ask: Asker
    read: Reader


# -- nginx_config ------------------------------------------------------------------------


def _ask_nginx(host: Host, args: dict[str, Any], req: Request) -> None:
    req["commands"]["nginx_T"] = [*host.nginx_base_argv, "-T"]


def _read_nginx(ctx: Context, args: dict[str, Any], resp: dict[str, Any]) -> Any:
    dump = resp["commands"]["nginx_T"]
    if dump["exit"] != 0:
        raise RemediateError(
            f"{ctx.host.name}: `nginx -T` failed ({dump['exit']}): {dump['stderr'].strip().splitlines()[-1:]}"
        )
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
        if any(target_fragment in " ".join(d.args) for d in passes):
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


def _ask_log(host: Host, args: dict[str, Any], req: Request) -> None:
    req["logs"].append(host["nginx_error_log"])
    req["log_bytes"] = max(req.get("log_bytes", 0), int(args.get("bytes", 262144)))


def _read_log(ctx: Context, args: dict[str, Any], resp: dict[str, Any]) -> Any:
    entry = resp["logs"][ctx.host["nginx_error_log"]]
    return Log(entry["path"], entry.get("text", ""))


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
        Collector("error_log", "the tail of nginx's error log (args: bytes)", _ask_log, _read_log),
    )
}


def build_request(host: Host, steps: list[tuple[str, str, dict[str, Any]]]) -> Request:
    req: Request = {"op": "collect", "commands": {}, "files": [], "stats": [], "logs": []}
    for _, collect, args in steps:
        COLLECTORS[collect].ask(host, args, req)
    req["files"] = list(dict.fromkeys(req["files"]))
    return req


def interpret(ctx: Context, steps: list[tuple[str, str, dict[str, Any]]], resp: dict[str, Any]) -> Context:
    # nginx's config first: other collectors route probe URLs through it.
    order = sorted(steps, key=lambda s: s[1] != "nginx_config")
    if any(s[1] == "unix_sockets" for s in steps) and not any(s[1] == "nginx_config" for s in steps):
        _read_nginx(ctx, {}, resp)
    for name, collect, args in order:
        if collect != "unix_sockets":
            ctx.values[name] = ctx.by_collector[collect] = COLLECTORS[collect].read(ctx, args, resp)
    for name, collect, args in order:
        if collect == "unix_sockets":  # after the pools it maps sockets to
            ctx.values[name] = ctx.by_collector[collect] = COLLECTORS[collect].read(ctx, args, resp)
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
