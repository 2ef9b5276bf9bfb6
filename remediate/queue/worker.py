"""The worker: run jobs from a zone's queue, write each result (the commit point), recover stalled jobs.

A worker killed mid-job leaves its job ``doing`` under a heartbeat that stops; every worker looks
for such stalled jobs and retries each once, then marks it failed. Another layer may register a
task of its own on the same worker (the service's ledger jobs: remediate.serve.queued.register).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from remediate.engine.fleet import HostResult
from remediate.errors import RemediateError
from remediate.outcomes import Outcome
from remediate.queue.schema import (
    HEARTBEAT,
    RECORD_PATIENCE,
    RETRIES,
    SERVE_TASK,
    STALLED_AFTER,
    TASK,
    GiveUp,
    _app,
    _connect,
    _libraries,
    _transient,
    zone_queue,
)

if TYPE_CHECKING:
    from remediate.api import Remediate

_log = logging.getLogger("remediate.worker")

#: Registers another layer's task on a worker's Procrastinate app: (app, worker name) -> (its task's
#: name, its queue's base name, how to give up one of its jobs).
Register = Callable[[Any, str], tuple[str, str, GiveUp]]


def run_worker(
    url: str,
    rem: Remediate,
    *,
    zone: str | None,
    concurrency: int,
    name: str | None = None,
    extra: Register | None = None,
) -> None:
    """Run jobs from ``zone``'s queue (or the default queue) until SIGINT/SIGTERM; with ``extra``, the
    task it registers too, from its own queue (remediate.serve.queued.register: the service's jobs)."""

    app = _app(url)
    worker_name = name or f"{socket.gethostname()}-{os.getpid()}"
    settle: dict[str, GiveUp] = {TASK: lambda job, message: _give_up(url, job, message, worker_name)}

    from remediate.api import diagnosing, fixing

    def host_job(context: Any, /, *, host: str, verb: str, **job: Any) -> None:
        started = time.time()
        mine = rem.acting_for(job.pop("requested_by", rem.requested_by), job.pop("trigger", "cli"))
        try:
            target = rem.host(host)
        except RemediateError as exc:  # not in this worker's inventory: the job's answer, not a crash
            result = HostResult(host, Outcome.BAD_INPUT, exc.exit_code, message=f"worker {worker_name}: {exc}")
        else:
            if verb == "diagnose":
                result = diagnosing(mine, float(job.get("since", 900)))(target)
            else:
                result = fixing(mine, job.pop("cause"), **job)(target)
        _record(url, context.job, verb, result, worker_name, started)

    app.task(name=TASK, pass_context=True)(host_job)
    queues = [zone_queue(zone)]
    if extra is not None:
        task, base, give_up = extra(app, worker_name)
        settle[task] = give_up
        queues.append(zone_queue(zone, base))

    async def main() -> None:
        transient = _transient()
        while True:
            try:
                async with app.open_async():
                    stalls = asyncio.create_task(_recover_stalled(app, url, queues, settle))
                    try:
                        await app.run_worker_async(
                            queues=queues,
                            concurrency=concurrency,
                            name=worker_name,
                            update_heartbeat_interval=HEARTBEAT,
                            stalled_worker_timeout=STALLED_AFTER,
                            install_signal_handlers=True,
                        )
                        return  # stopped by SIGTERM / SIGINT
                    finally:
                        stalls.cancel()
            except transient as exc:
                # The database went away (a restart, a failover): start again once it answers. Jobs
                # this worker held are found stalled and settled from their results (see above).
                said = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                _log.warning("worker %s: the queue's database failed (%s); reconnecting", worker_name, said)
                await asyncio.sleep(1.0)

    asyncio.run(main())


def _give_up(url: str, job: Any, message: str, worker: str) -> None:
    result = HostResult(job.task_kwargs.get("host", "?"), Outcome.FAILED, Outcome.FAILED.exit_code, message=message)
    _record(url, job, job.task_kwargs.get("verb", "run"), result, worker, time.time())


def _record(url: str, job: Any, verb: str, result: HostResult, worker: str, started: float) -> None:
    """Write the job's result: the commit point of a job. Postgres away (restarting) is waited for, whether it
    refuses the connection or drops it during the write (AdminShutdown is an OperationalError): the write
    is idempotent (ON CONFLICT on the job's id), so it is simply made again."""
    from remediate.errors import HostUnreachable

    _, pg = _libraries()
    deadline = time.monotonic() + RECORD_PATIENCE
    while True:
        try:
            return _write_result(url, job, verb, result, worker, started)
        except (HostUnreachable, pg.OperationalError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def _write_result(url: str, job: Any, verb: str, result: HostResult, worker: str, started: float) -> None:
    from psycopg.types.json import Jsonb

    with _connect(url) as conn:
        conn.execute(
            "INSERT INTO remediate_results (job_id, host, verb, cause, outcome, exit_code, seconds, run_id, "
            "message, report, worker, attempt, started_at) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, to_timestamp(%s)) "
            "ON CONFLICT (job_id) DO UPDATE SET outcome = EXCLUDED.outcome, exit_code = EXCLUDED.exit_code, "
            "cause = EXCLUDED.cause, seconds = EXCLUDED.seconds, run_id = EXCLUDED.run_id, "
            "message = EXCLUDED.message, report = EXCLUDED.report, worker = EXCLUDED.worker, "
            "attempt = EXCLUDED.attempt, started_at = EXCLUDED.started_at, finished_at = now()",
            (
                job.id,
                result.host,
                verb,
                result.cause,
                result.outcome,
                result.exit_code,
                result.seconds,
                result.run_id,
                result.message,
                Jsonb(result.report) if result.report is not None else None,
                worker,
                job.attempts,
                started,
            ),
        )


def _has_result(url: str, job: Any) -> bool:
    """Did the job reach its commit point: a result row (fleet jobs), a ledger job done (the service's)?"""
    with _connect(url) as conn:
        if job.task_name == SERVE_TASK:
            query, key = "SELECT 1 FROM remediate.jobs WHERE id = %s AND state = 'done'", job.task_kwargs.get("job")
        else:
            query, key = "SELECT 1 FROM remediate_results WHERE job_id = %s", job.id
        return conn.execute(query, (key,)).fetchone() is not None


async def _recover_stalled(app: Any, url: str, queues: list[str], settle: dict[str, GiveUp]) -> None:
    """Every heartbeat: retry the jobs of workers that went silent (once), then mark them failed."""
    from procrastinate.jobs import Status

    _TRANSIENT = _transient()
    while True:
        await asyncio.sleep(HEARTBEAT)
        try:
            stalled = []
            for queue in queues:
                stalled += await app.job_manager.get_stalled_jobs(queue=queue, seconds_since_heartbeat=STALLED_AFTER)
            for job in stalled:
                if await asyncio.to_thread(_has_result, url, job):
                    # Its result is written (the commit point); only the status was lost with the
                    # database or the worker. Running it again would run it twice.
                    await app.job_manager.finish_job(job, status=Status.SUCCEEDED, delete_job=False)
                    continue
                if job.attempts < RETRIES:
                    await app.job_manager.retry_job(job)
                    continue
                message = f"its worker died mid-job {job.attempts + 1} time(s); see the host's journal"
                await asyncio.to_thread(settle.get(job.task_name, settle[TASK]), job, message)
                await app.job_manager.finish_job(job, status=Status.FAILED, delete_job=False)
        except asyncio.CancelledError:
            raise
        except _TRANSIENT:  # Postgres away for a moment (restarting), or another worker got there first
            continue
