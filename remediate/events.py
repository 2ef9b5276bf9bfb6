"""The controller's journal: every step of a run as a structlog JSON event under one run_id.

Library code only binds context; this module configures where events go, once per run.
"""

from __future__ import annotations

import os
import secrets
import sys
import time
from pathlib import Path
from typing import Any, TextIO

__all__ = ["new_run_id", "open_journal", "state_dir"]


def state_dir() -> Path:
    base = os.environ.get("REMEDIATE_STATE_DIR") or os.path.join(
        os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state"), "remediate"
    )
    return Path(base)


def new_run_id() -> str:
    """Sortable and unique: UTC time plus randomness, safe as a file name on any host."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + secrets.token_hex(3)


def _structlog() -> Any:
    """structlog, without the rich its dev renderer imports when rich is installed (50-90 ms of every
    CLI run on this machine, measured; the journal is JSON lines and never uses that renderer).

    structlog.dev does ``try: import rich ... except ImportError``; a None in sys.modules makes that
    import fail for the moment structlog loads, and removing it lets anything else import rich later
    (the fleet view does). A process that loaded structlog already (the service) is not touched."""
    if "structlog" not in sys.modules and "rich" not in sys.modules:
        sys.modules["rich"] = None  # type: ignore[assignment]
        try:
            import structlog
        finally:
            del sys.modules["rich"]
    import structlog

    return structlog


def open_journal(run_id: str, **context: Any) -> tuple[Any, TextIO, Path]:
    """A structlog logger that appends JSON lines to ``STATE/runs/RUN_ID.jsonl``, with context bound."""
    structlog = _structlog()

    path = state_dir() / "runs" / f"{run_id}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    fh = path.open("a", encoding="utf-8")
    logger = structlog.wrap_logger(
        structlog.PrintLogger(fh),
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.JSONRenderer(sort_keys=False, default=str),
        ],
    )
    return logger.bind(run_id=run_id, **context), fh, path
