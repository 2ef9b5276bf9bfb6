"""SSH through fabric/paramiko: one connection for the whole run, host keys always verified.

fabric's Connection installs paramiko's AutoAddPolicy and loads no
known_hosts, which trusts any key on first sight. We replace both: keys come
only from the known_hosts file the inventory names, and an unknown key is
refused unless the user opted in to accept-new (OpenSSH's
``StrictHostKeyChecking=accept-new``: a *changed* key is still refused).

Every paramiko and socket exception is translated here, into an error that
names the inventory host and says what to do next.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import select
import shlex
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from remediate.errors import AuthFailed, CommandTimeout, HostKeyChanged, HostKeyUnknown, HostUnreachable
from remediate.transport.base import Result, Stream, Transport

if TYPE_CHECKING:
    import paramiko

__all__ = ["SSHTarget", "SSHTransport", "fingerprint"]


@dataclass(frozen=True)
class SSHTarget:
    """Where and how to connect; built from the inventory."""

    name: str
    address: str
    port: int = 22
    user: str | None = None
    key_file: str | None = None
    known_hosts: str = "~/.ssh/known_hosts"
    accept_new_host_key: bool = False
    connect_timeout: float = 10.0
    proxy_jump: tuple[str, ...] = ()  # [user@]host[:port] hops, first to last (OpenSSH's ProxyJump)
    proxy_command: str | None = None  # OpenSSH's ProxyCommand, %h %p %r expanded
    ssh_config: str | None = None  # an OpenSSH client config to honour (else the inventory is the truth)

    @property
    def host_key_name(self) -> str:
        """The name known_hosts files use: ``host`` on port 22, ``[host]:port`` otherwise."""
        return self.address if self.port == 22 else f"[{self.address}]:{self.port}"

    @property
    def known_hosts_path(self) -> Path:
        return Path(os.path.expanduser(self.known_hosts))


def fingerprint(key: paramiko.PKey) -> str:
    """OpenSSH's SHA256 fingerprint, as ``ssh-keygen -l`` prints it."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def _policies(target: SSHTarget) -> Any:
    import paramiko

    class RefuseUnknown(paramiko.MissingHostKeyPolicy):
        def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
            raise HostKeyUnknown(
                f"{target.name}: host key for {target.host_key_name} is not in {target.known_hosts_path} "
                f"(server offers {key.get_name()} {fingerprint(key)}); verify that fingerprint out of band, "
                f"then add it with `ssh-keyscan -p {target.port} {target.address} >> {target.known_hosts_path}`"
                f" or rerun with --accept-new-host-key"
            )

    class AcceptNew(paramiko.MissingHostKeyPolicy):
        def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
            path = target.known_hosts_path
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("a") as fh:
                fh.write(f"{target.host_key_name} {key.get_name()} {key.get_base64()}\n")

    return AcceptNew() if target.accept_new_host_key else RefuseUnknown()


