"""Runbook, Prevention: "Size worker_connections to your expected traffic" (and the open-files limit)."""

from __future__ import annotations

from collections.abc import Iterator

from remediate.harden.model import Finding, Subject, rule

RULE = "worker-sizing"
DEFAULT_CONNECTIONS = 512  # ngx_event_core_module


@rule(
    RULE,
    "warning",
    "Prevention: Size worker_connections to your expected traffic",
    "worker_connections beyond the open-files limit a worker has",
    fix="set worker_rlimit_nofile to twice worker_connections",
)
def worker_sizing(subject: Subject) -> Iterator[Finding]:
    """Size worker_connections to your expected traffic. A conservative starting formula is:
    worker_processes * worker_connections >= peak concurrent connections * 2. (Each proxied request holds
    two connections, the client's and the upstream's, so a worker needs twice worker_connections open
    files; past that, accept() and connect() fail with "Too many open files" and the request gets 502.)"""
    config = subject.config
    events = config.find("events")
    found = config.find("worker_connections", events[-1]) if events else []
    connections = int(found[-1].args[0]) if found and found[-1].args and found[-1].args[0].isdigit() else None
    per_worker = connections or DEFAULT_CONNECTIONS
    where = found[-1] if found else (events[-1] if events else None)
    file, line = subject.main_line(where)
    rlimit = config.find("worker_rlimit_nofile")
    processes = config.directive_value("worker_processes") or ["1"]
    workers = subject.facts.get("cpus") if processes[0] == "auto" else None
    workers = workers or (int(processes[0]) if processes[0].isdigit() else None)
    total = f"; {workers} worker(s) x {per_worker} = {workers * per_worker} connections in all" if workers else ""
    if rlimit and rlimit[-1].args and rlimit[-1].args[0].isdigit():
        limit, source = int(rlimit[-1].args[0]), f"worker_rlimit_nofile {rlimit[-1].args[0]}"
        file, line = rlimit[-1].file, rlimit[-1].line
    elif isinstance(subject.facts.get("nofile"), int):
        limit, source = int(subject.facts["nofile"]), f"the master's open-files limit ({subject.facts['nofile']})"
    else:
        return  # offline, with no worker_rlimit_nofile: the limit is the host's, not known here
    # Proxied, each connection holds two files (client and upstream); serving files alone, one.
    factor, why = (2, "client and upstream") if subject.proxies() else (1, "one per client")
    if limit < factor * per_worker:
        yield Finding(RULE, "warning", file, line,
                      f"worker_connections {per_worker} needs {factor * per_worker} open files per worker ({why}), "
                      f"but {source} allows {limit}{total}",
                      f"worker_rlimit_nofile {factor * per_worker};", {"nofile": str(factor * per_worker)})  # fmt: skip
