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

import base64
import json
import os
import posixpath
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from remediate.engine.modules import MODULES, validate_argv
from remediate.engine.plan import Action, Plan
from remediate.engine.playbook import Playbook, evaluate, find_playbook, render
from remediate.engine.replay import CAUSE_LABELS, replay_uris, replays
from remediate.errors import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_REFUSED,
    EXIT_ROLLED_BACK,
    EXIT_UNVERIFIED,
    Refused,
    RemediateError,
    TransportError,
    UsageError,
)
from remediate.evidence.framework import Context, error_log_of, to_json
from remediate.evidence.registry import COLLECTORS, build_request, interpret
from remediate.evidence.routing import pid_file
from remediate.hosts.inventory import Host, Inventory
from remediate.nginx import NginxConfig
from remediate.transport.base import Transport

__all__ = [
    "OUTCOME_EXIT",
    "TRIGGERS",
    "HelperSession",
    "Report",
    "apply_plan",
    "call_helper",
    "host_status",
    "plan_fix",
    "rollback",
    "run",
    "unlock",
    "validate_plan",
]

OUTCOME_EXIT = {
    "fixed": EXIT_OK,
    # Applied and committed, but nothing could be asked afterwards: no failing request in the window
    # to replay (none was GET/HEAD, or none named a plain-HTTP server) and no probe_urls through it.
    "applied-unverified": EXIT_UNVERIFIED,
    "nothing-to-do": EXIT_OK,
    "planned": EXIT_OK,
    "refused": EXIT_REFUSED,
    "rolled-back": EXIT_ROLLED_BACK,
    "restored": EXIT_OK,  # a rollback the user asked for, done
    "failed": EXIT_FAILED,
}
HELPER = (Path(__file__).parent.parent / "hostside.py").read_text()
#: What can start a run; recorded with who asked.
TRIGGERS = ("cli", "slack", "alertmanager", "api")


def local_user() -> str:
    """The user running this controller, as a run's ``requested_by`` when nobody else is named."""
    import getpass

    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid {os.getuid()}"


#: The session's heartbeat: a ping every PING seconds; IDLE seconds without one and the helper
#: lets go of the lock. So a controller that is cut off holds a host for IDLE seconds at most,
#: and one that is killed not at all (its connection closes, the helper sees EOF at once).
PING = 2.0
IDLE = 10.0


class Transports:
    """One transport per host a run touches: the target's, and any other host's on first use."""

    def __init__(self, target: Host, transport: Transport | None, accept_new_host_key: bool) -> None:
        self.target = target
        self.accept_new = accept_new_host_key
        self.owned: list[Transport] = []
        self.by_host: dict[str, Transport] = {}
        self.sessions: list[HelperSession] = []
        if transport is not None:
            self.by_host[target.name] = transport

    def get(self, host: Host) -> Transport:
        if host.name not in self.by_host:
            from remediate.hosts.connect import open_transport

            self.by_host[host.name] = open_transport(host, accept_new_host_key=self.accept_new)
            self.owned.append(self.by_host[host.name])
        return self.by_host[host.name]

    @property
    def round_trips(self) -> int:
        return sum(int(getattr(t, "round_trips", 0)) for t in self.by_host.values())

    def close(self) -> None:
        for session in self.sessions:
            session.close()
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
    diagnosis: dict[str, Any] | None = None  # with --cause auto: the diagnosis that chose the cause
    requested_by: str = ""  # who asked: a user name, a Slack user id, an alert fingerprint
    trigger: str = "api"  # why: cli, slack, alertmanager, api

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
            "requested_by": self.requested_by,
            "trigger": self.trigger,
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
            **({"diagnosis": self.diagnosis} if self.diagnosis is not None else {}),
        }


