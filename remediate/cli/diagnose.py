"""`remediate diagnose`: the error log's window classified, each cause confirmed by its playbook's
evidence; a host, a fleet, or a local log file.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from typing import Any

from remediate.cli.common import EXIT_CODES, FMT, fleet_args, inventory_arg, print_json
from remediate.cli.rollout import need_limit, over_fleet
from remediate.errors import EXIT_OK, InputError, UsageError


def add_parsers(sub: Any, argv: Sequence[str] | None = None) -> None:
    dg = sub.add_parser(
        "diagnose",
        help="name the cause of the 502s from the evidence, and explain why",
        description=(
            "Read the error log's last --since (from the end, on the host; rotated files too), label every\n"
            "line with the runbook cause it shows, then confirm or contradict each cause with its playbook's\n"
            "own evidence (run as --check: nothing is written). The verdict is one cause, `ambiguous`, or\n"
            "`unknown`. With --log, classify a local file (or - for stdin) with no host at all; the window\n"
            "then ends at the file's newest line."
        ),
        formatter_class=FMT,
        epilog=(
            "examples:\n"
            "  remediate diagnose -i lab/inventory.yml --host web01\n"
            "  remediate diagnose -i lab/inventory.yml --limit web --forks 10 --json\n"
            "  remediate diagnose --log /var/log/nginx/error.log --since 2h\n"
            "  journalctl -u nginx -o cat | remediate diagnose --log - --json --per-line\n\n" + EXIT_CODES
        ),
    )
    inventory_arg(dg)
    dg.add_argument("--host", help="inventory name of the nginx host (not with --log)")
    dg.add_argument("--log", metavar="FILE", help="classify a local error log (- for stdin) instead of a host's")
    dg.add_argument("--since", default="15m", help="the window to read: 90s, 15m, 2h, 1d (default 15m)")
    dg.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    dg.add_argument("--per-line", action="store_true", help="with --json and --log: one JSON object per input line")
    dg.add_argument("--accept-new-host-key", action="store_true", help="trust a first-seen host key")
    fleet_args(dg)


def _cmd_diagnose(args: argparse.Namespace) -> int:
    from remediate.engine.diagnose import offline
    from remediate.hosts.values import parse_since

    try:
        since = parse_since(args.since)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    need_limit(args)
    if sum(map(bool, (args.log, args.host, args.limit))) > 1:
        raise UsageError("give one of --host NAME, --limit PATTERN (the hosts' logs) or --log FILE (a local file)")
    if args.limit:
        from remediate.hosts.inventory import load_inventory

        return over_fleet(args, load_inventory(args.inventory), "diagnose", since)
    if args.per_line and not (args.json and args.log):
        raise UsageError("--per-line needs --json and --log")
    if args.log:
        if args.per_line:
            from remediate.evidence.classify import classify

            text = sys.stdin.buffer.read() if args.log == "-" else _read_local(args.log)
            out = sys.stdout
            for number, label in enumerate(classify(text.decode("utf-8", "surrogateescape")), 1):
                out.write(json.dumps({"line": number, "label": label}) + "\n")
            return EXIT_OK
        result = offline(sys.stdin.buffer.read() if args.log == "-" else args.log, since)
    else:
        if not args.host:
            raise UsageError("diagnose needs --host NAME or --limit PATTERN (with -i), or --log FILE")
        from remediate import api
        from remediate.hosts.inventory import load_inventory

        with api.open(
            load_inventory(args.inventory), trigger="cli", accept_new_host_key=args.accept_new_host_key
        ) as rem:
            result = rem.diagnose(args.host, since=since)
    if args.json:
        print_json(result.to_json())
        return EXIT_OK
    print(f"diagnosis of {result.host}: {result.verdict}  ({result.reason})")
    w = result.window
    files = ", ".join(f["path"] for f in w.get("files", []))
    journal = " and journald" if "journald" in str(w.get("path")) else ""
    print(f"window: since {w.get('cutoff')} in {files + journal or w.get('path')}")
    for note in w.get("notes") or []:
        print(f"note: {note}")
    if result.round_trips:
        print(f"evidence: {result.round_trips} round trip(s) to the hosts")
    if result.findings:
        print(f"\n  {'cause':<18} {'lines':>6}  {'first seen':<19}  {'last seen':<19}  confidence")
        for f in result.findings:
            print(f"  {f.cause or f.label:<18} {f.count:>6}  {f.first:<19}  {f.last:<19}  {f.confidence}")
        for f in result.findings:
            print(f"\n{f.cause or f.label} ({f.label} lines):\n  e.g. {f.example}")
            if len(f.peers) > 0:
                print(
                    "  peers: "
                    + ", ".join(f"{peer}: {n}" for peer, n in sorted(f.peers.items(), key=lambda kv: -kv[1]))
                )
            for fact in f.facts:
                print(f"  {fact['playbook']} playbook: {fact['outcome']} ({fact['decision']}): {fact['reason']}")
    if result.access_peers:
        shown = ", ".join(f"{peer}: {v['failed']}/{v['attempts']} failed" for peer, v in result.access_peers.items())
        print(f"\naccess log, per upstream peer: {shown}")
    print(f"\n{result.other} other line(s) in the window")
    if result.verdict not in ("ambiguous", "unknown") and args.host and any(f.fixable for f in result.findings):
        print(f"to fix: remediate run -i {args.inventory} --host {args.host} --cause {result.verdict}")
    return EXIT_OK


def _read_local(path: str) -> bytes:
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror}") from None


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {"diagnose": _cmd_diagnose}
