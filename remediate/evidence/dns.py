"""Evidence for the dns cause: which name nginx failed on, how, and what the resolver says now.

Three situations, told apart from nginx's own messages (src/http/ngx_http_upstream.c,
src/core/ngx_resolver.c) and the config:

* ``no-resolver``: "no resolver defined to resolve NAME": a ``proxy_pass`` with a variable
  and no ``resolver`` in effect for its location.
* ``stale``: a ``proxy_pass`` to a static hostname, resolved once at start; the log shows
  nginx connecting to an address the resolver no longer gives for that name.
* ``unresolvable``: "NAME could not be resolved (3: Host not found)", "host not found in
  upstream", or a resolver that has no address for the name. Nothing in nginx can fix that.

The second phase runs ``dig`` on the web host, against the resolvers nginx would use.
"""

from __future__ import annotations

import base64
import ipaddress
import re
from typing import Any
from urllib.parse import urlsplit

from remediate.evidence.framework import Collector, Context, Hit, Request, log_hits, new_request, summary
from remediate.evidence.routing import enclosing, in_effect, location_for, probes_under
from remediate.hosts import values
from remediate.hosts.inventory import Host

__all__ = ["COLLECTORS", "TARGET", "is_address", "merge_answers", "parse_dig"]

RESOLV_CONF = "/etc/resolv.conf"
_NO_RESOLVER = re.compile(r"no resolver defined to resolve (?P<name>[^\s,]+)")
_NOT_RESOLVED = re.compile(r"(?P<name>[^\s,]+) could not be resolved \((?P<code>\d+): (?P<text>[^)]*)\)")
_HOST_NOT_FOUND = re.compile(r'host not found in upstream "(?P<name>[^"]+)"')
#: A connect that failed or timed out (the lines labelled down or timeout), on any platform.
_CONNECT_FAILED = re.compile(r" while connecting to upstream")
#: A *_pass target: scheme, host (name, address or [IPv6]), port, URI part.
TARGET = re.compile(r"^(?P<scheme>[a-z]+)://(?P<host>\[[^\]]+\]|[^:/$]+)(?::(?P<port>\d+))?(?P<uri>/.*)?$")


def is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


def parse_dig(stdout: str) -> dict[str, Any]:
    """``dig +noall +comments +answer`` → the status and the A/AAAA addresses."""
    status = re.search(r"status: ([A-Z]+)", stdout)
    addresses = [
        fields[4]
        for line in stdout.splitlines()
        if not line.startswith(";") and len(fields := line.split()) >= 5 and fields[3] in ("A", "AAAA")
    ]
    return {"status": status.group(1) if status else "NO ANSWER", "addresses": addresses}


def nameservers(ctx: Context) -> tuple[list[str], str]:
    """The nameservers to ask: the inventory's ``resolvers``, else the host's /etc/resolv.conf."""
    if ctx.host["resolvers"]:
        return [str(r) for r in ctx.host["resolvers"]], "inventory"
    raw = ctx.files.get(RESOLV_CONF, b"").decode("utf-8", "replace")
    found = [line.split()[1] for line in raw.splitlines() if line.startswith("nameserver") and len(line.split()) > 1]
    return [r for r in found if values.accepts(values.address, r)], RESOLV_CONF  # they go into nginx's resolver


def _static_pass(location: Any) -> dict[str, Any] | None:
    """The location's proxy_pass when it names a host (not an address, not an upstream, no variable)."""
    passes = [d for d in location.children if d.name == "proxy_pass" and d.args] if location is not None else []
    if not passes:
        return None
    target = passes[0].args[0]
    m = TARGET.match(target)
    if not m or "$" in target or is_address(m.group("host")):
        return None
    return {
        "where": passes[0].where,
        "target": target,
        "scheme": m.group("scheme"),
        "name": m.group("host"),
        "port": m.group("port") or ("443" if m.group("scheme") == "https" else "80"),
        "uri": m.group("uri") or "",
    }


