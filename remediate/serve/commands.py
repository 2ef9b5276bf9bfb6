"""The /remediate command's words: parsed and checked before anything is looked up or recorded."""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["USAGE", "Command", "parse_command"]

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}\Z")


USAGE = (
    "usage: `/remediate diagnose HOST` · `/remediate run HOST CAUSE|auto` · "
    "`/remediate rollback HOST RUN_ID` · `/remediate status [RUN_ID]`"
)


_ARITY = {"diagnose": (1, 1), "run": (2, 2), "rollback": (2, 2), "status": (0, 1), "help": (0, 0)}


@dataclass(frozen=True)
class Command:
    verb: str
    host: str | None = None
    cause: str | None = None
    run_id: str | None = None


def parse_command(text: str, causes: list[str]) -> Command:
    """``/remediate``'s text as a Command; ValueError with a message for the user otherwise."""
    words = text.split()
    if not words:
        raise ValueError(USAGE)
    verb, args = words[0].lower(), words[1:]
    if verb not in _ARITY:
        raise ValueError(f"unknown subcommand {verb[:40]!r}. {USAGE}")
    least, most = _ARITY[verb]
    if not least <= len(args) <= most:
        raise ValueError(f"`{verb}` takes {least if least == most else f'{least} to {most}'} argument(s). {USAGE}")
    for arg in args:
        if not _NAME.match(arg):
            raise ValueError(f"{arg[:40]!r} is not a host, cause or run id (letters, digits and _.:- only)")
    if verb in {"diagnose", "run", "rollback"}:
        host = args[0]
        if verb == "run":
            cause = args[1]
            if cause != "auto" and cause not in causes:
                raise ValueError(f"unknown cause {cause!r}; causes: {', '.join(causes)}, or auto")
            return Command("run", host, cause)
        if verb == "rollback":
            return Command("rollback", host, run_id=args[1])
        return Command("diagnose", host)
    return Command(verb, run_id=args[0] if args else None)
