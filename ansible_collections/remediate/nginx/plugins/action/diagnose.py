"""remediate.nginx.diagnose: name the cause of the task's host's 502s, from the controller (changes nothing)."""

from __future__ import annotations

from typing import Any

from ansible.plugins.action import ActionBase


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _requires_connection = False  # remediate does its own SSH, with the inventory's keys and verified host keys
    _VALID_ARGS = frozenset(("since", "inventory", "playbooks", "accept_new_host_key"))

    def run(self, tmp: Any = None, task_vars: dict[str, Any] | None = None) -> dict[str, Any]:
        result: dict[str, Any] = super().run(tmp, task_vars)
        task_vars = task_vars or {}
        args = dict(self._task.args)
        try:
            from ansible_collections.remediate.nginx.plugins.module_utils.remediate_task import open_remediate
            from remediate.errors import RemediateError
        except ImportError as exc:
            missing = f"remediate is not installed on the controller ({exc}): pip install remediate"
            return {**result, "failed": True, "msg": missing}
        try:
            with open_remediate(task_vars, args) as rem:
                diagnosis = rem.diagnose(task_vars["inventory_hostname"], since=args.get("since") or "15m")
        except (RemediateError, ValueError) as exc:
            return {**result, "failed": True, "msg": f"remediate: {exc}"}
        found = diagnosis.to_json()
        result.update(
            changed=False,
            verdict=diagnosis.verdict,
            causes=list(diagnosis.causes),
            reason=diagnosis.reason,
            diagnosis=found,
            msg=f"remediate: {diagnosis.verdict}: {diagnosis.reason}",
        )
        return result
