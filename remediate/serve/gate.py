"""The gate: the one place untrusted request bytes are read and judged.

Bodies, encodings, bearer tokens, JSON depth and Slack's form; every failure is a 4xx with one line,
never a traceback.
"""

from __future__ import annotations

import hmac
import json
from typing import Any

import structlog
from aiohttp import web

from remediate.serve.metrics import Metrics

__all__ = [
    "HEADER_TIMEOUT",
    "JSON_TYPE",
    "REPLAY_WINDOW",
    "BodyRefused",
    "alerts_of",
    "answer_error",
    "answer_errors",
    "bearer_ok",
    "is_slack_form",
    "log",
    "read_body",
    "untrusted_json",
]

log = structlog.get_logger("remediate.serve")

REPLAY_WINDOW = 300  # seconds: Slack's own limit on a request's age (the replay cache keeps twice that)


JSON_TYPE = "application/json"


def answer_errors(metrics: Metrics) -> Any:
    @web.middleware
    async def middleware(request: web.Request, handler: Any) -> web.StreamResponse:
        route = request.match_info.route.resource.canonical if request.match_info.route.resource else "other"
        try:
            response: web.StreamResponse = await handler(request)
        except web.HTTPException as exc:
            response = answer_error(exc.status, exc.reason)
        except BodyRefused as exc:
            response = answer_error(exc.status, str(exc))
        except Exception:  # logged with its traceback; the client gets one line
            log.exception("handler-crashed", path=request.path)
            response = answer_error(500, "internal error; see remediate serve's log")
        metrics.requests.labels(route, str(response.status)).inc()
        return response

    return middleware


#: Seconds a client gets to send its request's headers (and an idle kept-alive connection lives).
HEADER_TIMEOUT = 10.0


class BodyRefused(Exception):
    """An untrusted body remediate will not read: too large, or compressed (status 400 or 415)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


async def read_body(request: web.Request, limit: int) -> bytes:
    """The one place untrusted request bytes are read: the whole body, however many TCP segments it came
    in, at most ``limit`` bytes on the wire and after decoding. A compressed body is refused before a
    byte is inflated (Slack and Alertmanager send none; a small gzip can inflate a thousandfold)."""
    encoding = request.headers.get("Content-Encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):
        raise BodyRefused(f"Content-Encoding {encoding[:20]!r} is not accepted; send the body uncompressed", 415)
    if request.content_length is not None and request.content_length > limit:
        raise BodyRefused(f"the body is larger than {limit} bytes")
    chunks, size = [], 0
    while True:
        chunk = await request.content.read(limit + 1 - size)  # b"" at the body's end
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
        if size > limit:
            raise BodyRefused(f"the body is larger than {limit} bytes")
    return b"".join(chunks)


def bearer_ok(request: web.Request, token: str | None) -> bool:
    if not token:
        return False
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    # .encode(): compare_digest refuses non-ASCII str, and bytes of any value compare in constant time
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode("utf-8", "replace"), token.encode())


def answer_error(status: int, message: str, *, www_authenticate: bool = False) -> web.Response:
    headers = {"WWW-Authenticate": 'Bearer realm="remediate"'} if www_authenticate else None
    return web.json_response({"error": message}, status=status, headers=headers)


def untrusted_json(data: str | bytes) -> Any:
    """``json.loads`` of bytes from outside: nesting too deep for the parser is bad input (ValueError, a 400),
    not a RecursionError that would answer 500."""
    try:
        return json.loads(data)
    except RecursionError:
        raise ValueError("the JSON is nested too deeply") from None


def alerts_of(payload: Any) -> list[dict[str, Any]]:
    if not isinstance(payload, dict):
        raise ValueError("the body must be a JSON object")
    if str(payload.get("version")) != "4":
        raise ValueError(f"version {payload.get('version')!r}, expected '4'")
    alerts = payload.get("alerts")
    if not isinstance(alerts, list) or not alerts:
        raise ValueError("'alerts' must be a non-empty list")
    for alert in alerts:
        if not isinstance(alert, dict) or not isinstance(alert.get("labels"), dict):
            raise ValueError("each alert needs a 'labels' object")
        for key in ("status", "fingerprint", "startsAt"):
            if not isinstance(alert.get(key), str) or not alert[key]:
                raise ValueError(f"each alert needs a string {key!r}")
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in alert["labels"].items()):
            raise ValueError("labels must map strings to strings")
    return alerts


def is_slack_form(text: str) -> bool:
    """A slash command (``command=``) or an interaction (``payload=`` holding a JSON object)."""
    from urllib.parse import parse_qs

    try:
        form = parse_qs(text, strict_parsing=True, max_num_fields=100)
    except ValueError:
        return False
    if "command" in form:
        return True
    if "payload" in form:
        try:
            return isinstance(untrusted_json(form["payload"][0]), dict)
        except ValueError:
            return False
    return False
