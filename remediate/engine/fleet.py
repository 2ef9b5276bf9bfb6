"""Fleet rollouts with Ansible's controls: ``--limit``, ``--forks``, ``--serial``, ``--max-fail-percentage``.

The hosts a pattern selects (remediate.hosts.patterns) are cut into batches the way ansible-core's
``_get_serialized_batches`` cuts a play (lib/ansible/executor/playbook_executor.py): each value of
``serial`` is a count or a percentage of all the selected hosts (``int(pct / 100 * hosts)``, at
least 1), and the last value repeats until no host is left. Within a batch, ``forks`` hosts run at
once, each on its own thread with its own SSH connection, so connections open in parallel.

After each batch the rollout stops, as Ansible's does, when the batch's failed share is *more*
than ``max_fail_percentage`` (0 stops at the first failure), or when every host of the batch
failed. The hosts of the batches not started are reported as ``not-attempted``. A host failed
when its exit code is not 0: refused, rolled back, unreachable or failed all count.

The exit code of a rollout is its worst host's: failed (1) > unreachable (6) > bad input (5) >
rolled back (4) > refused (3) > applied, unverified (7) > ok (0).
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from remediate.errors import (
    EXIT_OK,
    UsageError,
)
from remediate.hosts.inventory import Host
from remediate.outcomes import Outcome, worst_exit

__all__ = [
    "HostResult",
    "Rollout",
    "batches",
    "parse_serial",
    "rollout",
]


@dataclass
class HostResult:
    """What happened on one host: the summary row, and the full report for --json."""

    host: str
    outcome: Outcome
    exit_code: int
    cause: str = ""
    seconds: float = 0.0
    run_id: str = ""
    message: str = ""
    batch: int = 0
    report: dict[str, Any] | None = None

    @property
    def failed(self) -> bool:
        return self.exit_code != EXIT_OK

    def to_json(self) -> dict[str, Any]:
        row = {
            "host": self.host,
            "cause": self.cause,
            "outcome": self.outcome,
            "exit_code": self.exit_code,
            "seconds": round(self.seconds, 3),
            "run_id": self.run_id,
            "message": self.message,
            "batch": self.batch,
        }
        return {**row, "report": self.report} if self.report is not None else row


@dataclass
class Rollout:
    """A whole rollout: every selected host's result, in inventory order, and why it stopped early."""

    results: list[HostResult] = field(default_factory=list)
    batches: int = 0
    stopped: str = ""  # why later batches were not started ("" = every batch ran)
    seconds: float = 0.0

    @property
    def exit_code(self) -> int:
        return worst_exit(r.exit_code for r in self.results)

    @property
    def not_attempted(self) -> list[str]:
        return [r.host for r in self.results if r.outcome is Outcome.NOT_ATTEMPTED]

    def summary(self) -> dict[str, Any]:
        counts: dict[str, int] = {}
        for r in self.results:
            counts[r.outcome] = counts.get(r.outcome, 0) + 1
        return {
            "hosts": len(self.results),
            "outcomes": counts,
            "failed": [r.host for r in self.results if r.failed and r.outcome is not Outcome.NOT_ATTEMPTED],
            "not_attempted": self.not_attempted,
            "batches": self.batches,
            "stopped": self.stopped,
            "seconds": round(self.seconds, 3),
            "exit_code": self.exit_code,
        }


def parse_serial(text: str | None) -> list[int | str]:
    """``--serial``: ``N``, ``N%`` or a comma list of them (``1,5,20%``); None: one batch of every host."""
    if text is None:
        return []
    values: list[int | str] = []
    for item in text.split(","):
        item = item.strip()
        if re.fullmatch(r"[1-9]\d*", item):
            values.append(int(item))
        elif re.fullmatch(r"[1-9]\d*%", item) and int(item[:-1]) <= 100:
            values.append(item)
        else:
            raise UsageError(f"--serial {text!r}: each value must be a count (3) or a percentage (30%), like 1,5,20%")
    return values


def batches(hosts: Sequence[Host], serial: Sequence[int | str]) -> list[list[Host]]:
    """``hosts`` cut into batches as ansible-core's ``_get_serialized_batches`` cuts a play."""
    left, cut, index = list(hosts), [], 0
    if not serial:
        return [left] if left else []
    while left:
        value = serial[index]
        size = (int(int(value[:-1]) / 100 * len(hosts)) or 1) if isinstance(value, str) else value
        cut.append(left[:size])
        left = left[size:]
        index = min(index + 1, len(serial) - 1)
    return cut


def rollout(
    hosts: Sequence[Host],
    work: Callable[[Host], HostResult],
    *,
    forks: int = 5,
    serial: Sequence[int | str] = (),
    max_fail_percentage: float | None = None,
    started: Callable[[Host], None] = lambda _: None,
    finished: Callable[[HostResult], None] = lambda _: None,
) -> Rollout:
    """Run ``work`` on every host, batch after batch, ``forks`` at once; stop early as Ansible does.

    ``work`` must not raise: it returns the host's result (remediate's errors become outcomes).
    ``started`` and ``finished`` are called from the worker threads, one host at a time.
    """
    if forks < 1:
        raise UsageError(f"--forks must be at least 1 (got {forks})")
    if max_fail_percentage is not None and not 0 <= max_fail_percentage <= 100:
        raise UsageError(f"--max-fail-percentage must be 0 to 100 (got {max_fail_percentage:g})")
    began = time.monotonic()
    result = Rollout()
    if not hosts:
        return result
    done: dict[str, HostResult] = {}
    report = threading.Lock()
    cut = batches(hosts, serial)

    def one(host: Host, number: int) -> HostResult:
        with report:
            started(host)
        outcome = work(host)
        outcome.batch = number
        with report:
            done[host.name] = outcome
            finished(outcome)
        return outcome

    with ThreadPoolExecutor(max_workers=forks, thread_name_prefix="fleet") as pool:
        for number, batch in enumerate(cut, 1):
            result.batches = number
            outcomes = list(pool.map(lambda h: one(h, number), batch))  # noqa: B023 - used before the next batch
            failed = sum(1 for o in outcomes if o.failed)
            if failed == len(batch):
                result.stopped = f"every host of batch {number} failed"
            elif max_fail_percentage is not None and failed / len(batch) * 100 > max_fail_percentage:
                share = f"{failed} of {len(batch)}"
                result.stopped = (
                    f"batch {number}: {share} failed, more than --max-fail-percentage {max_fail_percentage:g}"
                )
            if result.stopped:
                break
    if result.stopped and result.batches == len(cut):
        result.stopped = ""  # nothing was left to stop
    for host in hosts:
        if host.name not in done:
            why = f"not attempted: {result.stopped}"
            done[host.name] = HostResult(host.name, Outcome.NOT_ATTEMPTED, EXIT_OK, message=why)
            finished(done[host.name])
    result.results = [done[h.name] for h in hosts]
    result.seconds = time.monotonic() - began
    return result
