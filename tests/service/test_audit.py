"""The audit chain: append-only in SQLite or PostgreSQL, chained by sha256; tampering is found and named."""

from __future__ import annotations

import itertools
import json
import sqlite3
import threading
from pathlib import Path
from typing import Any

import psycopg
import pytest
from support.audit import chain
from support.lab import remediate_cli

from remediate.errors import EXIT_FAILED
from remediate.stores.audit import GENESIS, Audit, digest


def test_records_are_chained_and_verify(store: str | Path) -> None:
    """Each record carries the previous record's hash; a fresh chain verifies; the head is the last hash."""
    audit = chain(store)
    records = list(audit.records())
    assert [r.seq for r in records] == [1, 2, 3, 4, 5] and records[0].prev == GENESIS
    assert all(b.prev == a.hash for a, b in itertools.pairwise(records))
    stored = json.dumps(records[2].data, sort_keys=True, separators=(",", ":"))
    r = records[2]
    assert r.hash == digest(r.seq, r.at, r.kind, r.actor, stored, r.prev)
    verdict = audit.verify()
    assert verdict.ok and verdict.records == 5 and verdict.head == records[-1].hash


def _raw(store: str | Path) -> tuple[Any, type[Exception], str]:
    """A plain connection to the audit table behind remediate's back; the error its guard raises; how to drop it."""
    if isinstance(store, Path):
        guards = "DROP TRIGGER audit_no_update; DROP TRIGGER audit_no_delete;"
        return sqlite3.connect(store / "audit.db", isolation_level=None), sqlite3.IntegrityError, guards
    conn = psycopg.connect(store, autocommit=True, options="-c search_path=remediate")
    return conn, psycopg.errors.RaiseException, "ALTER TABLE audit DISABLE TRIGGER USER"


def test_the_database_refuses_updates_and_deletes(store: str | Path) -> None:
    """Append-only: the database itself (SQLite's triggers, PostgreSQL's) refuses UPDATE and DELETE on the
    audit table, and TRUNCATE on PostgreSQL."""
    chain(store).close()
    db, refused, _ = _raw(store)
    statements = ["UPDATE audit SET actor = 'U9' WHERE seq = 2", "DELETE FROM audit WHERE seq = 5"]
    if not isinstance(store, Path):
        statements.append("TRUNCATE audit")
    for statement in statements:
        with pytest.raises(refused, match="append-only"):
            db.execute(statement)
    db.close()
    assert Audit(store).verify().records == 5


@pytest.mark.parametrize(
    ("tamper", "bad", "says"),
    [
        ('UPDATE audit SET data = \'{"host":"web02","n":2}\' WHERE seq = 3', 3, "was changed after it was written"),
        ("UPDATE audit SET actor = 'U999' WHERE seq = 2", 2, "was changed after it was written"),
        ("DELETE FROM audit WHERE seq = 3", 4, "records are missing"),
        ("UPDATE audit SET prev = hash WHERE seq = 4", 4, "does not link to record 3"),
    ],
)
def test_tampering_with_one_record_fails_verify_and_names_it(
    store: str | Path, tamper: str, bad: int, says: str
) -> None:
    """Someone edits the store behind remediate's back (dropping the guards first): `audit verify` fails
    (exit 1) and names the first bad record, on SQLite and on PostgreSQL alike."""
    chain(store).close()
    db, _, guards = _raw(store)
    for statement in guards.split(";"):
        if statement.strip():
            db.execute(statement)
    db.execute(tamper)
    db.close()
    done = remediate_cli("audit", "verify", "--state", str(store))
    assert done.returncode == EXIT_FAILED, done.stdout + done.stderr
    assert f"BROKEN at record {bad}: " in done.stderr and says in done.stderr
    as_json = json.loads(remediate_cli("audit", "verify", "--state", str(store), "--json").stdout)
    assert as_json["ok"] is False and as_json["bad_record"] == bad


def test_writers_at_once_keep_one_chain(store: str | Path) -> None:
    """Several writers (threads with their own connections, as the service's workers) append at once: the
    chain stays one line, every record linked, none lost."""
    Audit(store).close()

    def write(k: int) -> None:
        audit = Audit(store)
        for i in range(25):
            audit.append("run", f"worker-{k}", {"i": i})
        audit.close()

    threads = [threading.Thread(target=write, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    audit = Audit(store)
    verdict = audit.verify()
    assert verdict.ok and verdict.records == 100