def _answer(host: Host, raw: bytes, exited: int | str, stderr: str) -> dict[str, Any]:
    try:
        answer: dict[str, Any] = json.loads(raw or b"null")
    except ValueError:
        answer = {}
    if not isinstance(answer, dict) or not answer:
        raise RemediateError(f"{host.name}: remediate's helper gave no answer ({exited}): {stderr}")
    if answer.get("error"):
        error = str(answer["error"])
        if ("PermissionError" in error or "Permission denied" in error) and not host["ansible_become"]:
            who = host["ansible_user"] or "the SSH user"
            raise RemediateError(
                f"{host.name}: {who} may not read what remediate needs ({error.removeprefix('PermissionError: ')});"
                " set ansible_become: true for this host (remediate then runs its helper through `sudo -n`)"
            )
        raise RemediateError(f"{host.name}: remediate's helper failed: {error}")
    return answer


def helper_argv(host: Host, *extra: str) -> list[str]:
    # -I -S: isolated (no PYTHON* variables, no user site) and no site import: stdlib only, and fast to start.
    return [host["ansible_python_interpreter"], "-I", "-S", "-c", HELPER, *extra]


def call_helper(transport: Transport, host: Host, request: dict[str, Any], timeout: float = 120) -> dict[str, Any]:
    """Run the host-side helper once with ``request`` as JSON on stdin; one round trip."""
    result = transport.run(helper_argv(host), stdin=json.dumps(request).encode(), timeout=timeout, warn=True)
    return _answer(host, result.stdout, f"exit {result.exited}", result.stderr_tail())


class HelperSession:
    """The helper, kept running on the host for one run; it holds the host's lock while it lives.

    Requests go one JSON line at a time over one SSH channel. The helper lives exactly as long
    as this controller: when the controller dies its connection closes and the helper sees EOF
    at once; when the network is cut, the pings stop and the helper gives up after IDLE seconds.
    Either way the kernel drops the lock (an flock) with the helper, so a lock cannot outlive
    its run by more than IDLE seconds, and a transaction in progress is finished first.
    """

    def __init__(self, transport: Transport, host: Host) -> None:
        self.transport = transport
        self.host = host
        self.stream = transport.open_stream(helper_argv(host, "session", f"{IDLE:g}"))
        self._stop = threading.Event()
        self._pinger = threading.Thread(target=self._ping, name=f"remediate-ping-{host.name}", daemon=True)
        self._pinger.start()

    def _ping(self) -> None:
        while not self._stop.wait(PING):
            try:
                self.stream.write(b'{"op": "ping"}\n')
            except RemediateError:
                return

    def call(self, request: dict[str, Any], timeout: float = 120) -> dict[str, Any]:
        self.transport.round_trips += 1
        self.stream.write(json.dumps(request).encode() + b"\n")
        line = self.stream.read_line(timeout)
        return _answer(self.host, line, "session", self.stream.stderr().strip()[-300:])

    def close(self) -> None:
        """End the session: the helper sees EOF, and lets go of the lock."""
        self._stop.set()
        self.stream.close()


# -- evidence: one round trip to the host, then one to each other host that must be asked ----


def evidence_request(host: Host, books: list[Playbook], *, since: float | None = None) -> dict[str, Any]:
    """One collect request for every step of ``books``: what each collector asks, merged."""
    request = build_request(host, [step for book in books for step in book.evidence])
    if since is not None and "window" in request:
        request["window"]["since"] = since
    return request


def read_evidence(
    host: Host, book: Playbook, answer: dict[str, Any], inventory: Inventory, options: dict[str, Any]
) -> Context:
    """The first phase of ``book``'s evidence, read from ``answer`` into a fresh Context."""
    ctx = Context(host, inventory=inventory, values={"options": dict(options)})
    return interpret(ctx, book.evidence, answer)


def remote_asks(ctx: Context, book: Playbook) -> dict[str, tuple[Host, dict[str, Any]]]:
    """The second phase: what ``book``'s collectors must ask another host (or nginx's host again), by step."""
    asks = {}
    for name, collect, args in book.evidence:
        asker = COLLECTORS[collect].remote
        target = asker(ctx, args) if asker else None
        if isinstance(target, list):  # several hosts: one ask each, read together (evidence.registry.interpret)
            asks.update({f"{name}#{other.name}": (other, request) for other, request in target})
        elif target is not None:
            asks[name] = target
    return asks


