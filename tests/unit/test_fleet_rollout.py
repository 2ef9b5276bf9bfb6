"""Fleet rollouts on text inventories: Ansible's batches, forks and stop rules, and the worst exit."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from remediate.engine.fleet import HostResult, batches, parse_serial, rollout
from remediate.errors import UsageError
from remediate.hosts.inventory import Host, Inventory, load_inventory
from remediate.outcomes import Outcome, worst_exit


def _fleet(tmp_path: Path, n: int) -> Inventory:
    hosts = "".join(f"    web{i:02d}:\n" for i in range(1, n + 1))
    path = tmp_path / "inventory.yml"
    path.write_text(f"all:\n  children:\n    web:\n      hosts:\n{hosts.replace('    web', '        web')}")
    return load_inventory(path)


def _names(cut: list[list[Host]]) -> list[list[str]]:
    return [[h.name for h in batch] for batch in cut]


def test_serial_cuts_batches_as_ansible_does(tmp_path: Path) -> None:
    """--serial takes counts and percentages of all hosts (rounded down, at least 1); the last value repeats."""
    hosts = list(_fleet(tmp_path, 10))
    assert [len(b) for b in batches(hosts, parse_serial("3"))] == [3, 3, 3, 1]
    assert [len(b) for b in batches(hosts, parse_serial("1,5,20%"))] == [1, 5, 2, 2]
    assert [len(b) for b in batches(hosts, parse_serial("5%"))] == [1] * 10  # int(0.5) is 0, so 1
    assert [len(b) for b in batches(hosts, parse_serial("30%"))] == [3, 3, 3, 1]
    assert _names(batches(hosts, parse_serial(None))) == [[h.name for h in hosts]]
    assert _names(batches(hosts, [2]))[0] == ["web01", "web02"]  # inventory order


@pytest.mark.parametrize("bad", ["0", "-1", "x", "3,", "101%", "2.5", "0%"])
def test_serial_rejects_what_ansible_would_not_take(bad: str) -> None:
    """A --serial value that is not a positive count or 1..100% is a usage error naming the form."""
    with pytest.raises(UsageError, match=r"count .* or a percentage"):
        parse_serial(bad)


def _work(fail: set[str], pause: float = 0.0) -> tuple[list[str], Callable[[Host], HostResult]]:
    ran: list[str] = []
    lock = threading.Lock()

    def work(host: Host) -> HostResult:
        with lock:
            ran.append(host.name)
        time.sleep(pause)
        return HostResult(host.name, "failed" if host.name in fail else "fixed", 1 if host.name in fail else 0)

    return ran, work


def test_max_fail_zero_stops_after_the_batch_with_a_failure(tmp_path: Path) -> None:
    """With --serial 3 --max-fail-percentage 0, a failure in batch 2 ends the rollout after batch 2."""
    hosts = list(_fleet(tmp_path, 10))
    ran, work = _work({"web05"})
    done = rollout(hosts, work, forks=3, serial=[3], max_fail_percentage=0)
    assert sorted(ran) == [f"web0{i}" for i in range(1, 7)]
    assert done.not_attempted == ["web07", "web08", "web09", "web10"]
    assert "batch 2: 1 of 3 failed" in done.stopped
    assert done.exit_code == 1
    assert [r.outcome for r in done.results].count(Outcome.NOT_ATTEMPTED) == 4


def test_max_fail_is_strictly_more_than(tmp_path: Path) -> None:
    """A batch whose failed share equals the percentage goes on (Ansible's test is >, not >=)."""
    hosts = list(_fleet(tmp_path, 8))
    ran, work = _work({"web01", "web05"})
    done = rollout(hosts, work, forks=4, serial=[4], max_fail_percentage=25)
    assert len(ran) == 8 and not done.stopped and done.not_attempted == []
    ran, work = _work({"web01", "web02"})
    done = rollout(hosts, work, forks=4, serial=[4], max_fail_percentage=25)
    assert len(ran) == 4 and done.not_attempted == ["web05", "web06", "web07", "web08"]


def test_a_batch_that_failed_entirely_stops_the_rollout(tmp_path: Path) -> None:
    """Without --max-fail-percentage, the rollout still stops when every host of a batch failed, as Ansible's does."""
    hosts = list(_fleet(tmp_path, 6))
    ran, work = _work({"web01", "web02"})
    done = rollout(hosts, work, forks=2, serial=[2])
    assert sorted(ran) == ["web01", "web02"]
    assert done.stopped == "every host of batch 1 failed"
    ran, work = _work({"web01"})
    done = rollout(hosts, work, forks=2, serial=[2])
    assert len(ran) == 6 and done.exit_code == 1


def test_forks_bounds_the_hosts_at_once(tmp_path: Path) -> None:
    """No more than --forks hosts run at the same time, and with forks = hosts they all overlap."""
    hosts = list(_fleet(tmp_path, 9))
    running, most = 0, 0
    lock = threading.Lock()

    def work(host: Host) -> HostResult:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        time.sleep(0.05)
        with lock:
            running -= 1
        return HostResult(host.name, "fixed", 0)

    rollout(hosts, work, forks=3)
    assert most == 3
    most = 0
    rollout(hosts, work, forks=9)
    assert most == 9


def test_worst_exit_orders_failures() -> None:
    """The rollout's exit code is its worst host's: failed > unreachable > input > rolled back > refused > ok."""
    assert worst_exit([0, 0]) == 0
    assert worst_exit([0, 3, 4]) == 4
    assert worst_exit([3, 6, 4]) == 6
    assert worst_exit([6, 1, 0]) == 1
    assert worst_exit([]) == 0


def test_rollout_checks_its_controls(tmp_path: Path) -> None:
    """--forks 0 and a percentage outside 0..100 are usage errors, before any host is touched."""
    hosts = list(_fleet(tmp_path, 2))
    ran, work = _work(set())
    with pytest.raises(UsageError, match="--forks"):
        rollout(hosts, work, forks=0)
    with pytest.raises(UsageError, match="--max-fail-percentage"):
        rollout(hosts, work, max_fail_percentage=101)
    assert ran == []
