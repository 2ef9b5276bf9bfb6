"""The error log's window and the access log's tail: the lines every cause's collectors read.

The error log is read as ``remediate diagnose`` reads it: the window of the last ``since``
seconds (15 minutes unless the playbook or the run says otherwise), found from the end of the
file and into its rotated files on the host, and classified by remediate.classify. So a
playbook sees exactly the lines a diagnosis saw, with the same labels.
"""

from __future__ import annotations

from typing import Any

from remediate.evidence import Collector, Context, Log, Request
from remediate.inventory import Host

#: The error-log window a run reads when nothing says otherwise, in seconds.
WINDOW = 900.0


def _ask_error_log(host: Host, args: dict[str, Any], req: Request) -> None:
    since = float(args.get("since", WINDOW))
    window = req.setdefault("window", {"path": host["nginx_error_log"], "since": since})
    window["since"] = max(window["since"], since)


def _read_error_log(ctx: Context, args: dict[str, Any], resp: dict[str, Any]) -> Any:
    window = resp.get("window") or {}
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