def ask_hosts(pool: Transports, run_id: str, asks: dict[str, tuple[Host, dict[str, Any]]]) -> dict[str, Any]:
    """Every second-phase request, in one round trip per host (a batch the helper runs side by side)."""
    by_host: dict[str, tuple[Host, dict[str, Any]]] = {}
    for key, (other, request) in asks.items():
        request.update(run_id=run_id, journal_dir=other["journal_dir"])
        by_host.setdefault(other.name, (other, {}))[1][key] = request
    answers: dict[str, Any] = {}
    for other, requests in by_host.values():
        batch = call_helper(pool.get(other), other, {"op": "batch", "requests": requests})
        for key, part in batch.get("answers", {}).items():
            answers[key] = _answer(other, json.dumps(part).encode(), "batch", "")
    return answers


def finish_evidence(ctx: Context, book: Playbook, answer: dict[str, Any], remote: dict[str, Any]) -> Context:
    """Read the second phase (``remote``: answers by step name) into ``ctx``."""
    if any(COLLECTORS[c].remote for _, c, _ in book.evidence):
        ctx = interpret(ctx, [s for s in book.evidence if COLLECTORS[s[1]].remote], answer, remote=remote)
    return ctx


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
    validate: bool = True,
    since: float | None = None,
    show_diagnosis: Callable[[Any], None] | None = None,
    requested_by: str | None = None,
    trigger: str = "api",
) -> Report:
    """Diagnose ``cause`` on ``host`` and fix it, guarded. See the module docstring.

    ``cause="auto"`` diagnoses first (remediate.engine.diagnose) and fixes only a confident, fixable
    verdict, from the diagnosis' own evidence; ``show_diagnosis`` sees the diagnosis first.
    ``since`` is the error-log window in seconds (default: the error_log collector's, 15 minutes).
    ``requested_by`` (default: the local user) and ``trigger`` (cli, slack, alertmanager, api) are
    recorded in the report, the controller's journal and the host's journal.
    ``inventory`` (default: the file ``host`` came from) is where the hosts behind nginx are found.
    ``insecure_tls`` lets the invalid-response fix turn proxy_ssl_verify off when no CA can be
    trusted: a temporary workaround, reported as such. With ``check``, ``validate`` runs the
    candidate through ``nginx -t`` / ``php-fpm -t`` on the host (one more round trip, nothing written).
    """
    from remediate.events import new_run_id, open_journal
    from remediate.hosts.inventory import load_inventory

    if trigger not in TRIGGERS:
        raise UsageError(f"trigger must be one of {', '.join(TRIGGERS)}, not {trigger!r}")
    book = None if cause == "auto" else find_playbook(cause, playbooks)
    report = Report(run_id=run_id or new_run_id(), host=host.name, cause=cause, trigger=trigger)
    report.requested_by = requested_by or local_user()
    log, fh, path = open_journal(
        report.run_id, host=host.name, cause=cause, requested_by=report.requested_by, trigger=trigger
    )
    report.journal = str(path)
    pool = Transports(host, transport, accept_new_host_key)
    try:
        log.info("start", step="start", check=check, playbook=book.path if book else "auto")
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
            validate=validate,
            since=since,
            playbook_dirs=playbooks,
            show_diagnosis=show_diagnosis,
        )
    except Refused as exc:
        report.outcome, report.message = "refused", str(exc)
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
    #    until this run ends (not for --check: it writes nothing, so it needs no lock)
    started = time.monotonic()
    transport = pool.get(host)
    opened: list[HelperSession] = []

    def first_call(request: dict[str, Any]) -> dict[str, Any]:
        request.update(run_id=report.run_id, journal_dir=host["journal_dir"])
        if check:
            answer = call_helper(transport, host, request)
        else:
            opened.append(HelperSession(transport, host))
            pool.sessions.append(opened[-1])
            answer = opened[-1].call({**request, "lock": True})
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
        from remediate.engine.diagnose import choose_cause, gather

        diagnosis, contexts = gather(
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
            still = _still_failing(host, contexts, opened[0] if opened else None, transport)
            if still:
                raise Refused(
                    f"{host.name}: --cause auto: the evidence says every cause has passed"
                    f" ({diagnosis.reason}), yet the failing requests still fail: {still}; nothing was changed"
                )
            report.outcome = "nothing-to-do"
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
        answer = first_call(evidence_request(host, [book], since=since))
        ctx = read_evidence(host, book, answer, inventory, options)
        ctx = finish_evidence(ctx, book, answer, ask_hosts(pool, report.run_id, remote_asks(ctx, book)))
        what = f"{len(book.evidence)} collector(s)"
    session = opened[0] if opened else None
    _check_journal_location(host, ctx)
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
    if check:
        report.outcome, report.message = "planned", "--check: nothing was written"
        if validate:
            _check_candidate(transport, host, plan, report)
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
    probes += replays(ctx.config, log_now.classified if log_now else [], report.cause)
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
            raise _after_drop(other, report.run_id, exc) from None
        report.steps += [{**s, "step": f"{other_name}: {s['step']}"} for s in answer.get("steps", [])]
        if answer.get("outcome") != "fixed":
            _finish(report, answer, reason, log, where=other_name)
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
        raise _after_drop(host, report.run_id, exc) from None
    report.steps += answer.get("steps", [])
    _finish(report, answer, reason, log)
    if report.outcome == "fixed" and not answer.get("verified") and report.cause in CAUSE_LABELS:
        # (a harden fix prevents a failure that is not happening: its check is the audit run again)
        report.outcome = "applied-unverified"
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
    host: Host, contexts: dict[str, Context], session: HelperSession | None, transport: Transport
) -> str:
    """The window's failed requests, asked once more through nginx (read-only): those that still fail."""
    specs: list[dict[str, Any]] = []
    for cause, ctx in contexts.items():
        log = error_log_of(ctx)
        specs += replays(ctx.config, log.classified if log else [], cause)
    if not specs:
        return ""
    request = {"op": "collect", "replay": {"probes": _distinct(specs), "bad": [500, 502, 503, 504]}}
    answer = session.call(request) if session is not None else call_helper(transport, host, request)
    bad = [f"{k} -> {v}" for k, v in (answer.get("replay") or {}).get("failing", {}).items()]
    return ", ".join(bad)


