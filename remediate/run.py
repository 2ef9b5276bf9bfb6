"""One run: evidence → decision → plan → guarded apply → verify, journaled under one run_id.

This is the library API the CLI (and ChatOps, and users' scripts) call::

    report = remediate.run.run(inventory.host("web01"), "socket", yes=True)
    report.outcome  # "fixed" | "nothing-to-do" | "planned" | "rolled-back" | "refused" | "failed"

A run costs two round trips to the host: one for all the evidence (which also
takes the host's lock), one for the whole transaction, done by the helper on
the host so a dropped connection cannot leave it half-applied.
"""

from __future__ import annotations

import base64
import contextlib
import json
import posixpath
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from remediate.errors import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_REFUSED,
    EXIT_ROLLED_BACK,
    Refused,
    RemediateError,
)
from remediate.evidence import COLLECTORS, Context, build_request, interpret, pid_file, to_json
from remediate.inventory import Host, Inventory
from remediate.modules import MODULES, validate_argv
from remediate.nginx import NginxConfig
from remediate.plan import Action, Plan
from remediate.playbook import Playbook, evaluate, find_playbook, render
from remediate.transport.base import Transport

__all__ = ["OUTCOME_EXIT", "Report", "apply_plan", "call_helper", "plan_fix", "rollback", "run"]

OUTCOME_EXIT = {
    "fixed": EXIT_OK,
    "nothing-to-do": EXIT_OK,
    "planned": EXIT_OK,
    "refused": EXIT_REFUSED,
    "rolled-back": EXIT_ROLLED_BACK,
    "restored": EXIT_OK,  # a rollback the user asked for, done
    "failed": EXIT_FAILED,
}
LOCK_LEASE = 300.0  # seconds: covers evidence → decision → confirmation → apply
HELPER = (Path(__file__).parent / "hostside.py").read_text()


class Transports:
    """One transport per host a run touches: the target's, and any other host's on first use."""

    def __init__(self, target: Host, transport: Transport | None, accept_new_host_key: bool) -> None:
        self.target = target
        self.accept_new = accept_new_host_key
        self.owned: list[Transport] = []
        self.by_host: dict[str, Transport] = {}
        if transport is not None:
            self.by_host[target.name] = transport

    def get(self, host: Host) -> Transport:
        if host.name not in self.by_host:
            from remediate.connect import open_transport

            self.by_host[host.name] = open_transport(host, accept_new_host_key=self.accept_new)
            self.owned.append(self.by_host[host.name])
        return self.by_host[host.name]

    @property
    def round_trips(self) -> int:
        return sum(int(getattr(t, "round_trips", 0)) for t in self.by_host.values())

    def close(self) -> None:
        for t in self.owned:
            t.close()


@dataclass
class Report:
    run_id: str
    host: str
    cause: str
    outcome: str = "failed"
    decision: dict[str, Any] = field(default_factory=dict)
    evidence: dict[str, Any] = field(default_factory=dict)
    plan: Plan = field(default_factory=Plan)
    steps: list[dict[str, Any]] = field(default_factory=list)
    recovered: list[dict[str, Any]] = field(default_factory=list)
    message: str = ""
    journal: str = ""
    round_trips: int = 0
    #: Whether this run holds the host's lock (the helper releases it at the end of an apply).
    locked: bool = field(default=False, repr=False)

    @property
    def exit_code(self) -> int:
        return OUTCOME_EXIT[self.outcome]

    def step(self, name: str, ok: bool, detail: str, started: float) -> None:
        self.steps.append({"step": name, "ok": ok, "detail": detail, "seconds": round(time.monotonic() - started, 3)})

    def to_json(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "host": self.host,
            "cause": self.cause,
            "outcome": self.outcome,
            "message": self.message,
            "decision": self.decision,
            "changes": self.plan.to_json()["changes"],
            "actions": self.plan.to_json()["actions"],
            "evidence": self.evidence,
            "steps": self.steps,
            "recovered": self.recovered,
            "journal": self.journal,
            "round_trips": self.round_trips,
        }


