"""From an inventory host to the transport that reaches it."""

from __future__ import annotations

from remediate.inventory import Host
from remediate.transport.base import Transport

__all__ = ["open_transport"]


def open_transport(host: Host, *, accept_new_host_key: bool = False) -> Transport:
    """A transport for ``host``: local when ``ansible_connection: local``, SSH otherwise."""
    timeout = float(host["command_timeout"])
    if host.is_local:
        from remediate.transport.local import LocalTransport

        return LocalTransport(host.name, become_user=host.become_user, timeout=timeout)
    from remediate.transport.ssh import SSHTarget, SSHTransport

    target = SSHTarget(
        name=host.name,
        address=host.address,
        port=int(host["ansible_port"]),
        user=host["ansible_user"],
        key_file=host["ansible_ssh_private_key_file"],
        known_hosts=host["known_hosts"],
        accept_new_host_key=accept_new_host_key,
        connect_timeout=float(host["ssh_connect_timeout"]),
    )
    return SSHTransport(target, become_user=host.become_user, timeout=timeout)
