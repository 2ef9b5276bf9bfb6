"""Fleet jobs on PostgreSQL through Procrastinate: ``queue init``, ``worker`` and ``--queue URL``.

We do not write a queue. Procrastinate's semantics are the ones a fix needs:

* a job's ``lock`` is ``host:NAME``, so two jobs for one host never run at once, whichever
  workers hold them (the host's own flock stays the backstop);
* a ``queueing_lock`` refuses a second job while the first still waits (``AlreadyEnqueued``): an
  alert delivered twice is one job;
* queues route jobs by zone: ``remediate`` for hosts with no ``remediate_zone``, ``remediate@ZONE``
  for the others, and a worker takes one zone's queue, so it sits next to its hosts.

Procrastinate keeps no task results, so a worker writes each job's HostResult to the table
``remediate_results`` in the same database (``queue init`` creates it), and whoever enqueued
waits on it. A worker killed mid-job leaves its job ``doing`` under a heartbeat that stops;
every worker looks for such stalled jobs and retries each once (at its next session the host's
helper recovers what the journal says was half made), then marks it failed.

Imported only by the commands that use the queue: ``pip install 'remediate[queue]'``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from remediate.engine.fleet import HostResult
from remediate.errors import InputError, RemediateError, UsageError
from remediate.stores.db import redact

if TYPE_CHECKING:
    import procrastinate
    import psycopg

    from remediate.api import Remediate
    from remediate.hosts.inventory import Host
    from remediate.serve.config import ServeConfig

__all__ = ["SERVE_TASK", "TASK", "Queue", "ServiceQueue", "init", "queue_of", "run_worker"]

_log = logging.getLogger("remediate.worker")
_service_log = logging.getLogger("remediate.queue")  # ServiceQueue, in `remediate serve`
#: A fleet job (``run|diagnose --limit --queue``): one host, one verb.
TASK = "remediate.host"
#: A job of `remediate serve` (a ledger job: its id is the only argument).
SERVE_TASK = "remediate.serve"
DEFAULT_QUEUE = "remediate"
SERVE_QUEUE = "remediate-serve"
#: A worker's heartbeat, and how long one may be silent before its jobs count as stalled.
HEARTBEAT = 2.0
STALLED_AFTER = 6.0
#: How many times a job whose worker died is tried again before it is marked failed.
RETRIES = 1
#: What a worker does with a job whose workers died too often: (the job, why) -> record it failed.
GiveUp = Callable[[Any, str], None]
#: How long a worker waits for the database to come back to write a job's result.
RECORD_PATIENCE = 120.0

_TABLES = """
CREATE TABLE IF NOT EXISTS remediate_results (
    job_id bigint PRIMARY KEY,
    host text NOT NULL,
    verb text NOT NULL,
    cause text NOT NULL DEFAULT '',
    outcome text NOT NULL,
    exit_code integer NOT NULL,
    seconds double precision NOT NULL,
    run_id text NOT NULL DEFAULT '',
    message text NOT NULL DEFAULT '',
    report jsonb,
    worker text NOT NULL,
    attempt integer NOT NULL DEFAULT 0,
    started_at timestamptz NOT NULL,
    finished_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS remediate_meta (key text PRIMARY KEY, value text NOT NULL);
"""


def _transient() -> tuple[type[BaseException], ...]:
    procrastinate, psycopg = _libraries()
    return (psycopg.Error, procrastinate.exceptions.ProcrastinateException, OSError)


def _libraries() -> tuple[Any, Any]:
    try:
        import procrastinate
        import psycopg
    except ImportError:
        raise UsageError("the queue needs the `queue` extra: pip install 'remediate[queue]'") from None
    return procrastinate, psycopg


def _check_url(url: str) -> str:
    if not re.match(r"^postgres(ql)?://", url):
        raise UsageError(f"--queue must be a postgresql:// URL (got {url.split('@')[-1]!r})")
    return url


def _open(url: str) -> psycopg.Connection[Any]:
    """One autocommit connection; a database that cannot be reached is one line, exit 6, without the password."""
    _, pg = _libraries()
    from remediate.errors import HostUnreachable

    try:
        conn: psycopg.Connection[Any] = pg.connect(_check_url(url), autocommit=True, connect_timeout=10)
    except pg.OperationalError as exc:
        said = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise HostUnreachable(f"the queue's database: {said}", host=url.split("@")[-1]) from None
    return conn


@contextlib.contextmanager
def _connect(url: str) -> Iterator[psycopg.Connection[Any]]:
    conn = _open(url)
    try:
        yield conn
    finally:
        conn.close()


def init(url: str) -> str:
    """Create (or bring up to this version) Procrastinate's schema and remediate's tables; what was done."""
    procrastinate, _ = _libraries()
    from procrastinate.schema import SchemaManager

    with _connect(url) as conn:
        present = conn.execute("SELECT to_regclass('procrastinate_jobs') IS NOT NULL").fetchone()
        conn.execute(_TABLES)
        row = conn.execute("SELECT value FROM remediate_meta WHERE key = 'procrastinate'").fetchone()
        version = procrastinate.__version__
        if not (present and present[0]):
            with conn.transaction():
                conn.execute(SchemaManager.get_schema())
                _remember(conn, version)
            return f"created the schema (procrastinate {version}) and remediate's tables"
        if row is None or _version(row[0]) >= _version(version):
            if row is None:
                _remember(conn, version)
            return f"the schema is already there (procrastinate {row[0] if row else version}); nothing to do"
        applied = _migrate(conn, row[0], version)
        return f"migrated the schema from procrastinate {row[0]} to {version} ({applied} migration(s))"


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", text)[:3])


def _remember(conn: psycopg.Connection[Any], version: str) -> None:
    conn.execute(
        "INSERT INTO remediate_meta (key, value) VALUES ('procrastinate', %s) "
        "ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
        (version,),
    )


def _migrate(conn: psycopg.Connection[Any], old: str, new: str) -> int:
    """Apply Procrastinate's migration files newer than ``old``, in order, in one transaction."""
    from pathlib import Path

    from procrastinate.schema import SchemaManager

    folder = Path(SchemaManager.get_migrations_path())
    files = sorted(f for f in folder.glob("*.sql") if _version(f.name[:8]) > _version(old))
    with conn.transaction():
        for path in files:
            conn.execute(path.read_text())
        _remember(conn, new)
    return len(files)


def queue_of(host: Host, base: str = DEFAULT_QUEUE) -> str:
    """The queue of ``host``'s jobs: its ``remediate_zone``'s, or the default queue."""
    return zone_queue(host.vars.get("remediate_zone"), base)


def zone_queue(zone: str | None, base: str = DEFAULT_QUEUE) -> str:
    """Fleet jobs go to ``remediate[@ZONE]``, the service's jobs to ``remediate-serve[@ZONE]``."""
    return f"{base}@{zone}" if zone else base


def _app(url: str) -> procrastinate.App:
    _libraries()
    from procrastinate import App, PsycopgConnector

    return App(connector=PsycopgConnector(conninfo=_check_url(url)))


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
            host, outcome, code, cause=cause, seconds=seconds, run_id=run_id, message=message, report=report
        )

    def wait(self, job_id: int, host: str, timeout: float | None = None) -> HostResult:
        """The job's result, once a worker finished it; a job that failed without one is ``failed``."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            state, found = self.poll_once(job_id)
            if found is not None:
                return found
            if state in ("failed", "cancelled", "aborted", "missing"):
                return HostResult(host, "failed", 1, message=f"job {job_id} ended {state} with no result")
            if deadline is not None and time.monotonic() > deadline:
                return HostResult(host, "queued", 1, message=f"job {job_id} is still {state} after {timeout:g}s")
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
            return HostResult(host.name, "refused", 3, cause=str(job.get("cause", "")), message=message)
        result = queue.wait(job_id, host.name, timeout)
        result.seconds = result.seconds or time.monotonic() - began
        return result

    return work


class ServiceQueue:
    """`remediate serve` with ``queue:``: the ledger's jobs go to Procrastinate; `remediate worker --config` runs them.

    The ledger (in the same database) stays the record: a job is in the ledger before the trigger
    is answered, then deferred with ``lock=host:NAME`` and ``queueing_lock`` = the alert's
    fingerprint and start (or the job id), on the host's zone's ``remediate-serve`` queue. A job
    recorded but never deferred (the service died between the two) is found by :meth:`sweep`,
    every few seconds, and deferred then; the worker starts a ledger job only once.
    """

    SWEEP_EVERY = 10.0
    #: A pending ledger job with no queue job for this long was never deferred.
    ORPHAN_AFTER = 30.0

    def __init__(self, url: str, inventory: Any) -> None:
        self.queue = Queue(url)
        self.inventory = inventory
        self._next_sweep = 0.0
        self._sweeping = threading.Lock()

    def queue_of(self, host: str) -> str:
        found = self.inventory.hosts.get(host)
        return queue_of(found, SERVE_QUEUE) if found is not None else SERVE_QUEUE

    def start(self) -> None:
        self._next_sweep = 0.0  # the first watch() sweeps: jobs a dead service recorded but never queued

    def submitted(self, job_id: str, host: str, dedupe: str | None = None) -> None:
        """Defer the ledger job ``job_id`` (just recorded); an equal one already waiting is the same job.
        If deferring fails, the job is recorded all the same: :meth:`sweep` queues it a little later."""
        try:
            self.queue._defer(SERVE_TASK, host, dedupe or f"job:{job_id}", self.queue_of(host), {"job": job_id})
        except Exception as exc:
            said = "job %s for %s is recorded but not queued yet (%s); the sweep queues it"
            _service_log.warning(said, job_id, host, exc)

    def sweep(self) -> int:
        """Defer the pending ledger jobs that have no queue job; how many."""
        rows = self.queue._query(
            "SELECT j.id, j.host, j.dedupe FROM remediate.jobs j WHERE j.state = 'pending' AND j.created < %s "
            "AND NOT EXISTS (SELECT 1 FROM procrastinate_jobs p WHERE p.task_name = %s AND p.args->>'job' = j.id)",
            (time.time() - self.ORPHAN_AFTER, SERVE_TASK),
        )
        for job_id, host, dedupe in rows:
            _service_log.warning("job %s for %s was recorded but never queued; queueing it now", job_id, host)
            self.submitted(job_id, host, dedupe)
        return len(rows)

    def watch(self) -> None:
        """Called every second or so: start a sweep in the background when one is due."""
        if time.monotonic() < self._next_sweep or not self._sweeping.acquire(blocking=False):
            return
        self._next_sweep = time.monotonic() + self.SWEEP_EVERY

        def sweep() -> None:
            try:
                self.sweep()
            except Exception as exc:  # the database away: the next sweep tries again
                _service_log.warning("sweep failed: %s", exc)
            finally:
                self._sweeping.release()

        threading.Thread(target=sweep, name="remediate-sweep", daemon=True).start()

    def health(self) -> dict[str, Any]:
        """The database answers (jobs can be recorded); how many workers (any zone) beat recently."""
        rows = self.queue._query(
            "SELECT count(*) FROM procrastinate_workers WHERE last_heartbeat > now() - make_interval(secs => %s)",
            (STALLED_AFTER,),
        )
        return {"ok": True, "workers": int(rows[0][0]), "queue": redact(self.queue.url)}

    def states(self, job_ids: list[str]) -> dict[str, dict[str, Any]]:
        """Each ledger job's queue job: its queue (zone), status and attempts."""
        rows = self.queue._query(
            "SELECT args->>'job', id, queue_name, status::text, attempts FROM procrastinate_jobs "
            "WHERE task_name = %s AND args->>'job' = ANY(%s) ORDER BY id",
            (SERVE_TASK, job_ids),
        )
        return {r[0]: {"id": r[1], "queue": r[2], "status": r[3], "attempts": r[4]} for r in rows}

    def stop(self) -> None:
        self.queue.close()


