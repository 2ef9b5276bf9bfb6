"""The job ledger of `remediate serve`: every job durably recorded, one at a time per host, in order.

A job is one thing a trigger asked for (diagnose, plan-and-ask, fix) on one host. It is written
to ``STATE/ledger.db`` (SQLite, WAL, ``synchronous=FULL``) before the trigger is answered, so a
2xx to Alertmanager means the job survives a crash. ``dedupe`` keys (an alert's fingerprint and
startsAt) are unique: the same alert delivered twice, or again after a restart, is the same job.

Workers :meth:`Ledger.claim` the oldest pending job whose host has no job running; so jobs for
one host run one at a time and in the order they came, and other hosts' jobs run beside them.
A job that was running when the service died goes back to pending on start (:meth:`resume`): a
run is safe to repeat (a fix already in place is not made again, and the host's journal
finishes or undoes what a killed run left).

Storm control reads the ledger too: :meth:`recent_fix` (the loop breaker: the same host and
cause fixed within the cool-down) and :meth:`runs_since` (a cap on runs per host per hour).
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from remediate.store import immediate, open_db

__all__ = ["MODES", "Job", "Ledger"]

MODES = ("diagnose", "approve", "fix", "run", "rollback", "status")
_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    host TEXT NOT NULL,
    cause TEXT NOT NULL,
    mode TEXT NOT NULL,
    trigger TEXT NOT NULL,
    requested_by TEXT NOT NULL,
    dedupe TEXT UNIQUE,
    state TEXT NOT NULL DEFAULT 'pending',
    created REAL NOT NULL,
    started REAL,
    ended REAL,
    worker TEXT,
    outcome TEXT,
    run_id TEXT,
    data TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS jobs_pending ON jobs (state, host, seq);
"""


@dataclass(frozen=True)
class Job:
    id: str
    host: str
    cause: str
    mode: str
    trigger: str
    requested_by: str
    state: str
    created: float
    started: float | None
    ended: float | None
    outcome: str | None
    run_id: str | None
    data: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "host": self.host,
            "cause": self.cause,
            "mode": self.mode,
            "trigger": self.trigger,
            "requested_by": self.requested_by,
            "state": self.state,
            "created": self.created,
            "started": self.started,
            "ended": self.ended,
            "outcome": self.outcome,
            "run_id": self.run_id,
            "data": self.data,
        }


_COLUMNS = "id, host, cause, mode, trigger, requested_by, state, created, started, ended, outcome, run_id, data"


def _job(row: tuple[Any, ...]) -> Job:
    fields = dict(zip(_COLUMNS.split(", "), row, strict=True))
    fields["data"] = json.loads(fields["data"] or "{}")
    return Job(**fields)


