"""`remediate harden`: the prevention rules over a config file, a host or a fleet; findings as a table,
JSON or SARIF; the fixable ones fixed.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import Any

from remediate import __version__
from remediate.cli.common import FMT, inventory_arg, print_json, prompting
from remediate.errors import EXIT_OK, EXIT_REFUSED, UsageError


def add_parsers(sub: Any, argv: Sequence[str] | None = None) -> None:
    hd = sub.add_parser(
        "harden",
        help="audit nginx against the runbook's prevention section (file:line, why, the fix), and fix it",
        description=(
            "Report each weakness of an nginx configuration that leads to 502s: upstreams without passive\n"
            "health checks, host names frozen at start, variables with no resolver, no upstream timing in the\n"
            "access log, timeouts raised for everything, too few open files, retries that repeat a POST, no 502\n"
            "page, backends not restarted on failure, no stub_status. Each finding names file:line, why it\n"
            "matters (the runbook paragraph: --list-rules) and the fix.\n\n"
            "--host reads a live host in one round trip (plus one per host asked: nginx's master's open-files\n"
            "limit, the backends' restart settings), as diagnose does; --limit does a fleet. --file reads a config\n"
            "offline: one file (its includes from the same disk) or an `nginx -T` dump, for CI pipelines.\n\n"
            "--fix RULE applies a rule's fix through the same guarded transaction as `remediate run` (nginx -t,\n"
            "reload, probe, roll back): --check shows the diff, --yes applies. Fixes are idempotent: a second run\n"
            "finds nothing to do. A host's inventory var harden_skip switches rules off for it."
        ),
        formatter_class=FMT,
        epilog=(
            "examples:\n"
            "  remediate harden -i inventory.yml --host web01\n"
            "  remediate harden -i inventory.yml --limit web --json\n"
            "  remediate harden -i inventory.yml --host web01 --fix upstream-no-passive-health --check\n"
            "  remediate harden -i inventory.yml --host web01 --fix no-custom-502-page worker-sizing --yes\n"
            "  remediate harden --file /etc/nginx/nginx.conf\n"
            "  nginx -T > dump.txt && remediate harden --file dump.txt --sarif > harden.sarif\n"
            "  remediate harden --list-rules\n\n"
            "exit codes: 0 no finding at or above --fail-on (or every fix in place), 3 findings at or above it\n"
            "(or a fix refused), 4 a fix rolled back, 1 failed, 2 usage, 5 bad input, 6 unreachable"
        ),
    )
    inventory_arg(hd)
    hd_where = hd.add_mutually_exclusive_group()
    hd_where.add_argument("--host", help="inventory name of the nginx host to audit (or fix)")
    hd_where.add_argument("--limit", metavar="PATTERN", help="an Ansible host pattern: a fleet (see run --limit)")
    hd_where.add_argument("--file", metavar="FILE", help="an nginx config file, or `nginx -T` output, read offline")
    hd_out = hd.add_mutually_exclusive_group()
    hd_out.add_argument("--json", action="store_true", help="one JSON object (a fleet: one per host, then a summary)")
    hd_out.add_argument("--sarif", action="store_true", help="SARIF 2.1.0 (GitHub code scanning and the like)")
    hd.add_argument(
        "--fail-on",
        choices=["info", "warning", "error"],
        default="warning",
        help="exit 3 when a finding is at or above this severity (default: warning)",
    )
    hd.add_argument("--skip", action="extend", nargs="+", default=[], metavar="RULE", help="switch rules off")
    hd.add_argument("--fix", action="extend", nargs="+", default=[], metavar="RULE", help="fix these rules' findings")
    hd_mode = hd.add_mutually_exclusive_group()
    hd_mode.add_argument("--check", action="store_true", help="with --fix: show the diff, write nothing")
    hd_mode.add_argument("--yes", action="store_true", help="with --fix: apply without asking")
    hd.add_argument("--forks", type=int, default=5, metavar="N", help="with --limit: hosts at once (default 5)")
    hd.add_argument("--accept-new-host-key", action="store_true", help="trust a first-seen host key")
    hd.add_argument("--list-rules", action="store_true", help="list the rules: id, severity, runbook section, fix")


def _cmd_harden(args: argparse.Namespace) -> int:
    from remediate import harden

    if args.list_rules:
        for r in harden.RULES.values():
            print(f"{r.id:<32} {r.severity:<8} {r.section}")
            print(f"{'':<32} {r.title}; fix: {r.fix + ' (--fix)' if r.id in harden.FIXABLE else 'by hand'}")
        return EXIT_OK
    for option, rules in (("--skip", args.skip), ("--fix", args.fix)):
        unknown = [r for r in rules if r not in harden.RULES]
        if unknown:
            raise UsageError(f"{option} {unknown[0]}: no such rule (see remediate harden --list-rules)")
    if not (args.file or args.host or args.limit):
        raise UsageError("give --host NAME, --limit PATTERN or --file FILE (or --list-rules)")
    if args.fix:
        if args.file:
            raise UsageError("--fix changes a live host: give --host NAME or --limit PATTERN, not --file")
        if args.sarif:
            raise UsageError("--sarif shows findings; with --fix use --json")
        not_fixable = [r for r in args.fix if r not in harden.FIXABLE]
        if not_fixable:
            raise UsageError(f"--fix {not_fixable[0]}: no automatic fix; fixable: {', '.join(harden.FIXABLE)}")
    elif args.check or args.yes:
        raise UsageError("--check and --yes go with --fix RULE")
    if args.file:
        return _harden_file(args)
    from remediate import api
    from remediate.hosts.inventory import load_inventory

    inventory = load_inventory(args.inventory)
    with api.open(inventory, trigger="cli", accept_new_host_key=args.accept_new_host_key) as rem:
        if args.limit:
            return _harden_fleet(args, rem)
        if args.fix:
            return _harden_fix(args, rem, inventory.host(args.host))
        audit = rem.harden(args.host)
    return _harden_show(args, audit.findings, args.host, [f"{audit.host}: harden_skip {' '.join(audit.skipped)}"]
                        if audit.skipped else [], audit.to_json())  # fmt: skip


def _harden_file(args: argparse.Namespace) -> int:
    from remediate import harden
    from remediate.harden.source import read_config

    config, notes = read_config(args.file)
    findings = harden.audit(harden.Subject(config), skip=tuple(args.skip))
    return _harden_show(args, findings, args.file, notes, None)


def _harden_show(
    args: argparse.Namespace, findings: list[Any], subject: str, notes: list[str], data: dict[str, Any] | None
) -> int:
    from remediate import harden
    from remediate.harden import report

    findings = [f for f in findings if f.rule not in args.skip]
    if args.sarif:
        print_json(report.sarif(findings, __version__))
    elif args.json:
        print_json({**(data or {}), **report.to_json(findings, subject, notes)})
    else:
        print(report.table(findings, subject, notes))
    return EXIT_REFUSED if harden.at_least(findings, args.fail_on) else EXIT_OK


def _harden_fix(args: argparse.Namespace, rem: Any, host: Any) -> int:
    """Each --fix RULE in the rules' order, one guarded run each; then what harden finds now."""
    from remediate import harden
    from remediate.outcomes import worst_exit

    show, confirm = prompting(args)

    reports = []
    for rule in [r for r in harden.FIXABLE if r in args.fix]:
        report = rem.harden_fix(host, rule, check=args.check, yes=args.yes, confirm=confirm, show=show)
        reports.append(report)
        if not args.json:
            line = f"{rule}: {report.outcome}" + (f": {report.message}" if report.message else "")
            print(line, file=sys.stderr if report.exit_code else sys.stdout)
        if report.outcome in ("failed", "rolled-back"):
            break  # the host is as its journal says; the next fix waits for a human
    after = None if args.check else rem.harden(host)
    if args.json:
        print_json({"runs": [r.to_json() for r in reports], "after": after.to_json() if after else None})
    elif after is not None:
        left = [f for f in after.findings if f.rule not in args.skip]
        print(f"{host.name}: harden now finds {len(left)} finding(s)" + (
            f" ({', '.join(sorted({f.rule for f in left}))})" if left else ""))  # fmt: skip
    return worst_exit(r.exit_code for r in reports)


