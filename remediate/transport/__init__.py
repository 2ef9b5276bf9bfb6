"""The transport layer: the only code that talks to the outside world."""

from remediate.transport.base import Result, Stat, Transport

__all__ = ["Result", "Stat", "Transport"]
