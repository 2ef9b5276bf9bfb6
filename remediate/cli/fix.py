"""`remediate run`, `rollback` and `unlock`: a fix on one host (asked, then applied under guard) or a fleet
(--limit, here or through the queue).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import Any

from remediate.cli.common import EXIT_CODES, FMT, fleet_args, host_args, print_head, print_json, prompting
from remediate.cli.rollout import need_limit, over_fleet
from remediate.errors import EXIT_OK, EXIT_REFUSED, UsageError


def add_parsers(sub: Any, argv: Sequence[str] | None = None) -> None:
    run = sub.add_parser(
        "run",
        help="diagnose one cause on a host and fix it, guarded (validate, reload, probe, roll back on failure)",
        description=(
            "Collect the evidence in one round trip, decide from it (with the reason), plan the fix as a\n"
            "diff, then apply it on the host as one transaction: back up, compare-and-swap, atomic write,\n"
            "nginx -t / php-fpm -t, reload or restart, confirm, probe. Any failure restores every file\n"
            "byte for byte and reloads. A fix already in place is not made again."
        ),
        formatter_class=FMT,
        epilog=(
            "examples:\n"
            "  remediate run -i lab/inventory.yml --host web01 --cause socket --check   # show the diff only\n"
            "  remediate run -i lab/inventory.yml --host web01 --cause socket --yes\n"
            "  remediate run -i lab/inventory.yml --host web01 --cause auto --check   # diagnose, then plan\n"
            "  remediate run -i lab/inventory.yml --limit web --cause socket --yes --forks 10\n"
            "  remediate run -i lab/inventory.yml --limit web --cause auto --yes --serial 1,30% "
            "--max-fail-percentage 0\n\n" + EXIT_CODES
        ),
    )
    host_args(run, need_host=False)
    run.add_argument("--host", help="inventory name of the nginx host (or --limit for several)")
    fleet_args(run)
    run.add_argument(
        "--cause",
        required=True,
        help="the runbook cause to fix (see `remediate playbooks`), or `auto`: diagnose first and fix only a "
        "confident verdict",
    )
    run.add_argument("--check", action="store_true", help="show what would change, write nothing")
    run.add_argument(
        "--since",
        default="15m",
        help="the error-log window the evidence reads (and auto diagnoses): 90s, 15m, 2h, 1d (default 15m)",
    )
    run.add_argument("--yes", "-y", action="store_true", help="apply without asking (required when not on a terminal)")
    run.add_argument(
        "--playbooks", action="append", metavar="DIR", help="extra playbook directory (overrides by cause)"
    )
    run.add_argument(
        "--accept-new-host-key", action="store_true", help="trust a first-seen host key (never a changed one)"
    )
    run.add_argument(
        "--insecure-tls",
        action="store_true",
        help="invalid-response only: when no tls_ca_bundle can be trusted, allow turning proxy_ssl_verify off "
        "(a TEMPORARY workaround, reported loudly)",
    )

    rb = sub.add_parser(
        "rollback",
        help="undo a run from the host's journal",
        description="Restore every file RUN_ID changed (bytes, owner, mode), validate, and reload.\n"
        "Refuses when a file was edited since that run, unless --force.",
        formatter_class=FMT,
    )
    host_args(rb)
    rb.add_argument("run_id", metavar="RUN_ID")
    rb.add_argument("--force", action="store_true", help="restore even files edited since the run")
    rb.add_argument("--accept-new-host-key", action="store_true", help="trust a first-seen host key")

    ul = sub.add_parser(
        "unlock",
        help="clear a host's lock by hand (asks the run holding it to let go)",
        description="Show who holds HOST's lock and ask that run's helper to let go of it.\n"
        "A run's lock lives in its helper on the host, which lets go by itself when the run ends,\n"
        "when its controller dies (at once) or is cut off (within 10 s). Use this for a run that\n"
        "is alive but stuck. A helper inside its transaction finishes (or rolls back) first.",
        formatter_class=FMT,
        epilog="examples:\n"
        "  remediate unlock -i inventory.yml --host web01              # who holds it; ask it to let go\n"
        "  remediate unlock -i inventory.yml --host web01 RUN_ID       # only if RUN_ID holds it",
    )
    host_args(ul)
    ul.add_argument("run_id", metavar="RUN_ID", nargs="?", help="let go only if this run holds the lock")
    ul.add_argument("--accept-new-host-key", action="store_true", help="trust a first-seen host key")


def _cmd_run(args: argparse.Namespace) -> int:
    from remediate.errors import Refused
    from remediate.hosts.inventory import load_inventory
    from remediate.hosts.values import parse_since

    try:
        since = parse_since(args.since)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    need_limit(args)
    if bool(args.host) == bool(args.limit):
        raise UsageError("give --host NAME (one host) or --limit PATTERN (a fleet)")
    inventory = load_inventory(args.inventory)
    if args.limit:
        if not (args.check or args.yes):
            raise Refused("a fleet run asks nothing host by host: give --yes to apply, or --check to look")
        return over_fleet(args, inventory, "run", since)
    host = inventory.host(args.host)
    show, confirm = prompting(args)

    def show_diagnosis(diagnosis: Any) -> None:
        if not args.json:
            names = "names" if diagnosis.verdict in diagnosis.causes else "is"
            print(f"auto: the diagnosis {names} {diagnosis.verdict}: {diagnosis.reason}")

    from remediate import api

    with api.open(
        inventory, trigger="cli", accept_new_host_key=args.accept_new_host_key, playbooks=args.playbooks
    ) as rem:
        report = rem.run(
            host,
            args.cause,
            check=args.check,
            yes=args.yes,
            confirm=confirm,
            show=show,
            insecure_tls=args.insecure_tls,
            show_diagnosis=show_diagnosis,
            since=since,
        )
    if args.json:
        print_json(report.to_json())
        return report.exit_code
    if report.cause == "auto":  # the diagnosis named no cause it may fix (refused), or none at all (healthy)
        print(f"{report.outcome}: {report.message}", file=sys.stderr if report.exit_code else sys.stdout)
        return report.exit_code
    if report.plan.empty:
        print_head(report)
    for s in report.steps:
        mark = "ok " if s["ok"] else "FAIL"
        print(f"  [{mark}] {s['step']:<16} {s['seconds']:>6.2f}s  {s['detail']}")
    for r in report.recovered:
        did = f"restored {', '.join(r['restored']) or 'nothing'}" + (f" ({r['note']})" if r.get("note") else "")
        problems = "; ".join(r.get("problems") or [])
        print(f"  journal: run {r['run_id']} ({r.get('state', '?')}): {did}" + (f"; {problems}" if problems else ""))
    line = f"{report.outcome}: {report.message}" if report.message else report.outcome
    print(line, file=sys.stderr if report.exit_code else sys.stdout)
    if report.decision.get("name") == "tls-insecure-workaround" and report.outcome == "fixed":
        print(
            "WARNING: TLS verification of the backend is OFF (--insecure-tls). This is a temporary workaround: "
            "set tls_ca_bundle in the inventory and run again to turn it back on.",
            file=sys.stderr,
        )
    print(f"run {report.run_id} on {report.host}; journal {report.journal}")
    return report.exit_code


def _cmd_rollback(args: argparse.Namespace) -> int:
    from remediate import api

    with api.open(args.inventory, trigger="cli", accept_new_host_key=args.accept_new_host_key) as rem:
        report = rem.rollback(args.host, args.run_id, force=args.force)
    if args.json:
        print_json(report.to_json())
    else:
        print(f"{report.outcome}: {report.message}", file=sys.stderr if report.exit_code else sys.stdout)
    return report.exit_code


def _cmd_unlock(args: argparse.Namespace) -> int:
    from remediate.engine.hoststate import unlock
    from remediate.hosts.inventory import load_inventory

    host = load_inventory(args.inventory).host(args.host)
    answer = unlock(host, args.run_id, accept_new_host_key=args.accept_new_host_key)
    code = {"free": EXIT_OK, "released": EXIT_OK, "waiting": EXIT_REFUSED}.get(answer.get("outcome", ""), EXIT_REFUSED)
    if args.json:
        print_json(answer)
    else:
        print(f"{host.name}: {answer.get('outcome')}: {answer.get('reason')}", file=sys.stderr if code else sys.stdout)
    return code


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "run": _cmd_run,
    "rollback": _cmd_rollback,
    "unlock": _cmd_unlock,
}