def _distinct(probes: list[Any]) -> list[Any]:
    """Probe URLs and replay specs once each, in their first order."""
    return list({json.dumps(p, sort_keys=True): p for p in probes}.values())


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
        if change.host is None:  # another host's file is not this host's (ctx.files holds the run's host)
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
        report.message = f"{answer['failed_step']}{f' on {where}' if where else ''} failed: {answer.get('reason', '')}"
        report.message += "; " + _what_remains(answer)
    else:
        report.message = answer.get("reason", "") or (reason if report.outcome == "fixed" else "")
    log.info("apply", step="apply", outcome=report.outcome, steps=answer.get("steps"), reason=answer.get("reason"))


def _what_remains(answer: dict[str, Any]) -> str:
    """After a failed apply: what the host holds now, in the helper's own terms."""
    if answer.get("problems"):
        return f"RESTORE INCOMPLETE: {'; '.join(answer['problems'])} (journal: {answer.get('journal', '?')})"
    restored = answer.get("restored") or []
    if restored:
        return f"every file was restored byte for byte ({', '.join(restored)})"
    if not answer.get("written") and not answer.get("began"):
        return "nothing was changed"
    return "no file had been changed"


def apply_plan(
    transport: Transport,
    host: Host,
    plan: Plan,
    *,
    run_id: str,
    cause: str,
    probes: list[Any],
    config: NginxConfig | None = None,
    pause: float | None = None,
    session: HelperSession | None = None,
    who: Report | None = None,
) -> dict[str, Any]:
    """The guarded transaction, done by the helper on the host in one round trip.

    Compare-and-swap, validate the candidates (nginx -t, php-fpm -t) before they replace
    anything, back up, write atomically, reload nginx (confirmed by its new workers) and restart
    services, probe; on any failure after the first write restore every file written and run
    again only what had started. Returns the helper's answer: outcome, failed_step, reason,
    steps, written, restored, problems.
    """
    request = _apply_request(host, plan, run_id=run_id, cause=cause, config=config)
    request.update(probes=_distinct(probes), probe_budget=host["probe_budget"])
    if cause == "workers":  # out of connections, nginx answers 500 (ngx_http_upstream_connect fails outright)
        request["bad_statuses"] = [500, 502, 503, 504]
    if who is not None:  # the host's journal records who asked, and why
        request.update(requested_by=who.requested_by, trigger=who.trigger)
    if pause:
        request["test_pause_after_write"] = pause
    if session is not None:
        return session.call(request, timeout=600)
    return call_helper(transport, host, request, timeout=600)


