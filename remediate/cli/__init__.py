"""The ``remediate`` command: a thin layer over the library, one module per group of commands.

common (the parser, shared arguments, exit codes) · inspect (inventory, config) · diagnose · fix
(run, rollback, unlock) · harden · service (serve, worker, queue, audit) · playbooks (playbooks,
show) · lab. Each has ``add_parsers(sub)`` and ``COMMANDS``; imports of the library are lazy, inside
each command, so that ``remediate --help`` does not pay for paramiko. Every RemediateError becomes
one line on stderr and its documented exit code.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence

from remediate import __version__
from remediate.cli import diagnose, fix, harden, inspect, lab, playbooks, service
from remediate.cli.common import EXIT_CODES, FMT, Parser, err
from remediate.errors import EXIT_FAILED, EXIT_OK, RemediateError

__all__ = ["main"]

_GROUPS = (inspect, diagnose, fix, harden, service, playbooks, lab)


def _parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    parser = Parser(
        prog="remediate",
        description="Find why nginx answers 502 Bad Gateway, and fix it safely over SSH.",
        epilog=EXIT_CODES,
        formatter_class=FMT,
    )
    parser.add_argument("--version", action="version", version=f"remediate {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    for group in _GROUPS:
        group.add_parsers(sub, argv)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser(argv)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_OK
    handlers: dict[str, Callable[[argparse.Namespace], int]] = {k: v for g in _GROUPS for k, v in g.COMMANDS.items()}
    try:
        return handlers[args.command](args)
    except RemediateError as exc:
        err(str(exc))
        return exc.exit_code
    except KeyboardInterrupt:
        err("interrupted")
        return 130
    except BrokenPipeError:  # `remediate ... | head`: the reader left; that is not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except Exception as exc:  # a bug: still one line unless asked for the traceback
        if os.environ.get("REMEDIATE_DEBUG"):
            raise
        err(f"internal error: {type(exc).__name__}: {exc} (set REMEDIATE_DEBUG=1 for the traceback)")
        return EXIT_FAILED
