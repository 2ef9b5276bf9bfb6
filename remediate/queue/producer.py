"""Enqueueing fleet jobs and waiting for their results (``run|diagnose --limit --queue``)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from remediate.engine.fleet import HostResult
from remediate.errors import InputError
from remediate.outcomes import Outcome
from remediate.queue.schema import (
    SERVE_TASK,
    TASK,
    _app,
    _connect,
    _libraries,
    _open,
    queue_of,
)

if TYPE_CHECKING:
    import psycopg

    from remediate.hosts.inventory import Host


class Queue:
    """The enqueuing side: a job per host, then its HostResult once a worker wrote it."""

    def __init__(self, url: str, *, poll: float = 0.2) -> None:
        self.url = url
        self.poll = poll
        self._lock = threading.Lock()  # the fleet's threads share one connection to poll on
        self._conn: psycopg.Connection[Any] | None = None
        # Reachable, with the schema, before Procrastinate's pool (which would retry for 30 s, loudly).
        with _connect(url) as conn:
            ready = conn.execute("SELECT to_regclass('remediate_results') IS NOT NULL").fetchone()
        if not (ready and ready[0]):
            raise InputError(f"the queue at {url.split('@')[-1]} has no schema: run `remediate queue init --queue URL`")
        self.app = _app(url)
        self.app.task(name=TASK)(_not_here)
        self.app.task(name=SERVE_TASK)(_not_here)
        self.app.open()

    def close(self) -> None:
        self.app.close()
        if self._conn is not None:
            self._conn.close()

    def enqueue(self, host: Host, verb: str, *, key: str = "", **job: Any) -> int | None:
        """Defer one job for ``host``; None when an equal job (same host, verb, cause, ``key``) already waits."""
        dedupe = ":".join(str(p) for p in (host.name, verb, job.get("cause", ""), key))
        return self._defer(TASK, host.name, dedupe, queue_of(host), {"host": host.name, "verb": verb, **job})

    def _defer(self, task: str, host: str, dedupe: str, queue: str, kwargs: dict[str, Any]) -> int | None:
        """Defer ``task``: one at a time on ``host`` (with every other job for it), refused while ``dedupe`` waits."""
        procrastinate, _ = _libraries()
        configured = self.app.tasks[task].configure(lock=f"host:{host}", queueing_lock=dedupe, queue=queue)
        try:
            return int(configured.defer(**kwargs))
        except procrastinate.exceptions.AlreadyEnqueued:
            return None

    def _query(self, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        """``sql`` on the kept connection (opened again after a restart); the rows."""
        with self._lock:
            if self._conn is None or self._conn.closed or self._conn.broken:
                self._conn = _open(self.url)
            try:
                return list(self._conn.execute(sql, params).fetchall())
            except Exception:
                self._conn.close()
                self._conn = None
                raise

    def poll_once(self, job_id: int) -> tuple[str, HostResult | None]:
        """The job's status and, once it ended, the result its worker wrote (one query, one kept connection)."""
        _, psycopg = _libraries()
        from remediate.errors import HostUnreachable

        try:
            rows = self._query(
                "SELECT j.status, r.host, r.outcome, r.exit_code, r.cause, r.seconds, r.run_id, r.message, "
                "r.report FROM procrastinate_jobs j LEFT JOIN remediate_results r ON r.job_id = j.id "
                "WHERE j.id = %s",
                (job_id,),
            )
        except (psycopg.OperationalError, HostUnreachable):  # Postgres restarting: ask at the next poll
            return "unknown", None
        if not rows:
            return "missing", None
        status, host, outcome, code, cause, seconds, run_id, message, report = rows[0]
        if host is None or status not in ("succeeded", "failed"):
            return str(status), None
        return str(status), HostResult(
            host,
            Outcome.parse(outcome),
            code,
            cause=cause,
            seconds=seconds,
            run_id=run_id,
            message=message,
            report=report,
        )

    def wait(self, job_id: int, host: str, timeout: float | None = None) -> HostResult:
        """The job's result, once a worker finished it; a job that failed without one is ``failed``."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            state, found = self.poll_once(job_id)
            if found is not None:
                return found
            if state in ("failed", "cancelled", "aborted", "missing"):
                return HostResult(
                    host, Outcome.FAILED, Outcome.FAILED.exit_code, message=f"job {job_id} ended {state} with no result"
                )
            if deadline is not None and time.monotonic() > deadline:
                return HostResult(
                    host,
                    Outcome.QUEUED,
                    Outcome.QUEUED.exit_code,
                    message=f"job {job_id} is still {state} after {timeout:g}s",
                )
            time.sleep(self.poll)


def _not_here(**_: Any) -> None:  # the enqueuer never runs jobs; a worker registers the real task
    raise RuntimeError("remediate jobs run in `remediate worker`")


def enqueuing(queue: Queue, verb: str, *, timeout: float | None = None, **job: Any) -> Callable[[Host], HostResult]:
    """The work of ``run|diagnose --limit --queue``: enqueue the host's job and wait for its result."""

    def work(host: Host) -> HostResult:
        began = time.monotonic()
        job_id = queue.enqueue(host, verb, **job)
        if job_id is None:
            message = f"an equal job for {host.name} is already queued; not enqueued twice"
            return HostResult(
                host.name, Outcome.REFUSED, Outcome.REFUSED.exit_code, cause=str(job.get("cause", "")), message=message
            )
        result = queue.wait(job_id, host.name, timeout)
        result.seconds = result.seconds or time.monotonic() - began
        return result

    return work
