"""Public testing helpers: a fake transport for the pure logic above the transport layer.

Like invoke's MockContext, a command missing from the table raises instead of
passing silently, so a test cannot succeed by running something it did not expect.
"""

from __future__ import annotations

from collections.abc import Callable

from remediate.transport.base import Result, Transport

__all__ = ["FakeTransport", "UnexpectedCommand"]

Responder = Callable[[tuple[str, ...], bytes | None], tuple[bytes, bytes, int]]


class UnexpectedCommand(AssertionError):
    """The code under test ran a command the fake was not told about."""


class FakeTransport(Transport):
    """Answers commands from a table keyed by argv prefix; anything else raises UnexpectedCommand."""

    def __init__(self, name: str, table: dict[tuple[str, ...], Responder | tuple[bytes, bytes, int]]) -> None:
        super().__init__(name)
        self.table = table
        self.calls: list[tuple[tuple[str, ...], bytes | None]] = []

    def _exec(self, argv: tuple[str, ...], stdin: bytes | None, timeout: float) -> Result:
        self.calls.append((argv, stdin))
        for prefix, answer in sorted(self.table.items(), key=lambda kv: -len(kv[0])):
            if argv[: len(prefix)] == prefix:
                out, err, code = answer(argv, stdin) if callable(answer) else answer
                return Result(self.name, argv, out, err, code)
        raise UnexpectedCommand(f"{self.name}: unexpected command {argv[:3]}...")
