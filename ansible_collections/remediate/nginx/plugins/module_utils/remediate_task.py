"""What the remediate.nginx action plugins share: open remediate on the play's inventory, shape results."""

from __future__ import annotations

from typing import Any

#: Outcomes that mean remediate changed files or services on the host.
CHANGED = ("fixed", "applied-unverified")
#: Outcomes that fail the task.
FAILED = ("rolled-back", "failed", "refused", "applied-unverified")


def open_remediate(task_vars: dict[str, Any], args: dict[str, Any]) -> Any:
    """remediate's API on the inventory the play was given (or ``inventory``), for this Ansible user."""
    import getpass

    from remediate import api

    inventory = args.get("inventory") or task_vars.get("inventory_file")
    if not inventory:
        raise ValueError("no inventory: give `inventory: PATH` (remediate reads the same YAML inventory)")
    return api.open(
        inventory,
        requested_by=f"ansible:{getpass.getuser()}",
        trigger="api",
        accept_new_host_key=bool(args.get("accept_new_host_key", False)),
        playbooks=list(args.get("playbooks") or []) or None,
    )


def result_of(report: dict[str, Any], check: bool) -> dict[str, Any]:
    """The task result of a remediate report (``Report.to_json()``)."""
    outcome = report.get("outcome", "failed")
    result: dict[str, Any] = {
        "outcome": outcome,
        "cause": report.get("cause"),
        "run_id": report.get("run_id"),
        "message": report.get("message", ""),
        "remediate": report,
        "changed": outcome == "planned" if check else outcome in CHANGED,
    }
    if outcome in FAILED:
        result["failed"] = True
        result["msg"] = f"remediate: {outcome}: {report.get('message') or 'see remediate.steps'}"
    else:
        result["msg"] = f"remediate: {outcome}" + (f": {report['message']}" if report.get("message") else "")
    return result
