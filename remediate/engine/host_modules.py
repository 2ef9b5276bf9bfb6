"""Fix modules that act on the host's services and their files: a service restart, an INI setting
(php-fpm pools), a new file owned like its neighbours, a service's open-files limit and restart policy
(systemd drop-ins or supervisor sections).

Each turns rendered args plus the evidence into a Plan; none touches a host.
"""

from __future__ import annotations

import re
from typing import Any

from remediate.engine.plan import Action, Change, Plan
from remediate.engine.render import render_template
from remediate.errors import InputError, Refused
from remediate.evidence.framework import Context
from remediate.hosts.inventory import Host
from remediate.hosts.managers import log_argv, restart_argv

__all__ = [
    "INI_MARKER",
    "file_like",
    "ini_set",
    "service_nofile",
    "service_restart",
    "service_restart_policy",
    "validate_argv",
]

INI_MARKER = "; managed by remediate"


def validate_argv(host: Host, kind: str) -> list[str]:
    if kind == "nginx":
        return [*host.nginx_base_argv, "-t"]
    if kind == "php-fpm":
        return [host["php_fpm_bin"], "-t", "-y", host["php_fpm_conf"]]
    if kind == "none":
        return []
    raise ValueError(f"unknown validation {kind!r}")


def service_restart(ctx: Context, args: dict[str, Any]) -> Plan:
    """Restart a service the inventory lists as restartable (on this host, or on ``host``); wait until it serves."""
    service = str(args["service"])
    target = ctx.host
    if args.get("host") and args["host"] != ctx.host.name:
        if ctx.inventory is None:
            raise InputError("service_restart: another host needs the inventory")
        target = ctx.inventory.host(str(args["host"]))
    allowed = target["restartable_services"]
    if service not in allowed:
        raise Refused(
            f"{target.name}: the fix needs to restart {service!r}, which is not in restartable_services "
            f"({', '.join(allowed) or 'empty'}); add it to the inventory to allow it"
        )
    action = Action(
        "restart",
        service,
        tuple(restart_argv(target, service)),
        wait_socket=args.get("wait_socket") or None,
        host=None if target is ctx.host else target.name,
        wait_port=args.get("wait_port") or None,
        log_argv=tuple(log_argv(target, service)),
        timeout=float(target["restart_wait"]),
        expect_http=args.get("expect_http") or None,
        # systemd says "failed" within a second of a unit that cannot start: no need to wait restart_wait
        failed_argv=("systemctl", "is-failed", "--quiet", service) if target["service_manager"] == "systemd" else (),
    )
    return Plan(actions=[action])


_KEY_LINE = re.compile(
    r"^(?P<lead>\s*)(?P<key>[A-Za-z0-9_.\[\]]+)(?P<eq>\s*=\s*)(?P<value>[^;\r\n]*?)(?P<tail>\s*(;.*)?)$"
)


def ini_set(ctx: Context, args: dict[str, Any]) -> Plan:
    """Set ``key = value`` lines in one ``[section]`` of a flat ini file (php-fpm pools).

    A key that is set is updated in place (only its value changes); a key that is only there
    commented out is set on that line; any other missing key is added at the end of the
    section. Lines remediate writes are marked. Line edits are right here: these
    files are flat ``key = value``, not nested blocks.
    """
    path = str(args["path"])
    section = str(args["section"])
    values = {str(k): str(v) for k, v in dict(args["values"]).items()}
    if path not in ctx.files:
        raise InputError(f"ini_set: {path} was not collected as evidence (is it in php_fpm_pools?)")
    before = ctx.files[path]
    text = before.decode("utf-8", "surrogateescape")
    newline = "\r\n" if "\r\n" in text else "\n"
    lines = text.splitlines(keepends=True)
    start = end = None
    for index, line in enumerate(lines):
        stripped = line.strip()
        if stripped.startswith("[") and stripped.endswith("]"):
            if stripped[1:-1] == section:
                start = index + 1
            elif start is not None and end is None:
                end = index
    if start is None:
        raise Refused(f"{ctx.host.name}: {path} has no [{section}] section")
    end = len(lines) if end is None else end
    pending = dict(values)
    for index in range(start, end):
        body = lines[index].rstrip("\r\n")
        m = _KEY_LINE.match(body)
        if not m or m.group("key") not in pending or body.lstrip().startswith((";", "#")):
            continue
        wanted = pending.pop(m.group("key"))
        if m.group("value").strip().strip("\"'") != wanted:
            ending = lines[index][len(body) :]
            lines[index] = f"{m.group('lead')}{m.group('key')}{m.group('eq')}{wanted}{m.group('tail')}{ending}"
    for key in list(pending):
        # A key the file documents but leaves commented (Debian's ``;listen.mode = 0660`` beside
        # listen.owner) is set right there, where a reader of the file looks for it.
        commented = re.compile(r"^\s*[;#]\s*" + re.escape(key) + r"\s*=")
        spot = next((i for i in range(end - 1, start - 1, -1) if commented.match(lines[i])), None)
        if spot is not None:
            ending = lines[spot][len(lines[spot].rstrip("\r\n")) :] or newline
            lines[spot] = f"{key} = {pending.pop(key)} {INI_MARKER}{ending}"
    if pending:
        insert_at = end
        while insert_at > start and not lines[insert_at - 1].strip():
            insert_at -= 1
        if insert_at > 0 and not lines[insert_at - 1].endswith(("\n", "\r")):
            lines[insert_at - 1] += newline
        added = [f"{key} = {value} {INI_MARKER}{newline}" for key, value in pending.items()]
        lines[insert_at:insert_at] = added
    after = "".join(lines).encode("utf-8", "surrogateescape")
    if after == before:
        return Plan()
    return Plan(changes=[Change(path, before, after, str(args.get("validate", "php-fpm")))])


