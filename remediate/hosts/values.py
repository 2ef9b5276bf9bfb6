"""What each directive (and each command's argument) accepts, checked before a value is used.

A value reaches an nginx or pool file, or a command's argv, only after it passed one of these.
Values from the inventory are checked when it loads, so the error names the file and line
(exit 5); values from evidence (a log line, a config, a resolver's answer) are checked where a
collector or module uses them. Each check returns the value or raises ValueError saying what
was expected. Nothing here is clever: these are the shapes nginx's own parsers accept
(``ngx_parse_time``, ``ngx_parse_size``, ``ngx_parse_url``), minus anything that could end a
directive (``;``, ``{``, ``}``), start a comment (``#``), a new line, or be read as an option (``-``).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable

__all__ = [
    "UNSAFE_IN_CONFIG",
    "accepts",
    "address",
    "duration",
    "host_name",
    "parse_since",
    "path",
    "service_name",
    "size",
]

#: Characters that would let a value end its directive, open a block or a comment, or quote.
UNSAFE_IN_CONFIG = frozenset(";{}#\"'\n\r\t\0 ")

_DURATION = re.compile(r"(?:\d+(?:ms|s|m|h|d|w|M|y)?)+")  # ngx_parse_time: 5s, 1m30s, 500ms, 30
_SIZE = re.compile(r"\d+[kKmMgG]?")  # ngx_parse_size
_LABEL = r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
_HOST_NAME = re.compile(rf"(?=.{{1,253}}$){_LABEL}(?:\.{_LABEL})*\.?")
_SERVICE = re.compile(r"[A-Za-z0-9_@][A-Za-z0-9_.@:+-]{0,254}")


def accepts(check: Callable[[str], str], value: str) -> bool:
    """Whether ``check`` takes ``value`` (for evidence, where a bad value is skipped, not an error)."""
    try:
        check(value)
    except ValueError:
        return False
    return True


def duration(value: str) -> str:
    if not _DURATION.fullmatch(value):
        raise ValueError("an nginx time such as 5s, 30s, 1m30s or 500ms")
    return value


_TIME_PART = re.compile(r"(\d+)(ms|s|m|h|d|w|M|y)?")
_TIME_UNIT = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "M": 2592000, "y": 31536000, "": 1}


def seconds(value: str) -> float:
    """An nginx time in seconds, as ngx_parse_time reads it: 30, 30s, 1m30s, 500ms, 1h, 2d."""
    duration(value.strip())
    return float(sum(int(n) * _TIME_UNIT[unit] for n, unit in _TIME_PART.findall(value.strip())))


def size(value: str) -> str:
    if not _SIZE.fullmatch(value):
        raise ValueError("an nginx size such as 512, 16k or 1m")
    return value


def host_name(value: str) -> str:
    """A DNS name: letters, digits, ``-`` and ``_`` in dot-separated labels; never starting with ``-``."""
    if not _HOST_NAME.fullmatch(value):
        raise ValueError("a host name (letters, digits, '-', '_' and dots; not starting with '-')")
    return value


def address(value: str) -> str:
    """An IP address or host name, with an optional ``:port`` (IPv6 in brackets when it has one)."""
    host, port = value, ""
    if value.startswith("["):
        host, sep, rest = value[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ValueError("an address such as 10.0.0.2, [::1]:5353 or ns1.example.com:53")
        port = rest[1:]
    elif value.count(":") == 1:
        host, port = value.split(":")
    if port and not (port.isdigit() and 0 < int(port) < 65536):
        raise ValueError("an address whose port is a number from 1 to 65535")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        try:
            host_name(host)
        except ValueError:
            raise ValueError("an address such as 10.0.0.2, [::1]:5353 or ns1.example.com:53") from None
    return value


def path(value: str) -> str:
    """An absolute path nginx can read as one argument: no spaces, quotes, ``;``, braces or ``#``."""
    if not value.startswith("/") or any(c in UNSAFE_IN_CONFIG or ord(c) < 32 for c in value):
        raise ValueError("an absolute path without spaces, quotes, ';', '{', '}' or '#'")
    return value


def service_name(value: str) -> str:
    """A service (unit, program) name that no service manager can read as an option."""
    if not _SERVICE.fullmatch(value):
        raise ValueError("a service name (letters, digits and . _ @ : + -; not starting with '-')")
    return value


def parse_since(value: str) -> float:
    """``15m``, ``2h``, ``90s``, ``1d`` → seconds."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", value)
    if not m:
        raise ValueError(f"not a duration: {value!r} (use 90s, 15m, 2h or 1d)")
    return float(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]