def _name_based(location: Any, hit: Hit) -> bool:
    if location is None:
        return False
    passes = [d.args[0] for d in location.children if d.name == "proxy_pass" and d.args]
    m = TARGET.match(passes[0]) if passes else None
    if _static_pass(location) or (passes and "$" in passes[0]):
        return True
    # pinned by an earlier run: an address, not the one that failed
    return bool(m and is_address(m.group("host")) and m.group("host") != urlsplit(hit.upstream).hostname)


def _finding(ctx: Context) -> dict[str, Any] | None:
    """The latest dns failure in the log, with the location it belongs to."""
    config = ctx.config
    if config is None:
        return None
    kinds: list[tuple[str, list[Hit]]] = [
        ("no-resolver", log_hits(ctx, _NO_RESOLVER, ("dns",))),
        ("unresolvable", log_hits(ctx, _NOT_RESOLVED, ("dns",))),
        ("host-not-found", log_hits(ctx, _HOST_NOT_FOUND, ("dns",))),
    ]
    # Connect failures count where the location proxies to a static hostname, or did (it now
    # re-resolves through a variable, or is pinned to another address than the one that failed).
    stale = [h for h in log_hits(ctx, _CONNECT_FAILED, ("down", "timeout")) if _name_based(location_for(ctx, h.uri), h)]
    kinds.append(("stale", stale))
    latest = max(((k, hits) for k, hits in kinds if hits), key=lambda kh: kh[1][-1].time, default=None)
    if latest is None:
        return None
    kind, hits = latest
    if kind == "host-not-found":
        name = hits[-1].match.group("name").rsplit(":", 1)[0]
        return {
            "kind": kind,
            "name": name,
            "uri": None,
            "location": None,
            "location_where": None,
            "server_where": None,
            "pass": None,
            "pass_target": None,
            "resolver_in_effect": None,
            "nginx_uses": "",
            **summary(hits),
            "probes": [],
        }
    location = location_for(ctx, hits[-1].uri)
    if kind == "stale":
        static = _static_pass(location)
        used = urlsplit(hits[-1].upstream).hostname or ""
        hits = [h for h in hits if location_for(ctx, h.uri) is location]
        variable = next((d.args[1] for d in location.children if d.name == "set" and len(d.args) > 1), None)
        name = static["name"] if static else variable if variable and not is_address(variable) else None
    else:
        static, used = None, ""
        name = hits[-1].match.group("name")
        hits = [h for h in hits if h.match.group("name") == name]
    server = enclosing(config, location, "server") if location is not None else None
    resolver = in_effect(config, location, "resolver") if location is not None else None
    passes = [d for d in location.children if d.name == "proxy_pass" and d.args] if location is not None else []
    return {
        "kind": kind,
        "name": name,
        "uri": hits[-1].uri,
        "location": " ".join(location.args) if location is not None else None,
        "location_where": location.where if location is not None else None,
        "server_where": server.where if server is not None else None,
        "pass": static,
        "pass_target": passes[0].args[0] if passes else None,
        "resolver_in_effect": " ".join(resolver.args) if resolver is not None else None,
        "nginx_uses": used,
        **summary(hits),
        "probes": probes_under(ctx, location),
    }


def _ask(host: Host, args: dict[str, Any], req: Request) -> None:
    req["files"].append(RESOLV_CONF)


