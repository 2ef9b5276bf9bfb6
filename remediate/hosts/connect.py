"""From an inventory host to the transport that reaches it."""

from __future__ import annotations

from typing import TYPE_CHECKING

from remediate.hosts.inventory import Host
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

    jump, command = ssh_options(host)
    return SSHTarget(
        name=host.name,
        address=host.address,
        port=int(host["ansible_port"]),
        user=host["ansible_user"],
        key_file=host["ansible_ssh_private_key_file"],
        known_hosts=host["known_hosts"],
        accept_new_host_key=accept_new_host_key,
        connect_timeout=float(host["ssh_connect_timeout"]),
        proxy_jump=jump,
        proxy_command=command,
        ssh_config=host["ssh_config"],
    )


#: ssh options that only tune a connection remediate opens its own way: accepted, and not needed.
_HARMLESS = {"controlmaster", "controlpersist", "controlpath", "serveraliveinterval", "serveralivecountmax",
             "connecttimeout", "compression", "tcpkeepalive", "loglevel", "preferredauthentications"}  # fmt: skip
#: ssh options that would weaken host key checking: remediate never does that, and says so.
_REFUSED = {"stricthostkeychecking", "userknownhostsfile", "globalknownhostsfile", "checkhostip"}


def ssh_options(host: Host) -> tuple[tuple[str, ...], str | None]:
    """(ProxyJump hops, ProxyCommand) from ``ansible_ssh_common_args`` and ``ansible_ssh_extra_args``.

    Read as Ansible users write them (``-o ProxyJump=bastion``, ``-o 'ProxyCommand=ssh -W %h:%p
    bastion'``, ``-J user@bastion:2222``); an option remediate would silently not honour is an
    error, one that would weaken host key checking is refused."""
    import shlex

    from remediate.errors import InventoryError

    jump: tuple[str, ...] = ()
    command: str | None = None
    for var in ("ansible_ssh_common_args", "ansible_ssh_extra_args"):
        text = host[var]
        if not text:
            continue
        try:
            words = shlex.split(text)
        except ValueError as exc:
            raise InventoryError(
                f"host {host.name!r}: {var} is not valid shell words: {exc}", file=host.inventory_file
            ) from None
        index = 0
        while index < len(words):
            word = words[index]
            if word in ("-o", "-J") and index + 1 < len(words):
                value, index = words[index + 1], index + 2
            elif word.startswith(("-o", "-J")) and len(word) > 2:
                value, index = word[2:], index + 1
            else:
                raise InventoryError(
                    f"host {host.name!r}: {var}: remediate does not use {word!r} (it honours -o ProxyJump=,"
                    " -o ProxyCommand= and -J)",
                    file=host.inventory_file,
                )
            if word.startswith("-J"):
                jump = tuple(value.split(","))
                continue
            key, sep, option = value.partition("=")
            if not sep:
                key, _, option = value.partition(" ")
            name = key.strip().lower()
            if name == "proxyjump":
                jump = tuple(option.strip().split(","))
            elif name == "proxycommand":
                command = option.strip()
            elif name in _REFUSED:
                raise InventoryError(
                    f"host {host.name!r}: {var}: {key.strip()} is refused: remediate always checks host keys against"
                    " the inventory's known_hosts (use --accept-new-host-key for a host seen the first time)",
                    file=host.inventory_file,
                )
            elif name not in _HARMLESS:
                raise InventoryError(
                    f"host {host.name!r}: {var}: remediate does not honour -o {key.strip()} (it honours ProxyJump,"
                    " ProxyCommand and -J)",
                    file=host.inventory_file,
                )
    if command and command.lower() == "none":
        command = None
    if jump and jump[0].lower() == "none":
        jump = ()
    return jump, command