# -- the worker ---------------------------------------------------------------------------


def run_worker(
    url: str,
    rem: Remediate,
    *,
    zone: str | None,
    concurrency: int,
    name: str | None = None,
    serve: ServeConfig | None = None,
) -> None:
    """Run jobs from ``zone``'s queue (or the default queue) until SIGINT/SIGTERM; with ``serve`` (a
    service's config), the service's jobs too."""

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
            result = HostResult(host, "bad-input", exc.exit_code, message=f"worker {worker_name}: {exc}")
        else:
            if verb == "diagnose":
                result = diagnosing(mine, float(job.get("since", 900)))(target)
            else:
                result = fixing(mine, job.pop("cause"), **job)(target)
        _record(url, context.job, verb, result, worker_name, started)

    app.task(name=TASK, pass_context=True)(host_job)
    queues = [zone_queue(zone)]
    if serve is not None:
        settle[SERVE_TASK] = _serve_jobs(app, rem, serve, url, worker_name)
        queues.append(zone_queue(zone, SERVE_QUEUE))

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


def _serve_jobs(app: Any, rem: Remediate, config: ServeConfig, url: str, worker: str) -> GiveUp:
    """Register the service's task (a ledger job, run by the service's Runner); how to give one up."""
    from remediate.serve.jobs import Runner, Stores
    from remediate.serve.notify import Notifier

    stores = Stores(url)
    stores.create()
    runner = Runner(config, rem, stores, Notifier(config.slack))

    def serve_job(context: Any, /, *, job: str) -> None:
        # attempts > 0: the job was given back after its worker died, so the ledger still says running.
        claimed = stores.ledger.start(job, worker, again=context.job.attempts > 0)
        if claimed is None:
            _log.info("ledger job %s was started already; not running it twice", job)
            return
        runner.execute(claimed)

    app.task(name=SERVE_TASK, pass_context=True)(serve_job)

    def give_up(job: Any, message: str) -> None:
        ledger_id = job.task_kwargs.get("job", "?")
        try:
            done = stores.ledger.finish(ledger_id, "failed", data={"message": message})
        except KeyError:
            return
        stores.audit.append("outcome", done.requested_by, {"job": done.id, "host": done.host, "cause": done.cause,
                                                           "mode": done.mode, "outcome": "failed",
                                                           "message": message})  # fmt: skip

    return give_up


def _give_up(url: str, job: Any, message: str, worker: str) -> None:
    result = HostResult(job.task_kwargs.get("host", "?"), "failed", 1, message=message)
    _record(url, job, job.task_kwargs.get("verb", "run"), result, worker, time.time())


def _record(url: str, job: Any, verb: str, result: HostResult, worker: str, started: float) -> None:
    """Write the job's result: the commit point of a job. Postgres away (restarting) is waited for."""
    from remediate.errors import HostUnreachable

    deadline = time.monotonic() + RECORD_PATIENCE
    while True:
        try:
            return _write_result(url, job, verb, result, worker, started)
        except HostUnreachable:
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
