"""A playbook's fix → a Plan: each step's module, in order, each seeing the files as the steps before it left them."""

from __future__ import annotations

from remediate.engine.modules import MODULES
from remediate.engine.plan import Plan
from remediate.engine.playbook import Playbook, evaluate, render
from remediate.evidence.framework import Context
from remediate.nginx import NginxConfig

__all__ = ["plan_fix"]


def plan_fix(book: Playbook, fix: str, ctx: Context) -> Plan:
    """The plan of one fix: its steps in order (``when`` skips, ``loop`` repeats with ``item``),
    each seeing the files as the steps before it left them."""
    plan = Plan()
    for step in book.fixes[fix]:
        if step.when is not None and not evaluate(step.when, ctx):
            continue
        items = list(render(step.loop, ctx)) if step.loop is not None else [None]
        for item in items:
            ctx.values["item"] = item
            part = MODULES[step.module](ctx, render(step.args, ctx))
            plan.add(part)
            advance_files(ctx, part)  # the next step builds on this one's result
        ctx.values.pop("item", None)
    return plan


def advance_files(ctx: Context, part: Plan) -> None:
    """Let later fix steps see the files as the earlier steps left them."""
    if not part.changes:
        return
    for change in part.changes:
        if change.host is None:  # another host's file is not this host's (ctx.files holds the run's host)
            ctx.files[change.path] = change.after
    if ctx.config is not None and any(c.path in ctx.config.files for c in part.changes):
        files = {path: f.data for path, f in ctx.config.files.items()}
        files.update({c.path: c.after for c in part.changes if c.path in files})
        ctx.config = NginxConfig.from_files(files, ctx.config.main)
