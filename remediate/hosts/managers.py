"""The argv that drives each service manager: systemd, supervisor, sysv. One place for all three."""

from __future__ import annotations

from remediate.hosts.inventory import Host

__all__ = ["log_argv", "restart_argv", "status_argv"]


def restart_argv(host: Host, service: str) -> list[str]:
    manager = host["service_manager"]
    if manager == "systemd":
        return ["systemctl", "restart", service]
    if manager == "supervisor":
        conf = host["supervisor_config"]
        return ["supervisorctl", *(["-c", conf] if conf else []), "restart", service]
    return ["service", service, "restart"]


def status_argv(host: Host, service: str) -> list[str]:
    manager = host["service_manager"]
    if manager == "systemd":
        return ["systemctl", "is-active", service]
    if manager == "supervisor":
        conf = host["supervisor_config"]
        return ["supervisorctl", *(["-c", conf] if conf else []), "status", service]
    return ["service", service, "status"]


def log_argv(host: Host, service: str) -> list[str]:
    """The service's own recent log, shown when a restart fails."""
    manager = host["service_manager"]
    if manager == "systemd":
        return ["journalctl", "-u", service, "-n", "20", "--no-pager"]
    if manager == "supervisor":
        conf = host["supervisor_config"]
        return ["supervisorctl", *(["-c", conf] if conf else []), "tail", service, "stderr"]
    return []
