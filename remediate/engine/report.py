"""A run's report: what happened on one host, its outcome and exit code, and what can start a run."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any

from remediate.engine.plan import Plan
from remediate.errors import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_REFUSED,
    EXIT_ROLLED_BACK,
    EXIT_UNVERIFIED,
)

__all__ = ["OUTCOME_EXIT", "TRIGGERS", "Report", "local_user"]

OUTCOME_EXIT = {
    "fixed": EXIT_OK,
    # Applied and committed, but nothing could be asked afterwards: no failing request in the window
    # to replay (none was GET/HEAD, or none named a plain-HTTP server) and no probe_urls through it.
    "applied-unverified": EXIT_UNVERIFIED,
    "nothing-to-do": EXIT_OK,
    "planned": EXIT_OK,
    "refused": EXIT_REFUSED,
    "rolled-back": EXIT_ROLLED_BACK,
    "restored": EXIT_OK,  # a rollback the user asked for, done
    "failed": EXIT_FAILED,
}


#: What can start a run; recorded with who asked.
TRIGGERS = ("cli", "slack", "alertmanager", "api")


def local_user() -> str:
    """The user running this controller, as a run's ``requested_by`` when nobody else is named."""
    import getpass

    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid {os.getuid()}"


@dataclass
class Report:
    run_id: str
    host: str
    cause: str
    outcome: str = "failed"
    decision: dict[str, Any] = field(default_factory=dict)
    evidence: dict[str, Any] = field(default_factory=dict)
    plan: Plan = field(default_factory=Plan)
    steps: list[dict[str, Any]] = field(default_factory=list)
    recovered: list[dict[str, Any]] = field(default_factory=list)
    message: str = ""
    journal: str = ""
    round_trips: int = 0
    diagnosis: dict[str, Any] | None = None  # with --cause auto: the diagnosis that chose the cause
    requested_by: str = ""  # who asked: a user name, a Slack user id, an alert fingerprint
    trigger: str = "api"  # why: cli, slack, alertmanager, api

    @property
    def exit_code(self) -> int:
        return OUTCOME_EXIT[self.outcome]

    def step(self, name: str, ok: bool, detail: str, started: float) -> None:
        self.steps.append({"step": name, "ok": ok, "detail": detail, "seconds": round(time.monotonic() - started, 3)})

    def to_json(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "host": self.host,
            "cause": self.cause,
            "requested_by": self.requested_by,
            "trigger": self.trigger,
            "outcome": self.outcome,
            "message": self.message,
            "decision": self.decision,
            "changes": self.plan.to_json()["changes"],
            "actions": self.plan.to_json()["actions"],
            "evidence": self.evidence,
            "steps": self.steps,
            "recovered": self.recovered,
            "journal": self.journal,
            "round_trips": self.round_trips,
            **({"diagnosis": self.diagnosis} if self.diagnosis is not None else {}),
        }
