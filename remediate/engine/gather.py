"""The evidence round for one playbook.

One request to the host for every collector, then one to each other host that must be asked, all
read into one Context.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from remediate.engine.playbook import Playbook
from remediate.engine.session import Transports, answer_of, call_helper
from remediate.evidence.framework import Context
from remediate.evidence.registry import COLLECTORS, build_request, interpret
from remediate.hosts.inventory import Host, Inventory

__all__ = ["ask_hosts", "evidence_request", "finish_evidence", "gather", "read_evidence", "remote_asks"]


def evidence_request(host: Host, books: list[Playbook], *, since: float | None = None) -> dict[str, Any]:
    """One collect request for every step of ``books``: what each collector asks, merged."""
    request = build_request(host, [step for book in books for step in book.evidence])
    if since is not None and "window" in request:
        request["window"]["since"] = since
    return request


def read_evidence(
    host: Host, book: Playbook, answer: dict[str, Any], inventory: Inventory, options: dict[str, Any]
) -> Context:
    """The first phase of ``book``'s evidence, read from ``answer`` into a fresh Context."""
    ctx = Context(host, inventory=inventory, values={"options": dict(options)})
    return interpret(ctx, book.evidence, answer)


def remote_asks(ctx: Context, book: Playbook) -> dict[str, tuple[Host, dict[str, Any]]]:
    """The second phase: what ``book``'s collectors must ask another host (or nginx's host again), by step."""
    asks = {}
    for name, collect, args in book.evidence:
        asker = COLLECTORS[collect].remote
        target = asker(ctx, args) if asker else None
        if isinstance(target, list):  # several hosts: one ask each, read together (evidence.registry.interpret)
            asks.update({f"{name}#{other.name}": (other, request) for other, request in target})
        elif target is not None:
            asks[name] = target
    return asks


def ask_hosts(pool: Transports, run_id: str, asks: dict[str, tuple[Host, dict[str, Any]]]) -> dict[str, Any]:
    """Every second-phase request, in one round trip per host (a batch the helper runs side by side)."""
    by_host: dict[str, tuple[Host, dict[str, Any]]] = {}
    for key, (other, request) in asks.items():
        request.update(run_id=run_id, journal_dir=other["journal_dir"])
        by_host.setdefault(other.name, (other, {}))[1][key] = request
    answers: dict[str, Any] = {}
    for other, requests in by_host.values():
        batch = call_helper(pool.get(other), other, {"op": "batch", "requests": requests})
        for key, part in batch.get("answers", {}).items():
            answers[key] = answer_of(other, json.dumps(part).encode(), "batch", "")
    return answers


def finish_evidence(ctx: Context, book: Playbook, answer: dict[str, Any], remote: dict[str, Any]) -> Context:
    """Read the second phase (``remote``: answers by step name) into ``ctx``."""
    if any(COLLECTORS[c].remote for _, c, _ in book.evidence):
        ctx = interpret(ctx, [s for s in book.evidence if COLLECTORS[s[1]].remote], answer, remote=remote)
    return ctx


def gather(
    host: Host,
    book: Playbook,
    pool: Transports,
    first_call: Callable[[dict[str, Any]], dict[str, Any]],
    inventory: Inventory,
    *,
    run_id: str,
    since: float | None = None,
    options: dict[str, Any] | None = None,
) -> Context:
    """The whole round for ``book``: its request sent by ``first_call`` (a run sends it through its
    locked session), read, then the second phase asked of each other host, one round trip each.

    remediate.engine.diagnose.gather_candidates is the same round over every candidate playbook at once."""
    answer = first_call(evidence_request(host, [book], since=since))
    ctx = read_evidence(host, book, answer, inventory, options or {})
    return finish_evidence(ctx, book, answer, ask_hosts(pool, run_id, remote_asks(ctx, book)))
