"""Fix modules: each turns rendered args plus the evidence into a Plan (file changes and service actions).

Modules never touch the host; they only compute. A module that cannot act
safely raises Refused with the reason.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from remediate.engine.plan import Action, Change, Plan
from remediate.errors import InputError, Refused
from remediate.evidence.framework import Context
from remediate.hosts.inventory import Host
from remediate.hosts.services import log_argv, restart_argv
from remediate.hosts.values import UNSAFE_IN_CONFIG
from remediate.nginx.config import PASS_DIRECTIVES
from remediate.nginx.edit import Patch, apply_patches, insert_in_block, quote, render_directive, replace_args

__all__ = ["MODULES", "ini_set", "service_restart", "validate_argv"]

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


def nginx_retarget(ctx: Context, args: dict[str, Any]) -> Plan:
    """Point every *_pass and upstream ``server`` that targets address ``from`` at ``to`` instead.

    Only the address inside that one argument changes (scheme, URI and parameters such as
    ``max_fails=3`` stay), so every other byte of every file is untouched.
    """
    old, new = str(args["from"]), str(args["to"])
    if ctx.config is None:
        raise InputError("nginx_retarget needs the nginx_config evidence")
    pattern = re.compile(r"^((?:[a-z]+://)?)" + re.escape(old) + r"(?=[/;]|$)")
    patches: dict[str, list[Patch]] = {}
    for directive, _ in ctx.config.walk():
        in_upstream = (
            directive.name == "server" and directive.parent is not None and directive.parent.name == "upstream"
        )
        if not (directive.name in PASS_DIRECTIVES or in_upstream) or not directive.arg_tokens:
            continue
        token, value = directive.arg_tokens[0], directive.args[0]
        match = pattern.match(value)
        if match:
            text = quote(match.group(1) + new + value[match.end() :]).encode()
            patches.setdefault(directive.file, []).append(Patch(directive.file, token.start, token.end, text))
    plan = Plan()
    for path, file_patches in patches.items():
        before = ctx.config.files[path].data
        plan.changes.append(Change(path, before, apply_patches(before, file_patches), "nginx"))
    return plan


def nginx_set_pass(ctx: Context, args: dict[str, Any]) -> Plan:
    """Set the target of the one *_pass directive at ``where`` (file:line); only its argument changes."""
    where, target = str(args["where"]), str(args["target"])
    if ctx.config is None:
        raise InputError("nginx_set_pass needs the nginx_config evidence")
    found = [p.directive for p in ctx.config.passes() if p.directive.where == where]
    if len(found) != 1:
        raise Refused(f"{ctx.host.name}: expected one *_pass at {where}, found {len(found)}; the config changed?")
    directive = found[0]
    if directive.args[0] == target:
        return Plan()
    token = directive.arg_tokens[0]
    before = ctx.config.files[directive.file].data
    after = apply_patches(before, [Patch(directive.file, token.start, token.end, quote(target).encode())])
    return Plan(changes=[Change(directive.file, before, after, "nginx")])


def nginx_timeout(ctx: Context, args: dict[str, Any]) -> Plan:
    """Set one proxy timeout for one location, or give a slow prefix of a broad location its own.

    In a specific location the directive is updated in place, or added, marked. Under a broad
    ``location /`` a dedicated ``location PREFIX`` is added from templates/timeout-location.conf.j2,
    with the broad location's body copied byte for byte, so only the slow prefix waits longer.
    """
    if ctx.config is None:
        raise InputError("nginx_timeout needs the nginx_config evidence")
    where, directive_name = str(args["location_where"]), str(args["directive"])
    seconds = int(args["seconds"])
    found = [d for d, _ in ctx.config.walk() if d.name == "location" and d.where == where]
    if len(found) != 1 or found[0].close is None:
        raise Refused(f"{ctx.host.name}: expected one location at {where}; the config changed?")
    location = found[0]
    assert location.close is not None  # a location is always a block
    file = ctx.config.files[location.file]
    before = file.data
    if not args.get("broad"):
        existing = [d for d in location.children if d.name == directive_name]
        if existing:
            if existing[-1].args == [f"{seconds}s"]:
                return Plan()
            patch = replace_args(existing[-1], [f"{seconds}s"])
        else:
            patch = insert_in_block(file, location, [render_directive(directive_name, [f"{seconds}s"])], at_end=True)
        return Plan(changes=[Change(location.file, before, apply_patches(before, [patch]), "nginx")])
    newline = file.newline
    line_start = before.rfind(b"\n", 0, location.start) + 1
    indent = before[line_start : location.start].decode("utf-8", "surrogateescape")
    inner = before[location.terminator.end : location.close.start].split(b"\n")
    if inner and not inner[0].strip():
        inner = inner[1:]
    if inner and not inner[-1].strip():
        inner = inner[:-1]
    body = b"\n".join(line.rstrip(b"\r") for line in inner).decode("utf-8", "surrogateescape")
    text = render_template(
        "timeout-location.conf.j2",
        indent=Verbatim(indent),
        prefix=str(args["prefix"]),
        body=Verbatim(body),
        directive=directive_name,
        seconds=seconds,
        why=str(args.get("why", "a slow prefix")),
    ).replace("\n", newline.decode())
    patch = Patch(location.file, line_start, line_start, text.encode("utf-8", "surrogateescape"))
    return Plan(changes=[Change(location.file, before, apply_patches(before, [patch]), "nginx")])


def _block(ctx: Context, spec: str) -> tuple[Any, Any]:
    """(file, block) for a block spec: ``main``, ``events``, ``upstream NAME``, or the file:line of a block."""
    config = ctx.config
    if config is None:
        raise InputError("nginx edits need the nginx_config evidence")
    if spec == "main":
        return config.files[config.main], None
    if spec == "events":
        found = config.find("events")
    elif spec.startswith("upstream "):
        found = [u for name, u in config.upstreams().items() if name == spec.split(None, 1)[1]]
    else:
        found = [d for d, _ in config.walk() if d.where == spec and d.block is not None]
    if len(found) != 1:
        raise Refused(f"{ctx.host.name}: expected one block {spec!r} in the config, found {len(found)}; it changed?")
    return config.files[found[0].file], found[0]


def nginx_block_set(ctx: Context, args: dict[str, Any]) -> Plan:
    """Make the directives a template renders hold in one block (``block``: main, events, upstream NAME, file:line).

    A directive the block already has gets the new arguments in place (only they change); a
    missing one is added as the template's line, marked, indented like its neighbours, at the
    block's start or end (``at``). Lines equal to what is there change nothing; with
    ``keep_existing`` a directive that is set at all is left as it is. With ``add_only`` (and always for
    a block, such as a location) a directive is added unless one with the same arguments is there, and
    nothing is replaced: for directives that repeat, like ``error_page``.
    """
    from remediate.nginx import parse

    file, block = _block(ctx, str(args["block"]))
    text = render_template(str(args["template"]), **dict(args.get("vars") or {}))
    wanted = parse(text.encode(), "<template>").directives
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    children = block.children if block is not None else file.directives
    patches: list[Patch] = []
    added: list[str] = []
    for directive, line in zip(wanted, lines, strict=True):
        existing = [d for d in children if d.name == directive.name]
        if args.get("add_only") or directive.block is not None:
            # A directive that may repeat (error_page, a location): only an identical one counts as there.
            existing = [d for d in existing if d.args == directive.args]
            if existing:
                continue
        if existing:
            if existing[-1].args != directive.args and not args.get("keep_existing"):
                patches.append(_replace_line(file, existing[-1], line, directive.args))
        else:
            added.append(line)
    if added:
        if block is None:  # main context: before the first block (events, http), at column 0
            first = next((d for d in file.directives if d.block is not None), None)
            at = file.data.rfind(b"\n", 0, first.start) + 1 if first is not None else len(file.data)
            newline = file.newline
            patches.append(Patch(file.path, at, at, b"".join(a.encode() + newline for a in added)))
        else:
            patches.append(insert_in_block(file, block, added, at_end=args.get("at", "end") == "end"))
    if not patches:
        return Plan()
    return Plan(changes=[Change(file.path, file.data, apply_patches(file.data, patches), "nginx")])


def _replace_line(file: Any, directive: Any, line: str, args: list[str]) -> Patch:
    """The template's whole line (marked) for a directive alone on its line; else just its arguments."""
    data = file.data
    end = data.find(b"\n", directive.end)
    end = len(data) if end == -1 else end
    if data[end - 1 : end] == b"\r":
        end -= 1
    start_of_line = data.rfind(b"\n", 0, directive.start) + 1
    if data[start_of_line : directive.start].strip() or data[directive.end : end].strip():
        return replace_args(directive, args)  # shares its line, or has a comment of its own: keep those
    return Patch(file.path, directive.start, end, line.encode())


