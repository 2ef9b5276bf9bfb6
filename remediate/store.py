"""The service's SQLite files (ledger, approvals, audit): opened one way, written in IMMEDIATE transactions."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["immediate", "open_db"]


def open_db(path: Path, schema: str) -> sqlite3.Connection:
    """``path`` in WAL mode with ``synchronous=FULL`` (what a caller was told is recorded survives a crash),
    autocommit outside :func:`immediate`, and ``schema`` applied."""
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, timeout=30, isolation_level=None)
    # Switching to WAL takes an exclusive lock and does not wait for one: do it only once per file.
    if db.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
        db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.executescript(schema)
    return db


@contextmanager
def immediate(db: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """A write transaction that takes the write lock at once: what is read inside cannot change before the write."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield db
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")
