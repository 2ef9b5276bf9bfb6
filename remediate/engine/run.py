"""One run: evidence → decision → plan → guarded apply → verify, journaled under one run_id.

This is the library API the CLI (and ChatOps, and users' scripts) call::

    report = remediate.engine.run.run(inventory.host("web01"), "socket", yes=True)
    report.outcome  # "fixed" | "nothing-to-do" | "planned" | "rolled-back" | "refused" | "failed"

A run costs two round trips to the host: one for all the evidence (which also
takes the host's lock), one for the whole transaction, done by the helper on
the host so a dropped connection cannot leave it half-applied. Both go to one
helper *session* on the host, which holds the lock for exactly as long as this
controller is there (see HelperSession).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from remediate.engine.apply import apply_plan, check_candidate, distinct_probes, finish_report
from remediate.engine.fixes import plan_fix
from remediate.engine.gather import gather
from remediate.engine.hoststate import (
    after_drop,
    check_journal_location,
    lock_message,
)
from remediate.engine.plan import Plan
from remediate.engine.playbook import Playbook, find_playbook, load_playbooks, render
from remediate.engine.replay import replay_uris, replays
from remediate.engine.report import Report, check_trigger, local_user
from remediate.engine.session import HelperSession, Transports, call_helper
from remediate.errors import (
    Refused,
    TransportError,
)
from remediate.evidence.framework import Context, error_log_of, to_json
from remediate.hosts.inventory import Host, Inventory
from remediate.outcomes import Outcome
from remediate.transport.base import Transport

__all__ = ["PAUSE_AFTER_WRITE", "RunOptions", "run"]


# -- evidence: one round trip to the host, then one to each other host that must be asked ----


@dataclass(frozen=True)
class RunOptions:
    """How a run goes: everything about it but the host, the cause and the way to reach the host.

    ``check`` writes nothing (with ``validate``, the candidate still goes through ``nginx -t`` /
    ``php-fpm -t`` on the host: one more round trip). Without ``check`` a fix is applied only with
    ``yes``, or when ``confirm`` (shown the report, diff included) says so. ``since`` is the error
    log's window in seconds (default: the error_log collector's, 15 minutes). ``insecure_tls`` lets
    the invalid-response fix turn proxy_ssl_verify off when no CA can be trusted: a temporary
    workaround, reported as such. ``requested_by`` (default: the local user) and ``trigger`` are
    recorded in the report, the controller's journal and the host's journal. ``show`` sees the report
    before the apply, ``show_diagnosis`` the diagnosis of ``cause="auto"``.
    """

    check: bool = False
    yes: bool = False
    validate: bool = True
    since: float | None = None
    playbooks: tuple[str, ...] = ()
    insecure_tls: bool = False
    accept_new_host_key: bool = False
    run_id: str | None = None
    requested_by: str | None = None
    trigger: str = "api"
    confirm: Callable[[Report], bool] | None = None
    show: Callable[[Report], None] | None = None
    show_diagnosis: Callable[[Any], None] | None = None

    def __post_init__(self) -> None:
        check_trigger(self.trigger)


#: Seconds the host's helper sleeps after its write, before reloading. Tests only (tests/conftest.py
#: sets it to cut a connection mid-apply); never part of a run's options.
PAUSE_AFTER_WRITE: float | None = None


def run(
    host: Host,
    cause: str,
    options: RunOptions = RunOptions(),
    *,
    transport: Transport | None = None,
    inventory: Inventory | None = None,
) -> Report:
    """Diagnose ``cause`` on ``host`` and fix it, guarded (see the module docstring), as ``options`` say.

    ``cause="auto"`` diagnoses first (remediate.engine.diagnose) and fixes only a confident, fixable
    verdict, from the diagnosis' own evidence. ``transport`` (default: one opened from the inventory)
    reaches ``host``; ``inventory`` (default: the file ``host`` came from) is where the hosts behind
    nginx are found.
    """
    from remediate.events import new_run_id, open_journal
    from remediate.hosts.inventory import load_inventory

    playbooks = list(options.playbooks) or None
    book = None if cause == "auto" else find_playbook(cause, playbooks)
    report = Report(run_id=options.run_id or new_run_id(), host=host.name, cause=cause, trigger=options.trigger)
    report.requested_by = options.requested_by or local_user()
    log, fh, path = open_journal(
        report.run_id, host=host.name, cause=cause, requested_by=report.requested_by, trigger=options.trigger
    )
    report.journal = str(path)
    pool = Transports(host, transport, options.accept_new_host_key)
    try:
        log.info("start", step="start", check=options.check, playbook=book.path if book else "auto")
        if inventory is None:
            inventory = load_inventory(host.inventory_file)
        _run(
            host,
            book,
            pool,
            inventory,
            report,
            log,
            check=options.check,
            yes=options.yes,
            confirm=options.confirm,
            show=options.show,
            pause=PAUSE_AFTER_WRITE,
            options={"insecure_tls": options.insecure_tls},
            validate=options.validate,
            since=options.since,
            playbook_dirs=playbooks,
            show_diagnosis=options.show_diagnosis,
        )
    except Refused as exc:
        report.outcome, report.message = Outcome.REFUSED, str(exc)
    finally:
        report.round_trips = pool.round_trips
        log.info("end", step="end", outcome=report.outcome, message=report.message, steps=report.steps)
        fh.close()
        pool.close()
    return report


def _run(
    host: Host,
    book: Playbook | None,
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
    validate: bool = True,
    since: float | None = None,
    playbook_dirs: list[str] | None = None,
    show_diagnosis: Callable[[Any], None] | None = None,
) -> None:
    """The run's body; sets report.outcome, or raises Refused."""
    # 1. evidence, in one round trip to a helper session that also takes the lock and keeps it
    #    until this run ends (not for --check: it writes nothing, so it needs no lock; its session
    #    still serves the validation after, so the helper starts once)
    started = time.monotonic()
    transport = pool.get(host)
    opened: list[HelperSession] = []

    def first_call(request: dict[str, Any]) -> dict[str, Any]:
        request.update(run_id=report.run_id, journal_dir=host["journal_dir"])
        opened.append(HelperSession(transport, host))
        pool.sessions.append(opened[-1])
        answer = opened[-1].call(request if check else {**request, "lock": True})
        lock = answer.get("lock")
        if lock and not lock.get("acquired"):
            raise Refused(lock_message(host, lock.get("held") or {}))
        report.recovered = answer.get("recovered") or []
        if lock and lock.get("stale"):
            log.warning("stale-lock", step="lock", previous=lock["stale"])
        return answer

    if book is None:
        # --cause auto: the diagnosis' own evidence (every candidate playbook's, in the same round
        # trips) decides the cause, and the chosen playbook goes on from it without asking again.
        from remediate.engine.diagnose import choose_cause, gather_candidates

        diagnosis, contexts = gather_candidates(
            host, inventory, pool, first_call, since=since, playbooks=playbook_dirs, run_id=report.run_id,
            options=options,
        )  # fmt: skip
        diagnosis.round_trips = pool.round_trips
        report.diagnosis = diagnosis.to_json()
        if show_diagnosis is not None:
            show_diagnosis(diagnosis)
        if diagnosis.verdict == "unknown" and all(f.confidence == "over" for f in diagnosis.findings):
            # A healthy host: no line of any cause in the window, or each cause's evidence says it has
            # passed. A script driven by alerts needs "nothing to do" (exit 0) here, not a refusal; but
            # "passed" is only believed once the requests that failed answer again.
            books = load_playbooks(playbook_dirs)
            still = _still_failing(host, contexts, books, opened[0] if opened else None, transport)
            if still:
                raise Refused(
                    f"{host.name}: --cause auto: the evidence says every cause has passed"
                    f" ({diagnosis.reason}), yet the failing requests still fail: {still}; nothing was changed"
                )
            report.outcome = Outcome.NOTHING_TO_DO
            report.message = (
                f"no cause to fix: {diagnosis.reason}, and the requests that failed answer again"
                if diagnosis.findings
                else f"the error log's window has no line of any 502 cause ({diagnosis.reason})"
            )
            return
        report.cause = choose_cause(diagnosis)
        book = find_playbook(report.cause, playbook_dirs)
        ctx = contexts[report.cause]
        what = f"the diagnosis' evidence ({len(contexts)} playbook(s))"
    else:
        ctx = gather(host, book, pool, first_call, inventory, run_id=report.run_id, since=since, options=options)
        what = f"{len(book.evidence)} collector(s)"
    session = opened[0] if opened else None
    check_journal_location(host, ctx)
    report.evidence = {name: to_json(ctx.values[name]) for name, _, _ in book.evidence}
    trips = pool.round_trips
    report.step("evidence", True, f"{what} in {trips} round trip{'s' if trips != 1 else ''}", started)
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
        report.outcome, report.message = Outcome.NOTHING_TO_DO, reason
        return

    # 3. plan
    started = time.monotonic()
    assert decision.fix is not None
    plan = plan_fix(book, decision.fix, ctx)
    report.plan = plan
    report.step("plan", True, f"{len(plan.changes)} file change(s), {len(plan.actions)} action(s)", started)
    log.info("plan", step="plan", plan=plan.to_json())
    if plan.empty:
        report.outcome, report.message = Outcome.NOTHING_TO_DO, "the fix is already in place"
        return
    if check:
        report.outcome, report.message = Outcome.PLANNED, "--check: nothing was written"
        if validate:
            check_candidate(transport, host, plan, report, opened[0] if opened else None)
        if show is not None:
            show(report)
        return
    if show is not None:
        show(report)
    if not yes and (confirm is None or not confirm(report)):
        raise Refused(f"{host.name}: not confirmed; nothing was changed")

    # 4. guarded apply, in one round trip
    probes: list[Any] = []
    for item in book.verify:
        if "probe" in item:
            value = render(item["probe"], ctx)
            probes += [value] if isinstance(value, str) else list(value)
        if "replay" in item:  # URIs the playbook found failing (e.g. in the access log), asked through nginx
            value = render(item["replay"], ctx)
            probes += replay_uris(ctx.config, [value] if isinstance(value, str) else list(value))
    # The requests that failed, replayed through nginx: "fixed" means they succeed now.
    log_now = error_log_of(ctx)
    probes += replays(ctx.config, log_now.classified if log_now else [], book.replays)
    # Other hosts first (restart the backend), each its own guarded transaction; then the web host
    # (its changes, reload, and the probes through nginx).
    named = [c.host for c in plan.changes] + [a.host for a in plan.actions]
    others: list[str] = [name for name in named if name and name != host.name]
    for other_name in dict.fromkeys(others):
        other = inventory.host(other_name)
        part = Plan(
            changes=[c for c in plan.changes if c.host == other_name],
            actions=[a for a in plan.actions if a.host == other_name],
        )
        try:
            answer = apply_plan(
                pool.get(other), other, part, run_id=report.run_id, cause=report.cause, probes=[], who=report
            )
        except TransportError as exc:
            raise after_drop(other, report.run_id, exc) from None
        report.steps += [{**s, "step": f"{other_name}: {s['step']}"} for s in answer.get("steps", [])]
        if answer.get("outcome") != "fixed":
            finish_report(report, answer, reason, log, where=other_name)
            return
    mine = Plan(
        changes=[c for c in plan.changes if c.host in (None, host.name)],
        actions=[a for a in plan.actions if a.host in (None, host.name)],
    )
    try:
        answer = apply_plan(
            transport,
            host,
            mine,
            run_id=report.run_id,
            cause=report.cause,
            probes=probes,
            config=ctx.config,
            pause=pause,
            session=session,
            who=report,
        )
    except TransportError as exc:
        raise after_drop(host, report.run_id, exc) from None
    report.steps += answer.get("steps", [])
    finish_report(report, answer, reason, log)
    if report.outcome is Outcome.FIXED and not answer.get("verified") and book.replays:
        # (a harden fix prevents a failure that is not happening: its check is the audit run again)
        report.outcome = Outcome.APPLIED_UNVERIFIED
        why = (
            "no failing GET/HEAD request in the error log's window to replay and no probe_urls through it"
            if not probes
            else "no replayed request or probe URL answered in time"
        )
        report.message = (
            f"{reason}; applied, but NOT VERIFIED: {why}, so nothing showed the fix works; check the site,"
            " or add probe_urls to the inventory"
        )


def _still_failing(
    host: Host,
    contexts: dict[str, Context],
    books: dict[str, Playbook],
    session: HelperSession | None,
    transport: Transport,
) -> str:
    """The window's failed requests, asked once more through nginx (read-only): those that still fail."""
    specs: list[dict[str, Any]] = []
    for cause, ctx in contexts.items():
        log = error_log_of(ctx)
        specs += replays(ctx.config, log.classified if log else [], books[cause].replays)
    if not specs:
        return ""
    request = {"op": "collect", "replay": {"probes": distinct_probes(specs), "bad": [500, 502, 503, 504]}}
    answer = session.call(request) if session is not None else call_helper(transport, host, request)
    bad = [f"{k} -> {v}" for k, v in (answer.get("replay") or {}).get("failing", {}).items()]
    return ", ".join(bad)
