"""Fix modules that edit nginx's config: retarget or set a *_pass, timeouts, a block's lines, a DNS
variable and its resolver, re-resolution across many locations, a server's parameters.

Each turns rendered args plus the evidence into a Plan of byte-exact patches; none touches a host.
"""

from __future__ import annotations

import re
from typing import Any

from remediate.engine.plan import Change, Plan
from remediate.engine.render import Verbatim, render_template
from remediate.errors import InputError, Refused
from remediate.evidence.framework import Context
from remediate.nginx.config import PASS_DIRECTIVES
from remediate.nginx.edit import Patch, apply_patches, insert_in_block, quote, render_directive, replace_args

__all__ = [
    "nginx_block_set",
    "nginx_dns_variable",
    "nginx_re_resolve",
    "nginx_retarget",
    "nginx_server_params",
    "nginx_set_pass",
    "nginx_timeout",
]


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
