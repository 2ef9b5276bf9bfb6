"""remediate.nginx.fix: remediate's guarded fix of one cause (or auto) on the task's host, from the controller."""

from __future__ import annotations

from typing import Any

from ansible.plugins.action import ActionBase


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _requires_connection = False  # remediate does its own SSH, with the inventory's keys and verified host keys
    _VALID_ARGS = frozenset(("cause", "since", "inventory", "playbooks", "accept_new_host_key", "insecure_tls"))

    def run(self, tmp: Any = None, task_vars: dict[str, Any] | None = None) -> dict[str, Any]:
        result: dict[str, Any] = super().run(tmp, task_vars)
        task_vars = task_vars or {}
        args = dict(self._task.args)
        try:
            from ansible_collections.remediate.nginx.plugins.module_utils.remediate_task import (
                open_remediate,
                result_of,
            )
            from remediate.errors import RemediateError
        except ImportError as exc:
            missing = f"remediate is not installed on the controller ({exc}): pip install remediate"
            return {**result, "failed": True, "msg": missing}
        check = bool(self._task.check_mode)
        cause = str(args.get("cause") or "")
        if not cause:
            return {**result, "failed": True, "msg": "cause is required (socket, down, ..., or auto)"}
        host = task_vars["inventory_hostname"]
        try:
            with open_remediate(task_vars, args) as rem:
                report = rem.run(
                    host, cause, check=check, yes=not check, since=args.get("since"),
                    insecure_tls=bool(args.get("insecure_tls", False)),
                )  # fmt: skip
        except (RemediateError, ValueError) as exc:
            return {**result, "failed": True, "msg": f"remediate: {exc}"}
        result.update(result_of(report.to_json(), check))
        if self._task.diff and not report.plan.empty:
            then = "".join(f"# then: {action.describe()}\n" for action in report.plan.actions)
            result["diff"] = {"prepared": report.plan.diff() + then}
        return result
