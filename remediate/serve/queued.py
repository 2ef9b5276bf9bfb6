"""`remediate serve` on the queue (``queue:``): its dispatcher, and its task on a worker.

The ledger (in the same database) stays the record: a job is in the ledger before the trigger is
answered, then deferred to Procrastinate; `remediate worker --config serve.yml` runs it.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from typing import TYPE_CHECKING, Any

from remediate.queue.producer import Queue
from remediate.queue.schema import (
    SERVE_QUEUE,
    SERVE_TASK,
    STALLED_AFTER,
    GiveUp,
    queue_of,
)
from remediate.queue.worker import Register
from remediate.stores.db import redact

if TYPE_CHECKING:
    from remediate.api import Remediate
    from remediate.serve.config import ServeConfig

_log = logging.getLogger("remediate.worker")
_service_log = logging.getLogger("remediate.queue")  # ServiceQueue, in `remediate serve`


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


def register(rem: Remediate, config: ServeConfig, url: str) -> Register:
    """The service's task for a worker (``remediate worker --config``): each ledger job run by the
    service's Runner, from the ``remediate-serve`` queues (remediate.queue.worker.run_worker's ``extra``)."""
    return functools.partial(_serve_jobs, rem=rem, config=config, url=url)


def _serve_jobs(app: Any, worker: str, *, rem: Remediate, config: ServeConfig, url: str) -> tuple[str, str, GiveUp]:
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

    return SERVE_TASK, SERVE_QUEUE, give_up
