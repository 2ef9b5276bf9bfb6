"""Evidence: the collector framework. Named collectors, batched into one round trip, then interpreted.

A collector says what it needs from the host (commands, files, stats, the error log's window)
and how to read the answer into a value the playbook's Jinja can use. All the collectors of a
run (or of every candidate playbook, in a diagnosis) ask in one request, so evidence costs one
SSH round trip however many there are; a collector that must ask another host (or nginx's host
again, with what the first answer said) does so in a second phase, one round trip per host.

The collectors themselves live beside this module, one module per cause or evidence family:
``routing`` (nginx's config and the questions asked of it), ``window`` (the error log's window),
``socket``, ``down``, ``proxy_pass``, ``timeout``, ``dns``, ``response``, ``workers``, ``hardening``;
remediate.evidence.registry names them all and asks and reads them. Every collector reads the error
log through remediate.evidence.classify: the same window, the same labels as ``remediate diagnose``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from remediate.evidence.classify import Line, classify_text
from remediate.hosts.inventory import Host, Inventory
from remediate.nginx import NginxConfig

__all__ = [
    "Collector",
    "Context",
    "Hit",
    "Log",
    "error_log_of",
    "log_hits",
    "new_request",
    "no_ask",
    "summary",
    "to_json",
]


@dataclass
class Context:
    """Everything a playbook may look at: the host's vars and each named piece of evidence."""

    host: Host
    values: dict[str, Any] = field(default_factory=dict)
    files: dict[str, bytes] = field(default_factory=dict)  # exact bytes, for planning edits
    stats: dict[str, dict[str, Any]] = field(default_factory=dict)
    config: NginxConfig | None = None
    by_collector: dict[str, Any] = field(default_factory=dict)
    inventory: Inventory | None = None
    #: location_for's answers, by (config, uri): collectors route the same log URIs many times.
    routes: dict[tuple[int, str], Any] = field(default_factory=dict, repr=False)

    def jinja(self) -> dict[str, Any]:
        return {"host": self.host.vars, "inventory_hostname": self.host.name, **self.values}


class Log:
    """A log's lines (the error log's window, or the access log's tail), with a ``grep`` playbooks can call."""

    def __init__(self, path: str, text: str) -> None:
        self.path = path
        self.text = text
        self.lines = [line for line in text.splitlines() if line.strip()]
        self._classified: list[Line] | None = None

    @property
    def classified(self) -> list[Line]:
        """The lines that show a cause, labelled by remediate.evidence.classify (as ``diagnose`` labels them)."""
        if self._classified is None:
            self._classified = list(classify_text(self.text))
        return self._classified

    def grep(self, pattern: str) -> list[str]:
        regex = re.compile(pattern)
        return [line for line in self.lines if regex.search(line)]

    def __bool__(self) -> bool:
        return bool(self.lines)

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "lines": len(self.lines), "last": self.lines[-3:]}


Request = dict[str, Any]


def new_request(**extra: Any) -> Request:
    """An empty ``collect`` request for the host helper; collectors add to it."""
    return {"op": "collect", "commands": {}, "files": [], "stats": [], "logs": [], **extra}


Asker = Callable[[Host, dict[str, Any], Request], None]
Reader = Callable[[Context, dict[str, Any], dict[str, Any]], Any]


@dataclass(frozen=True)
class Collector:
    name: str
    doc: str
    ask: Asker
    read: Reader
    #: Second phase: asks another host, using first-phase values: (host, request), a list of them (the read
    #: then gets {host name: answer}), or None.
    remote: Callable[[Context, dict[str, Any]], tuple[Host, Request] | list[tuple[Host, Request]] | None] | None = None
    #: For a second-phase collector: reads what its own ``ask`` fetched in the first phase.
    first: Callable[[Context, dict[str, Any], dict[str, Any]], None] | None = None


@dataclass(frozen=True)
class Hit:
    """One error-log line that matched a signature, with the fields nginx appends."""

    line: str
    match: re.Match[str]
    uri: str
    upstream: str  # the whole upstream URL nginx used, "" when the line has none
    time: str


FIELD_REQUEST = re.compile(r', request: \\?"(?P<method>[A-Z]+) (?P<uri>\S+)')
FIELD_UPSTREAM = re.compile(r', upstream: \\?"(?P<url>[^"\\]+)')


def error_log_of(ctx: Context) -> Log | None:
    log = ctx.by_collector.get("error_log")
    return log if isinstance(log, Log) else None


def log_hits(ctx: Context, regex: re.Pattern[str], labels: tuple[str, ...]) -> list[Hit]:
    """The error-log lines the classifier labels with one of ``labels`` and ``regex`` matches, oldest first.

    The label says what the line means (from nginx's message table, on any platform and with any
    log prefix); ``regex`` only picks out the fields this collector needs."""
    log = error_log_of(ctx)
    hits = []
    for line in log.classified if log else []:
        if line.label in labels and (m := regex.search(line.text)):
            req = FIELD_REQUEST.search(line.text)
            up = FIELD_UPSTREAM.search(line.text)
            hits.append(Hit(line.text, m, req.group("uri") if req else "/", up.group("url") if up else "", line.time))
    return hits


def summary(hits: list[Hit]) -> dict[str, Any]:
    """How many lines, first and last seen, one example: the proof behind a verdict."""
    return {"count": len(hits), "first": hits[0].time, "last": hits[-1].time, "example": hits[-1].line}


def no_ask(host: Host, args: dict[str, Any], req: Request) -> None:
    """Reads what other collectors fetched; asks the host for nothing more."""


def to_json(value: Any) -> Any:
    """Evidence as JSON for --json and the journal."""
    if isinstance(value, Log):
        return value.to_json()
    if isinstance(value, dict):
        return {k: to_json(v) for k, v in value.items() if k != "settings"}
    if isinstance(value, list):
        return [to_json(v) for v in value]
    return value
