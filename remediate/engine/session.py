"""The session with the host-side helper.

One transport per host a run touches, the helper started over it, and the heartbeat that holds a
host's lock only while the controller lives.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

from remediate.errors import (
    RemediateError,
)
from remediate.hosts.inventory import Host
from remediate.transport.base import Transport

__all__ = ["HELPER", "IDLE", "PING", "HelperSession", "Transports", "call_helper", "helper_argv"]

HELPER = (Path(__file__).parent.parent / "hostside.py").read_text()


#: The session's heartbeat: a ping every PING seconds; IDLE seconds without one and the helper
#: lets go of the lock. So a controller that is cut off holds a host for IDLE seconds at most,
#: and one that is killed not at all (its connection closes, the helper sees EOF at once).
PING = 2.0


IDLE = 10.0


class Transports:
    """One transport per host a run touches: the target's, and any other host's on first use."""

    def __init__(self, target: Host, transport: Transport | None, accept_new_host_key: bool) -> None:
        self.target = target
        self.accept_new = accept_new_host_key
        self.owned: list[Transport] = []
        self.by_host: dict[str, Transport] = {}
        self.sessions: list[HelperSession] = []
        if transport is not None:
            self.by_host[target.name] = transport

    def get(self, host: Host) -> Transport:
        if host.name not in self.by_host:
            from remediate.hosts.connect import open_transport

            self.by_host[host.name] = open_transport(host, accept_new_host_key=self.accept_new)
            self.owned.append(self.by_host[host.name])
        return self.by_host[host.name]

    @property
    def round_trips(self) -> int:
        return sum(int(getattr(t, "round_trips", 0)) for t in self.by_host.values())

    def close(self) -> None:
        for session in self.sessions:
            session.close()
        for t in self.owned:
            t.close()


def answer_of(host: Host, raw: bytes, exited: int | str, stderr: str) -> dict[str, Any]:
    try:
        answer: dict[str, Any] = json.loads(raw or b"null")
    except ValueError:
        answer = {}
    if not isinstance(answer, dict) or not answer:
        raise RemediateError(f"{host.name}: remediate's helper gave no answer ({exited}): {stderr}")
    if answer.get("error"):
        error = str(answer["error"])
        if ("PermissionError" in error or "Permission denied" in error) and not host["ansible_become"]:
            who = host["ansible_user"] or "the SSH user"
            raise RemediateError(
                f"{host.name}: {who} may not read what remediate needs ({error.removeprefix('PermissionError: ')});"
                " set ansible_become: true for this host (remediate then runs its helper through `sudo -n`)"
            )
        raise RemediateError(f"{host.name}: remediate's helper failed: {error}")
    return answer


def helper_argv(host: Host, *extra: str) -> list[str]:
    # -I -S: isolated (no PYTHON* variables, no user site) and no site import: stdlib only, and fast to start.
    return [host["ansible_python_interpreter"], "-I", "-S", "-c", HELPER, *extra]


def call_helper(transport: Transport, host: Host, request: dict[str, Any], timeout: float = 120) -> dict[str, Any]:
    """Run the host-side helper once with ``request`` as JSON on stdin; one round trip."""
    result = transport.run(helper_argv(host), stdin=json.dumps(request).encode(), timeout=timeout, warn=True)
    return answer_of(host, result.stdout, f"exit {result.exited}", result.stderr_tail())


class HelperSession:
    """The helper, kept running on the host for one run; it holds the host's lock while it lives.

    Requests go one JSON line at a time over one SSH channel. The helper lives exactly as long
    as this controller: when the controller dies its connection closes and the helper sees EOF
    at once; when the network is cut, the pings stop and the helper gives up after IDLE seconds.
    Either way the kernel drops the lock (an flock) with the helper, so a lock cannot outlive
    its run by more than IDLE seconds, and a transaction in progress is finished first.
    """

    def __init__(self, transport: Transport, host: Host) -> None:
        self.transport = transport
        self.host = host
        self.stream = transport.open_stream(helper_argv(host, "session", f"{IDLE:g}"))
        self._stop = threading.Event()
        self._pinger = threading.Thread(target=self._ping, name=f"remediate-ping-{host.name}", daemon=True)
        self._pinger.start()

    def _ping(self) -> None:
        while not self._stop.wait(PING):
            try:
                self.stream.write(b'{"op": "ping"}\n')
            except RemediateError:
                return

    def call(self, request: dict[str, Any], timeout: float = 120) -> dict[str, Any]:
        self.transport.round_trips += 1
        self.stream.write(json.dumps(request).encode() + b"\n")
        line = self.stream.read_line(timeout)
        return answer_of(self.host, line, "session", self.stream.stderr().strip()[-300:])

    def close(self) -> None:
        """End the session: the helper sees EOF, and lets go of the lock."""
        self._stop.set()
        self.stream.close()
