"""Approvals bound to the plan: an opaque id behind each Approve button, good once, for that plan only.

When a run needs approval, the service plans it (``--check``), posts the diff, and records an
approval: a random id (what the button carries; it says nothing about the host or cause), the
host, cause, requester, expiry and the **plan hash** (:func:`plan_hash`: sha256 over the host,
the cause, the unified diff and a digest of the evidence). :meth:`Approvals.decide` lets it go
only if the approver holds ``approve`` for that host and cause, is not the requester (unless the
policy allows self-approval), the approval has not expired and was not used; it is used up in
the same transaction, so a double click approves once. The run then plans again and must come to
the same hash, or it refuses: "the plan changed since it was approved".
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from dataclasses import dataclass

from remediate.hosts.inventory import Inventory
from remediate.stores.db import Schema, Where, open_db
from remediate.stores.policy import Policy

__all__ = ["Approval", "Approvals", "plan_hash"]

_TABLE = """
CREATE TABLE IF NOT EXISTS approvals (
    id TEXT PRIMARY KEY,
    host TEXT NOT NULL,
    cause TEXT NOT NULL,
    requester TEXT NOT NULL,
    plan_hash TEXT NOT NULL,
    created {real} NOT NULL,
    expires {real} NOT NULL,
    state TEXT NOT NULL DEFAULT 'waiting',
    decided_by TEXT,
    decided {real}
);
"""
_SCHEMA = Schema(sqlite=_TABLE.format(real="REAL"), postgres=_TABLE.format(real="DOUBLE PRECISION"))


def plan_hash(host: str, cause: str, diff: str) -> str:
    """sha256 over what will be written and done: host, cause, and the unified diff with its service actions.

    Not the evidence that chose it: a measurement (a backend's time to first byte, the lines in the window)
    differs between planning and running while the change stays the same, and an approved fix must still
    run. A host that changed under the plan changes the diff's own lines, and the apply's compare-and-swap
    refuses bytes that are not the ones planned from."""
    body = json.dumps([host, cause, diff], separators=(",", ":"))
    return hashlib.sha256(body.encode()).hexdigest()


@dataclass(frozen=True)
class Approval:
    id: str
    host: str
    cause: str
    requester: str
    plan_hash: str
    created: float
    expires: float
    state: str  # waiting | approved | denied | expired
    decided_by: str | None
    decided: float | None


@dataclass(frozen=True)
class Verdict:
    ok: bool
    reason: str
    approval: Approval | None = None


class Approvals:
    """The approvals in ``STATE/ledger.db`` (beside the jobs) or PostgreSQL (remediate.stores.db)."""

    def __init__(self, where: Where) -> None:
        self.db = open_db(where, "ledger", _SCHEMA)

    def create(self, host: str, cause: str, requester: str, hash_: str, *, ttl: float = 900) -> Approval:
        """A new approval, waiting; its id is 128 random bits (what the Approve button carries)."""
        now = time.time()
        approval_id = secrets.token_urlsafe(16)
        self.db.execute(
            "INSERT INTO approvals (id, host, cause, requester, plan_hash, created, expires) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (approval_id, host, cause, requester, hash_, now, now + ttl),
        )
        return self.get(approval_id)

    def get(self, approval_id: str) -> Approval:
        row = self.db.execute(
            "SELECT id, host, cause, requester, plan_hash, created, expires, state, decided_by, decided "
            "FROM approvals WHERE id = ?",
            (approval_id,),
        ).fetchone()
        if row is None:
            raise KeyError(approval_id)
        return Approval(*row)

    def decide(
        self,
        approval_id: str,
        user: str,
        *,
        approve: bool,
        policy: Policy,
        inventory: Inventory,
        user_groups: tuple[str, ...] = (),
    ) -> Verdict:
        """Approve or deny, once; every refusal says why and changes nothing."""
        with self.db.write("approvals"):  # two clicks at once: one decides, the other sees it decided
            return self._decide(approval_id, user, approve, policy, inventory, user_groups)

    def _decide(
        self,
        approval_id: str,
        user: str,
        approve: bool,
        policy: Policy,
        inventory: Inventory,
        user_groups: tuple[str, ...],
    ) -> Verdict:
        try:
            approval = self.get(approval_id)
        except KeyError:
            return Verdict(False, "no such approval (it may belong to another remediate)")
        if approval.state != "waiting":
            who = f" by {approval.decided_by}" if approval.decided_by else ""
            return Verdict(False, f"this approval was already {approval.state}{who}", approval)
        now = time.time()
        if now > approval.expires:
            self.db.execute("UPDATE approvals SET state = 'expired' WHERE id = ?", (approval_id,))
            return Verdict(False, "this approval expired; ask for the run again", self.get(approval_id))
        allowed = policy.allows(inventory, user, "approve", approval.host, approval.cause, user_groups)
        if not allowed:
            return Verdict(False, allowed.reason, approval)
        if approve and user == approval.requester and not policy.self_approval:
            return Verdict(False, f"{user} asked for this run and may not approve it too", approval)
        state = "approved" if approve else "denied"
        self.db.execute(
            "UPDATE approvals SET state = ?, decided_by = ?, decided = ? WHERE id = ?", (state, user, now, approval_id)
        )
        return Verdict(True, f"{state} by {user}", self.get(approval_id))

    def check_plan(self, approval: Approval, hash_now: str) -> Verdict:
        """After approval the run plans again: the plan must be the one approved."""
        if approval.state != "approved":
            return Verdict(False, f"the approval is {approval.state}, not approved", approval)
        if hash_now != approval.plan_hash:
            return Verdict(False, "the plan changed since it was approved; nothing was changed", approval)
        return Verdict(True, "the plan is the one approved", approval)

    def close(self) -> None:
        self.db.close()
