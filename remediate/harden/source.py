"""A configuration to harden, read offline: one file (with the includes it names, from the same disk) or an
``nginx -T`` dump (every file nginx read, exactly)."""

from __future__ import annotations

import glob
import os
from pathlib import Path

from remediate.errors import InputError
from remediate.nginx.config import NginxConfig
from remediate.nginx.parser import parse

__all__ = ["read_config"]

_DUMP_HEADER = b"# configuration file /"
#: Files read at most, following includes (a glob over a big directory must not read a whole disk).
MAX_FILES = 500


def read_config(path: str | Path) -> tuple[NginxConfig, list[str]]:
    """The configuration in ``path``; and the includes that named no readable file (said, not fatal)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise InputError("no such file", file=str(path)) from None
    except OSError as exc:
        raise InputError(f"cannot read: {exc.strerror}", file=str(path)) from None
    if data.lstrip().startswith(_DUMP_HEADER):
        return NginxConfig.from_dump(data), []
    return _with_includes(path, data)


def _with_includes(path: Path, data: bytes) -> tuple[NginxConfig, list[str]]:
    """Parse ``path`` and every file its includes name, relative to its directory (nginx's conf prefix)."""
    main = str(path)
    base = os.path.dirname(main)  # "" for a bare name: relative to here, as NginxConfig resolves it
    parsed = {main: parse(data, main)}
    missing: list[str] = []
    queue = [main]
    while queue:
        for directive in parsed[queue.pop(0)].walk():
            if directive.name != "include" or not directive.args:
                continue
            pattern = directive.args[0]
            full = pattern if pattern.startswith("/") else os.path.join(base, pattern)
            found = [m for m in sorted(glob.glob(full)) if os.path.isfile(m)]
            if not found and not glob.has_magic(full):
                missing.append(f"{directive.where}: include {pattern}: no such file")
            for match in found:
                if match in parsed or len(parsed) >= MAX_FILES:
                    continue
                try:
                    parsed[match] = parse(Path(match).read_bytes(), match)
                except OSError as exc:
                    missing.append(f"{directive.where}: include {pattern}: {exc.strerror}")
                    continue
                queue.append(match)
    return NginxConfig(parsed, main), missing
