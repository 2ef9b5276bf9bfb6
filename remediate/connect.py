"""From an inventory host to the transport that reaches it."""

from __future__ import annotations

from typing import TYPE_CHECKING

from remediate.inventory import Host
from remediate.transport.base import Transport

if TYPE_CHECKING:
    from remediate.transport.ssh import SSHTarget

__all__ = ["open_transport", "ssh_target"]


def open_transport(host: Host, *, accept_new_host_key: bool = False) -> Transport:
    """A transport for ``host``: local when ``ansible_connection: local``, SSH otherwise."""
    timeout = float(host["command_timeout"])
    if host.is_local:
        from remediate.transport.local import LocalTransport

        return LocalTransport(host.name, become_user=host.become_user, timeout=timeout)
    from remediate.transport.ssh import SSHTransport

    return SSHTransport(
        ssh_target(host, accept_new_host_key=accept_new_host_key), become_user=host.become_user, timeout=timeout
    )


def ssh_target(host: Host, *, accept_new_host_key: bool = False) -> SSHTarget:
    """Where and how to reach ``host`` over SSH, from its inventory vars."""
    from remediate.transport.ssh import SSHTarget

    return SSHTarget(
        name=host.name,
        address=host.address,
        port=int(host["ansible_port"]),
        user=host["ansible_user"],
        key_file=host["ansible_ssh_private_key_file"],
        known_hosts=host["known_hosts"],
        accept_new_host_key=accept_new_host_key,
        connect_timeout=float(host["ssh_connect_timeout"]),
    )
