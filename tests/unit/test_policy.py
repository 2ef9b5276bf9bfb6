"""Host patterns (Ansible's semantics) and the per-user policy: default deny, every refusal says why."""

from __future__ import annotations

from pathlib import Path

import pytest
from support.policy import INVENTORY, POLICY

from remediate.errors import InputError, UsageError
from remediate.hosts.inventory import Inventory, load_inventory
from remediate.hosts.patterns import select
from remediate.stores.policy import Policy


@pytest.fixture
def inventory(tmp_path: Path) -> Inventory:
    path = tmp_path / "hosts.yml"
    path.write_text(INVENTORY)
    return load_inventory(path)


@pytest.mark.parametrize(
    ("pattern", "hosts"),
    [
        ("all", ["web01", "web02", "web10", "web-canary", "db01", "bastion"]),
        ("*", ["web01", "web02", "web10", "web-canary", "db01", "bastion"]),
        ("web", ["web01", "web02", "web10", "web-canary"]),
        ("web_eu:db", ["web01", "web02", "db01"]),
        ("web_eu,db01", ["web01", "web02", "db01"]),
        ("web:&prod", ["web01", "web10"]),
        ("web:!web-canary", ["web01", "web02", "web10"]),
        ("!db", ["web01", "web02", "web10", "web-canary", "bastion"]),
        ("&prod", ["web01", "web10", "db01"]),
        ("web:!prod:&web_us", ["web-canary"]),
        ("web0*", ["web01", "web02"]),
        ("web_*", ["web01", "web02", "web10", "web-canary"]),
        ("~web\\d+", ["web01", "web02", "web10"]),
        ("~eb", []),
        ("web[0]", ["web01"]),
        ("web[1:2]", ["web02", "web10"]),
        ("web[-1]", ["web-canary"]),
        ("web[2:]", ["web10", "web-canary"]),
        ("nothing", []),
    ],
)
def test_host_patterns_select_as_ansible_does(inventory: Inventory, pattern: str, hosts: list[str]) -> None:
    """Union, intersection, exclusion (plain terms first, then &, then !), wildcards, regexes matched at the
    start, inclusive subscripts: ansible-core's rules (inventory/manager.py). Subscripts count in the group's
    inventory order."""
    assert sorted(h.name for h in select(inventory, pattern)) == sorted(hosts)


@pytest.mark.parametrize("pattern", ["", "web::db", "web:!", "~web[", "web:&"])
def test_a_malformed_pattern_is_a_usage_error(inventory: Inventory, pattern: str) -> None:
    with pytest.raises(UsageError):
        select(inventory, pattern)


@pytest.mark.parametrize(
    ("user", "groups", "verb", "host", "cause", "allowed", "says"),
    [
        ("U111", (), "run", "web01", "socket", True, "role oncall"),
        ("U111", (), "run", "web-canary", "socket", False, "may run, but not on web-canary"),
        ("U111", (), "approve", "web01", "socket", False, "may not approve"),
        ("U222", (), "approve", "web01", "socket", True, "role lead"),
        ("U222", (), "approve", "db01", "timeout", False, "not for cause timeout"),
        ("U222", (), "approve", "web01", "auto", False, "not for cause auto"),
        ("U999", (), "diagnose", "web01", "auto", False, "not in remediate's policy"),
        ("U999", ("S0SRE",), "diagnose", "db01", "auto", True, "role viewer"),
        ("U999", ("S0SRE",), "run", "db01", "auto", False, "may not run"),
        ("U111", (), "destroy", "web01", "auto", False, "not a verb"),
    ],
)
def test_policy_default_deny_with_reasons(
    inventory: Inventory, user: str, groups: tuple[str, ...], verb: str, host: str, cause: str, allowed: bool, says: str
) -> None:
    decision = Policy.from_config(POLICY).allows(inventory, user, verb, host, cause, groups)
    assert bool(decision) is allowed and says in decision.reason, decision


def test_no_policy_allows_nothing(inventory: Inventory) -> None:
    assert not Policy.from_config(None).allows(inventory, "U111", "diagnose", "web01")


@pytest.mark.parametrize(
    ("policy", "says"),
    [
        ({"roles": {"x": {"verbs": ["nuke"]}}}, "policy.roles.x.verbs: unknown verb(s) nuke"),
        ({"roles": {}, "users": {"U1": ["ghost"]}}, "policy.users.U1: no role ghost"),
        ({"roles": {"x": {"verbs": ["run"], "hosts": "web:!"}}}, "policy.roles.x.hosts"),
        ({"rolez": {}}, "unknown key(s) rolez"),
        ("everyone", "must be a mapping"),
    ],
)
def test_a_bad_policy_is_an_input_error_naming_the_key(policy: object, says: str) -> None:
    with pytest.raises(InputError, match=None) as caught:
        Policy.from_config(policy)
    assert says in str(caught.value)
