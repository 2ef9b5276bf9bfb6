"""Runbook, Prevention: "Enable upstream health checks" (passive checks on ``upstream`` servers)."""

from __future__ import annotations

from collections.abc import Iterator

from remediate.harden.model import Finding, Subject, rule, seconds

RULE = "upstream-no-passive-health"
#: nginx's defaults (ngx_http_upstream_server: max_fails=1, fail_timeout=10s).
DEFAULT_FAIL_TIMEOUT = 10.0


@rule(
    RULE,
    "warning",
    "Prevention: Enable upstream health checks",
    "an upstream server without passive health-check parameters",
    fix="add max_fails=3 fail_timeout=30s to the server (the runbook's values)",
)
def passive_health(subject: Subject) -> Iterator[Finding]:
    """In open-source Nginx, use passive health checks via the max_fails and fail_timeout parameters on
    upstream server blocks: server 10.10.10.20:8080 max_fails=3 fail_timeout=30s; ... After three
    consecutive failures within 30 seconds, Nginx marks that upstream peer as unavailable and routes
    traffic to surviving peers. (FAQ, "no live upstreams": most often caused ... by setting max_fails=1
    with a high fail_timeout so a single transient failure blacklists a peer for a long time.)"""
    config = subject.config
    for name, upstream in subject.upstreams():
        servers = config.find("server", upstream)
        primaries = [s for s in servers if "backup" not in s.args[1:]]
        if len(servers) == 1:
            # One server: nginx ignores max_fails and fail_timeout (a single peer is never marked down).
            yield Finding(RULE, "info", upstream.file, upstream.line,
                          f"upstream {name} has one server and no backup: when it fails, every request "
                          "through it gets 502")  # fmt: skip
            continue
        for server in primaries:
            params = dict(p.split("=", 1) for p in server.args[1:] if "=" in p)
            address = server.args[0] if server.args else "?"
            if "max_fails" not in params and "fail_timeout" not in params:
                yield Finding(RULE, "warning", server.file, server.line,
                              f"server {address} in upstream {name} relies on nginx's unstated defaults "
                              "(max_fails=1 fail_timeout=10s): one failed attempt takes it out for 10 s",
                              "add max_fails=3 fail_timeout=30s", {"directive": server.where})  # fmt: skip
                continue
            timeout = seconds(params.get("fail_timeout", "10s"))
            if params.get("max_fails", "1") == "1" and timeout is not None and timeout > DEFAULT_FAIL_TIMEOUT:
                yield Finding(RULE, "warning", server.file, server.line,
                              f"server {address} in upstream {name}: max_fails=1 with fail_timeout="
                              f"{params['fail_timeout']}: a single transient failure blacklists it that long "
                              "(the \"no live upstreams\" trap)",
                              "max_fails=3 fail_timeout=30s", {"directive": server.where})  # fmt: skip
