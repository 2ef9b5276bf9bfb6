"""Runbook, Prevention: "Set realistic timeout values per location" (and the FAQ's too-short connect timeout)."""

from __future__ import annotations

from collections.abc import Iterator

from remediate.harden.model import Finding, Subject, rule, seconds

RULE = "global-timeout-raised"
#: nginx's default for every *_read_timeout and *_connect_timeout.
DEFAULT = 60.0
MODULES = ("proxy", "fastcgi", "uwsgi", "scgi", "grpc")


@rule(
    RULE,
    "warning",
    "Prevention: Set realistic timeout values per location",
    "an upstream timeout raised for a whole http or server block, or a 1-2 s connect timeout",
)
def global_timeouts(subject: Subject) -> Iterator[Finding]:
    """Set realistic timeout values per location. Global timeouts should be conservative. Endpoints that
    legitimately need more time (report generation, file exports) should have their own location block with
    higher timeout values, keeping the global defaults strict for all other paths. (FAQ: a very short
    proxy_connect_timeout (1-2 seconds) can produce a 502 when the backend is simply busy.)"""
    for d, ctx in subject.walk():
        module, _, kind = d.name.partition("_")
        if module not in MODULES or kind not in ("read_timeout", "connect_timeout") or not d.args:
            continue
        value = seconds(d.args[0])
        if value is None:
            continue
        level = ctx[-1].name if ctx else "main"
        if value > DEFAULT and level in ("http", "server"):
            yield Finding(RULE, "warning", d.file, d.line,
                          f"{d.name} {d.args[0]} at {level} level: every location waits that long for a dead "
                          "or stuck backend, not only the slow one",
                          f"keep {d.name} at {int(DEFAULT)}s here; raise it in the slow location only")  # fmt: skip
        elif kind == "connect_timeout" and 1 <= value <= 2:
            yield Finding(RULE, "warning", d.file, d.line,
                          f"{d.name} {d.args[0]}: a backend that is only busy answers 502 (the connect "
                          "times out before it accepts)",
                          f"{d.name} 5s or more")  # fmt: skip
