"""Run on the host itself (``ansible_connection: local``)."""

from __future__ import annotations

import subprocess

from remediate.errors import CommandTimeout
from remediate.transport.base import Result, Transport

__all__ = ["LocalTransport"]


class LocalTransport(Transport):
    def _exec(self, argv: tuple[str, ...], stdin: bytes | None, timeout: float) -> Result:
        try:
            done = subprocess.run(  # noqa: S603 - argv list, no shell
                argv,
                input=stdin if stdin is not None else b"",
                capture_output=True,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise CommandTimeout(f"`{argv[0]}` ran longer than {timeout:g}s", host=self.name) from exc
        except FileNotFoundError:
            # What a shell would say, so callers treat both transports alike.
            return Result(self.name, argv, b"", f"{argv[0]}: command not found\n".encode(), 127)
        return Result(self.name, argv, done.stdout, done.stderr, done.returncode)
