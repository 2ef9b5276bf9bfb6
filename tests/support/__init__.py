"""What the tests share that is not a fixture: the lab helpers (lab), the running service and its
fake Slack and Alertmanager (serving), Debian's PostgreSQL in a temporary directory (pg).

Fixtures stay in tests/conftest.py; tests import these by name (``from support.lab import ...``).
"""

from __future__ import annotations

from pathlib import Path

#: The repository's root, and its tests folder (the corpora are under it).
ROOT = Path(__file__).resolve().parent.parent.parent
TESTS = ROOT / "tests"
