"""An audit chain with records in it, for the tests of the chain and of `remediate audit`."""

from __future__ import annotations

from pathlib import Path

from remediate.stores.audit import Audit


def chain(directory: str | Path, n: int = 5) -> Audit:
    """An audit chain in ``directory`` (a state directory or a postgresql:// store) with ``n`` records."""
    audit = Audit(directory)
    for i in range(n):
        audit.append("trigger" if i % 2 == 0 else "outcome", f"U{i}", {"host": "web01", "n": i})
    return audit
