"""Evidence for the timeout cause: the latest upstream timeout, the timeout in effect, the backend's TTFB."""

from __future__ import annotations

import math
import re
from typing import Any
from urllib.parse import urlsplit

from remediate.evidence.framework import Collector, Context, Request, log_hits, new_request, no_ask
from remediate.evidence.routing import probe_port, timeout_in_effect
from remediate.hosts.inventory import Host
from remediate.nginx import route

#: Any upstream timeout (nginx's own timer, or the kernel's ETIMEDOUT on connect), any platform's spelling.
_TIMED = re.compile(r"while (?P<phase>[a-zA-Z ]+?upstream)(?:,|$)")
#: The directive whose timer ran out, by the action nginx was in (src/http/ngx_http_upstream.c):
#: the SSL handshake runs under the connect timeout (ngx_http_upstream_ssl_init_connection).
_PHASE_DIRECTIVE = {
    "connecting to upstream": "proxy_connect_timeout",
    "SSL handshaking to upstream": "proxy_connect_timeout",
    "reading response header from upstream": "proxy_read_timeout",
    "reading upstream": "proxy_read_timeout",
    "sending request to upstream": "proxy_send_timeout",
}


def _latest_timeout(ctx: Context) -> dict[str, Any] | None:
    hits = [h for h in log_hits(ctx, _TIMED, ("timeout",)) if h.match.group("phase") in _PHASE_DIRECTIVE]
    if not hits or ctx.config is None:
        return None
    latest = hits[-1]
    line, m, uri = latest.line, latest.match, latest.uri
    if not latest.upstream:
        return None
    from remediate.nginx.match import normalize_uri, parse_location

    port, addr = probe_port(ctx)
    match = route(ctx.config, "", normalize_uri(uri), port, addr)
    if match is None or match.location is None:
        return None
    directive = _PHASE_DIRECTIVE[m.group("phase")]
    current, current_where = timeout_in_effect(ctx.config, match.location, directive)
    loc = parse_location(match.location)
    path = normalize_uri(uri)
    broad = loc.modifier == "" and loc.pattern == "/"
    prefix = "/" + path.strip("/").split("/")[0] + "/" if broad and path.strip("/") else loc.pattern
    same = [h for h in hits if h.uri == uri]
    return {
        "phase": m.group("phase"),
        "directive": directive,
        "uri": uri,
        "upstream_url": latest.upstream,
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


COLLECTORS = (
    Collector(
        "timed_out",
        "the latest upstream timeout: its location, the timeout in effect, the backend's measured TTFB",
        no_ask,
        _read_timed,
        remote=_remote_timed,
    ),
)
