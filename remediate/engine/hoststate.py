"""The host's own state, read and acted on.

Its lock and journal (status, unlock), what a dropped connection left behind, and rollback.
"""

from __future__ import annotations

import posixpath
import time
from collections.abc import Callable
from typing import Any

from remediate.engine.report import Report, check_trigger, local_user
from remediate.engine.session import call_helper
from remediate.errors import (
    Refused,
    RemediateError,
    TransportError,
)
from remediate.evidence.framework import Context
from remediate.hosts.inventory import Host
from remediate.outcomes import Outcome
from remediate.transport.base import Transport

__all__ = ["host_status", "lock_message", "rollback", "unlock"]

_STATE_MEANS = {
    "committed": "the fix is in place and was verified",
    "rolled-back": "the fix failed its checks and every file was restored",
    "failed": "nothing was changed",
    "restore-incomplete": "the fix failed and the restore is INCOMPLETE; look at the journal",
    "recovered": "a later run undid it",
    "prepared": "it had not written anything yet; the next run closes it",
    "writing": "it was writing files; the next run restores them",
    "activating": "it was reloading or restarting; the next run restores it",
}


def after_drop(host: Host, run_id: str, exc: TransportError) -> TransportError:
    """The connection dropped during an apply: say what the host's journal says happened (exit 6).

    The helper goes on without us, so the truth is on the host: ask it over a new connection,
    waiting while the run still holds the lock (it is finishing its transaction)."""
    from remediate.hosts.connect import open_transport

    lead = f"the connection dropped during the apply ({exc.message.removeprefix(host.name + ': ')})"
    try:
        with open_transport(host) as transport:
            deadline = time.monotonic() + float(host["probe_budget"]) + 60
            status = host_status(transport, host, run_id)
            while (status.get("lock") or {}).get("run_id") == run_id and time.monotonic() < deadline:
                time.sleep(0.5)
                status = host_status(transport, host, run_id)
    except RemediateError as again:
        return TransportError(
            f"{lead}; the host could not be asked what happened ({again}); its journal "
            f"{host['journal_dir']}/runs/{run_id} holds the truth",
            host=host.name,
        )
    state = (status.get("run") or {}).get("state")
    if state is None:
        return TransportError(
            f"{lead}; the host's journal has no entry for run {run_id}: nothing was written", host=host.name
        )
    means = _STATE_MEANS.get(state, state)
    return TransportError(f"{lead}; the host's journal says run {run_id} is {state}: {means}", host=host.name)


def host_status(transport: Transport, host: Host, run_id: str | None = None) -> dict[str, Any]:
    """The host's own account: who holds its lock, and (with ``run_id``) that run's state."""
    return call_helper(transport, host, {"op": "status", "journal_dir": host["journal_dir"], "target": run_id})


def lock_message(host: Host, held: dict[str, Any]) -> str:
    since = held.get("since")
    age = f"since {time.strftime('%H:%M:%SZ', time.gmtime(since))}, {time.time() - since:.0f}s" if since else "?"
    run_id = held.get("run_id", "?")
    return (
        f"{host.name}: run {run_id} holds the lock (pid {held.get('pid', '?')}, {age}); it ends when that "
        f"run ends; to clear it by hand: `remediate unlock -i {host.inventory_file} --host {host.name} {run_id}`"
    )


def unlock(
    host: Host, run_id: str | None = None, *, transport: Transport | None = None, accept_new_host_key: bool = False
) -> dict[str, Any]:
    """Ask the process holding ``host``'s lock to let go (it finishes a transaction in progress first)."""
    from remediate.hosts.connect import open_transport

    own = transport is None
    transport = transport or open_transport(host, accept_new_host_key=accept_new_host_key)
    try:
        return call_helper(
            transport, host, {"op": "unlock", "journal_dir": host["journal_dir"], "target": run_id}, timeout=60
        )
    finally:
        if own:
            transport.close()


def check_journal_location(host: Host, ctx: Context) -> None:
    """Backups must never be read as config: refuse a journal_dir inside a folder nginx includes."""
    if ctx.config is None:
        return
    journal = host["journal_dir"].rstrip("/") + "/"
    for directive, _ in ctx.config.walk():
        if directive.name == "include" and directive.args:
            pattern = directive.args[0]
            folder = posixpath.dirname(
                pattern if pattern.startswith("/") else posixpath.join(ctx.config.conf_dir, pattern)
            )
            if journal.startswith(folder.rstrip("/") + "/"):
                raise Refused(
                    f"{host.name}: journal_dir {host['journal_dir']} is inside {folder}, which nginx "
                    f"includes ({directive.where}); choose a journal_dir outside nginx's config"
                )


def rollback(
    host: Host,
    target: str,
    *,
    force: bool = False,
    transport: Transport | None = None,
    accept_new_host_key: bool = False,
    requested_by: str | None = None,
    trigger: str = "api",
    authorize: Callable[[str], str | None] | None = None,
) -> Report:
    """Undo run ``target`` from the host's journal, guarded like any change.

    ``authorize`` is asked with the cause of the run being undone (from the host's journal; "unknown"
    when it has none) and returns a refusal, or None: undoing a fix is authorised against what it fixed."""
    from remediate.events import new_run_id
    from remediate.hosts.connect import open_transport

    check_trigger(trigger)
    report = Report(run_id=new_run_id(), host=host.name, cause=f"rollback {target}", trigger=trigger)
    report.requested_by = requested_by or local_user()
    own = transport is None
    transport = transport or open_transport(host, accept_new_host_key=accept_new_host_key)
    try:
        started = time.monotonic()
        if authorize is not None:
            run = host_status(transport, host, target).get("run") or {}
            refusal = authorize(str(run.get("cause") or "unknown"))
            if refusal:
                report.outcome, report.message = Outcome.REFUSED, f"{refusal}; nothing was changed"
                report.step("rollback", False, report.message, started)
                return report
        answer = call_helper(
            transport,
            host,
            {
                "op": "rollback",
                "run_id": report.run_id,
                "target": target,
                "force": force,
                "journal_dir": host["journal_dir"],
                "requested_by": report.requested_by,
                "trigger": trigger,
            },
        )
        outcome = Outcome.parse(answer.get("outcome"))
        report.outcome = Outcome.RESTORED if outcome is Outcome.ROLLED_BACK else outcome
        restored = answer.get("restored") or []
        report.message = answer.get("reason") or (
            f"restored {', '.join(restored)}"
            if restored
            else "nothing to restore: the files already hold their original bytes"
        ) + ("; " + "; ".join(answer["problems"]) if answer.get("problems") else "")
        report.step("rollback", report.outcome is Outcome.RESTORED, report.message, started)
        report.round_trips = getattr(transport, "round_trips", 0)
    finally:
        if own:
            transport.close()
    return report
