"""How a run ended, in one place: every outcome remediate reports, and the exit code each one carries.

A run's Report, a host's line in a fleet rollout, a queue job's result and a service job all say
one of these; ``--json`` prints the value, and the CLI exits with its code. It is a ``StrEnum``, so
an outcome compares equal to its text (``Outcome.FIXED == "fixed"``) and serialises as it.

===================  ====  =================================================================
outcome              exit  meaning
===================  ====  =================================================================
fixed                0     applied and committed, and the requests that failed answer again
applied-unverified   7     applied and committed, but nothing could be asked afterwards
nothing-to-do        0     the evidence says the host needs no fix
planned              0     ``--check``: the plan was shown, nothing was written
restored             0     a rollback the user asked for, done
diagnosed            0     ``diagnose``: a verdict, nothing was written
not-attempted        0     a fleet stopped before this host (its batch never started)
refused              3     remediate would not go on, and changed nothing
rolled-back          4     a change failed its checks and every file was restored
bad-input            5     the inventory or a config is wrong for this host
unreachable          6     SSH connect, authentication or a command timed out
failed               1     something went wrong; the message says what and where
queued               1     ``--queue --wait``: the job was still waiting when the wait ended
findings             3     ``harden``: findings at or above ``--fail-on`` (0 when all are below it)
clean                0     ``harden``: no finding
===================  ====  =================================================================
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum

from remediate.errors import (
    EXIT_FAILED,
    EXIT_INPUT,
    EXIT_OK,
    EXIT_REFUSED,
    EXIT_ROLLED_BACK,
    EXIT_TRANSPORT,
    EXIT_UNVERIFIED,
    EXIT_USAGE,
    InputError,
    Refused,
    RemediateError,
    TransportError,
)

__all__ = ["SEVERITY", "Outcome", "worst_exit"]


class Outcome(StrEnum):
    """One way a run (or a host in a fleet, or a job) ended; ``exit_code`` is the CLI's for it."""

    exit_code: int

    def __new__(cls, value: str, exit_code: int) -> Outcome:
        member = str.__new__(cls, value)
        member._value_ = value
        member.exit_code = exit_code
        return member

    FIXED = "fixed", EXIT_OK
    APPLIED_UNVERIFIED = "applied-unverified", EXIT_UNVERIFIED
    NOTHING_TO_DO = "nothing-to-do", EXIT_OK
    PLANNED = "planned", EXIT_OK
    RESTORED = "restored", EXIT_OK
    DIAGNOSED = "diagnosed", EXIT_OK
    NOT_ATTEMPTED = "not-attempted", EXIT_OK
    REFUSED = "refused", EXIT_REFUSED
    ROLLED_BACK = "rolled-back", EXIT_ROLLED_BACK
    BAD_INPUT = "bad-input", EXIT_INPUT
    UNREACHABLE = "unreachable", EXIT_TRANSPORT
    FAILED = "failed", EXIT_FAILED
    QUEUED = "queued", EXIT_FAILED
    FINDINGS = "findings", EXIT_REFUSED
    CLEAN = "clean", EXIT_OK

    @classmethod
    def parse(cls, text: object) -> Outcome:
        """The outcome a host or a record says, or FAILED for anything that is not one."""
        return next((member for member in cls if member.value == text), cls.FAILED)

    @classmethod
    def of_error(cls, exc: RemediateError) -> Outcome:
        """The outcome of a run that raised ``exc`` (a fleet's line for that host)."""
        if isinstance(exc, TransportError):
            return cls.UNREACHABLE
        if isinstance(exc, Refused):
            return cls.REFUSED
        if isinstance(exc, InputError):
            return cls.BAD_INPUT
        return cls.FAILED


#: Exit codes, worst first: a fleet's exit code is the worst of its hosts' (failed > unreachable >
#: bad input > rolled back > refused > unverified > usage > ok).
SEVERITY = (
    EXIT_FAILED,
    EXIT_TRANSPORT,
    EXIT_INPUT,
    EXIT_ROLLED_BACK,
    EXIT_REFUSED,
    EXIT_UNVERIFIED,
    EXIT_USAGE,
    EXIT_OK,
)


def worst_exit(codes: Iterable[int]) -> int:
    """The worst of ``codes`` by SEVERITY (0 for none; an unknown code counts as failed)."""
    found = set(codes)
    return next((code for code in SEVERITY if code in found), EXIT_OK if not found else EXIT_FAILED)
