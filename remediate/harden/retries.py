"""Runbook, FAQ: "Can I configure Nginx to retry failed upstream requests automatically?"."""

from __future__ import annotations

from collections.abc import Iterator

from remediate.harden.model import Finding, Subject, effective, rule

RULE = "retry-non-idempotent"
MODULES = ("proxy", "fastcgi", "uwsgi", "scgi", "grpc")
SAFE_METHODS = {"GET", "HEAD"}


@rule(
    RULE,
    "warning",
    "FAQ: retry failed upstream requests",
    "retries that can repeat a POST, or retries on 5xx with no cap on tries",
)
def retries(subject: Subject) -> Iterator[Finding]:
    """proxy_next_upstream error timeout http_502 http_503; proxy_next_upstream_tries 3;
    proxy_next_upstream_timeout 10s; Be careful with non-idempotent requests (POST, PUT, PATCH) - retrying
    them can cause duplicate operations on the backend."""
    config = subject.config
    for d, ctx in subject.walk():
        module, _, rest = d.name.partition("_")
        if module not in MODULES or rest != "next_upstream":
            continue
        if "non_idempotent" in d.args:
            yield Finding(RULE, "warning", d.file, d.line,
                          f"{d.name} ... non_idempotent: a POST, PUT or PATCH that failed on one peer is sent "
                          "again to the next, so the backend can act twice",
                          "drop non_idempotent")  # fmt: skip
            continue
        statuses = [a for a in d.args if a.startswith("http_")]
        if not statuses or effective(f"{module}_next_upstream_tries", ctx, config) is not None:
            continue
        limited = next((c for c in reversed(ctx) if c.name == "limit_except"), None)
        if limited is not None and set(limited.args) <= SAFE_METHODS:
            continue
        yield Finding(RULE, "warning", d.file, d.line,
                      f"{d.name} retries on {' '.join(statuses)} with no {module}_next_upstream_tries: a failing "
                      "request is tried on every peer in turn, multiplying the load on a struggling pool",
                      f"{module}_next_upstream_tries 3; {module}_next_upstream_timeout 10s;")  # fmt: skip
