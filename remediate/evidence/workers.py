"""Evidence for the workers cause: nginx ran out of connections or file descriptors.

nginx's messages (src/event/ngx_event_connect.c, src/event/ngx_event_accept.c,
src/core/ngx_connection.c): "N worker_connections are not enough" and
"(24: Too many open files)". The second phase, on the web host, reads what the
config cannot say: the open-files limit nginx's master and workers really run with
(/proc/PID/limits), the kernel ceiling (fs.nr_open), when the current workers
started, and ``stub_status`` when it is configured.
"""

from __future__ import annotations

import base64
import math
import re
from typing import Any

from remediate.evidence.framework import Collector, Context, Request, log_hits, new_request, summary
from remediate.evidence.routing import location_for, pid_file, probes_under
from remediate.hosts.inventory import Host

__all__ = ["COLLECTORS", "service_limit_file", "size_workers"]

SIGNATURE = re.compile(r"")  # every line the classifier labels workers
NGINX_DEFAULT_CONNECTIONS = 512  # worker_connections when the events block does not set it


def size_workers(current: int, peak: int, rlimit: int | None, in_effect: int = 0) -> tuple[int, int]:
    """(worker_connections, worker_rlimit_nofile): at least twice the current value and twice the peak
    seen, rounded up to a multiple of 64; the descriptor limit at least twice that (a proxied request
    holds two connections), and never below what the workers have now: the configured
    ``worker_rlimit_nofile``, or the soft limit they run with (``in_effect``, from /proc; inherited
    from the service when nothing sets it). A fix never lowers a limit."""
    connections = 64 * math.ceil(max(2 * current, 2 * peak) / 64)
    return connections, max(2 * connections, rlimit or 0, in_effect)


def _stub_status_url(ctx: Context) -> str | None:
    """A URL of a location with ``stub_status``, on the server the probe URLs reach."""
    config = ctx.config
    probes = ctx.host["probe_urls"]
    if config is None or not probes:
        return None
    scheme, _, netloc = probes[0].split("/", 3)[:3]
    for directive, chain in config.walk():
        location = next((c for c in reversed(chain) if c.name == "location"), None)
        if directive.name == "stub_status" and location is not None and location.args:
            path = location.args[-1]
            if location_for(ctx, path) is location:
                return f"{scheme}//{netloc}{path}"
    return None


def _finding(ctx: Context) -> dict[str, Any] | None:
    hits = log_hits(ctx, SIGNATURE, ("workers",))
    config = ctx.config
    if not hits or config is None:
        return None
    events = config.find("events")
    connections = config.find("worker_connections", events[0]) if events else []
    rlimit = config.find("worker_rlimit_nofile")
    processes = config.find("worker_processes")
    # The locations the failing requests went to, and the upstream blocks they pass to (those get keepalive).
    locations = [loc for loc in dict.fromkeys(location_for(ctx, h.uri) for h in hits) if loc is not None]
    upstreams = []
    for location in locations:
        for d in location.children:
            if d.name.endswith("_pass") and d.args:
                name = re.sub(r"^[a-z]+://", "", d.args[0]).split("/")[0]
                if name in config.upstreams() and name not in upstreams:
                    upstreams.append(name)
    return {
        **summary(hits),
        "fd_exhausted": any("(24:" in h.line for h in hits),
        "worker_connections": int(connections[-1].args[0]) if connections else NGINX_DEFAULT_CONNECTIONS,
        "worker_connections_where": connections[-1].where if connections else None,
        "events_where": events[0].where if events else None,
        "worker_rlimit_nofile": int(rlimit[-1].args[0]) if rlimit else None,
        "worker_processes": processes[-1].args[0] if processes else "1",
        "upstreams": upstreams,
        "probes": [u for loc in locations for u in probes_under(ctx, loc)],
    }


def service_limit_file(host: Host) -> str | None:
    """The file that sets the open-files limit of nginx's service: a systemd drop-in, or supervisord.conf."""
    if host["service_manager"] == "systemd":
        return f"/etc/systemd/system/{host['nginx_service']}.service.d/remediate-nofile.conf"
    if host["service_manager"] == "supervisor" and host["supervisor_config"]:
        return str(host["supervisor_config"])
    return None


def _ask(host: Host, args: dict[str, Any], req: Request) -> None:
    path = service_limit_file(host)
    if path:
        req["files"].append(path)


def _keep_file(ctx: Context, args: dict[str, Any], resp: dict[str, Any]) -> None:
    path = service_limit_file(ctx.host)
    entry = resp.get("files", {}).get(path) if path else None
    if path and entry and "b64" in entry:
        ctx.files[path] = base64.b64decode(entry["b64"])


def _remote(ctx: Context, args: dict[str, Any]) -> tuple[Host, Request] | None:
    if not _finding(ctx):
        return None
    req = new_request()
    req["nofile_pid_file"] = pid_file(ctx.host, ctx.config)
    url = _stub_status_url(ctx)
    if url:
        req["raw"] = {"stub_status": {"url": url, "timeout": 3, "max_bytes": 2048}}
    return ctx.host, req


def _read(ctx: Context, args: dict[str, Any], resp: dict[str, Any]) -> Any:
    found = _finding(ctx)
    if not found:
        return {"found": False}
    resp = resp or {}
    stub = resp.get("raw", {}).get("stub_status") or {}
    active = re.search(r"Active connections:\s*(\d+)", stub.get("body", "") or "")
    limits = resp.get("nofile") or {}
    current = found["worker_connections"]
    # Connections in use at the peak: each active (proxied) client holds two, its own and the upstream's.
    # With no stub_status, the log line itself says the workers were full: the peak is the current value.
    peak = 2 * int(active.group(1)) if active else current
    soft = [w["soft"] for w in (limits.get("workers") or {}).values() if w]
    connections, rlimit = size_workers(current, peak, found["worker_rlimit_nofile"], max(soft, default=0))
    ceiling = int(ctx.host["worker_connections_ceiling"])
    master = limits.get("master") or {}
    started = limits.get("workers_started") or ""
    hits = log_hits(ctx, SIGNATURE, ("workers",))
    return {
        **found,
        "found": True,
        "stub_status": stub.get("url"),
        "active": int(active.group(1)) if active else None,
        "peak": peak,
        "needed": connections,
        "rlimit_needed": rlimit,
        "ceiling": ceiling,
        "over_ceiling": connections > ceiling,
        "nofile": limits,
        "master_nofile": master,
        "nr_open": limits.get("nr_open"),
        "over_nr_open": bool(limits.get("nr_open")) and rlimit > int(limits["nr_open"]),
        # The master's own limit already allows it: workers raise theirs with worker_rlimit_nofile.
        "master_limit_ok": bool(master) and int(master.get("hard", 0)) >= rlimit,
        "workers_started": started,
        # Lines after the second the running workers started (log times have 1 s resolution; a line in that
        # second is taken as the old workers'): 0 means the config now in effect has not run out.
        "lines_since_workers": len([h for h in hits if h.time > started]) if started else None,
    }


COLLECTORS = (
    Collector(
        "worker_limits",
        "worker_connections and nofile limits in effect (/proc/PID/limits, fs.nr_open), stub_status, the log lines",
        _ask,
        _read,
        remote=_remote,
        first=_keep_file,
    ),
)
