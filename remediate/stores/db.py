"""Where the service keeps its ledger, approvals, replay cache and audit chain: SQLite files or PostgreSQL.

A store is named by *where*: a state directory (the embedded default: one SQLite file per store,
WAL, ``synchronous=FULL``) or a ``postgresql://`` URL (the schema ``remediate`` in that database,
beside Procrastinate's tables, when the service runs on the queue). Both speak the same SQL: the
stores write qmark (``?``) statements that both engines run, and only the tables' DDL differs
(:class:`Schema`). A write transaction that must not see its reads change (take the audit head,
claim a job, decide an approval) is :meth:`Db.write`: ``BEGIN IMMEDIATE`` on SQLite, a
self-conflicting table lock on PostgreSQL; both let readers through.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from remediate.errors import HostUnreachable, UsageError

__all__ = ["Db", "Schema", "Where", "errors", "is_postgres", "open_db", "redact"]

#: A state directory (SQLite) or a ``postgresql://`` URL.
Where = str | Path
#: The PostgreSQL schema that holds the stores' tables.
PG_SCHEMA = "remediate"
_PG_DDL_LOCK = 0x72656D65  # "reme": one process at a time creates the tables


def is_postgres(where: Where) -> bool:
    return isinstance(where, str) and re.match(r"^postgres(ql)?://", where) is not None


def redact(where: Where) -> str:
    """``where`` fit for a log line or a message: a URL without its user and password."""
    return f"postgresql://…@{str(where).rpartition('@')[2]}" if is_postgres(where) else str(where)


def errors() -> tuple[type[BaseException], ...]:
    """What a store raises when its engine fails (a locked or full disk, a database restarting)."""
    found: tuple[type[BaseException], ...] = (sqlite3.Error, OSError, HostUnreachable)
    try:
        import psycopg
    except ImportError:
        return found
    return (*found, psycopg.Error)


@dataclass(frozen=True)
class Schema:
    """A store's tables: ``sqlite`` DDL, and ``postgres`` DDL where PostgreSQL's differs."""

    sqlite: str
    postgres: str | None = None


class Db:
    """One connection to one store. :meth:`execute` takes qmark SQL on either engine and returns a cursor
    (``fetchone``, ``fetchall``, iteration, ``rowcount``). Not shared between threads."""

    def __init__(self, where: Where, name: str, schema: Schema) -> None:
        self.where, self.name, self.schema = where, name, schema
        self.dialect = "postgres" if is_postgres(where) else "sqlite"
        self.conn: Any = self._open_pg() if self.dialect == "postgres" else self._open_sqlite()

    # -- opening -------------------------------------------------------------------

    def _open_sqlite(self) -> sqlite3.Connection:
        path = Path(self.where) / f"{self.name}.db"  # several stores may share a file (ledger.db)
        path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(path, timeout=30, isolation_level=None)
        # Switching to WAL takes an exclusive lock and does not wait for one: do it only once per file.
        if db.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
            db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.executescript(self.schema.sqlite)
        return db

    def _open_pg(self) -> Any:
        try:
            import psycopg
        except ImportError:
            raise UsageError("a postgresql:// store needs the `queue` extra: pip install 'remediate[queue]'") from None
        try:
            conn = psycopg.connect(
                str(self.where), autocommit=True, connect_timeout=10, options=f"-c search_path={PG_SCHEMA},public"
            )
        except psycopg.OperationalError as exc:
            said = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise HostUnreachable(f"the store's database: {said}", host=redact(self.where)) from None
        with conn.transaction():  # concurrent CREATE ... IF NOT EXISTS can collide: one at a time
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_PG_DDL_LOCK,))
            conn.execute(f"CREATE SCHEMA IF NOT EXISTS {PG_SCHEMA}")
            conn.execute(self.schema.postgres or self.schema.sqlite)
        return conn

    # -- using ---------------------------------------------------------------------

    def execute(self, sql: str, params: tuple[Any, ...] | list[Any] = ()) -> Any:
        if self.dialect == "sqlite":
            return self.conn.execute(sql, params)
        if self.conn.closed or self.conn.broken:  # the server restarted: a new connection for this statement
            self.conn = self._open_pg()
        return self.conn.execute(sql.replace("%", "%%").replace("?", "%s"), tuple(params))

    @contextmanager
    def write(self, table: str) -> Iterator[Db]:
        """A write transaction that holds ``table``'s write lock from its first statement."""
        if self.dialect == "sqlite":
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                yield self
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise
            self.conn.execute("COMMIT")
            return
        if self.conn.closed or self.conn.broken:
            self.conn = self._open_pg()
        with self.conn.transaction():
            self.conn.execute(f"LOCK TABLE {table} IN SHARE ROW EXCLUSIVE MODE")
            yield self

    def close(self) -> None:
        self.conn.close()


def open_db(where: Where, name: str, schema: Schema) -> Db:
    """The store ``name`` at ``where`` (``where/NAME.db``, or the table set in PostgreSQL), its tables created."""
    return Db(where, name, schema)
