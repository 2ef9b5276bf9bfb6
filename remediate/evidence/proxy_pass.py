"""Evidence for the proxy-pass cause's slash variant: a proxy_pass URI that strips the location prefix."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from remediate.evidence.framework import Collector, Context, Log, Request, new_request, no_ask
from remediate.evidence.routing import pass_addresses, probe_port, probes_where
from remediate.hosts.inventory import Host
from remediate.nginx import route

# -- access_log and stripped_prefix (proxy-pass, slash variant) ----------------------------

_ACCESS = re.compile(r'"(?P<method>[A-Z]+) (?P<uri>\S+) HTTP/[\d.]+" (?P<status>\d{3}) ')


def _stripping_request(ctx: Context) -> dict[str, Any] | None:
    """The latest 502 request whose location's proxy_pass replaces the location prefix in the URI."""
    access = ctx.by_collector.get("access_log")
    if ctx.config is None or not isinstance(access, Log):
        return None
    from remediate.nginx.match import find_server, normalize_uri, parse_location

    server = find_server(ctx.config, "", *probe_port(ctx))
    for line in reversed(access.lines):
        m = _ACCESS.search(line)
        if not m or m.group("status") != "502" or server is None:
            continue
        uri = normalize_uri(m.group("uri"))
        match = route(ctx.config, "", uri, *probe_port(ctx))
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
            "probes": probes_where(ctx, _targets(target)),
        }
    return None


def _targets(target: str) -> Callable[[Any], bool]:
    def check(directive: Any) -> bool:
        return bool(directive.args) and directive.args[0] == target

    return check


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


COLLECTORS = (
    Collector(
        "stripped_prefix",
        "the latest 502 whose proxy_pass URI strips the location prefix; both paths asked of the backend",
        no_ask,
        _read_stripped,
        remote=_remote_stripped,
    ),
)