def file_like(ctx: Context, args: dict[str, Any]) -> Plan:
    """Create an empty ``path`` with the owner and mode of ``like`` (a new log beside nginx's own, which nginx
    would otherwise create root:root 0644 where Debian's are www-data:adm 0640). Use ``when:`` to skip it
    when the file exists."""
    return Plan(changes=[Change(str(args["path"]), None, b"", "none", like=str(args["like"]))])


def service_nofile(ctx: Context, args: dict[str, Any]) -> Plan:
    """Raise the open-files limit nginx's service starts with, the way the service manager applies it.

    systemd: a drop-in with ``LimitNOFILE`` (then ``systemctl daemon-reload``). supervisor:
    ``minfds`` in supervisord.conf, which supervisord applies to itself and its programs at its
    next start. Never above the kernel ceiling fs.nr_open. limits.conf is not touched: it applies
    to login sessions, not to services. Either way the master picks it up at its next restart;
    the workers already get the higher limit from ``worker_rlimit_nofile``.
    """
    nofile = int(args["nofile"])
    ceiling = args.get("nr_open")
    if ceiling and nofile > int(ceiling):
        raise Refused(f"{ctx.host.name}: a nofile limit of {nofile} is above the kernel's fs.nr_open {ceiling}")
    host = ctx.host
    if host["service_manager"] == "systemd":
        path = f"/etc/systemd/system/{host['nginx_service']}.service.d/remediate-nofile.conf"
        after = render_template("systemd-nofile.conf.j2", nofile=nofile).encode()
        before = ctx.files.get(path)
        if before == after:
            return Plan()
        return Plan(
            changes=[Change(path, before, after, "none")],
            actions=[Action("command", "systemd", ("systemctl", "daemon-reload"))],
        )
    if host["service_manager"] == "supervisor" and host["supervisor_config"]:
        path = str(host["supervisor_config"])
        if path not in ctx.files:
            raise InputError(f"service_nofile: {path} was not collected as evidence")
        return ini_set(ctx, {"path": path, "section": "supervisord", "values": {"minfds": nofile}, "validate": "none"})
    raise Refused(f"{ctx.host.name}: no way to raise a service's nofile limit under {host['service_manager']}")


def service_restart_policy(ctx: Context, args: dict[str, Any]) -> Plan:
    """Make the service ``service`` on ``host`` (default: this host) start again when it crashes.

    systemd: a drop-in with ``Restart=on-failure`` (systemd-restart.conf.j2), then ``systemctl
    daemon-reload``: the running service is not restarted. supervisor: ``autorestart = true`` in its
    ``[program:NAME]`` section (the file as read in the evidence, ``ctx.files["HOST:PATH"]``), then
    ``supervisorctl update NAME``, which restarts that program to take it (so the service must be in
    the host's ``restartable_services``); the probes then show whether it serves again.
    """
    target = ctx.host
    if args.get("host") and args["host"] != ctx.host.name:
        if ctx.inventory is None:
            raise InputError("service_restart_policy: another host needs the inventory")
        target = ctx.inventory.host(str(args["host"]))
    service = str(args["service"])
    other = None if target is ctx.host else target.name
    if target["service_manager"] == "systemd":
        path = f"/etc/systemd/system/{service}.service.d/remediate-restart.conf"
        after = render_template("systemd-restart.conf.j2", service=service).encode()
        before = ctx.files.get(f"{target.name}:{path}")
        if before == after:
            return Plan()
        return Plan(
            changes=[Change(path, before, after, "none", other)],
            actions=[Action("command", "systemd", ("systemctl", "daemon-reload"), host=other)],
        )
    conf = target["supervisor_config"]
    if target["service_manager"] != "supervisor" or not conf:
        raise Refused(f"{target.name}: no way to set a restart policy under {target['service_manager']}")
    if service not in target["restartable_services"]:
        raise Refused(
            f"{target.name}: supervisor applies autorestart by restarting {service!r}, which is not in "
            f"restartable_services ({', '.join(target['restartable_services']) or 'empty'}); add it to allow it"
        )
    key = f"{target.name}:{conf}"
    if key not in ctx.files:
        raise InputError(f"service_restart_policy: {conf} on {target.name} was not collected as evidence")
    local = Context(target, inventory=ctx.inventory, files={str(conf): ctx.files[key]})
    edited = ini_set(local, {"path": str(conf), "section": f"program:{service}", "values": {"autorestart": "true"},
                             "validate": "none"})  # fmt: skip
    if edited.empty:
        return Plan()
    port = (target["services"].get(service) or {}).get("port")
    update = Action(
        "restart",
        service,
        ("supervisorctl", "-c", str(conf), "update", service),
        host=other,
        wait_port=f"{target.address}:{port}" if port else None,
        log_argv=tuple(log_argv(target, service)),
        timeout=float(target["restart_wait"]),
    )
    changed = edited.changes[0]
    ctx.files[key] = changed.after  # the next service in the same file builds on this edit
    return Plan(changes=[Change(changed.path, changed.before, changed.after, "none", other)], actions=[update])
