"""Inspect a host as remediate sees it: `remediate inventory` (the vars remediate will use) and `remediate
config` (nginx -T, parsed: what proxies where, and which location a URL reaches).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from typing import Any

from remediate.cli.common import FMT, host_args, print_json
from remediate.errors import EXIT_OK, RemediateError


def add_parsers(sub: Any, argv: Sequence[str] | None = None) -> None:
    inv = sub.add_parser(
        "inventory",
        help="show the hosts of an inventory and the vars remediate will use",
        description="Load an inventory the way remediate reads it: Ansible's merge order, typed vars, defaults.",
        formatter_class=FMT,
        epilog="example:\n  remediate inventory -i lab/inventory.yml --host web01",
    )
    host_args(inv, need_host=False)
    inv.add_argument("--host", help="show one host's vars in full")

    conf = sub.add_parser(
        "config",
        help="fetch a host's nginx config (nginx -T over SSH) and show what it proxies where",
        description=(
            "Connect to the host, read the effective config in one round trip (nginx -T), parse every\n"
            "file, and list each *_pass with its server and location and file:line. With --route,\n"
            "show which server and location handle a URL, by nginx's own matching rules."
        ),
        formatter_class=FMT,
        epilog="example:\n  remediate config -i lab/inventory.yml --host web01 --route http://web01.lab:8080/api/users",
    )
    host_args(conf)
    conf.add_argument("--route", metavar="URL", help="which server/location handles this URL")
    conf.add_argument(
        "--accept-new-host-key",
        action="store_true",
        help="trust a host key seen for the first time and add it to known_hosts (a changed key is still refused)",
    )


def _cmd_inventory(args: argparse.Namespace) -> int:
    from remediate.hosts.inventory import load_inventory

    inv = load_inventory(args.inventory)
    hosts = [inv.host(args.host)] if args.host else list(inv)
    if args.json:
        print_json({h.name: {"groups": list(h.groups), "vars": h.vars} for h in hosts})
        return EXIT_OK
    for h in hosts:
        via = "local" if h.is_local else f"ssh {h['ansible_user'] or ''}@{h.address}:{h['ansible_port']}"
        print(f"{h.name}  ({via}; groups: {', '.join(h.groups)})")
        if args.host:
            for key, value in sorted(h.vars.items()):
                print(f"  {key:<30} {value}")
    return EXIT_OK


def _cmd_config(args: argparse.Namespace) -> int:
    from urllib.parse import urlsplit

    from remediate.hosts.connect import open_transport
    from remediate.hosts.inventory import load_inventory
    from remediate.nginx import NginxConfig, route

    host = load_inventory(args.inventory).host(args.host)
    with open_transport(host, accept_new_host_key=args.accept_new_host_key) as transport:
        dump = transport.run([*host.nginx_base_argv, "-T"], warn=True)
    if not dump.ok:
        raise RemediateError(f"{host.name}: `nginx -T` failed ({dump.exited}): {dump.stderr_tail()}")
    config = NginxConfig.from_dump(dump.stdout)
    passes = [
        {
            "directive": p.kind,
            "target": p.target,
            "location": " ".join(p.location.args) if p.location else None,
            "where": p.directive.where,
        }
        for p in config.passes()
    ]
    user = config.user()
    result: dict[str, Any] = {
        "host": host.name,
        "files": list(config.files),
        "user": list(user) if user else None,
        "upstreams": {name: d.where for name, d in config.upstreams().items()},
        "passes": passes,
    }
    if args.route:
        url = urlsplit(args.route if "://" in args.route else "http://" + args.route)
        hostname = url.hostname or ""
        addr = hostname if hostname.replace(".", "").isdigit() or ":" in hostname else None
        match = route(config, hostname, url.path or "/", url.port or 80, addr)
        result["route"] = (
            None
            if match is None
            else {
                "server": match.server.where,
                "location": " ".join(match.location.args) if match.location else None,
                "location_where": match.location.where if match.location else None,
            }
        )
    if args.json:
        print_json(result)
        return EXIT_OK
    print(f"{host.name}: {len(config.files)} files, worker user {user[0] if user else '(nginx default)'}")
    for p in passes:
        print(f"  {p['directive']:<13} {p['target']:<45} location {p['location'] or '-':<16} {p['where']}")
    if args.route:
        r = result["route"]
        print(f"route {args.route}: " + (f"location {r['location']} at {r['location_where']}" if r else "no server"))
    return EXIT_OK


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {"inventory": _cmd_inventory, "config": _cmd_config}
