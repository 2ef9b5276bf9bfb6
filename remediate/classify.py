"""Label nginx error-log lines with the runbook cause they show, fast, from nginx's own message texts.

An error-log line is ``DATE TIME [level] PID#TID: [*CONN ]MESSAGE[, client: …, request: "…",
upstream: "…", host: "…"]`` (src/core/ngx_log.c; the ", client:" part is added by
ngx_http_log_error). Only MESSAGE is classified, anchored right after the connection number,
so a request line or URI that contains "Connection refused" cannot fool it. The texts come from
nginx's source:

* socket: ``connect() to unix:PATH failed (2|13|111: …)`` at ``[crit]`` (ngx_event_connect.c)
* down: ``connect() failed (111|113|101: …) while connecting to upstream`` (TCP)
* timeout: ``upstream timed out (110: …) while …`` (ngx_http_upstream.c)
* dns: ``no resolver defined to resolve X``, ``X could not be resolved (N: …)``,
  ``host not found in upstream "X"`` (ngx_http_upstream.c, ngx_inet.c)
* invalid-response: ``upstream prematurely closed connection``, ``upstream sent invalid …`` /
  ``no valid HTTP/1.0 header``, ``upstream SSL certificate verify error``, ``SSL_do_handshake()
  failed … while SSL handshaking to upstream``, ``recv() failed (104: …) while reading response
  header from upstream``
* workers: ``N worker_connections are not enough``, ``(24: Too many open files)`` (ngx_event_connect.c,
  ngx_event_accept.c)
* no-live-upstreams: ``no live upstreams while connecting to upstream`` (every peer marked failed:
  a consequence of another cause, never a cause of its own)

A refused TCP connect is labelled ``down``: from the line alone ``down`` and ``proxy-pass`` look the
same; the evidence step tells them apart. Classification works on bytes decoded as latin-1, so
any byte sequence is a line and nothing is lost.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

__all__ = ["LABELS", "Line", "classify", "classify_text", "label_of"]

LABELS = ("socket", "down", "timeout", "dns", "invalid-response", "workers", "no-live-upstreams", "other")

# The line's head, up to the message: date, time, [level], pid#tid, and the connection number.
_HEAD = re.compile(r"(?P<time>\d{4}/\d\d/\d\d \d\d:\d\d:\d\d) \[(?P<level>[a-z]+)\] \d+#\d+: (?:\*\d+ )?")
_CAUSES = {
    "socket": r"connect\(\) to unix:[^ ]* failed \((?:2|13|111): ",
    "down": r"connect\(\) failed \((?:111|113|101|99): [^)]*\) while connecting to upstream",
    "timeout": r"upstream timed out \(110: ",
    "dns": r"no resolver defined to resolve |[^ ,]+ could not be resolved \(\d+: |host not found in upstream ",
    "invalid_response": (
        r"upstream prematurely closed connection while reading (?:response header from )?upstream"
        r"|upstream sent (?:invalid|no valid HTTP/1\.0 header|too big header|more data than specified)"
        r"|upstream SSL certificate (?:verify error|does not match)"
        r"|SSL_do_handshake\(\) failed .*while SSL handshaking to upstream"
        r"|recv\(\) failed \(104: [^)]*\) while reading response header from upstream"
    ),
    "workers": r"\d+ worker_connections are not enough|[a-z0-9_]+\(\)(?: \"[^\"]*\")? failed \(24: ",
    "no_live": r"no live upstreams while connecting to upstream",
}
# Searched from the literal "] " that ends [level], which the regex engine finds at C speed;
# each hit is then checked to sit right after a real head at the start of its line.
_MESSAGE = re.compile(
    r"\] \d+#\d+: (?:\*\d+ )?(?:" + "|".join(f"(?P<{name}>{pattern})" for name, pattern in _CAUSES.items()) + ")"
)
_GROUP_LABEL = {"invalid_response": "invalid-response", "no_live": "no-live-upstreams"}
_UPSTREAM = re.compile(r', upstream: "(?P<scheme>[a-z]+)://(?P<peer>unix:[^"]*?(?=:?")|[^/"]+)')


@dataclass(frozen=True)
class Line:
    number: int  # 1-based, in the text given
    label: str
    time: str
    level: str
    text: str

    @property
    def peer(self) -> str | None:
        """The upstream peer nginx was talking to, from the ``upstream:`` field."""
        m = _UPSTREAM.search(self.text)
        return m.group("peer") if m else None


def label_of(line: str) -> str:
    """One line's label."""
    found = next(classify_text(line.split("\n", 1)[0]), None)
    return found.label if found is not None else "other"


def _label(m: re.Match[str]) -> str:
    name = m.lastgroup or "other"
    return _GROUP_LABEL.get(name, name)


def _hits(text: str) -> Iterator[tuple[int, int, re.Match[str]]]:
    """(line number, line start, match) of every line whose message shows a cause.

    One regex scan over the whole text instead of a Python loop per line: the cost is in the
    regex engine, not the interpreter. A hit counts only when its "] " is the first of its line,
    the one that closes [level]: text inside a request line or URI never counts.
    """
    number, pos = 1, 0
    rfind, find, count = text.rfind, text.find, text.count
    for m in _MESSAGE.finditer(text):
        start = rfind("\n", 0, m.start()) + 1
        if find("] ", start) != m.start():
            continue
        number += count("\n", pos, start)
        pos = start
        yield number, start, m


def classify_text(text: str) -> Iterator[Line]:
    """Every line that shows a cause, with its 1-based number (lines labelled ``other`` are skipped)."""
    for number, start, m in _hits(text):
        head = _HEAD.match(text, start)
        end = text.find("\n", m.end())
        time, level = (head.group("time"), head.group("level")) if head else ("", "")
        yield Line(number, _label(m), time, level, text[start : end if end >= 0 else None])


def classify(text: str) -> list[str]:
    """The label of every line of ``text``, in order (``other`` where no cause shows)."""
    count = text.count("\n") + (0 if text.endswith("\n") or not text else 1)
    labels = ["other"] * count
    for number, _, m in _hits(text):
        labels[number - 1] = _GROUP_LABEL.get(m.lastgroup or "", m.lastgroup or "other")
    return labels
