"""The service's log: one JSON object per line on stderr (structlog), for journald or any collector."""

from __future__ import annotations

import logging
import sys

import structlog

__all__ = ["configure"]


class _ClientFaultsInOneLine(logging.Filter):
    """aiohttp logs a request it cannot parse (a NUL in a header, a bad request line) at ERROR with a
    traceback. That is the client's fault, not ours: one warning line, no traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        from aiohttp.http_exceptions import HttpProcessingError

        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError):
            record.levelno, record.levelname = logging.WARNING, "WARNING"
            record.msg, record.args = f"bad request from a client: {exc.message or type(exc).__name__}", ()
            record.exc_info, record.exc_text = None, None
        return True


def configure(level: int = logging.WARNING, fmt: str = "%(name)s %(levelname)s %(message)s") -> None:
    """The one place a process of remediate's service configures logging: the standard library's at
    ``level`` in ``fmt``, and structlog's events as JSON lines, both on stderr."""
    logging.basicConfig(level=level, stream=sys.stderr, format=fmt)
    logging.getLogger("aiohttp.server").addFilter(_ClientFaultsInOneLine())
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(default=str),
        ],
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
    )
