"""Ansible host patterns over a remediate inventory: ``all``, groups, hosts, wildcards, ``:`` union,
``:&`` intersection, ``:!`` exclusion, ``~regex``, and ``group[0]`` / ``group[1:3]`` subscripts.

The semantics are ansible-core's (lib/ansible/inventory/manager.py: split_host_pattern,
order_patterns, _evaluate_patterns, _match_one_pattern): the terms are applied with every plain
term first (a union, in the order written), then every ``&`` term (an intersection), then every
``!`` term (an exclusion); a pattern made only of ``&``/``!`` terms starts from ``all``. A term
matches groups and hosts by exact name, by shell wildcard (``web*``, ``db?``, ``[ab]*``) or, after
``~``, by a regex matched at the start of the name. A term that matches nothing adds nothing.
"""

from __future__ import annotations

import fnmatch
import re

from remediate.errors import UsageError
from remediate.hosts.inventory import Host, Inventory

__all__ = ["matches", "select"]

_SUBSCRIPT = re.compile(r"^(?P<name>.+?)\[(?P<start>-?\d+)(?::(?P<end>-?\d*))?\]$")


def split(pattern: str) -> list[str]:
    """The terms of ``pattern``: split on ``,``, and on ``:`` unless the pattern is one regex (``~...``)."""
    pattern = pattern.strip()
    if not pattern:
        raise UsageError("an empty host pattern")
    if "," in pattern:
        terms = [t.strip() for t in pattern.split(",")]
    elif pattern.startswith("~"):
        terms = [pattern]
    else:
        terms = [t.strip() for t in re.split(r":(?![^\[]*\])", pattern)]
    if any(not t or t in ("!", "&") for t in terms):
        raise UsageError(f"host pattern {pattern!r} has an empty term")
    return terms


def select(inventory: Inventory, pattern: str) -> list[Host]:
    """The inventory's hosts that ``pattern`` selects, in inventory order."""
    terms = split(pattern)
    plain = [t for t in terms if t[0] not in "!&"]
    both = [t[1:] for t in terms if t[0] == "&"]
    minus = [t[1:] for t in terms if t[0] == "!"]
    chosen: dict[str, Host] = {}
    for term in plain or ["all"]:
        for host in _match(inventory, term):
            chosen.setdefault(host.name, host)
    for term in both:
        keep = {h.name for h in _match(inventory, term)}
        chosen = {name: h for name, h in chosen.items() if name in keep}
    for term in minus:
        drop = {h.name for h in _match(inventory, term)}
        chosen = {name: h for name, h in chosen.items() if name not in drop}
    return [h for h in inventory if h.name in chosen]


def matches(inventory: Inventory, pattern: str, host: Host | str) -> bool:
    """Whether ``pattern`` selects ``host``."""
    name = host if isinstance(host, str) else host.name
    return any(h.name == name for h in select(inventory, pattern))


def _match(inventory: Inventory, term: str) -> list[Host]:
    """The hosts one term matches: by group, then by host name; a subscript slices a group's hosts."""
    sub = _SUBSCRIPT.match(term) if not term.startswith("~") else None
    if sub:
        hosts = _match(inventory, sub.group("name"))
        start = int(sub.group("start"))
        if sub.group("end") is None:
            return [hosts[start]] if -len(hosts) <= start < len(hosts) else []
        end = int(sub.group("end")) + 1 if sub.group("end") else len(hosts)  # ansible's slices include the end
        return hosts[start:end]
    if term.startswith("~"):
        try:
            regex = re.compile(term[1:])
        except re.error as exc:
            raise UsageError(f"host pattern {term!r} is not a regex: {exc}") from None

        def hit(name: str) -> bool:
            return regex.match(name) is not None
    elif any(ch in term for ch in "*?["):

        def hit(name: str) -> bool:
            return fnmatch.fnmatchcase(name, term)
    else:

        def hit(name: str) -> bool:
            return name == term

    if term in ("all", "*"):
        return list(inventory)
    groups = {g for h in inventory for g in h.groups if hit(g)}
    return [h for h in inventory if hit(h.name) or groups.intersection(h.groups)]
