"""The listening socket's gatekeeper: a bounded number of connections, in total and per client address.

aiohttp holds every connection it accepts; a client that opens connections faster than the header
timeout drops them (or one that keeps them busy) would otherwise hold file descriptors and memory
without bound. :class:`ConnectionCap` stands between the listening socket and aiohttp's protocol
factory, as nginx's ``limit_conn`` stands in front of a location: a connection over either cap is
answered ``503`` with ``Retry-After`` and closed before a byte of it is read, and never reaches aiohttp.

The per-client cap keeps one address from taking every slot from the others (Slack and Alertmanager
keep being served while one client floods). Behind a TLS proxy every connection comes from the proxy,
so that cap is off there (``behind_tls_proxy: true``) and the proxy's own limits apply.
"""

from __future__ import annotations

import asyncio
import json
import resource
from collections import Counter
from collections.abc import Callable

__all__ = ["ConnectionCap", "ensure_descriptors"]

#: Seconds a refused connection is kept to drain what its client already sent (nginx's lingering close):
#: closing a socket with unread bytes resets it, and the client would see a reset instead of the 503.
LINGER = 1.0
#: Refused connections lingering at once; beyond this, one is closed at once (a flood cannot hold more).
MAX_LINGERING = 64
#: File descriptors the process needs besides its client connections (stores, logs, the worker's pipes).
SPARE_DESCRIPTORS = 64


def _busy(reason: str) -> bytes:
    body = json.dumps({"error": reason}).encode()
    head = (
        "HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nConnection: close\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


class ConnectionCap:
    """A protocol factory for ``loop.create_server``: each connection admitted is handed to aiohttp's
    ``factory``; one over ``limit`` in total, or over ``per_client`` from its address, is refused."""

    def __init__(
        self,
        factory: Callable[[], asyncio.Protocol],
        limit: int,
        per_client: int | None,
        refused: Callable[[str], None] = lambda reason: None,
    ) -> None:
        self.factory = factory
        self.limit = limit
        self.per_client = per_client
        self.refused = refused
        self.open = 0
        self.lingering = 0
        self.by_client: Counter[str] = Counter()

    def __call__(self) -> asyncio.Protocol:
        return _Admission(self)

    def admit(self, client: str) -> str | None:
        """None when a connection from ``client`` may open (it is counted), else the reason it may not."""
        if self.open >= self.limit:
            return "busy"
        if self.per_client is not None and self.by_client[client] >= self.per_client:
            return "per-client"
        self.open += 1
        self.by_client[client] += 1
        return None

    def release(self, client: str) -> None:
        self.open -= 1
        self.by_client[client] -= 1
        if not self.by_client[client]:
            del self.by_client[client]


_REASONS = {
    "busy": "the service holds as many connections as it allows; retry shortly",
    "per-client": "this address holds as many connections as one client may; close some first",
}


class _Admission(asyncio.Protocol):
    """One accepted connection: admitted (then everything is aiohttp's) or answered 503 and closed."""

    def __init__(self, cap: ConnectionCap) -> None:
        self.cap = cap
        self.client = ""
        self.inner: asyncio.Protocol | None = None
        self.lingers = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        peer = transport.get_extra_info("peername")
        self.client = str(peer[0]) if isinstance(peer, tuple) and peer else "?"
        reason = self.cap.admit(self.client)
        if reason is not None:
            self.cap.refused(reason)
            self._refuse(transport, reason)
            return
        self.inner = self.cap.factory()
        self.inner.connection_made(transport)

    def _refuse(self, transport: asyncio.BaseTransport, reason: str) -> None:
        """Answer 503, then read and drop what the client sends for LINGER seconds before closing, so
        the answer is not lost to a reset (at most MAX_LINGERING at once; beyond, close at once)."""
        assert isinstance(transport, asyncio.WriteTransport)
        transport.write(_busy(_REASONS[reason]))
        if self.cap.lingering >= MAX_LINGERING:
            transport.close()
            return
        self.cap.lingering += 1
        self.lingers = True
        if transport.can_write_eof():
            transport.write_eof()
        asyncio.get_running_loop().call_later(LINGER, transport.close)

    def data_received(self, data: bytes) -> None:
        if self.inner is not None:
            self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received() if self.inner is not None else None

    def connection_lost(self, exc: Exception | None) -> None:
        if self.lingers:
            self.cap.lingering -= 1
        if self.inner is not None:
            self.cap.release(self.client)
            self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        if self.inner is not None:
            self.inner.pause_writing()

    def resume_writing(self) -> None:
        if self.inner is not None:
            self.inner.resume_writing()


def ensure_descriptors(connections: int) -> None:
    """Raise the soft limit on open files so ``connections`` fit (systemd starts services with a soft
    limit of 1024 and a far higher hard one); a hard limit too low is a config error, said in one line."""
    need = connections + SPARE_DESCRIPTORS
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < need:
        if hard != resource.RLIM_INFINITY and hard < need:
            raise ValueError(
                f"{connections} connections need {need} open files and the hard limit is {hard}: "
                "raise LimitNOFILE= in the unit or lower max_connections"
            )
        resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))
