"""Approvals bound to the plan: approver's verb, not the requester, once, not expired, the same plan."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from support.policy import INVENTORY, POLICY

from remediate.hosts.inventory import Inventory, load_inventory
from remediate.stores.approvals import Approvals, plan_hash
from remediate.stores.policy import Policy

DIFF = "--- a/www.conf\n+++ b/www.conf\n-listen.mode = 0600\n+listen.mode = 0660\n"


@pytest.fixture
def inventory(tmp_path: Path) -> Inventory:
    (tmp_path / "hosts.yml").write_text(INVENTORY)
    return load_inventory(tmp_path / "hosts.yml")


def _waiting(store: str | Path, ttl: float = 900) -> tuple[Approvals, str]:
    approvals = Approvals(store)
    made = approvals.create("web01", "socket", "U111", plan_hash("web01", "socket", DIFF), ttl=ttl)
    return approvals, made.id


def test_an_approver_approves_once_and_the_same_plan_runs(store: str | Path, inventory: Inventory) -> None:
    approvals, approval_id = _waiting(store)
    assert len(approval_id) >= 22 and "web01" not in approval_id  # opaque: says nothing of host or cause
    verdict = approvals.decide(
        approval_id, "U222", approve=True, policy=Policy.from_config(POLICY), inventory=inventory
    )
    assert verdict.ok and verdict.approval is not None and verdict.approval.state == "approved"
    again = plan_hash("web01", "socket", DIFF)
    assert approvals.check_plan(approvals.get(approval_id), again).ok


@pytest.mark.parametrize(
    ("user", "says"),
    [
        ("U111", "may not approve"),  # the requester, and an oncall without the verb
        ("U999", "not in remediate's policy"),
    ],
)
def test_a_user_without_the_verb_is_refused(store: str | Path, inventory: Inventory, user: str, says: str) -> None:
    approvals, approval_id = _waiting(store)
    verdict = approvals.decide(approval_id, user, approve=True, policy=Policy.from_config(POLICY), inventory=inventory)
    assert not verdict.ok and says in verdict.reason and approvals.get(approval_id).state == "waiting"


def test_the_requester_may_not_approve_their_own_run(store: str | Path, inventory: Inventory) -> None:
    approvals = Approvals(store)
    made = approvals.create("web01", "socket", "U222", "h")
    verdict = approvals.decide(made.id, "U222", approve=True, policy=Policy.from_config(POLICY), inventory=inventory)
    assert not verdict.ok and "asked for this run and may not approve it too" in verdict.reason
    allowed = Policy.from_config({**POLICY, "self_approval": True})
    assert approvals.decide(made.id, "U222", approve=True, policy=allowed, inventory=inventory).ok


def test_expired_and_unknown_approvals_are_refused(store: str | Path, inventory: Inventory) -> None:
    approvals, approval_id = _waiting(store, ttl=-1)
    policy = Policy.from_config(POLICY)
    verdict = approvals.decide(approval_id, "U222", approve=True, policy=policy, inventory=inventory)
    assert not verdict.ok and "expired" in verdict.reason
    assert (
        "no such approval"
        in approvals.decide("forged", "U222", approve=True, policy=policy, inventory=inventory).reason
    )


def test_two_clicks_at_once_approve_once(store: str | Path, inventory: Inventory) -> None:
    approvals, approval_id = _waiting(store)
    policy = Policy.from_config(POLICY)
    results: list[bool] = []

    def click() -> None:
        mine = Approvals(store)
        results.append(mine.decide(approval_id, "U222", approve=True, policy=policy, inventory=inventory).ok)
        mine.close()

    threads = [threading.Thread(target=click) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [False] * 5 + [True]
    later = approvals.decide(approval_id, "U222", approve=False, policy=policy, inventory=inventory)
    assert not later.ok and "already approved by U222" in later.reason


def test_a_plan_that_changed_after_approval_is_refused(store: str | Path, inventory: Inventory) -> None:
    """The host changed under the plan: planning again gives another hash, and the run refuses."""
    approvals, approval_id = _waiting(store)
    approvals.decide(approval_id, "U222", approve=True, policy=Policy.from_config(POLICY), inventory=inventory)
    changed = plan_hash("web01", "socket", DIFF.replace("0660", "0666"))
    verdict = approvals.check_plan(approvals.get(approval_id), changed)
    assert not verdict.ok and "the plan changed since it was approved" in verdict.reason


def test_the_hash_covers_what_is_written_not_the_measurement_that_chose_it(
    store: str | Path, inventory: Inventory
) -> None:
    """The same change planned from another measurement (a timeout fix re-measures the backend) is the same
    plan: its approval holds (#23: an approved timeout fix could never run)."""
    approvals, approval_id = _waiting(store)
    approvals.decide(approval_id, "U222", approve=True, policy=Policy.from_config(POLICY), inventory=inventory)
    assert approvals.check_plan(approvals.get(approval_id), plan_hash("web01", "socket", DIFF)).ok
    assert not approvals.check_plan(approvals.get(approval_id), plan_hash("web02", "socket", DIFF)).ok