def _apply_request(
    host: Host, plan: Plan, *, run_id: str, cause: str, config: NginxConfig | None, op: str = "apply"
) -> dict[str, Any]:
    validates = [
        {"name": f"{kind} -t", "argv": validate_argv(host, kind)}
        for kind in dict.fromkeys(c.validate for c in plan.changes)
        if kind != "none"
    ]
    actions: list[Action] = list(plan.actions)
    if any(c.validate == "nginx" for c in plan.changes):
        reload = Action(
            "reload",
            "nginx",
            tuple(host.nginx_reload_argv),
            pid_file=pid_file(host, config),
            error_log=host["nginx_error_log"],
        )
        actions.insert(0, reload)
    return {
        "op": op,
        "run_id": run_id,
        "cause": cause,
        "journal_dir": host["journal_dir"],
        "changes": [
            {
                "path": c.path,
                "before_sha": c.before_sha,
                "after_b64": base64.b64encode(c.after).decode(),
                "validate": c.validate,
                **({"like": c.like} if c.like else {}),
            }
            for c in plan.changes
        ],
        "validate": validates,
        "actions": [a.to_wire() for a in actions],
        "bad_statuses": [500, 502, 503, 504],
    }


def validate_plan(transport: Transport, host: Host, plan: Plan) -> dict[str, Any]:
    """Run the plan's checks (nginx -t, php-fpm -t) on the host against the candidate files, with
    nothing live changed: each candidate is bind-mounted over its file in a private mount
    namespace that ends with the check. Returns {"results": [...]} or {"unavailable": why}."""
    request = _apply_request(host, plan, run_id="check", cause="check", config=None, op="validate")
    return call_helper(transport, host, request)


def _check_candidate(transport: Transport, host: Host, plan: Plan, report: Report) -> None:
    """--check: say whether the candidate passes its checks; a failing one makes the run a refusal."""
    if not any(c.validate != "none" for c in plan.changes):
        return
    started = time.monotonic()
    answer = validate_plan(transport, host, plan)
    if "unavailable" in answer:
        report.step("validate", True, f"not validated: {answer['unavailable']}", started)
        report.message += f"; the candidate was not validated ({answer['unavailable']})"
        return
    for res in answer.get("results", []):
        if res["exit"] != 0:
            words = str(res["words"])
            report.step(res["name"], False, words, started)
            report.outcome = "refused"
            report.message = (
                f"{host.name}: --check: this change would fail `{res['name']}`: {words}; nothing was written"
            )
            return
        report.step(res["name"], True, "the candidate passes (checked in a private mount namespace)", started)
    report.message = "--check: nothing was written; the candidate passes " + ", ".join(
        f"`{r['name']}`" for r in answer.get("results", [])
    )


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


def _after_drop(host: Host, run_id: str, exc: TransportError) -> TransportError:
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

    if trigger not in TRIGGERS:
        raise UsageError(f"trigger must be one of {', '.join(TRIGGERS)}, not {trigger!r}")
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
                report.outcome, report.message = "refused", f"{refusal}; nothing was changed"
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
