"""The library entry point every trigger calls: the CLI, `remediate serve`, and your incident scripts.

Open an inventory once, then ask for what you need; each call returns the report object the CLI
prints with ``--json`` (``.to_json()``), and every run records who asked for it and why::

    from remediate import api

    with api.open("inventory.yml", requested_by="incident-4711", trigger="api") as rem:
        diagnosis = rem.diagnose("web01")              # remediate.engine.diagnose.Diagnosis
        if diagnosis.verdict in diagnosis.causes:
            plan = rem.plan("web01", diagnosis.verdict)  # a Report, outcome "planned": the diff, nothing written
            print(plan.plan.diff())
            report = rem.run("web01", diagnosis.verdict, yes=True)  # fixed / rolled-back / refused / ...
            if report.outcome != "fixed":
                raise SystemExit(report.message)

``run(host, "auto")`` diagnoses and fixes only a confident verdict, from the diagnosis' own
evidence. Errors are remediate.errors exceptions (each with its exit code); a refusal is a
report with ``outcome == "refused"``, not an exception. The SSH connection to each host is
opened once and kept until ``close()`` (or the end of the ``with``), so a script that asks one
host several things pays for the connect once. ``fleet(pattern, cause, ...)`` does the same on every
host an Ansible pattern selects, with ``--limit``'s controls (forks, serial, max_fail_percentage).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from remediate.engine.fleet import HostResult, Rollout
from remediate.engine.report import TRIGGERS, Report, check_trigger, local_user
from remediate.errors import (
    EXIT_OK,
    EXIT_REFUSED,
    RemediateError,
    TransportError,
    UsageError,
)
from remediate.hosts.inventory import Host, Inventory, load_inventory
from remediate.hosts.values import parse_since
from remediate.outcomes import Outcome, worst_exit
from remediate.transport.base import Transport

if TYPE_CHECKING:
    from remediate.engine.diagnose import Diagnosis
    from remediate.engine.harden_host import HostAudit

__all__ = ["TRIGGERS", "Connections", "Remediate", "diagnosing", "fixing", "hardening", "hardening_fixes", "open"]

T = TypeVar("T")


class Remediate:
    """remediate over one inventory, for one requester and trigger. See the module docstring."""

    def __init__(
        self,
        inventory: Inventory | str | Path,
        *,
        requested_by: str | None = None,
        trigger: str = "api",
        accept_new_host_key: bool = False,
        playbooks: list[str] | None = None,
        connections: Connections | None = None,
    ) -> None:

        check_trigger(trigger)
        self.inventory = inventory if isinstance(inventory, Inventory) else load_inventory(Path(inventory))
        self.requested_by = requested_by or local_user()
        self.trigger = trigger
        self.accept_new_host_key = accept_new_host_key
        self.playbooks = playbooks
        self.connections = connections if connections is not None else Connections()

    def acting_for(self, requested_by: str, trigger: str) -> Remediate:
        """The same inventory and kept connections, for another requester (the service: one per job)."""
        return Remediate(
            self.inventory,
            requested_by=requested_by,
            trigger=trigger,
            accept_new_host_key=self.accept_new_host_key,
            playbooks=self.playbooks,
            connections=self.connections,
        )

    def host(self, name: str | Host) -> Host:
        """The inventory host ``name`` (InventoryError, exit 5, names the hosts there are)."""
        return name if isinstance(name, Host) else self.inventory.host(name)

    def diagnose(self, host: str | Host, *, since: str | float = "15m") -> Diagnosis:
        """The verdict on ``host``'s last ``since`` of error log, with the evidence behind it."""
        from remediate.engine.diagnose import diagnose

        target = self.host(host)
        return self._kept(
            target,
            lambda t: diagnose(
                target, self.inventory, since=_seconds(since), transport=t, playbooks=self.playbooks,
            ),
        )  # fmt: skip

    def harden(self, host: str | Host) -> HostAudit:
        """The hardening rules over ``host``'s nginx config and the services behind it; nothing is written."""
        from remediate.engine.harden_host import audit_host

        target = self.host(host)
        return self._kept(target, lambda t: audit_host(target, self.inventory, transport=t))

    def harden_fix(
        self,
        host: str | Host,
        rule: str,
        *,
        yes: bool = False,
        check: bool = False,
        confirm: Callable[[Report], bool] | None = None,
        show: Callable[[Report], None] | None = None,
    ) -> Report:
        """Fix one hardening rule's findings on ``host`` through the guarded transaction (playbooks/harden)."""
        from remediate.engine.harden_host import playbooks_dir
        from remediate.engine.run import RunOptions, run
        from remediate.harden import FIXABLE

        if rule not in FIXABLE:
            raise UsageError(f"{rule}: no automatic fix (fixable: {', '.join(FIXABLE)}); its finding says what to do")
        target = self.host(host)
        return self._kept(
            target,
            lambda t: run(
                target, rule,
                RunOptions(
                    check=check, yes=yes, confirm=confirm, show=show,
                    playbooks=(*(self.playbooks or []), str(playbooks_dir())), requested_by=self.requested_by,
                    trigger=self.trigger,
                ),
                transport=t, inventory=self.inventory,
            ),
        )  # fmt: skip

    def plan(self, host: str | Host, cause: str, *, since: str | float | None = None) -> Report:
        """What ``run`` would do, written nowhere: the decision, the diff, the candidate checked by nginx -t."""
        return self.run(host, cause, check=True, since=since)

    def run(
        self,
        host: str | Host,
        cause: str,
        *,
        yes: bool = False,
        check: bool = False,
        confirm: Callable[[Report], bool] | None = None,
        show: Callable[[Report], None] | None = None,
        since: str | float | None = None,
        insecure_tls: bool = False,
        show_diagnosis: Callable[[Diagnosis], None] | None = None,
    ) -> Report:
        """Fix ``cause`` (or ``"auto"``) on ``host``, guarded; applies only with ``yes`` or ``confirm`` saying so."""
        from remediate.engine.run import RunOptions, run

        options = RunOptions(
            check=check, yes=yes, confirm=confirm, show=show, playbooks=tuple(self.playbooks or ()),
            insecure_tls=insecure_tls, since=None if since is None else _seconds(since),
            show_diagnosis=show_diagnosis, requested_by=self.requested_by, trigger=self.trigger,
        )  # fmt: skip
        target = self.host(host)
        return self._kept(
            target,
            lambda t: run(target, cause, options, transport=t, inventory=self.inventory),
        )

    def fleet(
        self,
        limit: str,
        cause: str | None = None,
        *,
        yes: bool = False,
        check: bool = False,
        since: str | float | None = None,
        forks: int = 5,
        serial: str | None = None,
        max_fail_percentage: float | None = None,
        insecure_tls: bool = False,
        started: Callable[[Host], None] | None = None,
        finished: Callable[[HostResult], None] | None = None,
    ) -> Rollout:
        """``run`` (or, with no ``cause``, ``diagnose``) on every host the Ansible pattern ``limit`` selects,
        ``forks`` at once, in ``serial`` batches, stopping as ``ansible-playbook`` does (remediate.engine.fleet).
        ``started`` and ``finished`` see each host as it goes; the Rollout has every host's result."""
        from remediate.engine import fleet
        from remediate.hosts.patterns import select

        hosts = select(self.inventory, limit)
        if not hosts:
            raise UsageError(f"--limit {limit!r} selects no host of the inventory")
        if cause is None:
            work = diagnosing(self, _seconds(since if since is not None else "15m"))
        else:
            window = None if since is None else _seconds(since)
            work = fixing(self, cause, yes=yes, check=check, since=window, insecure_tls=insecure_tls)
        return fleet.rollout(
            hosts,
            work,
            forks=forks,
            serial=fleet.parse_serial(serial),
            max_fail_percentage=max_fail_percentage,
            started=started or (lambda _: None),
            finished=finished or (lambda _: None),
        )

    def rollback(
        self,
        host: str | Host,
        run_id: str,
        *,
        force: bool = False,
        authorize: Callable[[str], str | None] | None = None,
    ) -> Report:
        """Undo run ``run_id`` on ``host`` from the host's own journal (byte for byte, or refused).

        ``authorize(cause)``, if given, sees the cause of the run being undone and may refuse (a reason)."""
        from remediate.engine.hoststate import rollback

        target = self.host(host)
        return self._kept(
            target,
            lambda t: rollback(
                target, run_id, force=force, transport=t, requested_by=self.requested_by, trigger=self.trigger,
                authorize=authorize,
            ),
        )  # fmt: skip

    def _kept(self, host: Host, call: Callable[[Transport], T]) -> T:
        """``call`` with ``host``'s kept connection (opened on first use); a connection that failed is dropped."""
        transport = self.connections.get(host, self.accept_new_host_key)
        try:
            return call(transport)
        except TransportError:
            self.connections.drop(host.name)
            raise
        finally:
            self.connections.release(host.name)

    def close(self) -> None:
        """Close every kept connection."""
        self.connections.close()

    def __enter__(self) -> Remediate:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Connections:
    """Kept SSH connections, one per host, shared by every Remediate made with ``acting_for``.

    A connection that died while kept (sshd restarted, the peer went away) is replaced before use.
    Connections to different hosts open in parallel. Callers must not use one host's connection
    from two threads at once; remediate serve's ledger runs one job per host at a time, and a
    fleet rollout runs each host once, which is what makes sharing safe. ``close_idle`` closes the
    connections nobody used for a while.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._kept: dict[str, Transport] = {}
        self._used: dict[str, float] = {}
        self._busy: set[str] = set()

    def get(self, host: Host, accept_new_host_key: bool) -> Transport:
        from remediate.hosts.connect import open_transport

        with self._lock:
            self._busy.add(host.name)
            transport = self._kept.pop(host.name, None)
        if transport is not None and not transport.alive():
            transport.close()
            transport = None
        try:
            # Outside the lock, so that a fleet's threads connect to their hosts in parallel.
            transport = transport or open_transport(host, accept_new_host_key=accept_new_host_key)
        except BaseException:
            self.release(host.name)
            raise
        with self._lock:
            self._kept[host.name] = transport
        return transport

    def release(self, name: str) -> None:
        with self._lock:
            self._busy.discard(name)
            self._used[name] = time.monotonic()

    def drop(self, name: str) -> None:
        with self._lock:
            transport = self._kept.pop(name, None)
        if transport is not None:
            transport.close()

    def close_idle(self, idle: float) -> list[str]:
        """Close the connections not used for ``idle`` seconds; their host names."""
        now = time.monotonic()
        with self._lock:
            names = [n for n in self._kept if n not in self._busy and now - self._used.get(n, now) >= idle]
            closing = [self._kept.pop(n) for n in names]
        for transport in closing:
            transport.close()
        return names

    def __len__(self) -> int:
        return len(self._kept)

    def close(self) -> None:
        with self._lock:
            closing = list(self._kept.values())
            self._kept.clear()
        for transport in closing:
            transport.close()


@contextmanager
def open(inventory: Inventory | str | Path, **options: Any) -> Iterator[Remediate]:
    """``with api.open("inventory.yml") as rem: ...``: a Remediate whose connections close at the end."""
    rem = Remediate(inventory, **options)
    try:
        yield rem
    finally:
        rem.close()


def _seconds(since: str | float) -> float:
    return float(since) if isinstance(since, int | float) else parse_since(since)


def fixing(
    rem: Remediate, cause: str, *, check: bool = False, yes: bool = False, **options: Any
) -> Callable[[Host], HostResult]:
    """The work of ``run --limit``: ``rem.run(host, cause, ...)`` on one host, as a HostResult."""

    def work(host: Host) -> HostResult:
        began = time.monotonic()
        try:
            report = rem.run(host, cause, check=check, yes=yes, **options)
        except RemediateError as exc:
            return _error(host, cause, exc, began)
        return HostResult(
            host.name,
            report.outcome,
            report.exit_code,
            cause=report.cause,
            seconds=time.monotonic() - began,
            run_id=report.run_id,
            message=report.message,
            report=report.to_json(),
        )

    return work


def hardening(rem: Remediate, fail_on: str) -> Callable[[Host], HostResult]:
    """The work of ``harden --limit``: the rules over one host (outcome ``findings`` or ``clean``; exit 3 when a
    finding is at or above ``fail_on``)."""
    from remediate import harden

    def work(host: Host) -> HostResult:
        began = time.monotonic()
        try:
            audit = rem.harden(host)
        except RemediateError as exc:
            return _error(host, "", exc, began)
        failing = harden.at_least(audit.findings, fail_on)
        counts = ", ".join(
            f"{n} {s}" for s in reversed(harden.SEVERITIES) if (n := sum(f.severity == s for f in audit.findings))
        )
        return HostResult(
            host.name,
            Outcome.FINDINGS if audit.findings else Outcome.CLEAN,
            EXIT_REFUSED if failing else EXIT_OK,
            cause=counts or "none",
            seconds=time.monotonic() - began,
            message=failing[0].message if failing else "",
            report=audit.to_json(),
        )

    return work


def hardening_fixes(rem: Remediate, rules: list[str], *, check: bool, yes: bool) -> Callable[[Host], HostResult]:
    """The work of ``harden --limit --fix``: each rule's fix in turn on one host; the worst outcome stands,
    and a fix that failed or rolled back stops the host's next fixes."""

    def work(host: Host) -> HostResult:
        began = time.monotonic()
        reports = []
        for rule in rules:
            try:
                report = rem.harden_fix(host, rule, check=check, yes=yes)
            except RemediateError as exc:
                return _error(host, rule, exc, began)
            reports.append(report)
            if report.outcome in ("failed", "rolled-back"):
                break
        code = worst_exit(r.exit_code for r in reports)
        worst = next((r for r in reports if r.exit_code == code), reports[-1])
        return HostResult(
            host.name,
            worst.outcome,
            worst.exit_code,
            cause=" ".join(r.cause for r in reports),
            seconds=time.monotonic() - began,
            run_id=" ".join(r.run_id for r in reports if r.outcome not in ("nothing-to-do", "refused")),
            message="; ".join(f"{r.cause}: {r.outcome}" for r in reports),
            report={"runs": [r.to_json() for r in reports]},
        )

    return work


def diagnosing(rem: Remediate, since: float) -> Callable[[Host], HostResult]:
    """The work of ``diagnose --limit``: the verdict on one host, as a HostResult (outcome ``diagnosed``)."""

    def work(host: Host) -> HostResult:
        began = time.monotonic()
        try:
            found = rem.diagnose(host, since=since)
        except RemediateError as exc:
            return _error(host, "", exc, began)
        return HostResult(
            host.name,
            Outcome.DIAGNOSED,
            EXIT_OK,
            cause=found.verdict,
            seconds=time.monotonic() - began,
            message=found.reason,
            report=found.to_json(),
        )

    return work


def _error(host: Host, cause: str, exc: RemediateError, began: float) -> HostResult:
    return HostResult(
        host.name, Outcome.of_error(exc), exc.exit_code, cause=cause, seconds=time.monotonic() - began, message=str(exc)
    )