def call_helper(transport: Transport, host: Host, request: dict[str, Any], timeout: float = 120) -> dict[str, Any]:
    """Run the host-side helper with ``request`` as JSON on stdin; one round trip."""
    # -I -S: isolated (no PYTHON* variables, no user site) and no site import: stdlib only, and fast to start.
    argv = [host["ansible_python_interpreter"], "-I", "-S", "-c", HELPER]
    result = transport.run(argv, stdin=json.dumps(request).encode(), timeout=timeout, warn=True)
    try:
        answer: dict[str, Any] = json.loads(result.stdout or b"null")
    except ValueError:
        answer = {}
    if not isinstance(answer, dict) or not answer:
        raise RemediateError(
            f"{host.name}: remediate's helper gave no answer (exit {result.exited}): {result.stderr_tail()}"
        )
    if answer.get("error"):
        raise RemediateError(f"{host.name}: remediate's helper failed: {answer['error']}")
    return answer


def run(
    host: Host,
    cause: str,
    *,
    transport: Transport | None = None,
    check: bool = False,
    yes: bool = False,
    confirm: Callable[[Report], bool] | None = None,
    show: Callable[[Report], None] | None = None,
    playbooks: list[str] | None = None,
    accept_new_host_key: bool = False,
    run_id: str | None = None,
    test_pause_after_write: float | None = None,
    inventory: Inventory | None = None,
    insecure_tls: bool = False,
) -> Report:
    """Diagnose ``cause`` on ``host`` and fix it, guarded. See the module docstring.

    ``inventory`` (default: the file ``host`` came from) is where the hosts behind nginx are found.
    ``insecure_tls`` lets the invalid-response fix turn proxy_ssl_verify off when no CA can be
    trusted: a temporary workaround, reported as such.
    """
    from remediate.inventory import load_inventory
    from remediate.journal import new_run_id, open_journal

    book = find_playbook(cause, playbooks)
    report = Report(run_id=run_id or new_run_id(), host=host.name, cause=cause)
    log, fh, path = open_journal(report.run_id, host=host.name, cause=cause)
    report.journal = str(path)
    pool = Transports(host, transport, accept_new_host_key)
    try:
        log.info("start", step="start", check=check, playbook=book.path)
        if inventory is None:
            inventory = load_inventory(host.inventory_file)
        _run(
            host,
            book,
            pool,
            inventory,
            report,
            log,
            check=check,
            yes=yes,
            confirm=confirm,
            show=show,
            pause=test_pause_after_write,
            options={"insecure_tls": insecure_tls},
        )
    except Refused as exc:
        report.outcome, report.message = "refused", str(exc)
    finally:
        if report.locked:
            _release(pool.get(host), host, report)
        report.round_trips = pool.round_trips
        log.info("end", step="end", outcome=report.outcome, message=report.message, steps=report.steps)
        fh.close()
        pool.close()
    return report


