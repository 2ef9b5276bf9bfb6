"""The error log's window and the access log's tail: the lines every cause's collectors read.

The error log is read as ``remediate diagnose`` reads it: the window of the last ``since``
seconds (15 minutes unless the playbook or the run says otherwise), found from the end of the
file and into its rotated files on the host, and classified by remediate.evidence.classify. So a
playbook sees exactly the lines a diagnosis saw, with the same labels.
"""

from __future__ import annotations

import contextlib
import re
from typing import Any

from remediate.errors import RemediateError
from remediate.evidence.framework import Collector, Context, Log, Request
from remediate.hosts.inventory import Host
from remediate.nginx import NginxConfig

#: The error-log window a run reads when nothing says otherwise, in seconds.
WINDOW = 900.0


def window_request(host: Host, since: float) -> dict[str, Any]:
    """The helper's ``window`` request: the error log file, and on a systemd host nginx's journal too.

    nginx may send its errors to journald (``error_log syslog:server=unix:/dev/log`` or ``stderr``
    under systemd): the file then holds nothing new, or nothing at all. Which one nginx uses is
    known only from its config, which arrives in the same round trip, so both are read (the journal
    of a unit that logs to a file holds little more than its starts and stops) and ``merge_window``
    keeps what the config says."""
    window: dict[str, Any] = {"path": host["nginx_error_log"], "since": since}
    if host["service_manager"] == "systemd":
        window["journal"] = f"{host['nginx_service']}.service"
    return window


def _ask_error_log(host: Host, args: dict[str, Any], req: Request) -> None:
    since = float(args.get("since", WINDOW))
    window = req.setdefault("window", window_request(host, since))
    window["since"] = max(window["since"], since)


def error_log_targets(config: NginxConfig) -> list[tuple[str, str]]:
    """Every ``error_log`` target in the config, with where it is set: (target, file:line)."""
    return [(d.args[0], d.where) for d, _ in config.walk() if d.name == "error_log" and d.args]


def merge_window(answer: dict[str, Any]) -> dict[str, Any]:
    """The error-log window as nginx really writes it: the file's lines, plus the journal's when the
    config sends errors there (syslog to this host, or stderr under systemd), in time order. Once
    per answer; returns the window, whose ``path`` says where the lines came from and ``notes``
    what could not be read (syslog to another machine)."""
    window: dict[str, Any] = answer.get("window") or {}
    if window.get("merged"):
        return window
    window["merged"] = True
    window.setdefault("notes", [])
    config = answer.get("_nginx_config")
    dump = (answer.get("commands") or {}).get("nginx_T")
    if config is None and dump and dump.get("exit") == 0:
        with contextlib.suppress(RemediateError):
            config = answer["_nginx_config"] = NginxConfig.from_dump(dump["stdout"].encode("utf-8", "surrogateescape"))
    if config is None:
        return window
    journal = window.get("journal") or {}
    local, remote = [], []
    for target, where in error_log_targets(config):
        if target == "stderr" or target.startswith("syslog:"):
            server = re.search(r"server=([^,]+)", target)
            if target == "stderr" or (server and server.group(1) in _LOCAL_SYSLOG):
                local.append(f"{target} ({where})")
            else:
                remote.append(f"{target} ({where})")
    for target in remote:
        window["notes"].append(f"nginx also sends errors to {target}, which remediate cannot read from this host")
    if local and journal.get("text"):
        window["text"] = _by_time(window.get("text", "") + journal["text"])
        window["path"] = f"{window.get('path')} and journald ({journal.get('unit')}: {', '.join(local)})"
    elif local:
        why = journal.get("error") or "nothing in the window"
        window["notes"].append(f"nginx logs to {', '.join(local)}; journald ({journal.get('unit', '?')}): {why}")
    return window


_LOCAL_SYSLOG = ("unix:/dev/log", "unix:/run/systemd/journal/dev-log", "127.0.0.1", "localhost", "[::1]")
_STAMP = re.compile(r"\d{4}/\d\d/\d\d \d\d:\d\d:\d\d")


def _by_time(text: str) -> str:
    """Lines of two sources in nginx's time order (a line without a time keeps its predecessor's)."""
    keyed, last = [], ""
    for line in text.splitlines():
        if m := _STAMP.search(line):
            last = m.group(0)
        keyed.append((last, line))
    keyed.sort(key=lambda pair: pair[0])
    return "".join(line + "\n" for _, line in keyed)


def _read_error_log(ctx: Context, args: dict[str, Any], resp: dict[str, Any]) -> Any:
    window = merge_window(resp)
    return Log(window.get("path", ctx.host["nginx_error_log"]), window.get("text", ""))


def _ask_access_log(host: Host, args: dict[str, Any], req: Request) -> None:
    req["logs"].append(host["nginx_access_log"])
    req["log_bytes"] = max(req.get("log_bytes", 0), int(args.get("bytes", 262144)))


def _read_access_log(ctx: Context, args: dict[str, Any], resp: dict[str, Any]) -> Any:
    entry = resp["logs"][ctx.host["nginx_access_log"]]
    return Log(entry["path"], entry.get("text", ""))


COLLECTORS = (
    Collector(
        "error_log",
        "the error log's window (args: since, in seconds; default 900), classified as diagnose does",
        _ask_error_log,
        _read_error_log,
    ),
    Collector("access_log", "the tail of nginx's access log (args: bytes)", _ask_access_log, _read_access_log),
)
