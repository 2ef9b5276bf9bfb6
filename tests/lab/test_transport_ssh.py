"""The SSH transport against the lab's real sshd: commands, atomic writes, host keys, failures."""

from __future__ import annotations

import dataclasses
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from remediate.errors import (
    AuthFailed,
    CommandFailed,
    CommandTimeout,
    HostKeyChanged,
    HostKeyUnknown,
    HostUnreachable,
)
from remediate.hosts.connect import ssh_target
from remediate.hosts.inventory import Host
from remediate.lab import pki
from remediate.transport.ssh import SSHTarget, SSHTransport


def _target(host: Host, **changes: object) -> SSHTarget:
    return dataclasses.replace(ssh_target(host), **{"connect_timeout": 5.0, **changes})  # type: ignore[arg-type]


@pytest.fixture
def ssh(web01: Host) -> Iterator[SSHTransport]:
    transport = SSHTransport(_target(web01))
    yield transport
    transport.close()


def test_command_returns_its_result(ssh: SSHTransport) -> None:
    """A command's stdout, stderr and exit code come back in a Result."""
    result = ssh.run(["sh", "-c", "echo out; echo err >&2; exit 3"], warn=True)
    assert (result.out, result.err, result.exited, result.ok) == ("out\n", "err\n", 3, False)


def test_nonzero_exit_raises_with_command_and_stderr(ssh: SSHTransport) -> None:
    """Without warn, a failing command raises CommandFailed naming host, command, code and stderr."""
    with pytest.raises(CommandFailed) as info:
        ssh.run(["ls", "/definitely/not/here"])
    message = str(info.value)
    assert message.startswith("web01: `ls /definitely/not/here` exited 2")
    assert "No such file or directory" in message


def test_arguments_reach_the_host_verbatim(ssh: SSHTransport) -> None:
    """Shell metacharacters in an argument are data, never code: argv is quoted once."""
    nasty = "a b; echo PWNED $(id) `id` 'q' \"dq\" \\ * ~ \n end"
    assert ssh.run(["printf", "%s", nasty]).out == nasty


def test_one_connection_serves_many_commands(ssh: SSHTransport) -> None:
    """Commands reuse one SSH connection; each is one round trip."""
    first = ssh.run(["sh", "-c", "echo $PPID"]).out
    ssh.run(["true"])
    assert ssh._conn is not None
    transport_id = id(ssh._conn.client.get_transport())
    ssh.run(["true"])
    assert id(ssh._conn.client.get_transport()) == transport_id
    assert ssh.round_trips == 3
    assert first.strip().isdigit()


def test_atomic_write_keeps_owner_and_mode(ssh: SSHTransport, lab_cfg: object, tmp_path: Path) -> None:
    """A write replaces the bytes but keeps the file's owner, group and mode."""
    path = "/tmp/remediate-write-test.conf"
    ssh.run(["sh", "-c", 'printf "old\\n" > "$1" && chown nobody:nogroup "$1" && chmod 0640 "$1"', "sh", path])
    data = b"new\r\n\tline \xff\xfe\n"
    ssh.write_file(path, data)
    assert ssh.read_file(path) == data
    st = ssh.stat(path)
    assert st is not None
    assert (st.owner, st.group, st.mode) == ("nobody", "nogroup", 0o640)
    leftovers = ssh.run(["sh", "-c", "ls -a /tmp | grep -c '^.remediate\\.' || true"]).out.strip()
    assert leftovers == "0"
    ssh.run(["rm", "-f", path])


def test_atomic_write_through_a_symlink_keeps_the_link(ssh: SSHTransport) -> None:
    """Writing a sites-enabled style symlink replaces its target and leaves the link a link."""
    ssh.run(
        [
            "sh",
            "-c",
            "mkdir -p /tmp/rw-avail /tmp/rw-enabled && echo a > /tmp/rw-avail/s.conf && "
            "ln -sfn ../rw-avail/s.conf /tmp/rw-enabled/s.conf",
        ]
    )
    ssh.write_file("/tmp/rw-enabled/s.conf", b"b\n")
    assert ssh.run(["readlink", "/tmp/rw-enabled/s.conf"]).out.strip() == "../rw-avail/s.conf"
    assert ssh.read_file("/tmp/rw-avail/s.conf") == b"b\n"
    ssh.run(["rm", "-rf", "/tmp/rw-avail", "/tmp/rw-enabled"])