def nginx_server_params(ctx: Context, args: dict[str, Any]) -> Plan:
    """Set ``key=value`` parameters (a template's) on the upstream ``server`` line at ``where`` (file:line).

    A parameter the line has gets the new value in place; a missing one is appended. The address and
    every other parameter stay as they are.
    """
    config = ctx.config
    if config is None:
        raise InputError("nginx edits need the nginx_config evidence")
    where = str(args["where"])
    found = [d for d, c in config.walk() if d.where == where and d.name == "server" and c and c[-1].name == "upstream"]
    if len(found) != 1 or not found[0].args:
        raise Refused(f"{ctx.host.name}: expected an upstream server line at {where}; the config changed?")
    directive = found[0]
    text = render_template(str(args["template"]), **dict(args.get("vars") or {}))
    wanted = dict(p.split("=", 1) for p in text.split())
    params = [directive.args[0]]
    for arg in directive.args[1:]:
        key = arg.split("=", 1)[0]
        params.append(f"{key}={wanted.pop(key)}" if key in wanted else arg)
    params += [f"{k}={v}" for k, v in wanted.items()]
    if params == directive.args:
        return Plan()
    file = config.files[directive.file]
    after = apply_patches(file.data, [replace_args(directive, params)])
    return Plan(changes=[Change(file.path, file.data, after, "nginx")])


