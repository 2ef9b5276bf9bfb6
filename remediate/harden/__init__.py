"""`remediate harden`: the runbook's Prevention section as rules over an nginx configuration.

Each rule (one module per family: upstreams, names, logs, timeouts, capacity, retries, pages,
services) is a pure function from a :class:`Subject` (the parsed configuration, plus facts read
on the host when there is one) to findings, registered with its id, severity and the runbook
paragraph it enforces. :func:`audit` runs them all, minus the ones switched off.
"""

from __future__ import annotations

from remediate.harden import capacity, logs, names, pages, retries, services, timeouts, upstreams
from remediate.harden.model import RULES, SEVERITIES, Finding, Rule, Subject

__all__ = ["FIXABLE", "ORDER", "RULES", "SEVERITIES", "Finding", "Rule", "Subject", "at_least", "audit"]

_MODULES = (upstreams, names, logs, timeouts, capacity, retries, pages, services)
#: The rules in the order the runbook's prevention section (and `--list-rules`) takes them.
ORDER = (
    "upstream-no-passive-health", "hostname-without-resolver", "variable-pass-without-resolver",
    "no-upstream-timing-log", "global-timeout-raised", "worker-sizing", "retry-non-idempotent",
    "no-custom-502-page", "upstream-service-no-restart", "no-stub-status",
)  # fmt: skip
assert set(ORDER) == set(RULES), "every rule has its place in ORDER"
for _id in ORDER:
    RULES[_id] = RULES.pop(_id)
#: The rules `--fix` can fix: each has a playbook in playbooks/harden/ (the guarded transaction of `run`).
FIXABLE = (
    "upstream-no-passive-health", "hostname-without-resolver", "variable-pass-without-resolver",
    "no-upstream-timing-log", "worker-sizing", "no-custom-502-page", "upstream-service-no-restart",
)  # fmt: skip


def audit(subject: Subject, *, skip: tuple[str, ...] = ()) -> list[Finding]:
    """Every finding of every rule not in ``skip``: most severe first, then by file and line."""
    unknown = [r for r in skip if r not in RULES]
    if unknown:
        raise ValueError(f"no rule {unknown[0]!r} (rules: {', '.join(RULES)})")
    found = [f for r in RULES.values() if r.id not in skip for f in r.check(subject)]
    return sorted(found, key=lambda f: (-SEVERITIES.index(f.severity), f.file, f.line, f.rule))


def at_least(findings: list[Finding], severity: str) -> list[Finding]:
    """The findings at ``severity`` or above."""
    floor = SEVERITIES.index(severity)
    return [f for f in findings if SEVERITIES.index(f.severity) >= floor]