def _remote(ctx: Context, args: dict[str, Any]) -> tuple[Host, Request] | None:
    found = _finding(ctx)
    if not found or not found["name"]:
        return None
    if found["name"] and not values.accepts(values.host_name, found["name"]):
        return None  # a name from a log that is no host name is never handed to dig
    resolvers, _ = nameservers(ctx)
    req = new_request()
    for index, resolver in enumerate(resolvers[:3]):
        addr, _, port = resolver.rpartition(":") if resolver.count(":") == 1 else (resolver, "", "")
        argv = ["dig", "+time=2", "+tries=1", "+noall", "+comments", "+answer", f"@{addr.strip('[]')}"]
        argv += ["-p", port] if port else []
        # -q: the next argument is the name, whatever it looks like (it was checked as one too)
        req["commands"][f"dig{index}"] = [*argv, "-t", "A", "-q", found["name"]]
        if "ipv6=off" not in (found["resolver_in_effect"] or ""):  # nginx's resolver asks AAAA too by default
            req["commands"][f"dig{index}_6"] = [*argv, "-t", "AAAA", "-q", found["name"]]
    return ctx.host, req  # the web host: what nginx's own resolvers say


def merge_answers(a: dict[str, Any], aaaa: dict[str, Any] | None) -> dict[str, Any]:
    """One resolver's answer to A and AAAA, as nginx's resolver takes it: the addresses of both; the A status,
    unless only AAAA has addresses."""
    if aaaa is None:
        return a
    status = a["status"] if a["addresses"] or not aaaa["addresses"] else aaaa["status"]
    return {"status": status, "addresses": a["addresses"] + [x for x in aaaa["addresses"] if x not in a["addresses"]]}


def _read(ctx: Context, args: dict[str, Any], resp: dict[str, Any]) -> Any:
    found = _finding(ctx)
    if not found:
        return {"found": False}
    resolvers, resolvers_from = nameservers(ctx)
    answers = []
    for index, resolver in enumerate(resolvers[:3]):
        cmd = (resp or {}).get("commands", {}).get(f"dig{index}")
        if cmd is None:
            continue
        if cmd["exit"] == 0:
            six = (resp or {}).get("commands", {}).get(f"dig{index}_6")
            aaaa = parse_dig(six["stdout"]) if six is not None and six["exit"] == 0 else None
            answers.append({"resolver": resolver, **merge_answers(parse_dig(cmd["stdout"]), aaaa)})
        else:
            answers.append({"resolver": resolver, "status": "ERROR", "addresses": [], "error": cmd["stderr"].strip()})
    addresses = list(dict.fromkeys(a for answer in answers for a in answer["addresses"] if is_address(a)))
    if found["name"] and not values.accepts(values.host_name, found["name"]):
        answers = [{"resolver": "-", "status": "NOT ASKED", "addresses": [], "error": "not a host name"}]
    answered = "; ".join(
        f"{a['resolver']}: {a['status']}{' ' + ', '.join(a['addresses']) if a['addresses'] else ''}" for a in answers
    )
    target = TARGET.match(found.get("pass_target") or "")
    pinned_to = target.group("host") if target and is_address(target.group("host")) else ""
    return {
        **found,
        "found": True,
        "resolvers": resolvers,
        "resolvers_from": resolvers_from,
        "answers": answers,
        "answered": answered or "no resolver answered (is dig installed?)",
        "addresses": addresses,
        "resolves": bool(addresses),
        "moved": bool(found["nginx_uses"]) and bool(addresses) and found["nginx_uses"] not in addresses,
        # Already re-resolving: the location passes through a variable and has a resolver.
        "re_resolves": "$" in (found.get("pass_target") or "") and found["resolver_in_effect"] is not None,
        # Already pinned to another address than the one that failed (by an earlier run).
        "pinned_current": bool(pinned_to) and pinned_to != found["nginx_uses"],
        "strategy": str(ctx.host["dns_strategy"]),
    }


def _read_files_first(ctx: Context, args: dict[str, Any], resp: dict[str, Any]) -> None:
    entry = resp.get("files", {}).get(RESOLV_CONF)
    if entry and "b64" in entry:
        ctx.files[RESOLV_CONF] = base64.b64decode(entry["b64"])


COLLECTORS = (
    Collector(
        "dns_failure",
        "the latest name nginx failed to resolve or reach, its location, and what the resolver answers now (dig)",
        _ask,
        _read,
        remote=_remote,
        first=_read_files_first,
    ),
)
