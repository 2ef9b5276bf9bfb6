"""Every error remediate raises, and the exit code the CLI gives for it.

The tree is shallow on purpose; callers catch the branch they can act on::

    RemediateError                  exit 1   something failed; the message says what and where
    ├── UsageError                  exit 2   the command line itself is wrong
    ├── Refused                     exit 3   remediate will not go on, and changed nothing
    │   ├── HostKeyUnknown                   the host's key is not in known_hosts
    │   └── HostKeyChanged                   the host's key differs from known_hosts
    ├── InputError                  exit 5   a file the user gave is wrong (file:line)
    │   ├── InventoryError                   unknown host, malformed YAML, a var of the wrong type
    │   └── ConfigParseError                 nginx config text that nginx would not accept
    ├── TransportError              exit 6   the host could not be reached or did not answer
    │   ├── HostUnreachable                  TCP connect or SSH handshake failed or timed out
    │   ├── AuthFailed                       the host refused our credentials
    │   ├── CommandTimeout                   a command ran past its time limit
    │   └── CommandFailed                    a command exited non-zero (carries its Result)
    └── LabError                    exit 1   the local lab could not be built or driven

Exit code 4 is reserved for "rolled back" (a change was made, failed its checks and was undone), and
7 for "applied, unverified" (a change was made and committed, but no failing request or probe URL
could be asked afterwards, so nothing shows it worked: never reported as fixed).
Lower-level exceptions (paramiko, socket, ruamel) are translated at the edge that meets them,
so nothing above the transport or the inventory loader ever sees them.
"""

from __future__ import annotations

from typing import Protocol

__all__ = [
    "EXIT_FAILED",
    "EXIT_INPUT",
    "EXIT_OK",
    "EXIT_REFUSED",
    "EXIT_ROLLED_BACK",
    "EXIT_TRANSPORT",
    "EXIT_UNVERIFIED",
    "EXIT_USAGE",
    "AuthFailed",
    "CommandFailed",
    "CommandTimeout",
    "ConfigParseError",
    "HostKeyChanged",
    "HostKeyUnknown",
    "HostUnreachable",
    "InputError",
    "InventoryError",
    "LabError",
    "Refused",
    "RemediateError",
    "TransportError",
    "UsageError",
]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_REFUSED = 3
EXIT_ROLLED_BACK = 4
EXIT_INPUT = 5
EXIT_TRANSPORT = 6
EXIT_UNVERIFIED = 7


class RemediateError(Exception):
    """Root of every error remediate raises on purpose."""

    exit_code = EXIT_FAILED

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class UsageError(RemediateError):
    exit_code = EXIT_USAGE


class Refused(RemediateError):
    exit_code = EXIT_REFUSED


class HostKeyUnknown(Refused):
    pass


class HostKeyChanged(Refused):
    pass


class InputError(RemediateError):
    """A file the user gave us is wrong; the message starts with ``file:line:``."""

    exit_code = EXIT_INPUT

    def __init__(self, message: str, *, file: str | None = None, line: int | None = None) -> None:
        where = ""
        if file is not None:
            where = f"{file}:{line}: " if line is not None else f"{file}: "
        super().__init__(where + message)
        self.file = file
        self.line = line


class InventoryError(InputError):
    pass


class ConfigParseError(InputError):
    pass


class TransportError(RemediateError):
    exit_code = EXIT_TRANSPORT

    def __init__(self, message: str, *, host: str) -> None:
        super().__init__(f"{host}: {message}")
        self.host = host


class HostUnreachable(TransportError):
    pass


class AuthFailed(TransportError):
    pass


class CommandTimeout(TransportError):
    pass


class Ran(Protocol):
    """What CommandFailed needs of a command's result (remediate.transport.base.Result is one): the
    bottom layer names the shape it needs instead of importing the layer above it."""

    @property
    def host(self) -> str: ...

    @property
    def exited(self) -> int: ...

    @property
    def display(self) -> str: ...

    def stderr_tail(self, lines: int = 3) -> str: ...


class CommandFailed(TransportError):
    """A command exited non-zero; ``result`` holds its output."""

    def __init__(self, result: Ran) -> None:
        tail = result.stderr_tail()
        detail = f": {tail}" if tail else ""
        super().__init__(f"`{result.display}` exited {result.exited}{detail}", host=result.host)
        self.result = result


class LabError(RemediateError):
    pass
