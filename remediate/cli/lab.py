"""`remediate lab up|break|status|reset|down`: the loopback lab, or with --os debian a stock Debian host
under systemd.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from remediate.cli.common import DEFAULT_DEBIAN_LAB, DEFAULT_LAB, FMT, Parser, print_json
from remediate.errors import EXIT_OK, UsageError


def add_parsers(sub: Any, argv: Sequence[str] | None = None) -> None:
    lab = sub.add_parser(
        "lab",
        help="a real nginx/sshd/php-fpm lab on loopback that reproduces every 502 cause",
        description=(
            "Build and drive the lab: hosts on loopback (web01, or web01..webNN with --web-hosts N: nginx,\n"
            "php-fpm, sshd under each host's supervisord; app01: backends and sshd), dnsmasq for *.lab,\n"
            "a private CA. Needs root and:\n"
            "  apt-get install nginx openssh-server php-fpm supervisor dnsmasq-base dnsutils sudo\n"
            "Nothing of the machine's own is touched: not ~/.ssh, /etc/nginx, the system sshd or /etc/hosts."
        ),
        formatter_class=FMT,
        epilog=(
            "examples:\n"
            f"  remediate lab up                       # writes {DEFAULT_LAB}/inventory.yml\n"
            "  remediate lab break --cause socket --variant permission\n"
            "  remediate lab status\n"
            "  remediate lab down\n"
            "  remediate lab up --web-hosts 10          # a fleet: web01..web10, inventory group `web`\n"
            "  remediate lab break --limit web --cause socket --variant missing\n"
            "  remediate lab status --limit 'web:!web01'\n"
            f"  remediate lab up --os debian             # a stock Debian host under systemd: {DEFAULT_DEBIAN_LAB}\n"
            "  remediate lab break --os debian --cause socket --variant killed"
        ),
    )
    lab_sub = lab.add_subparsers(dest="lab_command", metavar="ACTION", required=True, parser_class=Parser)

    def lab_dir(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--os",
            choices=("loopback", "debian"),
            default="loopback",
            help="loopback: the hosts on 127.0.x (default); debian: a stock Debian bookworm host booted with "
            "systemd (systemd-nspawn), Debian's nginx and php8.2-fpm, journald: the reference",
        )
        p.add_argument(
            "--dir",
            default=None,
            help=f"the lab's directory (default: $REMEDIATE_LAB or {DEFAULT_LAB}; with --os debian "
            f"{DEFAULT_DEBIAN_LAB})",
        )
        p.add_argument("--json", action="store_true", help="print one JSON object instead of text")

    def lab_limit(p: argparse.ArgumentParser, default: str = "web01") -> None:
        p.add_argument(
            "--limit",
            metavar="PATTERN",
            help=f"the web hosts, as an Ansible host pattern (web, web0*, web:!web02); default: {default}",
        )

    up = lab_sub.add_parser("up", help="create and start the lab")
    lab_dir(up)
    up.add_argument("--net", default="127.0.10", help="first three octets of the lab's loopback addresses")
    up.add_argument("--ssh-port", type=int, default=2222)
    up.add_argument("--http-port", type=int, default=8080)
    up.add_argument(
        "--web-hosts",
        type=int,
        default=1,
        metavar="N",
        help="how many web hosts (web01..webNN, inventory group `web`; default 1)",
    )
    brk = lab_sub.add_parser(
        "break",
        help="put the lab into one runbook cause",
        description="Reset the lab to healthy, then break it the way the runbook describes.",
        formatter_class=FMT,
        # Built only when `lab` is on the command line: it imports the lab, which a run does not need.
        epilog=_break_table() if "lab" in (sys.argv[1:] if argv is None else argv) else None,
    )
    lab_dir(brk)
    lab_limit(brk)
    brk.add_argument("--cause", required=True, help="one of the causes below")
    brk.add_argument("--variant", help="the variant, for causes that have several")
    brk.add_argument("--keep", action="store_true", help="do not reset first: stack this break on the current ones")
    for name, text in (
        ("status", "show each probe's status code"),
        ("reset", "put app01, the DNS and the web hosts back to healthy"),
        ("down", "stop every process the lab started"),
    ):
        p = lab_sub.add_parser(name, help=text)
        lab_dir(p)
        if name != "down":
            lab_limit(p, "every web host" if name == "reset" else "web01")


def _break_table() -> str:
    from remediate.lab.core import BREAKS

    lines = ["causes and variants (probe that fails, status nginx answers):"]
    for b in BREAKS:
        lines.append(f"  --cause {b.cause:<17} --variant {b.variant:<12} {b.probe:<8} {b.status}  {b.summary}")
    return "\n".join(lines)


def _cmd_lab(args: argparse.Namespace) -> int:
    if args.os == "debian":
        return _cmd_lab_debian(args)
    args.dir = args.dir or os.environ.get("REMEDIATE_LAB", DEFAULT_LAB)
    from remediate.lab.core import PROBES, Lab, LabConfig

    lab = Lab(args.dir)
    started = time.monotonic()

    def progress(step: str) -> None:
        if not args.json:
            print(f"  [{time.monotonic() - started:5.1f}s] {step}", file=sys.stderr, flush=True)

    if args.lab_command == "up":
        cfg = lab.up(
            LabConfig(
                dir=str(lab.dir),
                net=args.net,
                ssh_port=args.ssh_port,
                http_port=args.http_port,
                web_hosts=args.web_hosts,
            ),
            progress=progress,
        )
        webs = cfg.webs()
        if args.json:
            print_json(
                {"dir": str(lab.dir), "inventory": str(lab.inventory), "net": cfg.net, "web": [w.name for w in webs]}
            )
            return EXIT_OK
        print(f"lab up in {time.monotonic() - started:.1f}s: {lab.dir}")
        for web in webs:
            base = f"http://{web.addr}:{cfg.http_port}"
            print(f"  {web.name}  {web.addr:<12} ssh :{cfg.ssh_port}, nginx {base}, php-fpm (unix socket), supervisord")
        print(
            f"  app01  {cfg.addr(2):<12} ssh :{cfg.ssh_port}, app :{cfg.app_port}, tls :{cfg.tls_port}, "
            f"flaky :{cfg.flaky_port}, svc.lab at {cfg.addr(5)}"
        )
        print(f"  dns    {cfg.addr(3) + ':53':<12} dnsmasq, *.lab")
        print(f"  inventory: {lab.inventory}" + (f" (group `web`: {len(webs)} hosts)" if len(webs) > 1 else ""))
        limit = " --limit web" if len(webs) > 1 else ""
        print(f"next: remediate lab break --dir {lab.dir}{limit} --cause socket --variant missing")
        return EXIT_OK
    if args.lab_command == "break":
        spec = lab.break_(args.cause, args.variant, keep=args.keep, limit=args.limit)
        webs = lab.webs(args.limit)
        statuses = {w.name: w.probe(PROBES[spec.probe]) for w in webs}
        if args.json:
            print_json({"cause": spec.cause, "variant": spec.variant, "probe": PROBES[spec.probe], "status": statuses})
            return EXIT_OK
        where = "app01, shared by every web host" if spec.where != "web" else ", ".join(statuses)
        print(f"broke {spec.cause}/{spec.variant} on {where}: {spec.summary}")
        for name, status in statuses.items():
            print(f"  GET {PROBES[spec.probe]} through {name}'s nginx now answers {status}")
        print(f"  error log: {webs[0].log_path('error')}")
        return EXIT_OK
    if args.lab_command == "reset":
        webs = lab.reset(args.limit)
        if not args.json:
            print(f"lab reset: every probe answers 200 on {', '.join(w.name for w in webs)}")
        return EXIT_OK
    if args.lab_command == "down":
        killed = lab.down()
        if args.json:
            print_json({"dir": str(lab.dir), "stopped": True, "killed": killed})
        else:
            print(f"lab down: no process left{f' ({len(killed)} needed SIGKILL)' if killed else ''}")
        return EXIT_OK
    report = lab.status(args.limit)
    if args.json:
        print_json(report)
        return EXIT_OK
    print(f"lab {report['dir']}: " + ", ".join(f"{k} {'up' if v else 'DOWN'}" for k, v in report["running"].items()))
    if report["broken"]:
        print("broken: " + ", ".join(report["broken"]))
    for host, probes in report["probes"].items():
        print(f"{host}:")
        for name, path in PROBES.items():
            print(f"  {probes.get(name, '-')!s:>7}  {path:<16} ({name})")
    return EXIT_OK


def _cmd_lab_debian(args: argparse.Namespace) -> int:
    """``lab … --os debian``: the stock Debian host under systemd (remediate.lab.realhost)."""
    from remediate.lab.realbreaks import PROBES, REAL_BREAKS
    from remediate.lab.realhost import RealHost

    host = RealHost(args.dir or DEFAULT_DEBIAN_LAB)
    started = time.monotonic()
    if args.lab_command == "up":
        cfg = host.up(say=lambda text: None if args.json else print(text, file=sys.stderr, flush=True))
        if args.json:
            print_json({"dir": str(host.dir), "inventory": str(host.inventory), "address": cfg.guest_address})
            return EXIT_OK
        print(f"Debian host up in {time.monotonic() - started:.1f}s: {host.dir}")
        print(
            f"  {RealHost.hostname}  {cfg.guest_address}  systemd as PID 1, sshd :22, nginx :80, php8.2-fpm,"
            " backend.service :8001"
        )
        print(f"  inventory: {host.inventory}")
        print("next: remediate lab break --os debian --cause socket --variant killed")
        return EXIT_OK
    if args.lab_command == "break":
        if args.limit or args.keep:
            raise UsageError("--limit and --keep are for the loopback lab; the Debian host is one host")
        brk = host.break_(args.cause, args.variant)
        status = host.probe(host.load(), PROBES[brk.probe])
        if args.json:
            print_json({"cause": brk.cause, "variant": brk.variant, "probe": PROBES[brk.probe], "status": status})
            return EXIT_OK
        print(f"broke {brk.cause}/{brk.variant}: {brk.summary}")
        print(f"  GET {PROBES[brk.probe]} through nginx now answers {status}")
        return EXIT_OK
    if args.lab_command == "reset":
        raise UsageError("the Debian host resets by booting again: remediate lab down --os debian; lab up --os debian")
    if args.lab_command == "down":
        host.down()
        if args.json:
            print_json({"dir": str(host.dir), "stopped": True})
        else:
            print("Debian host down (its overlay is gone with it; the cached root file system stays)")
        return EXIT_OK
    cfg = host.load()
    statuses = host.status(cfg)
    if args.json:
        print_json({"dir": str(host.dir), "address": cfg.guest_address, "broken": cfg.broken, "probes": statuses})
        return EXIT_OK
    print(
        f"Debian host {host.dir} at {cfg.guest_address}" + (f"; broken: {', '.join(cfg.broken)}" if cfg.broken else "")
    )
    for name, path in PROBES.items():
        print(f"  {statuses[name]!s:>7}  {path:<16} ({name})")
    known = ", ".join(f"{b.cause}/{b.variant}" for b in REAL_BREAKS)
    print(f"breaks: {known}")
    return EXIT_OK


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {"lab": _cmd_lab}
