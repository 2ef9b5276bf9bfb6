"""Every change is a value first: planned, shown as a diff, and only then applied."""

from __future__ import annotations

import difflib
import hashlib
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Action", "Change", "Plan"]


@dataclass(frozen=True)
class Change:
    """Replace the bytes of ``path`` (``before``, as read from the host) with ``after``."""

    path: str
    before: bytes | None  # None: the file does not exist yet (a drop-in remediate creates)
    after: bytes
    validate: str  # "nginx" or "php-fpm": which test must pass before the change stands
    host: str | None = None  # another inventory host (None: the run's own host)
    like: str | None = None  # a new file takes this file's owner and mode (a log beside nginx's logs)

    @property
    def before_sha(self) -> str | None:
        return None if self.before is None else hashlib.sha256(self.before).hexdigest()

    def diff(self) -> str:
        before = (self.before or b"").decode("utf-8", "replace").splitlines(keepends=True)
        after = self.after.decode("utf-8", "replace").splitlines(keepends=True)
        a, b = (f"{self.host}:", f"{self.host}:") if self.host else ("a", "b")  # another host's file says whose
        lines = difflib.unified_diff(
            before, after, "/dev/null" if self.before is None else f"{a}{self.path}", f"{b}{self.path}"
        )
        return "".join(line if line.endswith("\n") else line + "\n" for line in lines)


@dataclass(frozen=True)
class Action:
    """A service action the plan needs: reload nginx, or restart a service."""

    kind: str  # "reload" | "restart"
    service: str
    argv: tuple[str, ...]
    wait_socket: str | None = None
    pid_file: str | None = None
    host: str | None = None  # another inventory host (None: the run's own host)
    wait_port: str | None = None  # host:port that must accept connections after a restart
    log_argv: tuple[str, ...] = ()  # shows the service's own log when the restart fails
    timeout: float = 30.0
    expect_http: str | None = None  # after a restart this URL must answer valid HTTP, or the run refuses
    error_log: str | None = None  # reload: nginx's error log, where a rejected reload shows at once
    failed_argv: tuple[str, ...] = ()  # exits 0 once the service manager says it failed: stop waiting then

    def describe(self) -> str:
        where = f" on {self.host}" if self.host else ""
        what = f"{self.kind} {self.service}{where}: {' '.join(self.argv)}"
        wait = self.wait_socket or self.wait_port
        then = [f"wait for {wait}"] if wait else []
        then += [f"expect valid HTTP from {self.expect_http}"] if self.expect_http else []
        return what + (f" (then {', then '.join(then)})" if then else "")

    def to_wire(self) -> dict[str, Any]:
        wire: dict[str, Any] = {"kind": self.kind, "service": self.service, "argv": list(self.argv)}
        if self.wait_socket:
            wire["wait_socket"] = self.wait_socket
        if self.pid_file:
            wire["pid_file"] = self.pid_file
        if self.wait_port:
            wire["wait_port"] = self.wait_port
        if self.failed_argv:
            wire["failed_argv"] = list(self.failed_argv)
        if self.log_argv:
            wire["log_argv"] = list(self.log_argv)
        if self.error_log:
            wire["error_log"] = self.error_log
        if self.expect_http:
            wire["expect_http"] = {"url": self.expect_http, "timeout": 3, "max_bytes": 4096}
        wire["timeout"] = self.timeout
        return wire


@dataclass
class Plan:
    changes: list[Change] = field(default_factory=list)
    actions: list[Action] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not self.changes and not self.actions

    def add(self, other: Plan) -> None:
        for change in other.changes:
            existing = next(
                (i for i, c in enumerate(self.changes) if (c.host, c.path) == (change.host, change.path)), None
            )
            if existing is None:
                self.changes.append(change)
            else:  # two steps edit one file: the later one builds on the earlier
                first = self.changes[existing]
                self.changes[existing] = Change(change.path, first.before, change.after, change.validate, change.host)
        for action in other.actions:
            if action not in self.actions:
                self.actions.append(action)

    def diff(self) -> str:
        return "".join(c.diff() for c in self.changes)

    def to_json(self) -> dict[str, Any]:
        return {
            "changes": [
                {"path": c.path, "diff": c.diff(), **({"host": c.host} if c.host else {})} for c in self.changes
            ],
            "actions": [a.describe() for a in self.actions],
        }
