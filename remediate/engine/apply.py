"""Applying a plan under guard.

The candidate is validated in a mount namespace first, then written, reloaded and probed, and
restored byte for byte if anything fails.
"""

from __future__ import annotations

import base64
import json
import time
from typing import Any

from remediate.engine.host_modules import validate_argv
from remediate.engine.plan import Action, Plan
from remediate.engine.report import Report
from remediate.engine.session import HelperSession, call_helper
from remediate.evidence.routing import pid_file
from remediate.hosts.inventory import Host
from remediate.nginx import NginxConfig
from remediate.outcomes import Outcome
from remediate.transport.base import Transport

__all__ = ["apply_plan", "validate_plan"]


def finish_report(report: Report, answer: dict[str, Any], reason: str, log: Any, where: str = "") -> None:
    """The outcome and message of an apply, from the helper's answer."""
    outcome = answer.get("outcome", "failed")
    report.outcome = Outcome.parse(outcome)
    if answer.get("failed_step"):
        report.message = f"{answer['failed_step']}{f' on {where}' if where else ''} failed: {answer.get('reason', '')}"
        report.message += "; " + _what_remains(answer)
    else:
        report.message = answer.get("reason", "") or (reason if report.outcome is Outcome.FIXED else "")
    log.info("apply", step="apply", outcome=report.outcome, steps=answer.get("steps"), reason=answer.get("reason"))


def _what_remains(answer: dict[str, Any]) -> str:
    """After a failed apply: what the host holds now, in the helper's own terms."""
    if answer.get("problems"):
        return f"RESTORE INCOMPLETE: {'; '.join(answer['problems'])} (journal: {answer.get('journal', '?')})"
    restored = answer.get("restored") or []
    if restored:
        return f"every file was restored byte for byte ({', '.join(restored)})"
    if not answer.get("written") and not answer.get("began"):
        return "nothing was changed"
    return "no file had been changed"


def apply_plan(
    transport: Transport,
    host: Host,
    plan: Plan,
    *,
    run_id: str,
    cause: str,
    probes: list[Any],
    config: NginxConfig | None = None,
    pause: float | None = None,
    session: HelperSession | None = None,
    who: Report | None = None,
) -> dict[str, Any]:
    """The guarded transaction, done by the helper on the host in one round trip.

    Compare-and-swap, validate the candidates (nginx -t, php-fpm -t) before they replace
    anything, back up, write atomically, reload nginx (confirmed by its new workers) and restart
    services, probe; on any failure after the first write restore every file written and run
    again only what had started. Returns the helper's answer: outcome, failed_step, reason,
    steps, written, restored, problems.
    """
    request = _apply_request(host, plan, run_id=run_id, cause=cause, config=config)
    request.update(probes=distinct_probes(probes), probe_budget=host["probe_budget"])
    if cause == "workers":  # out of connections, nginx answers 500 (ngx_http_upstream_connect fails outright)
        request["bad_statuses"] = [500, 502, 503, 504]
    if who is not None:  # the host's journal records who asked, and why
        request.update(requested_by=who.requested_by, trigger=who.trigger)
    if pause:
        request["test_pause_after_write"] = pause
    if session is not None:
        return session.call(request, timeout=600)
    return call_helper(transport, host, request, timeout=600)


def _apply_request(
    host: Host, plan: Plan, *, run_id: str, cause: str, config: NginxConfig | None, op: str = "apply"
) -> dict[str, Any]:
    validates = [
        {"name": f"{kind} -t", "argv": validate_argv(host, kind)}
        for kind in dict.fromkeys(c.validate for c in plan.changes)
        if kind != "none"
    ]
    actions: list[Action] = list(plan.actions)
    if any(c.validate == "nginx" for c in plan.changes):
        reload = Action(
            "reload",
            "nginx",
            tuple(host.nginx_reload_argv),
            pid_file=pid_file(host, config),
            error_log=host["nginx_error_log"],
        )
        actions.insert(0, reload)
    return {
        "op": op,
        "run_id": run_id,
        "cause": cause,
        "journal_dir": host["journal_dir"],
        "changes": [
            {
                "path": c.path,
                "before_sha": c.before_sha,
                "after_b64": base64.b64encode(c.after).decode(),
                "validate": c.validate,
                **({"like": c.like} if c.like else {}),
            }
            for c in plan.changes
        ],
        "validate": validates,
        "actions": [a.to_wire() for a in actions],
        "bad_statuses": [500, 502, 503, 504],
    }


def validate_plan(transport: Transport, host: Host, plan: Plan, session: HelperSession | None = None) -> dict[str, Any]:
    """Run the plan's checks (nginx -t, php-fpm -t) on the host against the candidate files, with
    nothing live changed: each candidate is bind-mounted over its file in a private mount
    namespace that ends with the check. Returns {"results": [...]} or {"unavailable": why}.
    Through ``session`` when the run has one open (no second helper start)."""
    request = _apply_request(host, plan, run_id="check", cause="check", config=None, op="validate")
    return session.call(request) if session is not None else call_helper(transport, host, request)


def check_candidate(
    transport: Transport, host: Host, plan: Plan, report: Report, session: HelperSession | None = None
) -> None:
    """--check: say whether the candidate passes its checks; a failing one makes the run a refusal."""
    if not any(c.validate != "none" for c in plan.changes):
        return
    started = time.monotonic()
    answer = validate_plan(transport, host, plan, session)
    if "unavailable" in answer:
        report.step("validate", True, f"not validated: {answer['unavailable']}", started)
        report.message += f"; the candidate was not validated ({answer['unavailable']})"
        return
    for res in answer.get("results", []):
        if res["exit"] != 0:
            words = str(res["words"])
            report.step(res["name"], False, words, started)
            report.outcome = Outcome.REFUSED
            report.message = (
                f"{host.name}: --check: this change would fail `{res['name']}`: {words}; nothing was written"
            )
            return
        report.step(res["name"], True, "the candidate passes (checked in a private mount namespace)", started)
    report.message = "--check: nothing was written; the candidate passes " + ", ".join(
        f"`{r['name']}`" for r in answer.get("results", [])
    )


def distinct_probes(probes: list[Any]) -> list[Any]:
    """Probe URLs and replay specs once each, in their first order."""
    return list({json.dumps(p, sort_keys=True): p for p in probes}.values())
