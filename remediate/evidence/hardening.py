"""Evidence for `remediate harden`: what the rules need from the hosts, and the rules' findings.

The first phase is nginx's config (the ``nginx_config`` step). The second asks, in one round trip
per host: nginx's host for the open-files limit its master runs with (``/proc/PID/limits``, the pid
file named by the config) and resolv.conf (the nameservers a resolver fix would use); and every
host behind nginx (the inventory host whose address a ``*_pass`` or upstream server names, and the
port one of its ``services`` listens on; php-fpm for a unix socket) for that service's restart
setting: its supervisor ``[program:NAME]`` section, or systemd's ``Restart=``.
"""

from __future__ import annotations

import base64
import configparser
import posixpath
import re
from typing import Any

from remediate.errors import InputError
from remediate.evidence.dns import RESOLV_CONF, nameservers
from remediate.evidence.down import owner_of, service_on_port
from remediate.evidence.framework import Collector, Context, Request, new_request
from remediate.evidence.routing import pass_addresses, pid_file
from remediate.hosts.inventory import Host

__all__ = ["COLLECTORS", "backends"]


def backends(ctx: Context) -> list[tuple[Host, str]]:
    """(host, service) behind nginx: the inventory's owner of each upstream address, and the service on its port."""
    if ctx.config is None:
        return []
    found: dict[tuple[str, str], tuple[Host, str]] = {}
    for p in ctx.config.passes():
        if p.target.startswith("unix:") and p.kind == "fastcgi_pass":
            found[(ctx.host.name, ctx.host["php_fpm_service"])] = (ctx.host, str(ctx.host["php_fpm_service"]))
            continue
        for address in pass_addresses(ctx.config, p.target):
            ip, _, port = address.rpartition(":")
            owner = owner_of(ctx.inventory, ctx.host, ip.strip("[]"))
            service = service_on_port(owner, int(port)) if owner is not None and port.isdigit() else None
            if owner is not None and service:
                found[(owner.name, service)] = (owner, service)
    return list(found.values())


def _ask(host: Host, args: dict[str, Any], req: Request) -> None:
    req["files"].append(RESOLV_CONF)
    req["stats"].append(timing_log(host))  # does the timing log exist yet (its fix creates it like the others)?


def timing_log(host: Host) -> str:
    """The timing-log fix's own log, beside the access log (the access log's format stays)."""
    return posixpath.join(posixpath.dirname(str(host["nginx_access_log"])), "upstream_timing.log")


def _remote(ctx: Context, args: dict[str, Any]) -> list[tuple[Host, Request]]:
    asks: dict[str, tuple[Host, Request]] = {ctx.host.name: (ctx.host, new_request())}
    asks[ctx.host.name][1]["nofile_pid_file"] = pid_file(ctx.host, ctx.config)
    for owner, service in backends(ctx):
        req = asks.setdefault(owner.name, (owner, new_request()))[1]
        if owner["service_manager"] == "supervisor" and owner["supervisor_config"]:
            req["files"] = list(dict.fromkeys([*req["files"], str(owner["supervisor_config"])]))
        elif owner["service_manager"] == "systemd":
            req["commands"][f"restart:{service}"] = [
                "systemctl", "show", "--property=Restart", "--property=FragmentPath", service,
            ]  # fmt: skip
            req["files"] = list(dict.fromkeys([*req["files"], _drop_in(service)]))
    return list(asks.values())


def _drop_in(service: str) -> str:
    """The systemd drop-in the restart fix writes (remediate.engine.modules.service_restart_policy)."""
    return f"/etc/systemd/system/{service}.service.d/remediate-restart.conf"


def _keep_resolv_conf(ctx: Context, args: dict[str, Any], resp: dict[str, Any]) -> None:
    path = timing_log(ctx.host)
    found = (resp.get("stats") or {}).get(path)
    if found:
        ctx.stats[path] = found
    entry = resp.get("files", {}).get(RESOLV_CONF)
    if entry and "b64" in entry:
        ctx.files[RESOLV_CONF] = base64.b64decode(entry["b64"])


def _supervisor(text: str, path: str, service: str) -> dict[str, Any]:
    """A supervisor program's restart facts. supervisord's default, autorestart=unexpected, restarts a crash."""
    parser = configparser.RawConfigParser(strict=False, interpolation=None)
    try:
        parser.read_string(text)
    except configparser.Error:
        return {}
    section = f"program:{service}"
    if not parser.has_section(section):
        return {}
    value = parser.get(section, "autorestart", fallback="unexpected").strip().lower()
    lines = text.splitlines()
    header = next((i for i, raw in enumerate(lines, 1) if raw.strip() == f"[{section}]"), 1)
    line = header
    for i, raw in enumerate(lines[header:], header + 1):  # the section's own autorestart line, if it has one
        if raw.lstrip().startswith("["):
            break
        if re.match(r"\s*autorestart\s*[=:]", raw):
            line = i
            break
    return {"manager": "supervisor", "restarts": value in ("true", "unexpected"), "file": path, "line": line,
            "setting": f"autorestart={value}", "section": section}  # fmt: skip


