"""`remediate harden --host`: the rules over a live host's configuration, with what is read on it and behind it.

The evidence is the harden playbooks' own (``nginx_config``, then ``harden_findings``): one round trip
to nginx's host for ``nginx -T`` and resolv.conf, then one per host asked in the second phase (nginx's
host again for its master's open-files limit, each backend host for its services' restart settings),
exactly as ``diagnose`` reads a host. Nothing is locked or written.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from remediate.engine.playbook import Playbook
from remediate.harden.model import Finding
from remediate.hosts.inventory import Host, Inventory
from remediate.transport.base import Transport

__all__ = ["EVIDENCE", "HostAudit", "audit_host", "playbooks_dir"]

EVIDENCE: list[tuple[str, str, dict[str, Any]]] = [("nginx", "nginx_config", {}), ("harden", "harden_findings", {})]


def playbooks_dir() -> str:
    """The harden rules' fix playbooks (one per fixable rule, named by its id)."""
    from remediate.resources import playbooks_dir as shipped

    return str(shipped() / "harden")


@dataclass
class HostAudit:
    host: str
    findings: list[Finding]
    skipped: list[str] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)
    round_trips: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"host": self.host, "findings": [f.to_json() for f in self.findings], "skipped": self.skipped,
                "facts": self.facts, "round_trips": self.round_trips}  # fmt: skip


def audit_host(
    host: Host, inventory: Inventory, *, transport: Transport | None = None, accept_new_host_key: bool = False
) -> HostAudit:
    from remediate.engine.gather import gather
    from remediate.engine.session import Transports, call_helper

    book = Playbook(cause="harden", summary="the hardening rules", path="<harden>", evidence=list(EVIDENCE))
    pool = Transports(host, transport, accept_new_host_key)
    try:
        ctx = gather(host, book, pool, lambda request: call_helper(pool.get(host), host, request), inventory,
                     run_id="harden")  # fmt: skip
        value = ctx.values["harden"]
        findings = [Finding(**f) for f in value["findings"]]
        return HostAudit(host.name, findings, value["skipped"], value["facts"], pool.round_trips)
    finally:
        pool.close()