class SSHTransport(Transport):
    """Commands over one SSH connection, opened lazily on first use."""

    def __init__(self, target: SSHTarget, *, become_user: str | None = None, timeout: float = 60.0) -> None:
        super().__init__(target.name, become_user=become_user, timeout=timeout)
        self.target = target
        self._conn: Any = None

    # -- connection --------------------------------------------------------------

    def connect(self) -> None:
        if self._conn is not None:
            return
        import paramiko
        from fabric import Config, Connection

        t = self.target
        gateway: Any = None
        for hop in t.proxy_jump:  # each hop reached through the one before it, host keys checked at each
            user, _, rest = hop.rpartition("@")
            address, _, port = rest[1:].partition("]:") if rest.startswith("[") else rest.partition(":")
            hop_target = replace(t, name=f"{t.name} (jump {hop})", address=address.rstrip("]"),
                                 port=int(port or 22), user=user or t.user, proxy_jump=(),
                                 proxy_command=None)  # fmt: skip
            gateway = self._connection(hop_target, gateway, Config, Connection)
        if t.proxy_command:
            expanded = t.proxy_command.replace("%h", t.address).replace("%p", str(t.port))
            gateway = expanded.replace("%r", t.user or "").replace("%%", "%")
        conn = self._connection(t, gateway, Config, Connection)
        try:
            conn.open()
        except paramiko.BadHostKeyException as exc:
            raise HostKeyChanged(
                f"{t.name}: host key for {t.host_key_name} has CHANGED: {t.known_hosts_path} has "
                f"{fingerprint(exc.expected_key)}, the server offers {fingerprint(exc.key)}. This may be an "
                f"attack or a reinstalled host; verify out of band, then remove the old entry with "
                f"`ssh-keygen -R '{t.host_key_name}' -f {t.known_hosts_path}`"
            ) from exc
        except paramiko.AuthenticationException as exc:
            raise AuthFailed(
                f"authentication failed as {t.user or 'the current user'} at {t.address}:{t.port}"
                f" (key {t.key_file or 'from agent/~/.ssh'}): {exc}",
                host=t.name,
            ) from exc
        except TimeoutError as exc:
            raise HostUnreachable(
                f"no SSH answer from {t.address}:{t.port} within {t.connect_timeout:g}s", host=t.name
            ) from exc
        except (OSError, EOFError, paramiko.SSHException) as exc:
            raise HostUnreachable(f"cannot connect to {t.address}:{t.port}: {_reason(exc)}", host=t.name) from exc
        transport = conn.client.get_transport()
        if transport is not None:
            transport.set_keepalive(30)  # a kept connection (remediate serve) notices a dead peer
        self._conn = conn

    @staticmethod
    def _connection(t: SSHTarget, gateway: Any, config_class: Any, connection_class: Any) -> Any:
        """A fabric Connection to ``t`` (through ``gateway``: a Connection or a ProxyCommand string) whose
        client knows only the inventory's known_hosts and refuses an unknown key (unless accept-new)."""
        import paramiko

        overrides: dict[str, Any] = {"load_ssh_configs": False}  # the inventory is the whole truth...
        if t.ssh_config:  # ...unless it names an OpenSSH config to honour
            overrides = {"load_ssh_configs": True, "ssh_config_path": os.path.expanduser(t.ssh_config)}
        conn = connection_class(
            host=t.address,
            port=t.port,
            user=t.user,
            gateway=gateway,
            connect_timeout=int(max(1, t.connect_timeout)),
            config=config_class(overrides=overrides),
            connect_kwargs={
                # No key file: the agent and ~/.ssh/id_* (fabric rejects key_filename=None outright).
                **({"key_filename": os.path.expanduser(t.key_file)} if t.key_file else {}),
                "look_for_keys": t.key_file is None,
                "allow_agent": t.key_file is None,
                "banner_timeout": t.connect_timeout,
                "auth_timeout": t.connect_timeout,
                "channel_timeout": t.connect_timeout,
            },
        )
        client: paramiko.SSHClient = conn.client
        client.set_missing_host_key_policy(_policies(t))
        if t.known_hosts_path.exists():
            try:
                client.load_host_keys(str(t.known_hosts_path))
            except (OSError, paramiko.SSHException) as exc:
                raise HostKeyUnknown(f"{t.name}: cannot read known_hosts {t.known_hosts_path}: {exc}") from exc
        return conn

    def alive(self) -> bool:
        if self._conn is None:
            return True  # not opened yet: opens on first use
        transport = self._conn.client.get_transport()
        return transport is not None and transport.is_active()

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    # -- commands ----------------------------------------------------------------

    def _exec(self, argv: tuple[str, ...], stdin: bytes | None, timeout: float) -> Result:
        import paramiko

        self.connect()
        command = shlex.join(argv)  # the one place an argv becomes a string
        transport = self._conn.client.get_transport()
        deadline = time.monotonic() + timeout
        try:
            chan = transport.open_session(timeout=self.target.connect_timeout)
            try:
                chan.settimeout(timeout)
                chan.exec_command(command)
                if stdin:
                    chan.sendall(stdin)
                chan.shutdown_write()
                out, err = self._collect(chan, deadline, argv)
                exited = chan.recv_exit_status()
            finally:
                chan.close()
        except TimeoutError as exc:
            raise CommandTimeout(f"`{argv[0]}` ran longer than {timeout:g}s", host=self.name) from exc
        except (OSError, EOFError, paramiko.SSHException) as exc:
            self._conn = None
            raise HostUnreachable(f"connection lost while running `{argv[0]}`: {_reason(exc)}", host=self.name) from exc
        return Result(self.name, argv, out, err, exited)

    def _open_stream(self, argv: tuple[str, ...]) -> Stream:
        import paramiko

        self.connect()
        try:
            chan = self._conn.client.get_transport().open_session(timeout=self.target.connect_timeout)
            chan.exec_command(shlex.join(argv))  # the one place an argv becomes a string
        except (OSError, EOFError, paramiko.SSHException) as exc:
            self._conn = None
            raise HostUnreachable(f"cannot start `{argv[0]}`: {_reason(exc)}", host=self.name) from exc
        return _ChannelStream(self.name, chan)

    def _collect(self, chan: paramiko.Channel, deadline: float, argv: tuple[str, ...]) -> tuple[bytes, bytes]:
        out: list[bytes] = []
        err: list[bytes] = []
        while not chan.exit_status_ready():
            if chan.recv_ready():
                out.append(chan.recv(65536))
            elif chan.recv_stderr_ready():
                err.append(chan.recv_stderr(65536))
            else:
                if time.monotonic() > deadline:
                    raise TimeoutError
                # The channel's pipe wakes on stdout and stderr data alike.
                select.select([chan], [], [], 0.005)
        while chunk := chan.recv(65536):
            out.append(chunk)
        while chunk := chan.recv_stderr(65536):
            err.append(chunk)
        return b"".join(out), b"".join(err)


