"""Every collector by name, and the two steps of an evidence round over them: ask, then read.

Each module of this package that defines ``COLLECTORS`` is one family of collectors; the registry
finds them here, when it is imported, by listing the package (importing a collector module has no
effect on anything else). A new collector is a new module beside the others: nothing to register.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any

import remediate.evidence
from remediate.evidence.framework import Collector, Context, Request, new_request
from remediate.hosts.inventory import Host

__all__ = ["COLLECTORS", "build_request", "interpret"]


def _families() -> list[Any]:
    """The collector modules of this package (those that define COLLECTORS), by name."""
    found = []
    for info in sorted(pkgutil.iter_modules(remediate.evidence.__path__), key=lambda i: i.name):
        if info.name not in ("framework", "registry", "classify"):
            module = importlib.import_module(f"remediate.evidence.{info.name}")
            if hasattr(module, "COLLECTORS"):
                found.append(module)
    return found


#: Every collector a playbook may name, by name.
COLLECTORS: dict[str, Collector] = {
    collector.name: collector for module in _families() for collector in module.COLLECTORS
}


def build_request(host: Host, steps: list[tuple[str, str, dict[str, Any]]]) -> Request:
    req = new_request()
    for _, collect, args in steps:
        COLLECTORS[collect].ask(host, args, req)
    req["files"] = list(dict.fromkeys(req["files"]))
    return req


_LATE = ("unix_sockets", "refused_upstreams", "upstream_host")  # read after what they build on, in this order


def interpret(
    ctx: Context,
    steps: list[tuple[str, str, dict[str, Any]]],
    resp: dict[str, Any],
    remote: dict[str, dict[str, Any]] | None = None,
) -> Context:
    """Read every step's answer into ctx.values; ``remote`` holds second-phase answers by step name."""
    if any(s[1] == "unix_sockets" for s in steps) and not any(s[1] == "nginx_config" for s in steps):
        COLLECTORS["nginx_config"].read(ctx, {}, resp)
    order = sorted(steps, key=lambda s: (s[1] != "nginx_config", _LATE.index(s[1]) + 1 if s[1] in _LATE else 0))
    for name, collect, args in order:
        if COLLECTORS[collect].remote is not None:
            if remote is None:
                if COLLECTORS[collect].first is not None:
                    COLLECTORS[collect].first(ctx, args, resp)  # type: ignore[misc]
                continue  # second phase: read once the other host answered
            several = {k.split("#", 1)[1]: v for k, v in remote.items() if k.startswith(name + "#")}
            answer = several if several else remote.get(name, {})
        else:
            answer = resp
        ctx.values[name] = ctx.by_collector[collect] = COLLECTORS[collect].read(ctx, args, answer)
    return ctx
