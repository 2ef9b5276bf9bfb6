"""Evidence for the invalid-response cause: what the backend really sends, asked directly.

nginx's messages (src/http/ngx_http_upstream.c, src/http/modules/ngx_http_proxy_module.c,
src/event/ngx_event_openssl.c) say *that* the answer was bad; the second phase asks the
backend itself from the web host, bypassing nginx, with a bounded timeout and a bounded
read, and records what came back: an empty reply, a premature close, bytes that are not a
status line, or a TLS failure with the certificate's subject and issuer.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

from remediate.evidence.down import owner_of, service_on_port, unit_on_port
from remediate.evidence.framework import Collector, Context, Request, log_hits, new_request, no_ask, summary
from remediate.evidence.routing import in_effect, location_for, probes_under
from remediate.hosts.inventory import Host

__all__ = ["COLLECTORS", "SIGNATURE"]

#: What nginx said, with the action: the text of any line the classifier labels invalid-response.
SIGNATURE = re.compile(r"(?:\] \d+#\d+: (?:\*\d+ )?|nginx: \[[a-z]+\] )(?P<signature>.*?)(?=, client: |\\n|$)")
_SSL = ("proxy_ssl_verify", "proxy_ssl_trusted_certificate", "proxy_ssl_name", "proxy_ssl_server_name")


def _finding(ctx: Context) -> dict[str, Any] | None:
    hits = [h for h in log_hits(ctx, SIGNATURE, ("invalid-response",)) if h.upstream]
    if not hits or ctx.config is None:
        return None
    latest = hits[-1]
    location = location_for(ctx, latest.uri)
    same = [h for h in hits if h.upstream == latest.upstream]
    url = urlsplit(latest.upstream)
    ssl: dict[str, Any] = {}
    if location is not None:
        for name in _SSL:
            found = in_effect(ctx.config, location, name)
            ssl[name.removeprefix("proxy_ssl_")] = found.args[0] if found is not None else None
    owner = owner_of(ctx.inventory, ctx.host, url.hostname or "")
    port = url.port or (443 if url.scheme == "https" else 80)
    service = service_on_port(owner, port) if owner is not None else None
    return {
        "signature": latest.match.group("signature"),
        "tls_failure": "SSL" in latest.match.group("signature"),
        "uri": latest.uri,
        "upstream_url": latest.upstream,
        "scheme": url.scheme,
        "location": " ".join(location.args) if location is not None else None,
        "location_where": location.where if location is not None else None,
        "ssl": ssl,
        "owner": owner.name if owner is not None else None,
        "service": service,
        "port": port,
        "restartable": bool(owner is not None and service and service in owner["restartable_services"]),
        **summary(same),
        "probes": probes_under(ctx, location) if location is not None else [],
    }


def _remote(ctx: Context, args: dict[str, Any]) -> tuple[Host, Request] | None:
    found = _finding(ctx)
    if not found:
        return None
    spec: dict[str, Any] = {"url": found["upstream_url"], "timeout": float(args.get("timeout", 3)), "max_bytes": 4096}
    if found["scheme"] == "https":
        ssl = found["ssl"]
        spec["server_name"] = ssl.get("name") or urlsplit(found["upstream_url"]).hostname
        spec["cafile"] = ssl.get("trusted_certificate")
        spec["check_cafiles"] = [p for p in (ssl.get("trusted_certificate"), ctx.host["tls_ca_bundle"]) if p]
    req = new_request(raw={"direct": spec})
    if found["service"] is None and found["owner"] == ctx.host.name and ctx.host["service_manager"] == "systemd":
        req["systemd_units"] = {"port": found["port"]}  # the running unit whose command line names the port
    return ctx.host, req  # from the web host: the backend as nginx reaches it


def _read(ctx: Context, args: dict[str, Any], resp: dict[str, Any]) -> Any:
    found = _finding(ctx)
    if not found:
        return {"found": False}
    answer = (resp or {}).get("raw", {}).get("direct") or {"kind": "not asked", "status": None, "excerpt": ""}
    tls = answer.get("tls") or {}
    verify = tls.get("verify", {})
    bundle = ctx.host["tls_ca_bundle"]
    trusted = found["ssl"].get("trusted_certificate")
    if found["service"] is None and resp:
        service, how, _ = unit_on_port(resp, found["port"], ("active",))
        if service is not None:
            found.update(service=service, found_by=how, restartable=service in ctx.host["restartable_services"])
    return {
        **found,
        "found": True,
        "answer": answer,
        "kind": answer["kind"],
        # Valid HTTP, not a server error: the backend is fine now (as nginx reaches it).
        "healthy": answer["kind"] == "ok" and (answer.get("status") or 500) < 500,
        "certificate": {"subject": tls.get("subject"), "issuer": tls.get("issuer")},
        "trusted_verifies": bool(trusted) and verify.get(trusted) == "ok",
        "trusted_error": verify.get(trusted) if trusted else "no proxy_ssl_trusted_certificate in effect",
        "bundle": bundle,
        "bundle_verifies": bool(bundle) and verify.get(bundle) == "ok",
        "bundle_error": verify.get(bundle) if bundle else None,
        "insecure_allowed": bool(ctx.values.get("options", {}).get("insecure_tls")),
    }


COLLECTORS = (
    Collector(
        "bad_response",
        "the latest invalid upstream answer in the log; the backend asked directly (bounded), its TLS certificate",
        no_ask,
        _read,
        remote=_remote,
    ),
)
