"""Run on the host itself (``ansible_connection: local``)."""

from __future__ import annotations

import contextlib
import select
import subprocess
import threading
import time

from remediate.errors import CommandTimeout, TransportError
from remediate.transport.base import Result, Stream, Transport

__all__ = ["LocalTransport"]


class _PipeStream(Stream):
    def __init__(self, name: str, proc: subprocess.Popen[bytes]) -> None:
        super().__init__(name)
        self.proc = proc
        self._lock = threading.Lock()

    def _send(self, data: bytes) -> None:
        assert self.proc.stdin is not None
        try:
            with self._lock:
                self.proc.stdin.write(data)
                self.proc.stdin.flush()
        except (BrokenPipeError, ValueError, OSError) as exc:
            raise TransportError(f"the remote command ended: {exc}", host=self.name) from exc

    def _recv(self, timeout: float) -> bytes:
        import os

        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        while True:
            ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
            if ready:
                return os.read(fd, 65536)
            if time.monotonic() >= deadline:
                raise CommandTimeout(f"no answer within {timeout:g}s", host=self.name)

    def stderr(self) -> str:
        return ""

    def close(self, wait: float = 5.0) -> None:
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()
        try:
            self.proc.wait(wait)
        except subprocess.TimeoutExpired:
            self.proc.kill()


class LocalTransport(Transport):
    def _open_stream(self, argv: tuple[str, ...]) -> Stream:
        try:
            proc = subprocess.Popen(  # noqa: S603 - argv list, no shell
                argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
            )
        except FileNotFoundError as exc:
            raise TransportError(f"{argv[0]}: command not found", host=self.name) from exc
        return _PipeStream(self.name, proc)

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
