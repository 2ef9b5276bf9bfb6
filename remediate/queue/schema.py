"""The queue's schema, its connection and its queues' names.

``queue init`` creates Procrastinate's schema and remediate's ``remediate_results`` table (and
migrates them); every other part connects through here and names queues the same way.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from remediate.errors import UsageError

if TYPE_CHECKING:
    import procrastinate
    import psycopg

    from remediate.hosts.inventory import Host


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
