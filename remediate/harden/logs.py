"""Runbook, Prevention: "Always tail the error log" (upstream timing in the access log) and stub status."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator

from remediate.harden.model import Finding, Subject, rule
from remediate.nginx.parser import Directive

TIMING = "no-upstream-timing-log"
STUB = "no-stub-status"
LOCAL = ipaddress.ip_address("127.0.0.1")
NEEDED = ("$upstream_addr", "$upstream_status", "$upstream_response_time")
#: nginx's built-in format (ngx_http_log_module): no upstream variables.
BUILTIN = {"combined": '$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent'}


@rule(
    TIMING,
    "warning",
    "Prevention: Always tail the error log",
    "no access log format in use records the upstream's address, status and time",
    fix="add the runbook's upstream_timing log_format and log with it",
)
def upstream_timing(subject: Subject) -> Iterator[Finding]:
    """Use a log format that includes upstream response time: log_format upstream_timing '$remote_addr -
    $remote_user [$time_local] ' '"$request" $status $body_bytes_sent ' 'upstream=$upstream_addr '
    'upstream_status=$upstream_status ' 'upstream_response_time=$upstream_response_time '
    'request_time=$request_time'; (FAQ: Add $upstream_addr and $upstream_status to your access log
    format ... This reveals which specific backend IP is responsible for the majority of failures.)"""
    if not subject.proxies("http"):
        return
    formats = dict(BUILTIN)
    used: set[str] = set()
    for d, ctx in subject.walk():
        if not ctx or ctx[0].name != "http":
            continue  # stream's logs are another module's
        if d.name == "log_format" and d.args:
            body = d.args[1:]
            if body and body[0].startswith("escape="):
                body = body[1:]
            formats[d.args[0]] = " ".join(body)
        elif d.name == "access_log" and d.args and d.args[0] != "off":
            used.add(d.args[1] if len(d.args) > 1 and "=" not in d.args[1] else "combined")
    if not used:
        used.add("combined")  # no access_log anywhere: nginx logs logs/access.log combined
    if any(all(v in formats.get(name, "") for v in NEEDED) for name in used):
        return
    file, line = subject.main_line(None)
    http = subject.config.http()
    yield Finding(TIMING, "warning", file, line,
                  f"no access log format in use ({', '.join(sorted(used))}) records {', '.join(NEEDED)}: a 502 "
                  "cannot be traced to the peer that failed",
                  "log_format upstream_timing ... and access_log ... upstream_timing",
                  {"http": http.where} if http is not None else {})  # fmt: skip


@rule(STUB, "info", "Prevention: Size worker_connections", "no stub_status that localhost may read")
def stub_status(subject: Subject) -> Iterator[Finding]:
    """Monitor Nginx stub status continuously and alert before the pool saturates."""
    if any(d.name == "stub_status" and _local_may_read(subject, ctx) for d, ctx in subject.walk()):
        return
    file, line = subject.main_line(None)
    yield Finding(STUB, "info", file, line,
                  "no stub_status location: active connections cannot be watched before worker_connections "
                  "runs out",
                  "location = /nginx_status { stub_status; allow 127.0.0.1; deny all; }")  # fmt: skip


def _local_may_read(subject: Subject, ctx: tuple[Directive, ...]) -> bool:
    """nginx's access module for 127.0.0.1 where stub_status is: the first allow/deny that matches decides;
    the innermost block that has any is the one in effect (they are not merged); none at all allows."""
    for block in reversed(ctx):
        rules = [d for d in subject.config.children(block) if d.name in ("allow", "deny") and d.args]
        if not rules:
            continue
        for d in rules:
            try:
                hit = d.args[0] == "all" or LOCAL in ipaddress.ip_network(d.args[0], strict=False)
            except ValueError:
                continue  # unix: or a name; not 127.0.0.1
            if hit:
                return d.name == "allow"
        return True
    return True