def _harden_fleet(args: argparse.Namespace, rem: Any) -> int:
    """harden (or harden --fix) on every host --limit selects, --forks at once."""
    from remediate import api, harden
    from remediate.cli.fleetview import FleetView
    from remediate.engine import fleet
    from remediate.errors import Refused
    from remediate.harden import report
    from remediate.hosts.patterns import select

    hosts = select(rem.inventory, args.limit)
    if not hosts:
        raise UsageError(f"--limit {args.limit!r} selects no host of {args.inventory}")
    if args.fix:
        if not (args.check or args.yes):
            raise Refused("a fleet run asks nothing host by host: give --yes to apply, or --check to look")
        work = api.hardening_fixes(rem, [r for r in harden.FIXABLE if r in args.fix], check=args.check, yes=args.yes)
    else:
        work = api.hardening(rem, args.fail_on)
    as_json = args.json and not args.sarif
    # SARIF is the one document on stdout: the progress lines go to stderr.
    with FleetView(hosts, verb="hardening", as_json=as_json, out=sys.stderr if args.sarif else None) as view:
        done = fleet.rollout(hosts, work, forks=args.forks, serial=fleet.parse_serial(None), max_fail_percentage=None,
                             started=view.started, finished=view.finished)  # fmt: skip
    if not args.sarif:
        view.summary(done)
    audits = [(r.host, r.report) for r in done.results if r.report and "findings" in r.report]
    if args.sarif:
        found = [harden.Finding(**f) for _, data in audits for f in data["findings"] if f["rule"] not in args.skip]
        print_json(report.sarif(found, __version__))
    elif not args.json and not args.fix:
        for name, data in audits:
            found = [harden.Finding(**f) for f in data["findings"] if f["rule"] not in args.skip]
            print(f"\n== {name}\n{report.table(found, name)}")
    return done.exit_code


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {"harden": _cmd_harden}