def nginx_dns_variable(ctx: Context, args: dict[str, Any]) -> Plan:
    """Make a location's proxy_pass re-resolve its host name: the name goes into a variable.

    ``proxy_pass http://name:port/uri`` becomes ``set $var "name"`` plus ``proxy_pass
    http://$var:port``. With a variable, nginx sends a URI part as is instead of replacing the
    location prefix, so when there was one a ``rewrite ^PREFIX(.*)$ URI$1 break;`` keeps the
    path the backend sees exactly as before. A resolver must be in effect (see resolver.conf.j2).
    """
    file, patches = _dns_variable_patches(ctx, str(args["location_where"]))
    return Plan(changes=[Change(file.path, file.data, apply_patches(file.data, patches), "nginx")])


def nginx_re_resolve(ctx: Context, args: dict[str, Any]) -> Plan:
    """nginx_dns_variable for every location in ``locations``, and resolver.conf.j2 at the start of every
    server in ``servers`` (with ``vars``), all computed on the same bytes and applied at once: no edit
    moves a line another still has to find."""
    by_file: dict[str, tuple[Any, list[Patch]]] = {}
    for where in args.get("locations") or []:
        file, patches = _dns_variable_patches(ctx, str(where))
        by_file.setdefault(file.path, (file, []))[1].extend(patches)
    if args.get("servers"):
        text = render_template("resolver.conf.j2", **dict(args.get("vars") or {}))
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        for where in args["servers"]:
            file, block = _block(ctx, str(where))
            by_file.setdefault(file.path, (file, []))[1].append(insert_in_block(file, block, lines, at_end=False))
    return Plan(
        changes=[Change(f.path, f.data, apply_patches(f.data, patches), "nginx") for f, patches in by_file.values()]
    )


def _dns_variable_patches(ctx: Context, location_where: str) -> tuple[Any, list[Patch]]:
    from remediate.evidence.dns import TARGET, is_address
    from remediate.nginx.match import parse_location

    file, location = _block(ctx, location_where)
    passes = [d for d in location.children if d.name == "proxy_pass" and d.args]
    if len(passes) != 1:
        raise Refused(f"{ctx.host.name}: {location.where} has {len(passes)} proxy_pass; expected one")
    directive = passes[0]
    m = TARGET.match(directive.args[0])
    if not m or "$" in directive.args[0] or is_address(m.group("host")):
        raise Refused(f"{ctx.host.name}: {directive.where}: proxy_pass {directive.args[0]} names no static host")
    var = "remediate_" + re.sub(r"[^A-Za-z0-9]", "_", m.group("host"))
    port = f":{m.group('port')}" if m.group("port") else ""
    rewrite = None
    if m.group("uri"):
        loc = parse_location(location)
        if loc.modifier not in ("", "^~"):
            raise Refused(f"{ctx.host.name}: {directive.where}: a URI part in a {loc.modifier} location; fix by hand")
        pattern = "^" + re.sub(r"([\\.^$|?*+()\[\]{}])", r"\\\1", loc.pattern) + "(.*)$"
        rewrite = {"pattern": pattern, "replacement": m.group("uri") + "$1"}
    text = render_template(
        "dns-variable.conf.j2", var=var, name=m.group("host"), rewrite=rewrite, old=directive.args[0]
    )
    data = file.data
    line_start = data.rfind(b"\n", 0, directive.start) + 1
    indent = data[line_start : directive.start]
    newline = file.newline
    block = b"".join(indent + line.strip().encode() + newline for line in text.splitlines() if line.strip())
    patches = [
        Patch(file.path, line_start, line_start, block),
        replace_args(directive, [f"{m.group('scheme')}://${var}{port}"]),
    ]
    return file, patches


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


def render_template(template: str, **context: Any) -> str:
    """A template from templates/: every block remediate adds comes from there."""
    import jinja2

    from remediate.resources import templates_dir

    def finalize(value: Any) -> Any:
        # The backstop behind remediate.hosts.values: no value may end a directive, open a block or a
        # comment, or start a new line. Only text copied from the config itself is Verbatim.
        if isinstance(value, str) and not isinstance(value, Verbatim) and UNSAFE_IN_CONFIG.intersection(value) - {" "}:
            raise Refused(f"refusing to write {value!r} into {template}: it would change the config's structure")
        return value

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(templates_dir())),
        keep_trailing_newline=True,
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        finalize=finalize,
    )
    return env.get_template(template).render(**context)


class Verbatim(str):
    """Text copied byte for byte from the host's own config (a location's body): written as it is."""


MODULES: dict[str, Callable[[Context, dict[str, Any]], Plan]] = {
    "service_restart": service_restart,
    "ini_set": ini_set,
    "nginx_retarget": nginx_retarget,
    "nginx_set_pass": nginx_set_pass,
    "nginx_timeout": nginx_timeout,
    "nginx_block_set": nginx_block_set,
    "nginx_dns_variable": nginx_dns_variable,
    "nginx_server_params": nginx_server_params,
    "nginx_re_resolve": nginx_re_resolve,
    "service_nofile": service_nofile,
    "file_like": file_like,
    "service_restart_policy": service_restart_policy,
}