def test_stat_of_missing_path_is_none(ssh: SSHTransport) -> None:
    """stat of a path that does not exist is None, not an error."""
    assert ssh.stat("/tmp/remediate-no-such-file") is None


def test_stat_sees_the_php_socket(ssh: SSHTransport, lab: object, web01: Host) -> None:
    """stat tells a unix socket from a file, with its owner and mode."""
    lab.reset()  # type: ignore[attr-defined]
    sock = str(Path(web01["php_fpm_pools"][0]).parent.parent / "run" / "php-fpm.sock")
    st = ssh.stat(sock)
    assert st is not None and st.is_socket and st.owner == "www-data" and st.mode == 0o660


def test_unknown_host_key_is_refused(web01: Host, tmp_path: Path) -> None:
    """A host whose key is not in known_hosts is refused, and the message says how to trust it."""
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    transport = SSHTransport(_target(web01, known_hosts=str(empty)))
    with pytest.raises(HostKeyUnknown) as info:
        transport.run(["true"])
    message = str(info.value)
    assert "not in" in message and "ssh-keyscan -p" in message and "SHA256:" in message
    assert empty.read_text() == ""  # nothing was trusted on the way


def test_changed_host_key_is_refused(web01: Host, tmp_path: Path) -> None:
    """A host presenting a different key than known_hosts records is refused as CHANGED."""
    other = pki.make_ssh_key(tmp_path / "other_host_key")
    known = tmp_path / "known_hosts"
    known.write_text(f"[{web01.address}]:{web01['ansible_port']} {other}\n")
    with pytest.raises(HostKeyChanged, match=r"CHANGED.*ssh-keygen -R"):
        SSHTransport(_target(web01, known_hosts=str(known))).run(["true"])


def test_accept_new_host_key_is_explicit_and_records_it(web01: Host, tmp_path: Path) -> None:
    """With accept-new, a first-seen key is trusted and written; the next connection verifies it."""
    known = tmp_path / "known_hosts"
    with SSHTransport(_target(web01, known_hosts=str(known), accept_new_host_key=True)) as t:
        assert t.run(["true"]).ok
    assert known.read_text().startswith(f"[{web01.address}]:{web01['ansible_port']} ssh-ed25519 ")
    with SSHTransport(_target(web01, known_hosts=str(known))) as t:
        assert t.run(["true"]).ok


def test_wrong_client_key_is_refused(web01: Host, tmp_path: Path) -> None:
    """A client key the host does not know fails as AuthFailed, naming the host."""
    pki.make_ssh_key(tmp_path / "stranger")
    with pytest.raises(AuthFailed, match=r"^web01: authentication failed"):
        SSHTransport(_target(web01, key_file=str(tmp_path / "stranger"))).run(["true"])


def test_closed_port_is_unreachable(web01: Host) -> None:
    """Nothing listening: HostUnreachable naming the address, the port and why, in words."""
    with pytest.raises(HostUnreachable, match=r"web01: cannot connect to .*:2999: connection refused$"):
        SSHTransport(_target(web01, port=2999)).run(["true"])


def test_silent_host_fails_within_its_timeout(web01: Host) -> None:
    """A host that accepts TCP but never speaks SSH fails with HostUnreachable after the connect timeout."""
    server = socket.create_server(("127.0.20.99", 0))
    port = server.getsockname()[1]
    held: list[socket.socket] = []
    thread = threading.Thread(target=lambda: held.append(server.accept()[0]), daemon=True)
    thread.start()
    try:
        with pytest.raises(HostUnreachable, match="web01"):
            SSHTransport(_target(web01, address="127.0.20.99", port=port, connect_timeout=1.5)).run(["true"])
    finally:
        for sock in held:
            sock.close()
        server.close()


def test_command_past_its_timeout_raises(ssh: SSHTransport) -> None:
    """A command that runs longer than its timeout raises CommandTimeout."""
    with pytest.raises(CommandTimeout, match=r"ran longer than 0.5s"):
        ssh.run(["sleep", "5"], timeout=0.5)


def test_become_runs_through_sudo_without_a_password(web01: Host) -> None:
    """With become, commands run as the become user via `sudo -n`; no password is ever sent."""
    with SSHTransport(_target(web01), become_user="nobody") as t:
        result = t.run(["id", "-un"])
    assert result.out.strip() == "nobody"
    assert result.command[:5] == ("sudo", "-n", "-u", "nobody", "--")