class _ChannelStream(Stream):
    """A command on its own SSH channel, its stdin left open."""

    def __init__(self, name: str, chan: paramiko.Channel) -> None:
        super().__init__(name)
        import threading

        self.chan = chan
        self._lock = threading.Lock()
        self._err = b""

    def _send(self, data: bytes) -> None:
        import paramiko

        try:
            with self._lock:
                self.chan.sendall(data)
        except (OSError, EOFError, paramiko.SSHException) as exc:
            raise HostUnreachable(f"connection lost: {_reason(exc)}", host=self.name) from exc

    def _recv(self, timeout: float) -> bytes:
        import paramiko

        deadline = time.monotonic() + timeout
        try:
            while True:
                if self.chan.recv_stderr_ready():
                    self._err = (self._err + self.chan.recv_stderr(65536))[-4096:]
                if self.chan.recv_ready():
                    return bytes(self.chan.recv(65536))
                if self.chan.closed or self.chan.eof_received:
                    return b""
                if time.monotonic() > deadline:
                    raise CommandTimeout(f"no answer within {timeout:g}s", host=self.name)
                select.select([self.chan], [], [], min(0.05, max(0.0, deadline - time.monotonic())))
        except (OSError, EOFError, paramiko.SSHException) as exc:
            raise HostUnreachable(f"connection lost: {_reason(exc)}", host=self.name) from exc

    def stderr(self) -> str:
        return self._err.decode("utf-8", "replace")

    def close(self, wait: float = 5.0) -> None:
        """EOF to the command, then wait (at most ``wait`` s) for it to exit, so what it holds is let go."""
        with contextlib.suppress(Exception):
            self.chan.shutdown_write()
            deadline = time.monotonic() + wait
            while not self.chan.exit_status_ready() and time.monotonic() < deadline:
                select.select([self.chan], [], [], 0.05)
                while self.chan.recv_ready():
                    self.chan.recv(65536)
        with contextlib.suppress(Exception):
            self.chan.close()


def _reason(exc: BaseException) -> str:
    # paramiko's NoValidConnectionsError says "[Errno None] Unable to connect to port P on A"; the
    # reason is in the OSError of each address it tried.
    errors = getattr(exc, "errors", None)
    if isinstance(errors, dict) and errors:
        return "; ".join(sorted({(getattr(e, "strerror", None) or str(e)).lower() for e in errors.values()}))
    text = str(exc) or type(exc).__name__
    return text.splitlines()[0]
