"""Runbook, Prevention: "Use IP addresses in proxy_pass for static backends" (stale DNS) and the resolver."""

from __future__ import annotations

from collections.abc import Iterator

from remediate.harden.model import Finding, Subject, effective, pass_host, rule

FROZEN = "hostname-without-resolver"
UNRESOLVABLE = "variable-pass-without-resolver"
#: Names that never move: no finding for them.
STATIC_NAMES = {"localhost"}


@rule(
    FROZEN,
    "warning",
    "Prevention: Use IP addresses in proxy_pass for static backends",
    "a *_pass or upstream server to a host name, resolved once at start",
    fix="add a resolver (the inventory's resolvers) and pass through a variable, so nginx re-resolves",
)
def frozen_name(subject: Subject) -> Iterator[Finding]:
    """Use IP addresses in proxy_pass for static backends. Avoid hostname-based proxy_pass without a
    resolver directive. DNS changes will not be reflected until the next Nginx reload, silently routing
    traffic to dead hosts."""
    config = subject.config
    upstreams = {name for name, _ in subject.upstreams()}
    for found in config.passes():
        target = pass_host(found.target, upstreams)
        if target.kind == "name" and not target.runtime and target.host not in STATIC_NAMES:
            d = found.directive
            at = {"server": found.server.where} if found.server is not None else {}
            if found.location is not None and d.name == "proxy_pass":
                at["location"] = found.location.where
            yield Finding(FROZEN, "warning", d.file, d.line,
                          f"{d.name} {found.target}: {target.host} is resolved once, when nginx starts; a "
                          "DNS change goes unseen until the next reload",
                          "set a resolver and use a variable (set $backend ...; "
                          f"{d.name} ...$backend...)", at)  # fmt: skip
    for name, upstream in subject.upstreams():
        for server in config.find("server", upstream):
            target = pass_host(server.args[0] if server.args else "", set())
            if target.kind == "name" and target.host not in STATIC_NAMES and "resolve" not in server.args[1:]:
                yield Finding(FROZEN, "warning", server.file, server.line,
                              f"server {server.args[0]} in upstream {name}: the name is resolved once, when "
                              "nginx starts",
                              "use the address, or `resolve` with a zone and a resolver (nginx 1.27.3+)")  # fmt: skip


@rule(
    UNRESOLVABLE,
    "error",
    "Prevention: Use IP addresses in proxy_pass for static backends",
    "a variable in *_pass with no resolver in effect",
    fix="add a resolver (the inventory's resolvers)",
)
def variable_without_resolver(subject: Subject) -> Iterator[Finding]:
    """Avoid hostname-based proxy_pass without a resolver directive. (With a variable in proxy_pass,
    nginx resolves the name for each request, and with no resolver in effect the request fails: "no
    resolver defined to resolve NAME", a 502.)"""
    config = subject.config
    upstreams = {name for name, _ in subject.upstreams()}
    for d, ctx in config.walk():
        if d.name not in ("proxy_pass", "fastcgi_pass", "uwsgi_pass", "scgi_pass", "grpc_pass") or not d.args:
            continue
        target = pass_host(d.args[0], upstreams)
        needs = target.kind == "variable" or (target.runtime and target.kind == "name")
        if not needs or effective("resolver", ctx, config) is not None:
            continue
        if target.kind == "variable":  # it may hold an address or an upstream's name: likely, not certain
            severity, said = (
                "warning",
                (
                    f"the host comes from a variable ({target.host}) and no resolver is in effect: unless it holds "
                    "an IP address or an upstream's name, nginx answers 502"
                ),
            )
        else:
            severity, said = (
                "error",
                (
                    f"with a variable in it, nginx resolves {target.host} for each request, and no resolver is in "
                    "effect: every request gets 502"
                ),
            )
        server = next((c for c in reversed(ctx) if c.name == "server"), None)
        yield Finding(UNRESOLVABLE, severity, d.file, d.line,
                      f"{d.name} {d.args[0]}: {said} (\"no resolver defined to resolve\")",
                      "add `resolver ADDRESS valid=30s;` to the server or http block",
                      {"server": server.where} if server is not None else {})  # fmt: skip
