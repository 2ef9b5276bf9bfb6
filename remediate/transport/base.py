"""The one interface every remote (or local) operation goes through.

A transport runs argv lists. Quoting happens exactly once, inside the
implementation that needs a command string (SSH); nothing above this layer
ever builds a shell string. File operations are built on ``run`` so that
``become`` applies to them too and both transports share one code path.
"""

from __future__ import annotations

import abc
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType

from remediate.errors import CommandFailed, CommandTimeout, TransportError

__all__ = ["Result", "Stat", "Stream", "Transport"]


@dataclass(frozen=True)
class Result:
    """What one command did. ``stdout``/``stderr`` are bytes: configs may hold any byte."""

    host: str
    command: tuple[str, ...]
    stdout: bytes
    stderr: bytes
    exited: int

    @property
    def ok(self) -> bool:
        return self.exited == 0

    @property
    def out(self) -> str:
        return self.stdout.decode("utf-8", "surrogateescape")

    @property
    def err(self) -> str:
        return self.stderr.decode("utf-8", "replace")

    @property
    def display(self) -> str:
        return shlex.join(self.command)

    def stderr_tail(self, lines: int = 3) -> str:
        tail = [line for line in self.err.strip().splitlines() if line.strip()][-lines:]
        return " | ".join(tail)


@dataclass(frozen=True)
class Stat:
    """The facts of one path on the host (after following symlinks)."""

    path: str
    mode: int
    uid: int
    gid: int
    owner: str
    group: str
    size: int
    kind: str  # "regular file", "directory", "socket", ...

    @property
    def is_socket(self) -> bool:
        return self.kind == "socket"


# Written once, never built from input: the path and the mode arrive as "$1" and
# "$2". readlink -f keeps a sites-enabled symlink a symlink (the link's target is
# replaced, not the link). The temp file lives in the target's own directory so
# the final mv is a rename(2): readers see the old bytes or the new, never half.
_ATOMIC_WRITE = r"""set -eu
target=$(readlink -f -- "$1")
dir=$(dirname -- "$target")
tmp=$(mktemp -- "$dir/.remediate.XXXXXXXX")
trap 'rm -f -- "$tmp"' EXIT
cat > "$tmp"
if [ -e "$target" ]; then
  chown --reference="$target" -- "$tmp"
  chmod --reference="$target" -- "$tmp"
else
  chmod -- "$2" "$tmp"
fi
sync -- "$tmp"
mv -fT -- "$tmp" "$target"
trap - EXIT
"""

_STAT_FORMAT = "%a|%u|%g|%U|%G|%s|%F"


class Stream(abc.ABC):
    """A long-running command with its stdin and stdout kept open: lines in, lines out.

    remediate's helper session runs through one, so the host can tell from the stream alone
    when the controller is gone (EOF). ``write`` is safe from two threads (a request and a ping).
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self._buffer = b""

    @abc.abstractmethod
    def _send(self, data: bytes) -> None:
        """Write all of ``data``; raise TransportError when the stream is gone."""

    @abc.abstractmethod
    def _recv(self, timeout: float) -> bytes:
        """Some bytes of stdout (b"" at EOF); raise CommandTimeout after ``timeout`` seconds."""

    @abc.abstractmethod
    def stderr(self) -> str:
        """What the command wrote to stderr so far (for error messages)."""

    @abc.abstractmethod
    def close(self, wait: float = 5.0) -> None:
        """Close stdin (the command sees EOF), wait up to ``wait`` s for it to exit, let go of the stream."""

    def write(self, data: bytes) -> None:
        self._send(data)

    def read_line(self, timeout: float) -> bytes:
        """The next line of stdout, without its newline; TransportError at EOF."""
        import time

        deadline = time.monotonic() + timeout
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise CommandTimeout(f"no answer within {timeout:g}s", host=self.name)
            chunk = self._recv(left)
            if not chunk:
                raise TransportError(
                    f"the remote command ended: {self.stderr().strip()[-300:] or 'EOF'}", host=self.name
                )
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return line


class Transport(abc.ABC):
    """Runs commands and moves bytes on one host.

    ``name`` is the inventory name, used in every error so the user knows
    which host failed. ``become_user`` (when set) runs every command through
    ``sudo -n``: a password is never typed into a prompt or an output watcher,
    so the host must allow the command without one.
    """

    def __init__(self, name: str, *, become_user: str | None = None, timeout: float = 60.0) -> None:
        self.name = name
        self.become_user = become_user
        self.timeout = timeout
        #: How many exchanges went over the wire (commands, and requests on a stream): a run's round trips.
        self.round_trips = 0

    # -- the one primitive each implementation provides -------------------------

    @abc.abstractmethod
    def _exec(self, argv: tuple[str, ...], stdin: bytes | None, timeout: float) -> Result:
        """Run argv and return its Result; raise only TransportError subclasses."""

    def alive(self) -> bool:
        """False when a kept connection is known to be dead (the peer closed it); local is always alive."""
        return True

    def close(self) -> None:  # noqa: B027 - a no-op default is the right one for local
        """Release the connection, if any."""

    def _open_stream(self, argv: tuple[str, ...]) -> Stream:
        raise TransportError("this transport cannot keep a command open", host=self.name)

    def open_stream(self, argv: Sequence[str]) -> Stream:
        """Start ``argv`` with stdin and stdout kept open (see Stream); become applies as in ``run``."""
        command = tuple(argv)
        if self.become_user is not None:
            command = ("sudo", "-n", "-u", self.become_user, "--", *command)
        return self._open_stream(command)

    # -- operations ------------------------------------------------------------

    def run(
        self,
        argv: Sequence[str],
        *,
        stdin: bytes | None = None,
        timeout: float | None = None,
        warn: bool = False,
    ) -> Result:
        """Run ``argv``. A non-zero exit raises CommandFailed unless ``warn`` is true."""
        if isinstance(argv, str):
            raise TypeError("commands are argv lists, never strings")
        command = tuple(argv)
        if not command:
            raise ValueError("empty command")
        if self.become_user is not None:
            command = ("sudo", "-n", "-u", self.become_user, "--", *command)
        self.round_trips += 1
        result = self._exec(command, stdin, self.timeout if timeout is None else timeout)
        if not result.ok and not warn:
            raise CommandFailed(result)
        return result

    def read_file(self, path: str) -> bytes:
        return self.run(["cat", "--", path]).stdout

    def stat(self, path: str) -> Stat | None:
        """Stat ``path`` (following symlinks); None when it does not exist."""
        result = self.run(["stat", "-L", "-c", _STAT_FORMAT, "--", path], warn=True)
        if not result.ok:
            if "No such file or directory" in result.err:
                return None
            raise CommandFailed(result)
        fields = result.out.strip().split("|")
        if len(fields) != 7:
            raise TransportError(f"unexpected stat output for {path}: {result.out!r}", host=self.name)
        mode, uid, gid, owner, group, size, kind = fields
        return Stat(path, int(mode, 8), int(uid), int(gid), owner, group, int(size), kind)

    def write_file(self, path: str, data: bytes, *, mode: int = 0o644) -> None:
        """Replace ``path`` atomically, keeping its owner and mode (``mode`` is for new files)."""
        self.run(["sh", "-c", _ATOMIC_WRITE, "remediate-write", path, f"{mode:o}"], stdin=data)

    # -- context manager -------------------------------------------------------

    def __enter__(self) -> Transport:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