def _run(
    host: Host,
    book: Playbook,
    pool: Transports,
    inventory: Inventory,
    report: Report,
    log: Any,
    *,
    check: bool,
    yes: bool,
    confirm: Callable[[Report], bool] | None,
    show: Callable[[Report], None] | None,
    pause: float | None,
    options: dict[str, Any],
) -> None:
    """The run's body; sets report.outcome, or raises Refused."""
    # 1. evidence, in one round trip that also takes the lock (not for --check: it writes nothing)
    started = time.monotonic()
    request = build_request(host, book.evidence)
    request.update(run_id=report.run_id, journal_dir=host["journal_dir"])
    if not check:
        request["lock"] = {"lease": LOCK_LEASE}
    transport = pool.get(host)
    answer = call_helper(transport, host, request)
    lock = answer.get("lock")
    if lock and not lock.get("acquired"):
        held = lock.get("held") or {}
        since = time.strftime("%H:%M:%SZ", time.gmtime(held.get("since", 0)))
        raise Refused(
            f"{host.name}: run {held.get('run_id')} holds the lock (since {since}); wait for it, "
            f"or roll it back with `remediate rollback --host {host.name} {held.get('run_id')}`"
        )
    report.locked = bool(lock)
    report.recovered = answer.get("recovered") or []
    if lock and lock.get("stale"):
        log.warning("stale-lock", step="lock", previous=lock["stale"])
    ctx = Context(host, inventory=inventory, values={"options": options})
    ctx = interpret(ctx, book.evidence, answer)
    # Second phase: evidence from the host behind nginx, one round trip to it.
    remote: dict[str, dict[str, Any]] = {}
    for name, collect, args in book.evidence:
        asker = COLLECTORS[collect].remote
        target = asker(ctx, args) if asker else None
        if target is not None:
            other, other_request = target
            other_request.update(run_id=report.run_id, journal_dir=other["journal_dir"])
            remote[name] = call_helper(pool.get(other), other, other_request)
    if remote or any(COLLECTORS[c].remote for _, c, _ in book.evidence):
        ctx = interpret(ctx, [s for s in book.evidence if COLLECTORS[s[1]].remote], answer, remote=remote)
    _check_journal_location(host, ctx)
    report.evidence = {name: to_json(ctx.values[name]) for name, _, _ in book.evidence}
    hosts = 1 + len(remote)
    trips = f"{hosts} round trips" if hosts > 1 else "one round trip"
    report.step("evidence", True, f"{len(book.evidence)} collector(s) in {trips}", started)
    log.info("evidence", step="evidence", evidence=report.evidence, recovered=report.recovered)

    # 2. decision
    started = time.monotonic()
    decision, reason = book.decide(ctx)
    report.decision = {"name": decision.name, "reason": reason, "outcome": decision.outcome}
    report.step("decide", True, f"{decision.name}: {reason}", started)
    log.info("decision", step="decide", decision=decision.name, reason=reason)
    if decision.outcome == "refuse":
        raise Refused(f"{host.name}: {render(decision.refuse, ctx)} ({reason})")
    if decision.outcome == "nothing-to-do":
        report.outcome, report.message = "nothing-to-do", reason
        return

    # 3. plan
    started = time.monotonic()
    assert decision.fix is not None
    plan = plan_fix(book, decision.fix, ctx)
    report.plan = plan
    report.step("plan", True, f"{len(plan.changes)} file change(s), {len(plan.actions)} action(s)", started)
    log.info("plan", step="plan", plan=plan.to_json())
    if plan.empty:
        report.outcome, report.message = "nothing-to-do", "the fix is already in place"
        return
    if show is not None:
        show(report)
    if check:
        report.outcome, report.message = "planned", "--check: nothing was written"
        return
    if not yes and (confirm is None or not confirm(report)):
        raise Refused(f"{host.name}: not confirmed; nothing was changed")

    # 4. guarded apply, in one round trip
    probes: list[str] = []
    for item in book.verify:
        if "probe" in item:
            value = render(item["probe"], ctx)
            probes += [value] if isinstance(value, str) else list(value)
    # Other hosts first (restart the backend), each its own guarded transaction; then the web host
    # (its changes, reload, and the probes through nginx).
    for other_name in dict.fromkeys(a.host for a in plan.actions if a.host and a.host != host.name):
        other = inventory.host(other_name)
        part = Plan(actions=[a for a in plan.actions if a.host == other_name])
        answer = apply_plan(pool.get(other), other, part, run_id=report.run_id, cause=report.cause, probes=[])
        report.steps += [{**s, "step": f"{other_name}: {s['step']}"} for s in answer.get("steps", [])]
        if answer.get("outcome") != "fixed":
            _finish(report, answer, reason, log, where=other_name)
            return
    mine = Plan(changes=plan.changes, actions=[a for a in plan.actions if a.host in (None, host.name)])
    answer = apply_plan(
        transport, host, mine, run_id=report.run_id, cause=report.cause, probes=probes, config=ctx.config, pause=pause
    )
    report.locked = False  # the helper released it, whatever the outcome
    report.steps += answer.get("steps", [])
    _finish(report, answer, reason, log)


def plan_fix(book: Playbook, fix: str, ctx: Context) -> Plan:
    """The plan of one fix: its steps in order (``when`` skips, ``loop`` repeats with ``item``),
    each seeing the files as the steps before it left them."""
    plan = Plan()
    for step in book.fixes[fix]:
        if step.when is not None and not evaluate(step.when, ctx):
            continue
        items = list(render(step.loop, ctx)) if step.loop is not None else [None]
        for item in items:
            ctx.values["item"] = item
            part = MODULES[step.module](ctx, render(step.args, ctx))
            plan.add(part)
            _advance(ctx, part)  # the next step builds on this one's result
        ctx.values.pop("item", None)
    return plan


def _advance(ctx: Context, part: Plan) -> None:
    """Let later fix steps see the files as the earlier steps left them."""
    if not part.changes:
        return
    for change in part.changes:
        ctx.files[change.path] = change.after
    if ctx.config is not None and any(c.path in ctx.config.files for c in part.changes):
        files = {path: f.data for path, f in ctx.config.files.items()}
        files.update({c.path: c.after for c in part.changes if c.path in files})
        ctx.config = NginxConfig.from_files(files, ctx.config.main)


