"""A run's report: what happened on one host, its outcome and exit code, and what can start a run."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any

from remediate.engine.plan import Plan
from remediate.errors import UsageError
from remediate.outcomes import Outcome

__all__ = ["TRIGGERS", "Report", "check_trigger", "local_user"]

#: What can start a run; recorded with who asked.
TRIGGERS = ("cli", "slack", "alertmanager", "api")


def check_trigger(trigger: str) -> str:
    """``trigger`` if it is one of TRIGGERS; the one place that says so."""
    if trigger not in TRIGGERS:
        raise UsageError(f"trigger must be one of {', '.join(TRIGGERS)}, not {trigger!r}")
    return trigger


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
    outcome: Outcome = Outcome.FAILED
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
        return self.outcome.exit_code

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