def _systemd(stdout: str, service: str) -> dict[str, Any]:
    props = dict(line.split("=", 1) for line in stdout.splitlines() if "=" in line)
    if "Restart" not in props:
        return {}
    unit = props.get("FragmentPath") or f"{service}.service"
    return {"manager": "systemd", "restarts": props["Restart"] not in ("no", ""), "line": 1, "file": unit,
            "setting": f"Restart={props['Restart']}"}  # fmt: skip


def _read(ctx: Context, args: dict[str, Any], answers: dict[str, Any]) -> Any:
    from remediate import harden

    assert ctx.config is not None
    facts: dict[str, Any] = {"services": {}}
    mine = answers.get(ctx.host.name) or {}
    master = (mine.get("nofile") or {}).get("master") or {}
    if isinstance(master.get("soft"), int):
        facts["nofile"] = master["soft"]
    for owner, service in backends(ctx):
        resp = answers.get(owner.name) or {}
        for path, entry in (resp.get("files") or {}).items():  # what a restart-policy fix edits: HOST:PATH
            if path != RESOLV_CONF and isinstance(entry, dict) and "b64" in entry:
                ctx.files[f"{owner.name}:{path}"] = base64.b64decode(entry["b64"])
        if owner["service_manager"] == "supervisor" and owner["supervisor_config"]:
            entry = resp.get("files", {}).get(str(owner["supervisor_config"])) or {}
            text = base64.b64decode(entry["b64"]).decode("utf-8", "replace") if "b64" in entry else ""
            known = _supervisor(text, str(owner["supervisor_config"]), service)
        else:
            known = _systemd((resp.get("commands", {}).get(f"restart:{service}") or {}).get("stdout", ""), service)
        if known:
            facts["services"][service] = {**known, "host": owner.name}
    skip = tuple(ctx.host["harden_skip"])
    unknown = [r for r in skip if r not in harden.RULES]
    if unknown:
        rules = ", ".join(harden.RULES)
        raise InputError(f"host {ctx.host.name}: harden_skip names no rule {unknown[0]!r} (rules: {rules})")
    findings = harden.audit(harden.Subject(ctx.config, facts), skip=skip)
    by_rule: dict[str, list[dict[str, Any]]] = {rule: [] for rule in harden.RULES}
    for f in findings:
        by_rule[f.rule].append(f.to_json())
    resolvers, source = nameservers(ctx)
    return {
        "findings": [f.to_json() for f in findings],
        "by_rule": by_rule,
        "skipped": list(skip),
        "facts": facts,
        "resolvers": resolvers,
        "resolvers_from": source,
        "fix": _fix_targets(ctx, findings),
    }


def _fix_targets(ctx: Context, findings: list[Any]) -> dict[str, Any]:
    """What each rule's fix (playbooks/harden) edits, in the order it may edit it: within a file from the
    bottom up, so a line added below never moves a block still to be edited above."""
    config = ctx.config
    assert config is not None

    def bottom_up(wheres: Any) -> list[str]:
        def key(where: str) -> tuple[str, int]:
            file, _, line = where.rpartition(":")
            return file, int(line)

        return sorted(set(wheres), key=key, reverse=True)

    def of(rule: str, kind: str) -> list[str]:
        return [f.at[kind] for f in findings if f.rule == rule and kind in f.at]

    http = config.http()
    http_resolver = http is not None and bool(config.find("resolver", http))
    servers = {d.where: d for d, _ in config.walk() if d.name == "server" and d.block is not None}

    def without_resolver(wheres: list[str]) -> list[str]:
        return [w for w in wheres if w in servers and not http_resolver and not config.find("resolver", servers[w])]

    frozen = [f for f in findings if f.rule == "hostname-without-resolver" and "location" in f.at]
    return {
        "passive": bottom_up(of("upstream-no-passive-health", "directive")),
        "dns_locations": bottom_up(f.at["location"] for f in frozen),
        "dns_servers": bottom_up(without_resolver([f.at["server"] for f in frozen if "server" in f.at])),
        "resolver_servers": bottom_up(without_resolver(of("variable-pass-without-resolver", "server"))),
        "error_page_servers": bottom_up(of("no-custom-502-page", "server")),
        "http": http.where if http is not None else None,
        # A log of its own beside the access log: the access log's format (and whatever parses it) stays.
        "timing_log": timing_log(ctx.host),
        "timing_log_exists": ctx.stats.get(timing_log(ctx.host)) is not None,
        "access_log": str(ctx.host["nginx_access_log"]),
        "restart": [dict(f.at) for f in findings if f.rule == "upstream-service-no-restart" and f.at.get("host")],
        "nofile": next(iter(of("worker-sizing", "nofile")), None),
    }


COLLECTORS = (
    Collector(
        "harden_findings",
        "the hardening rules over nginx's config, the master's open-files limit, the backends' restart settings",
        _ask,
        _read,
        remote=_remote,
        first=_keep_resolv_conf,
    ),
)
