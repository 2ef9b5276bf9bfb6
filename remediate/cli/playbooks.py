"""`remediate playbooks` and `remediate show`: the playbooks (one per cause), listed and printed."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Sequence
from typing import Any

from remediate.cli.common import print_json
from remediate.errors import EXIT_OK


def add_parsers(sub: Any, argv: Sequence[str] | None = None) -> None:
    pbs = sub.add_parser("playbooks", help="list the playbooks (one per cause)")
    pbs.add_argument("--playbooks", action="append", metavar="DIR", help="extra playbook directory")
    pbs.add_argument("--json", action="store_true")

    shw = sub.add_parser("show", help="print a playbook's evidence, decisions, fixes and verify steps")
    shw.add_argument("cause")
    shw.add_argument("--playbooks", action="append", metavar="DIR", help="extra playbook directory")


def _cmd_playbooks(args: argparse.Namespace) -> int:
    from remediate.engine.playbook import load_playbooks

    books = load_playbooks(args.playbooks)
    if args.json:
        print_json({c: {"summary": b.summary, "path": b.path} for c, b in sorted(books.items())})
        return EXIT_OK
    for cause, book in sorted(books.items()):
        print(f"{cause:<18} {book.summary}  ({book.path})")
    return EXIT_OK


def _cmd_show(args: argparse.Namespace) -> int:
    from remediate.engine.playbook import find_playbook

    book = find_playbook(args.cause, args.playbooks)
    print(f"{book.cause}: {book.summary}\n  {book.runbook}\n  {book.path}\n\nevidence (one round trip):")
    for name, collect, step_args in book.evidence:
        print(f"  {name:<10} {collect}{' ' + json.dumps(step_args) if step_args else ''}")
    print("\ndecisions (first that holds wins):")
    for d in book.decisions:
        then = f"fix {d.fix}" if d.fix else d.outcome
        print(f"  {d.name}: when {d.when}\n      -> {then}")
    print("\nfixes:")
    for fix, steps in book.fixes.items():
        print(f"  {fix}:")
        for step in steps:
            extra = (f"  when: {step.when}" if step.when else "") + (f"  loop: {step.loop}" if step.loop else "")
            print(f"    {step.module} {json.dumps(step.args)}{extra}")
    print("\nverify:")
    for item in book.verify:
        print(f"  {json.dumps(item)}")
    return EXIT_OK


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {"playbooks": _cmd_playbooks, "show": _cmd_show}
