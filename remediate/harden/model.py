"""What the hardening rules look at, and the small questions they all ask of it.

A :class:`Subject` is one nginx configuration (every file, includes linked: remediate.nginx)
plus what is known about the host it runs on (``facts``: the master's open-files limit, the
upstream services' restart settings; empty when the config is read from a file offline). A rule
is a pure function from a Subject to :class:`Finding` s; it never reads a disk or a host.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from remediate.hosts import values
from remediate.nginx.config import PASS_DIRECTIVES, NginxConfig
from remediate.nginx.parser import Directive

__all__ = [
    "RULES",
    "SEVERITIES",
    "Finding",
    "Rule",
    "Subject",
    "effective",
    "pass_host",
    "rule",
    "seconds",
]

#: Severities, least to most severe (SARIF's levels: note, warning, error).
SEVERITIES = ("info", "warning", "error")


@dataclass(frozen=True)
class Finding:
    rule: str
    severity: str
    file: str
    line: int
    message: str
    fix: str = ""
    #: What a fix needs: the blocks it goes into by kind (``server``, ``location``, ``http``, ``directive``:
    #: file:line), or a value (``nofile``).
    at: dict[str, str] = field(default_factory=dict, compare=False)

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"

    def to_json(self) -> dict[str, Any]:
        return {"rule": self.rule, "severity": self.severity, "file": self.file, "line": self.line,
                "message": self.message, "fix": self.fix, "at": dict(self.at)}  # fmt: skip


@dataclass
class Subject:
    config: NginxConfig
    #: Read on the host: ``nofile`` (the master's soft limit), ``cpus``, ``services`` (name -> restart facts).
    facts: dict[str, Any] = field(default_factory=dict)

    def walk(self) -> Iterator[tuple[Directive, tuple[Directive, ...]]]:
        return self.config.walk()

    def main_line(self, block: Directive | None) -> tuple[str, int]:
        """Where a finding about ``block`` (None: the whole config) points."""
        if block is not None:
            return block.file, block.line
        http = self.config.http()
        if http is not None:
            return http.file, http.line
        first = self.config.files[self.config.main].directives  # a snippet: its first directive
        return (first[0].file, first[0].line) if first else (self.config.main, 1)

    def proxies(self, module: str | None = None) -> bool:
        """Does anything (in the ``http`` or ``stream`` block, if given) hand requests to an upstream?"""
        return any(
            d.name in PASS_DIRECTIVES and (module is None or (ctx and ctx[0].name == module)) for d, ctx in self.walk()
        )

    def upstreams(self) -> list[tuple[str, Directive]]:
        """Every ``upstream`` block, http's and stream's: (name, block)."""
        return [(d.args[0], d) for d, _ in self.walk() if d.name == "upstream" and d.args and d.block is not None]


@dataclass(frozen=True)
class Rule:
    id: str
    severity: str
    section: str
    title: str
    #: The runbook paragraph the rule enforces (the check function's docstring).
    why: str
    fix: str
    check: Callable[[Subject], Iterator[Finding]]


#: Every rule, by id, in the order their modules register them.
RULES: dict[str, Rule] = {}


def rule(
    id: str, severity: str, section: str, title: str, fix: str = ""
) -> Callable[[Callable[[Subject], Iterator[Finding]]], Callable[[Subject], Iterator[Finding]]]:
    """Register a rule: its id, default severity, the runbook section, a one-line title and, where a fix is
    safe, what the fix does. The function's docstring quotes the runbook."""

    def register(check: Callable[[Subject], Iterator[Finding]]) -> Callable[[Subject], Iterator[Finding]]:
        assert severity in SEVERITIES and id not in RULES
        why = " ".join((check.__doc__ or "").split())
        RULES[id] = Rule(id, severity, section, title, why, fix, check)
        return check

    return register


def effective(name: str, ctx: tuple[Directive, ...], config: NginxConfig) -> Directive | None:
    """The ``name`` directive in effect inside ``ctx`` (innermost block outwards, then the main context):
    nginx's inheritance for directives set at http, server and location level."""
    for block in reversed(ctx):
        found = config.find(name, block)
        if found:
            return found[-1]
    found = config.find(name)
    return found[-1] if found else None


def seconds(value: str) -> float | None:
    """An nginx time in seconds; None if it is not one (a rule skips what nginx would refuse anyway)."""
    try:
        return values.seconds(value)
    except ValueError:
        return None


@dataclass(frozen=True)
class Target:
    """Where a ``*_pass`` sends requests: its host part, what kind of thing that is, and whether nginx works
    it out per request (any variable in the argument: the name is then looked up among the upstreams, else
    resolved with the ``resolver`` in effect)."""

    host: str
    kind: str  # ip | unix | upstream | variable | name | none
    runtime: bool = False


def pass_host(target: str, upstreams: set[str]) -> Target:
    """The host of a ``*_pass`` argument (``http://name:8080/x``, ``name:9000``, ``unix:/run/x.sock``)."""
    runtime = "$" in target
    rest = re.sub(r"^[a-z]+://", "", target)
    if not rest:
        return Target("", "none")
    if rest.startswith("unix:"):
        return Target(rest, "unix", runtime)
    hostport = rest.split("/", 1)[0]
    if "$" in hostport:
        # 127.0.0.1:8081$uri or name:$port: the host itself is literal; $name or $a.$b: it is not.
        literal = re.match(r"^([^$:\[]+|\[[^]]+\])(?::\d*)?\$", hostport)
        if literal is None:
            return Target(hostport, "variable", True)
        hostport = literal.group(1)
    host = hostport[1:].split("]", 1)[0] if hostport.startswith("[") else hostport.rsplit(":", 1)[0]
    if hostport in upstreams:
        return Target(hostport, "upstream", runtime)
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return Target(host, "name", runtime)
    return Target(host, "ip", runtime)
