"""Evidence for the down and proxy-pass causes: the upstream that refused nginx, and the host that owns it."""

from __future__ import annotations

import re
from typing import Any

from remediate.evidence.framework import Collector, Context, Request, log_hits, new_request, no_ask
from remediate.evidence.routing import pass_addresses, probes_where
from remediate.hosts.inventory import Host, Inventory
from remediate.hosts.managers import status_argv

# -- refused_upstreams -------------------------------------------------------------------

#: A refused connect, as every platform spells it (111 on Linux, 61 on FreeBSD and macOS).
_REFUSED = re.compile(r"\(\d+: Connection refused\)")
_ADDRESS = re.compile(r"^(?:[a-z]+://)?(?P<address>[^/]+)")


def _read_refused(ctx: Context, args: dict[str, Any], resp: dict[str, Any]) -> Any:
    """The most recent refused upstream in the log, how often, and where the config sends traffic there."""
    hits = []
    for hit in log_hits(ctx, _REFUSED, ("down",)):
        address = _ADDRESS.match(hit.upstream)
        if address is None or address.group("address").startswith("unix:"):
            continue
        hits.append({"address": address.group("address"), "uri": hit.uri, "time": hit.time, "line": hit.line})
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
    return probes_where(ctx, lambda d: address in pass_addresses(config, d.args[0] if d.args else ""))


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


def unit_on_port(
    resp: dict[str, Any], port: int, states: tuple[str, ...], ip: str | None = None
) -> tuple[str | None, str, list[Any]]:
    """(service, how it was found, the candidate units) from the helper's ``systemd_units`` answer.

    Only a single unit in one of ``states`` whose command line names ``port`` counts: with none or
    several, the service stays unknown and the caller refuses with the candidates. A unit whose command
    line binds that port on another address (``127.0.0.5:8001`` when ``127.0.0.1:8001`` refused) is not
    a candidate."""
    units = [u for u in (resp.get("systemd_units") or {}).get("units", []) if u.get("ActiveState") in states]
    if ip is not None:
        elsewhere = re.compile(r"(?<![\w.:])\[?([0-9a-fA-F.:]+?)\]?:" + str(port) + r"(?!\d)")
        wildcard = ("0.0.0.0", "::", "*", ip)
        units = [u for u in units if all(m.group(1) in wildcard for m in elsewhere.finditer(u.get("command", "")))]
    if len(units) != 1:
        return None, "", units
    unit = units[0]
    how = f"systemd: {unit['Id']} is {unit.get('ActiveState', '?')} and its command line names port {port}"
    return str(unit["Id"]).removesuffix(".service"), how, units


def _remote_backend(ctx: Context, args: dict[str, Any]) -> tuple[Host, Request] | None:
    latest = (ctx.by_collector.get("refused_upstreams") or {}).get("latest")
    host = owner_of(ctx.inventory, ctx.host, latest["ip"]) if latest else None
    if latest is None or host is None:
        return None
    req = new_request(commands={"ss": ["ss", "-Htlnp"]})
    service = service_on_port(host, latest["port"])
    if service:
        req["commands"]["status"] = status_argv(host, service)
    elif host["service_manager"] == "systemd":
        req["systemd_units"] = {"port": latest["port"]}  # which stopped unit's command line names the port
    # Ask each of the host's services, directly, for the URI nginx failed on: which of them serves it?
    for name, spec in host["services"].items():
        if spec.get("port"):
            req.setdefault("http", {})[name] = f"http://{latest['ip']}:{spec['port']}{latest['uri']}"
    if not host["services"]:
        # Nothing mapped: every port listening on that address is asked instead (nginx's own skipped).
        skip = _nginx_ports(ctx) if host.name == ctx.host.name else []
        req["ask_listeners"] = {"ip": latest["ip"], "uri": latest["uri"], "skip_ports": skip, "max": 16}
    return host, req


def _nginx_ports(ctx: Context) -> list[int]:
    """The ports nginx itself listens on (asking nginx would only ask the failing path again)."""
    ports: list[int] = []
    config = ctx.config
    if config is None:
        return ports
    for server in config.servers():
        for listen in config.find("listen", server):
            port = listen.args[0].rpartition(":")[2] if listen.args else ""
            if port.isdigit():
                ports.append(int(port))
    return sorted(set(ports))


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
    for port_text, entry in (resp.get("listeners") or {}).items():
        answer = entry.get("answer") or {}
        status = answer.get("status")
        services.append(
            {
                "service": f"{entry.get('process', '?')} (found listening)",
                "port": int(port_text),
                "listening": True,
                "answer": status if status is not None else answer.get("error", "no answer"),
                "serves_uri": isinstance(status, int) and 200 <= status < 400,
            }
        )
    status = resp["commands"].get("status")
    state = " ".join((status["stdout"] or status["stderr"]).split()) if status else "unknown"
    found_by = "the inventory's `services`"
    units: list[Any] = []
    if service is None:
        # Not mapped: on a systemd host the stopped unit whose command line names the port owns it.
        service, found_by, units = unit_on_port(resp, latest["port"], ("failed", "inactive"), latest["ip"])
        if service is not None:
            state = f"{units[0].get('ActiveState', '?')} ({units[0].get('Result', '?')})"
    return {
        "host": host.name,
        "service": service,
        "found_by": found_by,
        "units": [
            {
                "unit": u["Id"],
                "state": u.get("ActiveState"),
                "result": u.get("Result"),
                "command": u.get("command"),
                "journal": u.get("journal", []),
            }
            for u in units
        ],
        "restartable": bool(service and service in host["restartable_services"]),
        "listening": listener is not None,
        "listener": listener,
        "state": state,
        "services": services,
        # Where the URI nginx failed on is really served: listening, and answering it with 2xx/3xx.
        "candidates": [s for s in services if s["listening"] and s["serves_uri"]],
    }


COLLECTORS = (
    Collector(
        "refused_upstreams",
        "the latest upstream that refused nginx (111), from the log and config",
        no_ask,
        _read_refused,
    ),
    Collector(
        "upstream_host",
        "the inventory host that owns the refused address: listeners, its service",
        no_ask,
        _read_backend,
        remote=_remote_backend,
    ),
)
