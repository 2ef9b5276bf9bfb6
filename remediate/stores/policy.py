"""Who may do what, on which hosts, for which causes: per-user authorization, default deny.

The ``policy`` section of the service's config::

    policy:
      roles:
        oncall: {verbs: [diagnose, check, run, rollback], hosts: all, causes: all}
        lead:   {verbs: [approve], hosts: "web:!web-canary", causes: [socket, down]}
      users: {U111: [oncall], U222: [oncall, lead]}      # Slack user ids
      groups: {S0SRE: [oncall]}                           # Slack user group ids
      self_approval: false                                # may a requester approve their own run?

A role lists its verbs (``diagnose``, ``check``, ``run``, ``approve``, ``rollback``), the hosts
as an Ansible pattern (remediate.hosts.patterns: groups, wildcards, ``:&``, ``:!``, ``~regex``) and the
causes (``all`` or a list). A user holds the roles listed for their id and for each of their
groups. Anyone not listed may do nothing, and an answer says why, in words a user can act on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from remediate.errors import InputError
from remediate.hosts.inventory import Inventory
from remediate.hosts.patterns import matches, split

__all__ = ["VERBS", "Decision", "Policy", "Role"]

VERBS = ("diagnose", "check", "run", "approve", "rollback")


@dataclass(frozen=True)
class Role:
    name: str
    verbs: frozenset[str]
    hosts: str  # an Ansible host pattern
    causes: frozenset[str] | None  # None: all causes


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: str

    def __bool__(self) -> bool:
        return self.allowed


@dataclass
class Policy:
    roles: dict[str, Role] = field(default_factory=dict)
    users: dict[str, list[str]] = field(default_factory=dict)
    groups: dict[str, list[str]] = field(default_factory=dict)
    self_approval: bool = False

    @classmethod
    def from_config(cls, data: Any, *, source: str = "policy") -> Policy:
        """Read the ``policy`` mapping; every mistake is an InputError naming the key."""
        if data is None:
            return cls()  # no policy: nobody may do anything
        if not isinstance(data, dict):
            raise InputError(f"{source}: must be a mapping with roles, users and groups")
        unknown = set(data) - {"roles", "users", "groups", "self_approval"}
        if unknown:
            raise InputError(
                f"{source}: unknown key(s) {', '.join(sorted(unknown))} (roles, users, groups, self_approval)"
            )
        roles = {}
        for name, spec in (data.get("roles") or {}).items():
            where = f"{source}.roles.{name}"
            if not isinstance(spec, dict):
                raise InputError(f"{where}: must be a mapping with verbs, hosts and causes")
            verbs = spec.get("verbs") or []
            verbs = [verbs] if isinstance(verbs, str) else list(verbs)
            bad = [v for v in verbs if v not in VERBS]
            if bad:
                raise InputError(
                    f"{where}.verbs: unknown verb(s) {', '.join(map(str, bad))} (one of {', '.join(VERBS)})"
                )
            hosts = str(spec.get("hosts", "all"))
            try:
                split(hosts)
            except Exception as exc:
                raise InputError(f"{where}.hosts: {exc}") from None
            causes = spec.get("causes", "all")
            roles[str(name)] = Role(
                str(name),
                frozenset(map(str, verbs)),
                hosts,
                None if causes == "all" else frozenset(map(str, [causes] if isinstance(causes, str) else causes)),
            )
        members: dict[str, dict[str, list[str]]] = {}
        for key in ("users", "groups"):
            members[key] = {}
            for who, names in (data.get(key) or {}).items():
                names = [names] if isinstance(names, str) else list(names or [])
                missing = [n for n in names if n not in roles]
                if missing:
                    raise InputError(f"{source}.{key}.{who}: no role {', '.join(map(str, missing))} in {source}.roles")
                members[key][str(who)] = [str(n) for n in names]
        return cls(roles, members["users"], members["groups"], bool(data.get("self_approval", False)))

    def roles_of(self, user: str, user_groups: tuple[str, ...] = ()) -> list[Role]:
        names = list(self.users.get(user, []))
        for group in user_groups:
            names += self.groups.get(group, [])
        return [self.roles[n] for n in dict.fromkeys(names)]

    def lists(self, user: str, user_groups: tuple[str, ...] = ()) -> Decision:
        """Does the policy name ``user`` at all (directly or by a group)? Nobody else may do anything."""
        if not self.roles_of(user, user_groups):
            return Decision(False, f"{user} is not in remediate's policy: nothing is allowed")
        return Decision(True, f"{user} is in remediate's policy")

    def may_see(self, inventory: Inventory, user: str, host: str, user_groups: tuple[str, ...] = ()) -> bool:
        """Is ``host`` in the scope of any of ``user``'s roles? (What a user may learn exists.)"""
        return any(matches(inventory, r.hosts, host) for r in self.roles_of(user, user_groups))

    def allows(
        self,
        inventory: Inventory,
        user: str,
        verb: str,
        host: str,
        cause: str | None = "auto",
        user_groups: tuple[str, ...] = (),
    ) -> Decision:
        """May ``user`` (with ``user_groups``) do ``verb`` on ``host`` for ``cause``? Default deny, with the reason.

        ``cause=None``: for some cause (a request for ``auto``, asked again once the diagnosis names one).
        """
        if verb not in VERBS:
            return Decision(False, f"{verb!r} is not a verb remediate knows ({', '.join(VERBS)})")
        listed = self.lists(user, user_groups)
        if not listed:
            return listed
        roles = self.roles_of(user, user_groups)
        with_verb = [r for r in roles if verb in r.verbs]
        if not with_verb:
            return Decision(False, f"{user} may not {verb} (roles: {', '.join(r.name for r in roles)})")
        on_host = [r for r in with_verb if matches(inventory, r.hosts, host)]
        if not on_host:
            return Decision(False, f"{user} may {verb}, but not on {host}")
        for_cause = [r for r in on_host if r.causes is None or cause is None or cause in r.causes]
        if not for_cause:
            return Decision(False, f"{user} may {verb} on {host}, but not for cause {cause}")
        return Decision(True, f"{user} may {verb} on {host} for {cause} (role {for_cause[0].name})")