def _finish(report: Report, answer: dict[str, Any], reason: str, log: Any, where: str = "") -> None:
    """The outcome and message of an apply, from the helper's answer."""
    outcome = answer.get("outcome", "failed")
    report.outcome = outcome if outcome in OUTCOME_EXIT else "failed"
    if answer.get("failed_step"):
        undone = "every file restored" if report.outcome == "rolled-back" else "restore incomplete, see the journal"
        on = f" on {where}" if where else ""
        report.message = f"{answer['failed_step']}{on} failed ({undone}): {answer.get('reason', '')}"
    else:
        report.message = answer.get("reason", "") or (reason if report.outcome == "fixed" else "")
    log.info("apply", step="apply", outcome=report.outcome, steps=answer.get("steps"), reason=answer.get("reason"))


def apply_plan(
    transport: Transport,
    host: Host,
    plan: Plan,
    *,
    run_id: str,
    cause: str,
    probes: list[str],
    config: NginxConfig | None = None,
    pause: float | None = None,
) -> dict[str, Any]:
    """The guarded transaction, done by the helper on the host in one round trip.

    Back up, compare-and-swap, write atomically, validate (nginx -t, php-fpm -t), reload nginx
    (confirmed by its new workers) and restart services, probe; on any failure restore every
    file and reload. Returns the helper's answer: outcome, failed_step, reason, steps.
    """
    validates = [
        {"name": f"{kind} -t", "argv": validate_argv(host, kind)}
        for kind in dict.fromkeys(c.validate for c in plan.changes)
        if kind != "none"
    ]
    actions: list[Action] = list(plan.actions)
    if any(c.validate == "nginx" for c in plan.changes):
        actions.insert(0, Action("reload", "nginx", tuple(host.nginx_reload_argv), pid_file=pid_file(host, config)))
    request: dict[str, Any] = {
        "op": "apply",
        "run_id": run_id,
        "cause": cause,
        "journal_dir": host["journal_dir"],
        "lock_lease": LOCK_LEASE,
        "changes": [
            {"path": c.path, "before_sha": c.before_sha, "after_b64": base64.b64encode(c.after).decode()}
            for c in plan.changes
        ],
        "validate": validates,
        "actions": [a.to_wire() for a in actions],
        "probes": list(dict.fromkeys(probes)),
        "probe_budget": host["probe_budget"],
        "bad_statuses": [500, 502, 503, 504],
    }
    if pause:
        request["test_pause_after_write"] = pause
    return call_helper(transport, host, request, timeout=600)


def _check_journal_location(host: Host, ctx: Context) -> None:
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


def _release(transport: Transport, host: Host, report: Report) -> None:
    # If this fails the lease runs out on its own; the run's outcome is what matters here.
    with contextlib.suppress(RemediateError):
        call_helper(transport, host, {"op": "release", "run_id": report.run_id, "journal_dir": host["journal_dir"]})


def rollback(
    host: Host,
    target: str,
    *,
    force: bool = False,
    transport: Transport | None = None,
    accept_new_host_key: bool = False,
) -> Report:
    """Undo run ``target`` from the host's journal, guarded like any change."""
    from remediate.connect import open_transport
    from remediate.journal import new_run_id

    report = Report(run_id=new_run_id(), host=host.name, cause=f"rollback {target}")
    own = transport is None
    transport = transport or open_transport(host, accept_new_host_key=accept_new_host_key)
    try:
        started = time.monotonic()
        answer = call_helper(
            transport,
            host,
            {
                "op": "rollback",
                "run_id": report.run_id,
                "target": target,
                "force": force,
                "journal_dir": host["journal_dir"],
                "lock_lease": LOCK_LEASE,
            },
        )
        outcome = answer.get("outcome", "failed")
        outcome = "restored" if outcome == "rolled-back" else outcome
        report.outcome = outcome if outcome in OUTCOME_EXIT else "failed"
        restored = answer.get("restored") or []
        report.message = answer.get("reason") or (
            f"restored {', '.join(restored)}"
            if restored
            else "nothing to restore: the files already hold their original bytes"
        ) + ("; " + "; ".join(answer["problems"]) if answer.get("problems") else "")
        report.step("rollback", report.outcome == "restored", report.message, started)
        report.round_trips = getattr(transport, "round_trips", 0)
    finally:
        if own:
            transport.close()
    return report
