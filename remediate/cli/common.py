"""What every command shares: the parser class, its common arguments, the exit codes, one-line errors."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from typing import Any

FMT = argparse.RawDescriptionHelpFormatter

EXIT_CODES = """\
exit codes:
  0  success (fixed, nothing to do, or the command did what it said)
  1  failed: something went wrong; the message says what and where
  2  usage: the command line is wrong
  3  refused: remediate would not go on (host key, lock held, ambiguous) and changed nothing
  4  rolled back: a change failed its checks and was undone
  5  bad input: inventory or config file is wrong (the message gives file:line)
  6  unreachable: SSH connect, authentication or a command timed out
  7  applied, unverified: a fix was applied, but nothing could be asked afterwards to show it worked
a fleet (--limit) exits with its worst host's code: 1 > 6 > 5 > 4 > 3 > 7 > 2 > 0
"""

DEFAULT_LAB = "/tmp/remediate-lab"
DEFAULT_DEBIAN_LAB = "/tmp/remediate-debian"


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # one line, exit 2, like every other refusal
        self.exit(2, f"remediate: error: {message} (see `{self.prog} --help`)\n")


def inventory_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "-i",
        "--inventory",
        default=os.environ.get("REMEDIATE_INVENTORY", "inventory.yml"),
        help="Ansible YAML inventory (default: $REMEDIATE_INVENTORY or ./inventory.yml)",
    )


def queue_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--queue",
        metavar="URL",
        default=os.environ.get("REMEDIATE_QUEUE"),
        help="postgresql://... (default $REMEDIATE_QUEUE); the password belongs in ~/.pgpass, not the URL",
    )


def host_args(p: argparse.ArgumentParser, need_host: bool = True) -> None:
    inventory_arg(p)
    if need_host:
        p.add_argument("--host", required=True, help="inventory name of the nginx host")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")


def fleet_args(p: argparse.ArgumentParser) -> None:
    fleet = p.add_argument_group(
        "fleet (with --limit, as ansible-playbook)",
        "Exit code: the worst host's (failed > unreachable > rolled back > refused > ok).",
    )
    fleet.add_argument(
        "--limit",
        metavar="PATTERN",
        help="every host an Ansible host pattern selects: web, 'web:!web03', 'web:&dc1', web0*, ~web0[1-4]",
    )
    fleet.add_argument("--forks", type=int, default=5, metavar="N", help="hosts at once (default 5)")
    fleet.add_argument(
        "--serial",
        metavar="N|N%|LIST",
        help="batches: a count, a percentage of the hosts, or a list like 1,5,20%% (the last repeats)",
    )
    fleet.add_argument(
        "--queue",
        metavar="URL",
        help="postgresql://... (or $REMEDIATE_QUEUE): enqueue a job per host for `remediate worker`s and "
        "wait for them, instead of running here; put the password in ~/.pgpass, not in the URL",
    )
    fleet.add_argument(
        "--wait",
        type=float,
        metavar="SECONDS",
        help="with --queue: report a host whose job is still queued after SECONDS as `queued` (default: wait)",
    )
    fleet.add_argument(
        "--max-fail-percentage",
        type=float,
        metavar="P",
        help="stop before the next batch when more than P%% of a batch failed (0: at the first failure); "
        "a batch that failed entirely always stops the rollout",
    )


def err(message: str) -> None:
    print(f"remediate: error: {message}", file=sys.stderr)


def print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, sort_keys=False, default=str))


def prompting(args: argparse.Namespace) -> tuple[Callable[[Any], None], Callable[[Any], bool]]:
    """A single-host fix at a terminal: refused with neither a terminal nor --yes/--check; then how to show
    the plan (head, diff, service actions) and ask before it is applied."""
    from remediate.errors import Refused

    interactive = sys.stdin.isatty() and not args.json
    if not (args.check or args.yes or interactive):
        raise Refused("not on a terminal and --yes not given: refusing to change anything (use --check to look)")

    def show(report: Any) -> None:
        if not args.json:
            print_head(report)
            print(report.plan.diff() or "(no file changes)\n", end="")
            for action in report.plan.actions:
                print(f"  then: {action.describe()}")

    def confirm(report: Any) -> bool:
        return input(f"apply this to {report.host}? [y/N] ").strip().lower() in ("y", "yes")

    return show, confirm


def print_head(report: Any) -> None:
    if getattr(report, "_head_printed", False):
        return
    report._head_printed = True
    print(f"cause {report.cause} on {report.host} (run {report.run_id})")
    if report.decision:
        print(f"decision {report.decision['name']}: {report.decision['reason']}")
