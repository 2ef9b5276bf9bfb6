"""Fix modules: each turns rendered args plus the evidence into a Plan (file changes and service actions).

Modules never touch the host; they only compute. A module that cannot act
safely raises Refused with the reason.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from remediate.errors import InputError, Refused
from remediate.evidence import Context
from remediate.inventory import Host
from remediate.nginx.config import PASS_DIRECTIVES
from remediate.nginx.edit import Patch, apply_patches, insert_in_block, quote, render_directive, replace_args
from remediate.plan import Action, Change, Plan
from remediate.services import log_argv, restart_argv

__all__ = ["MODULES", "ini_set", "service_restart", "validate_argv"]

INI_MARKER = "; managed by remediate"


def validate_argv(host: Host, kind: str) -> list[str]:
    if kind == "nginx":
        return [*host.nginx_base_argv, "-t"]
    if kind == "php-fpm":
        return [host["php_fpm_bin"], "-t", "-y", host["php_fpm_conf"]]
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
    )
    return Plan(actions=[action])


_KEY_LINE = re.compile(
    r"^(?P<lead>\s*)(?P<key>[A-Za-z0-9_.\[\]]+)(?P<eq>\s*=\s*)(?P<value>[^;\r\n]*?)(?P<tail>\s*(;.*)?)$"
)


def ini_set(ctx: Context, args: dict[str, Any]) -> Plan:
    """Set ``key = value`` lines in one ``[section]`` of a flat ini file (php-fpm pools).

    A key that is set is updated in place (only its value changes); a missing key
    is added at the end of the section, marked. Line edits are right here: these
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
        indent=indent,
        prefix=str(args["prefix"]),
        body=body,
        directive=directive_name,
        seconds=seconds,
        why=str(args.get("why", "a slow prefix")),
    ).replace("\n", newline.decode())
    patch = Patch(location.file, line_start, line_start, text.encode("utf-8", "surrogateescape"))
    return Plan(changes=[Change(location.file, before, apply_patches(before, [patch]), "nginx")])


def render_template(name: str, **context: Any) -> str:
    """A template from templates/: every block remediate adds comes from there."""
    import jinja2

    from remediate.resources import templates_dir

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(templates_dir())),
        keep_trailing_newline=True,
        undefined=jinja2.StrictUndefined,
        autoescape=False,
    )
    return env.get_template(name).render(**context)


MODULES: dict[str, Callable[[Context, dict[str, Any]], Plan]] = {
    "service_restart": service_restart,
    "ini_set": ini_set,
    "nginx_retarget": nginx_retarget,
    "nginx_set_pass": nginx_set_pass,
    "nginx_timeout": nginx_timeout,
}
