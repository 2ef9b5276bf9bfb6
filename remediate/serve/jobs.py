"""The service's workers: jobs from the ledger, one at a time per host, through remediate.api.

Every trigger ends up here as a ledger job (see remediate.stores.ledger); ``workers`` threads claim them.
What a job does depends on its mode:

``diagnose``  diagnose the host and post the verdict.
``approve``   plan the fix (``--check``; ``auto`` diagnoses first), record an approval bound to the
              plan hash, and post the diff with Approve / Deny buttons.
``run``       an approved plan: plan again, and apply only if the plan hash is the one approved.
``fix``       an alert's ``mode: fix``: ``--cause auto``, applied at once, under storm control.
``rollback``  undo a run from the host's journal.

Storm control for ``fix``: an alert raised before the host's last fix finished is *covered* by that
fix (twenty alerts for one incident are one fix); the log window starts at the last fix, so old
lines do not re-diagnose a fixed host; a cause fixed within ``cooldown`` that comes back is not
fixed again but escalated with both runs (the loop breaker); at most ``max_runs_per_hour`` runs
per host. SSH connections are kept (remediate.api.Connections) and closed after
``keep_connections`` idle.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import structlog

from remediate.api import Remediate
from remediate.errors import RemediateError
from remediate.outcomes import Outcome
from remediate.serve.config import ServeConfig
from remediate.serve.notify import Notifier, approval_blocks, mrkdwn, outcome_text, plan_text
from remediate.stores.approvals import Approvals, plan_hash
from remediate.stores.audit import Audit
from remediate.stores.db import Schema, Where, errors, open_db
from remediate.stores.ledger import Job, Ledger

__all__ = ["Runner", "Seen", "Stores"]

log = structlog.get_logger("remediate.serve")
T = TypeVar("T")


class Seen:
    """Keys seen before, beside the ledger: Slack signatures (the replay cache) and alerts already reported."""

    _SCHEMA = Schema(
        sqlite="CREATE TABLE IF NOT EXISTS seen (key TEXT PRIMARY KEY, at REAL NOT NULL);",
        postgres="CREATE TABLE IF NOT EXISTS seen (key TEXT PRIMARY KEY, at DOUBLE PRECISION NOT NULL);",
    )

    def __init__(self, where: Where) -> None:
        self.db = open_db(where, "ledger", self._SCHEMA)
        self.inserts = 0

    def first(self, key: str) -> bool:
        """Record ``key``; True if it was not there before (durably, so a restart does not forget it)."""
        self.inserts += 1
        if self.inserts % 200 == 0:  # pruned: replayed signatures after their 300 s window, reports after a day
            self.db.execute("DELETE FROM seen WHERE key LIKE 'slack:%' AND at < ?", (time.time() - 600,))
            self.db.execute("DELETE FROM seen WHERE key LIKE 'report:%' AND at < ?", (time.time() - 86400,))
        inserted = self.db.execute("INSERT INTO seen VALUES (?, ?) ON CONFLICT DO NOTHING", (key, time.time()))
        return bool(inserted.rowcount == 1)


class Stores:
    """The ledger, approvals, replay cache and audit chain at ``where`` (remediate.stores.db), one connection
    set per thread."""

    def __init__(self, where: Where) -> None:
        self.where = where
        self._local = threading.local()

    def create(self) -> None:
        """Create the files and tables (and switch them to WAL) from this thread, then close them."""
        for kind in (Ledger, Audit, Approvals, Seen):
            kind(self.where).db.close()

    def _get(self, name: str, kind: type) -> Any:
        value = getattr(self._local, name, None)
        if value is None:
            value = kind(self.where)
            setattr(self._local, name, value)
        return value

    @property
    def ledger(self) -> Ledger:
        return self._get("ledger", Ledger)  # type: ignore[no-any-return]

    @property
    def audit(self) -> Audit:
        return self._get("audit", Audit)  # type: ignore[no-any-return]

    @property
    def seen(self) -> Seen:
        return self._get("seen", Seen)  # type: ignore[no-any-return]

    @property
    def approvals(self) -> Approvals:
        return self._get("approvals", Approvals)  # type: ignore[no-any-return]


def report_hash(report: Any) -> str:
    return plan_hash(report.host, report.cause, plan_text(report))


class Runner:
    """``config.workers`` threads running ledger jobs (in the worker process: remediate.serve.dispatcher)."""

    def __init__(self, config: ServeConfig, rem: Remediate, stores: Stores, notifier: Notifier) -> None:
        self.config, self.rem, self.stores, self.notifier = config, rem, stores, notifier
        self.wake = threading.Event()
        self.stopping = threading.Event()
        self.threads: list[threading.Thread] = []
        self.busy = 0
        self._busy_lock = threading.Lock()

    # -- lifecycle ---------------------------------------------------------------

    def start(self) -> list[Job]:
        """Put jobs a dead service left running back to pending, then start the workers; the jobs resumed."""
        resumed = self.stores.ledger.resume()
        for job in resumed:
            self.stores.audit.append("resume", "remediate", {"job": job.id, "host": job.host, "mode": job.mode})
        for i in range(self.config.workers):
            thread = threading.Thread(target=self._loop, name=f"remediate-worker-{i}", daemon=True)
            thread.start()
            self.threads.append(thread)
        return resumed

    def stop(self, wait: float = 30.0) -> None:
        """No new jobs; wait up to ``wait`` s for running ones (a job still running resumes on the next start)."""
        self.stopping.set()
        self.wake.set()
        deadline = time.monotonic() + wait
        for thread in self.threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        self.rem.close()

    def alive(self) -> int:
        return sum(t.is_alive() for t in self.threads)

    def _loop(self) -> None:
        name = threading.current_thread().name
        last_sweep = time.monotonic()
        while not self.stopping.is_set():
            try:
                job = self.stores.ledger.claim(name)
            except Exception as exc:  # a locked or full disk: wait and retry, never die
                log.error("claim-failed", error=str(exc))
                job = None
            if job is None:
                self.wake.wait(0.5)
                self.wake.clear()
                if time.monotonic() - last_sweep > 5:
                    last_sweep = time.monotonic()
                    closed = self.rem.connections.close_idle(self.config.keep_connections)
                    if closed:
                        log.info("connections-closed", hosts=closed, idle=self.config.keep_connections)
                continue
            with self._busy_lock:
                self.busy += 1
            try:
                self.execute(job)
            finally:
                with self._busy_lock:
                    self.busy -= 1
                self.wake.set()  # the host is free: its next job may go

    # -- one job -----------------------------------------------------------------

    def execute(self, job: Job) -> Job:
        started = time.monotonic()
        rem = self.rem.acting_for(job.requested_by, job.trigger)
        self.stores.audit.append("start", job.requested_by, {"job": job.id, "host": job.host, "mode": job.mode})
        result: dict[str, Any]
        try:
            result = getattr(self, f"_{job.mode}")(job, rem)
        except RemediateError as exc:
            result = {"outcome": "failed", "message": str(exc)}
            self._say(job, f":x: *{job.host}* {job.mode}: {mrkdwn(str(exc))}")
        except Exception as exc:  # one bad job must not kill a worker
            log.exception("job-crashed", job=job.id)
            result = {"outcome": "failed", "message": f"internal error: {type(exc).__name__}: {exc}"}
            self._say(job, f":x: *{job.host}* {job.mode}: remediate failed ({type(exc).__name__}); see its log")
        seconds = time.monotonic() - started
        outcome = result.pop("outcome")
        run_id, cause = result.pop("run_id", None), result.pop("cause", None)
        # The outcome must be written even if the store is away for a moment (a database restarting).
        done = _patiently(lambda: self.stores.ledger.finish(job.id, outcome, run_id=run_id, cause=cause, data=result))
        _patiently(
            lambda: self.stores.audit.append(
                "outcome",
                job.requested_by,
                {"job": job.id, "host": job.host, "cause": done.cause, "mode": job.mode, "outcome": outcome,
                 "run_id": run_id, "message": result.get("message", "")},
            )
        )  # fmt: skip
        log.info("job", job=job.id, host=job.host, mode=job.mode, outcome=outcome, run_id=run_id, seconds=seconds)
        return done

    def _say(self, job: Job, text: str, blocks: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        reply = dict(job.data.get("reply") or {})
        return self.notifier.post(reply, text, blocks)

    def _window(self, job: Job, last: Job | None = None) -> float:
        """The error-log window: the configured one, but never older than the host's last fix (``last``)."""
        last = last or self.stores.ledger.last_fix(job.host)
        if last is None or last.ended is None:
            return self.config.since
        return max(1.0, min(self.config.since, time.time() - last.ended))

    def _diagnose(self, job: Job, rem: Remediate) -> dict[str, Any]:
        diagnosis = rem.diagnose(job.host, since=self._window(job))
        lines = [f":mag: *{job.host}*: verdict *{diagnosis.verdict}*; {mrkdwn(diagnosis.reason)}"]
        for finding in diagnosis.findings:
            lines.append(f"• {finding.cause or finding.label}: {finding.count} line(s), {finding.confidence}")
        self._say(job, "\n".join(lines))
        return {"outcome": Outcome.DIAGNOSED, "verdict": diagnosis.verdict, "cause": job.cause}

    def _approve(self, job: Job, rem: Remediate) -> dict[str, Any]:
        report = rem.plan(job.host, job.cause, since=self._window(job))
        if report.outcome != "planned":
            self._say(job, outcome_text(report))
            return {"outcome": report.outcome, "message": report.message, "cause": report.cause}
        if job.trigger == "slack":  # auto named a cause now: the requester must hold run for it too
            allowed = self.config.policy.allows(
                rem.inventory, job.requested_by, "run", job.host, report.cause, tuple(job.data.get("groups", ()))
            )
            self.stores.audit.append("decision", job.requested_by, {"job": job.id, "cause": report.cause,
                                                                     "allowed": allowed.allowed,
                                                                     "reason": allowed.reason})  # fmt: skip
            if not allowed:
                self._say(job, f":no_entry: <@{job.requested_by}>: the diagnosis says {report.cause}; {allowed.reason}")
                return {"outcome": "denied", "message": allowed.reason, "cause": report.cause}
        approval = self.stores.approvals.create(
            job.host, report.cause, job.requested_by, report_hash(report), ttl=self.config.approval_ttl
        )
        self.stores.audit.append("approval-asked", job.requested_by,
                                 {"job": job.id, "approval": approval.id, "host": job.host, "cause": report.cause,
                                  "plan_hash": approval.plan_hash})  # fmt: skip
        who = f"<@{job.requested_by}>" if job.trigger == "slack" else f"alert {job.requested_by[:12]}"
        summary = f":memo: *{job.host}*: {report.cause}; {mrkdwn(report.decision.get('reason', ''))}\nasked by {who}"
        previous = self.stores.ledger.recent_fix(job.host, report.cause, self.config.cooldown)
        if previous is not None:
            summary += (
                f"\n:repeat: {report.cause} was fixed on {job.host} {_ago(previous.ended)} ago "
                f"(run `{previous.run_id}`); it came back"
            )
        self._say(job, summary, approval_blocks(summary, plan_text(report), approval.id, self.config.approval_ttl))
        return {"outcome": "awaiting-approval", "approval": approval.id, "cause": report.cause}

    def _run(self, job: Job, rem: Remediate) -> dict[str, Any]:
        approval = self.stores.approvals.get(job.data["approval"])
        changed: list[str] = []

        def same_plan(report: Any) -> bool:
            verdict = self.stores.approvals.check_plan(approval, report_hash(report))
            if not verdict.ok:
                changed.append(verdict.reason)
            return verdict.ok

        report = rem.run(job.host, approval.cause, confirm=same_plan, since=self._window(job))
        if changed:
            report.message = f"{job.host}: {changed[0]}"
        self._say(job, outcome_text(report))
        return {"outcome": report.outcome, "run_id": report.run_id if _applied(report) else None,
                "message": report.message, "cause": report.cause}  # fmt: skip

    def _fix(self, job: Job, rem: Remediate) -> dict[str, Any]:
        ledger = self.stores.ledger
        last = ledger.last_fix(job.host)
        if last is not None and last.ended is not None and last.ended >= job.created:
            # This alert fired before that fix ended: the same incident, already fixed.
            return {"outcome": "covered", "message": f"covered by job {last.id} (run {last.run_id})"}
        hour_runs = ledger.runs_since(job.host, time.time() - 3600)
        if hour_runs >= self.config.max_runs_per_hour:
            text = (
                f":rotating_light: *{job.host}*: {hour_runs} runs in the last hour (cap "
                f"{self.config.max_runs_per_hour}); not running again. A human should look."
            )
            self._say(job, text)
            return {"outcome": "capped", "message": text}
        looped: list[Job] = []

        def not_a_loop(report: Any) -> bool:
            previous = ledger.recent_fix(job.host, report.cause, self.config.cooldown, before=job.id)
            if previous is not None:
                looped.append(previous)
            return previous is None

        report = rem.run(job.host, job.cause, confirm=not_a_loop, since=self._window(job, last))
        if looped:
            previous = looped[0]
            text = (
                f":rotating_light: *{job.host}*: {report.cause} is back {_ago(previous.ended)} after run "
                f"`{previous.run_id}` fixed it (cool-down {int(self.config.cooldown // 60)} min). Not fixing it "
                f"again: the fix does not hold. This diagnosis: run `{report.run_id}`, "
                f"{report.decision.get('reason', '')}"
            )
            self._say(job, text)
            return {"outcome": "loop-stopped", "message": text, "cause": report.cause, "previous": previous.run_id}
        self._say(job, outcome_text(report))
        return {"outcome": report.outcome, "run_id": report.run_id if _applied(report) else None,
                "message": report.message, "cause": report.cause}  # fmt: skip

    def _rollback(self, job: Job, rem: Remediate) -> dict[str, Any]:
        def authorize(cause: str) -> str | None:
            """The requester must hold rollback for the cause of the run undone, not for "some cause"."""
            allowed = self.config.policy.allows(
                rem.inventory, job.requested_by, "rollback", job.host, cause, tuple(job.data.get("groups", ()))
            )
            self.stores.audit.append("decision", job.requested_by, {"job": job.id, "verb": "rollback",
                                                                     "run_id": job.data["run_id"], "cause": cause,
                                                                     "allowed": allowed.allowed,
                                                                     "reason": allowed.reason})  # fmt: skip
            return None if allowed else allowed.reason

        report = rem.rollback(job.host, job.data["run_id"], authorize=authorize)
        self._say(job, outcome_text(report))
        return {"outcome": report.outcome, "message": report.message, "undid": job.data["run_id"]}


#: How long a finished job waits for its store to come back to write its outcome.
STORE_PATIENCE = 120.0


def _patiently(write: Callable[[], T]) -> T:
    """``write()``, tried again for up to STORE_PATIENCE seconds while the store fails (remediate.stores.db.errors)."""
    deadline = time.monotonic() + STORE_PATIENCE
    while True:
        try:
            return write()
        except errors() as exc:
            if time.monotonic() > deadline:
                raise
            log.warning("store-unavailable", error=str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
            time.sleep(0.5)


def _applied(report: Any) -> bool:
    """Did the run get as far as changing the host (so it is a run: in the ledger, under the hourly cap)?"""
    return report.outcome in {"fixed", "applied-unverified", "rolled-back", "failed", "restored"}


def _ago(ended: float | None) -> str:
    seconds = max(0, int(time.time() - (ended or time.time())))
    return f"{seconds // 60} min {seconds % 60} s" if seconds >= 60 else f"{seconds} s"
