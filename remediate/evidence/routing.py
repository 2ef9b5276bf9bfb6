"""Evidence from nginx's configuration: the ``nginx_config`` collector, and the questions every
cause's collectors ask of the config (what is in effect where, which location a URI reaches,
which probe URLs go through it, which addresses a ``*_pass`` reaches)."""

from __future__ import annotations

import posixpath
import re
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from remediate.errors import RemediateError
from remediate.evidence.framework import Collector, Context, Request
from remediate.hosts.inventory import Host
from remediate.hosts.values import seconds
from remediate.nginx import NginxConfig, route

# -- nginx_config ------------------------------------------------------------------------


def ask_nginx(host: Host, args: dict[str, Any], req: Request) -> None:
    req["commands"]["nginx_T"] = [*host.nginx_base_argv, "-T"]


def _read_nginx(ctx: Context, args: dict[str, Any], resp: dict[str, Any]) -> Any:
    dump = resp["commands"]["nginx_T"]
    if dump["exit"] != 0:
        # nginx's [emerg] line names the file and line at fault; its last line only says "test failed".
        lines = [ln.strip() for ln in dump["stderr"].splitlines() if ln.strip()]
        named = [ln for ln in lines if "[emerg]" in ln] or lines[-1:] or ["no output"]
        raise RemediateError(f"{ctx.host.name}: `nginx -T` failed (exit {dump['exit']}): {named[0]}")
    # Parsed once per answer: a diagnosis reads one answer for every candidate playbook (the model is
    # never changed in place; a fix's edits make a new one).
    if "_nginx_config" not in resp:
        resp["_nginx_config"] = NginxConfig.from_dump(dump["stdout"].encode("utf-8", "surrogateescape"))
    ctx.config = resp["_nginx_config"]
    facts = resp.get("nginx", {})
    return {
        "files": list(ctx.config.files),
        "user": facts.get("user", "nobody"),
        "group": facts.get("group", "nogroup"),
        "groups": facts.get("groups", []),
    }


def probes_for(ctx: Context, target_fragment: str) -> list[str]:
    """The inventory's probe URLs that nginx routes to a location passing to ``target_fragment``."""
    return probes_where(ctx, lambda d: target_fragment in " ".join(d.args))


def probes_where(ctx: Context, passes_there: Callable[[Any], bool]) -> list[str]:
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


def pid_file(host: Host, config: NginxConfig | None) -> str:
    """nginx's pid file: the inventory's, else the config's ``pid``, else Debian's default."""
    if host["nginx_pid_file"]:
        return str(host["nginx_pid_file"])
    found = config.directive_value("pid") if config else None
    path = found[0] if found else "/run/nginx.pid"
    if not path.startswith("/"):
        path = posixpath.join(host["nginx_prefix"] or "/usr/share/nginx", path)
    return path


def _targets(target: str) -> Callable[[Any], bool]:
    def check(directive: Any) -> bool:
        return bool(directive.args) and directive.args[0] == target

    return check


def probe_port(ctx: Context) -> tuple[int, str | None]:
    for url in ctx.host["probe_urls"]:
        parts = urlsplit(url)
        host = parts.hostname or ""
        return parts.port or 80, host if host.replace(".", "").isdigit() else None
    return 80, None


def nginx_seconds(value: str) -> float:
    """nginx's time syntax (ngx_parse_time): 500ms, 30s, 1m30s, 5m, 1h, or a bare number of seconds."""
    try:
        return seconds(value)
    except ValueError:
        raise ValueError(f"not an nginx time: {value!r}") from None


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


def location_for(ctx: Context, uri: str) -> Any:
    """The location nginx picks for ``uri`` on the server the probe URLs reach, or None."""
    if ctx.config is None:
        return None
    key = (id(ctx.config), uri)
    if key not in ctx.routes:
        from remediate.nginx.match import normalize_uri

        port, addr = probe_port(ctx)
        match = route(ctx.config, "", normalize_uri(uri), port, addr)
        ctx.routes[key] = match.location if match is not None else None
    return ctx.routes[key]


def probes_under(ctx: Context, location: Any) -> list[str]:
    """The inventory's probe URLs that nginx routes to ``location``."""
    return [u for u in ctx.host["probe_urls"] if location_for(ctx, urlsplit(u).path or "/") is location]


COLLECTORS = (Collector("nginx_config", "nginx -T, parsed; the worker user and its groups", ask_nginx, _read_nginx),)