class Ledger:
    """The jobs in ``state_dir/ledger.db``. One instance per thread (SQLite connections are not shared)."""

    def __init__(self, state_dir: str | Path) -> None:
        self.path = Path(state_dir) / "ledger.db"
        self.db = open_db(self.path, _SCHEMA)

    def submit(
        self,
        host: str,
        cause: str,
        mode: str,
        *,
        trigger: str,
        requested_by: str,
        dedupe: str | None = None,
        data: dict[str, Any] | None = None,
    ) -> tuple[Job, bool]:
        """Record a job, durably; (the job, True), or (the job already recorded under ``dedupe``, False)."""
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
        job_id = uuid.uuid4().hex[:16]
        with immediate(self.db):
            if dedupe is not None:
                row = self.db.execute(f"SELECT {_COLUMNS} FROM jobs WHERE dedupe = ?", (dedupe,)).fetchone()
                if row is not None:
                    return _job(row), False
            self.db.execute(
                "INSERT INTO jobs (id, host, cause, mode, trigger, requested_by, dedupe, created, data) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (job_id, host, cause, mode, trigger, requested_by, dedupe, time.time(), json.dumps(data or {})),
            )
        return self.get(job_id), True

    def get(self, job_id: str) -> Job:
        row = self.db.execute(f"SELECT {_COLUMNS} FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if row is None:
            raise KeyError(job_id)
        return _job(row)

    def jobs(self, *, limit: int = 100) -> list[Job]:
        rows = self.db.execute(f"SELECT {_COLUMNS} FROM jobs ORDER BY seq DESC LIMIT ?", (limit,))
        return [_job(row) for row in rows]

    def claim(self, worker: str) -> Job | None:
        """The oldest pending job whose host has nothing running, now running under ``worker``; or None."""
        with immediate(self.db):  # two workers never claim the same job, or two jobs of one host
            row = self.db.execute(
                "SELECT id FROM jobs AS j WHERE state = 'pending' AND NOT EXISTS "
                "(SELECT 1 FROM jobs WHERE host = j.host AND state = 'running') "
                "AND seq = (SELECT MIN(seq) FROM jobs WHERE host = j.host AND state = 'pending') "
                "ORDER BY seq LIMIT 1"
            ).fetchone()
            if row is None:
                return None
            self.db.execute(
                "UPDATE jobs SET state = 'running', started = ?, worker = ? WHERE id = ?", (time.time(), worker, row[0])
            )
        return self.get(row[0])

    def finish(
        self,
        job_id: str,
        outcome: str,
        *,
        run_id: str | None = None,
        cause: str | None = None,
        data: dict[str, Any] | None = None,
    ) -> Job:
        """The job is over: its outcome (fixed, refused, ...), the run it made, the cause ``auto`` found."""
        job = self.get(job_id)
        merged = {**job.data, **(data or {})}
        self.db.execute(
            "UPDATE jobs SET state = 'done', ended = ?, outcome = ?, run_id = ?, cause = ?, data = ? WHERE id = ?",
            (time.time(), outcome, run_id, cause or job.cause, json.dumps(merged, default=str), job_id),
        )
        return self.get(job_id)

    def by_run(self, run_id: str) -> Job | None:
        row = self.db.execute(f"SELECT {_COLUMNS} FROM jobs WHERE run_id = ?", (run_id,)).fetchone()
        return _job(row) if row else None

    def last_fix(self, host: str) -> Job | None:
        """The last job that fixed anything on ``host``."""
        row = self.db.execute(
            f"SELECT {_COLUMNS} FROM jobs WHERE host = ? AND outcome = 'fixed' ORDER BY ended DESC LIMIT 1", (host,)
        ).fetchone()
        return _job(row) if row else None

    def resume(self) -> list[Job]:
        """On start: jobs a dead service left running go back to pending (a run is safe to repeat)."""
        rows = [r[0] for r in self.db.execute("SELECT id FROM jobs WHERE state = 'running'")]
        self.db.execute("UPDATE jobs SET state = 'pending', worker = NULL WHERE state = 'running'")
        return [self.get(job_id) for job_id in rows]

    def pending(self) -> int:
        return int(self.db.execute("SELECT COUNT(*) FROM jobs WHERE state IN ('pending', 'running')").fetchone()[0])

    def recent_fix(self, host: str, cause: str, within: float, *, before: str | None = None) -> Job | None:
        """The last job that fixed ``cause`` on ``host`` within ``within`` seconds (the loop breaker), if any."""
        row = self.db.execute(
            f"SELECT {_COLUMNS} FROM jobs WHERE host = ? AND cause = ? AND outcome = 'fixed' AND ended >= ? "
            "AND id != ? ORDER BY ended DESC LIMIT 1",
            (host, cause, time.time() - within, before or ""),
        ).fetchone()
        return _job(row) if row else None

    def runs_since(self, host: str, since: float) -> int:
        """How many jobs made a run on ``host`` since the epoch time ``since`` (the hourly cap)."""
        return int(
            self.db.execute(
                "SELECT COUNT(*) FROM jobs WHERE host = ? AND run_id IS NOT NULL AND started >= ?", (host, since)
            ).fetchone()[0]
        )

    def close(self) -> None:
        self.db.close()
