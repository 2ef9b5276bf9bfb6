"""The audit chain: every trigger, decision, approval, denial, run and outcome, append-only and hash-chained.

Records live in the state directory's SQLite database (``audit.db``, WAL), one row each:
``seq``, ``at`` (UTC, ISO 8601), ``kind`` (trigger, decision, approval, denial, run, outcome, ...),
``actor`` (a Slack user id, an alert fingerprint, a local user), ``data`` (JSON), ``prev`` (the
previous record's hash) and ``hash``: sha256 over the canonical JSON of all the others. Triggers
in the database refuse UPDATE and DELETE, so the only way to change a record is to edit the file
behind remediate's back, and then the chain no longer verifies: :func:`verify` walks it from the
first record and names the first one whose hash, link or sequence is wrong.

Removing records from the end leaves a shorter chain that still verifies; ``audit show`` prints
the head hash so it can be kept elsewhere (a chat message, a ticket) and compared later.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from remediate.stores.db import Db, Schema, Where, open_db

__all__ = ["GENESIS", "Audit", "Record", "Verdict", "verify"]

#: The ``prev`` of the first record.
GENESIS = "0" * 64
_TABLE = """
CREATE TABLE IF NOT EXISTS audit (
    seq {seq} PRIMARY KEY,
    at TEXT NOT NULL,
    kind TEXT NOT NULL,
    actor TEXT NOT NULL,
    data TEXT NOT NULL,
    prev TEXT NOT NULL,
    hash TEXT NOT NULL
);
CREATE TRIGGER IF NOT EXISTS audit_no_update BEFORE UPDATE ON audit
BEGIN SELECT RAISE(ABORT, 'the audit chain is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_no_delete BEFORE DELETE ON audit
BEGIN SELECT RAISE(ABORT, 'the audit chain is append-only'); END;
"""
_SCHEMA = Schema(
    sqlite=_TABLE.format(seq="INTEGER"),
    postgres=_TABLE.format(seq="BIGINT").split("CREATE TRIGGER")[0]
    + """
CREATE OR REPLACE FUNCTION audit_append_only() RETURNS trigger LANGUAGE plpgsql AS
$$ BEGIN RAISE EXCEPTION 'the audit chain is append-only'; END $$;
CREATE OR REPLACE TRIGGER audit_no_change BEFORE UPDATE OR DELETE ON audit
FOR EACH ROW EXECUTE FUNCTION audit_append_only();
CREATE OR REPLACE TRIGGER audit_no_truncate BEFORE TRUNCATE ON audit
FOR EACH STATEMENT EXECUTE FUNCTION audit_append_only();
""",
)


@dataclass(frozen=True)
class Record:
    seq: int
    at: str
    kind: str
    actor: str
    data: dict[str, Any]
    prev: str
    hash: str

    def to_json(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "at": self.at,
            "kind": self.kind,
            "actor": self.actor,
            "data": self.data,
            "prev": self.prev,
            "hash": self.hash,
        }


def digest(seq: int, at: str, kind: str, actor: str, data: str, prev: str) -> str:
    """A record's hash: sha256 over the canonical JSON of its fields (``data`` as stored)."""
    body = json.dumps([seq, at, kind, actor, data, prev], separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(body.encode()).hexdigest()


@dataclass(frozen=True)
class Verdict:
    ok: bool
    records: int
    head: str
    bad_seq: int | None = None
    problem: str = ""


class Audit:
    """The chain in ``STATE/audit.db`` or PostgreSQL (remediate.stores.db); one writer at a time."""

    def __init__(self, where: Where) -> None:
        self.db = open_db(where, "audit", _SCHEMA)

    def append(self, kind: str, actor: str, data: dict[str, Any] | None = None) -> Record:
        """Add one record at the head of the chain, durably, and return it."""
        return self.extend([(kind, actor, data)])[0]

    def extend(self, entries: list[tuple[str, str, dict[str, Any] | None]]) -> list[Record]:
        """Add (kind, actor, data) records in order, in one transaction (one fsync): all of them, or none."""
        at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        records = []
        with self.db.write("audit"):  # the head cannot move between reading it and writing after it
            row = self.db.execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
            seq, prev = (row[0], row[1]) if row else (0, GENESIS)
            for kind, actor, data in entries:
                text = json.dumps(data or {}, sort_keys=True, separators=(",", ":"), default=str)
                seq, record_hash = seq + 1, digest(seq + 1, at, kind, actor, text, prev)
                self.db.execute(
                    "INSERT INTO audit (seq, at, kind, actor, data, prev, hash) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (seq, at, kind, actor, text, prev, record_hash),
                )
                records.append(Record(seq, at, kind, actor, data or {}, prev, record_hash))
                prev = record_hash
        return records

    def records(self) -> Iterator[Record]:
        for seq, at, kind, actor, data, prev, record_hash in self.db.execute(
            "SELECT seq, at, kind, actor, data, prev, hash FROM audit ORDER BY seq"
        ):
            yield Record(seq, at, kind, actor, _loads(data), prev, record_hash)

    def verify(self) -> Verdict:
        return verify(self.db)

    def close(self) -> None:
        self.db.close()


def _loads(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError:
        return {"unreadable": text[:200]}
    return value if isinstance(value, dict) else {"value": value}


def verify(db: Db) -> Verdict:
    """Walk the chain from its first record; the first record whose sequence, link or hash is wrong fails it."""
    expected_seq, prev, count = 1, GENESIS, 0
    rows = db.execute("SELECT seq, at, kind, actor, data, prev, hash FROM audit ORDER BY seq")
    for seq, at, kind, actor, data, record_prev, record_hash in rows:
        if seq != expected_seq:
            return Verdict(
                False, count, prev, seq, f"record {seq} follows record {expected_seq - 1}: records are missing"
            )
        if record_prev != prev:
            return Verdict(False, count, prev, seq, f"record {seq} does not link to record {seq - 1}'s hash")
        if digest(seq, at, kind, actor, data, record_prev) != record_hash:
            return Verdict(
                False, count, prev, seq, f"record {seq} ({kind} by {actor}) was changed after it was written"
            )
        prev, expected_seq, count = record_hash, seq + 1, count + 1
    return Verdict(True, count, prev)
