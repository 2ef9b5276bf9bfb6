"""Fleet rollouts: Ansible's batching and stop rules on text inventories, then the CLI on a lab of ten web hosts."""

from __future__ import annotations

import json
import re
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from support.lab import FLEET_SIZE, remediate_cli

from remediate.engine.fleet import HostResult, batches, parse_serial, rollout
from remediate.errors import UsageError
from remediate.hosts.inventory import Host, Inventory, load_inventory
from remediate.lab.core import PROBES, Lab
from remediate.lab.webhost import WebHost
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


# -- on a lab of ten web hosts ------------------------------------------------------


def _broken_fleet(lab: Lab, limit: str = "web") -> list[WebHost]:
    """Reset, break socket (php-fpm stopped) on the hosts ``limit`` selects, and let each log its 502."""
    lab.reset()
    lab.break_("socket", "missing", limit=limit)
    webs = lab.webs(limit)
    for web in webs:
        assert web.probe(PROBES["php"]) == 502
    return webs


def test_run_limit_fixes_every_host_of_the_group(fleet_lab: Lab) -> None:
    """`run --limit web --cause socket --yes --forks 10 --json` fixes all ten: a JSON line per host, then a summary."""
    webs = _broken_fleet(fleet_lab)
    assert len(webs) == FLEET_SIZE
    done = remediate_cli(
        "run", "-i", str(fleet_lab.inventory), "--limit", "web", "--cause", "socket", "--yes", "--forks", "10", "--json"
    )
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert done.returncode == 0, done.stdout + done.stderr
    hosts, summary = lines[:-1], lines[-1]["summary"]
    assert sorted(h["host"] for h in hosts) == [w.name for w in webs]
    assert {h["outcome"] for h in hosts} == {"fixed"}
    assert all(h["run_id"] and h["report"]["run_id"] == h["run_id"] for h in hosts)
    assert summary["outcomes"] == {"fixed": FLEET_SIZE} and summary["exit_code"] == 0
    assert summary["not_attempted"] == [] and summary["batches"] == 1
    for web in webs:
        assert web.probe(PROBES["php"]) == 200
        runs = list((Path(web.root) / "journal" / "runs").iterdir())
        assert any(r.name == next(h["run_id"] for h in hosts if h["host"] == web.name) for r in runs)


def test_serial_with_max_fail_zero_stops_after_the_failing_batch(fleet_lab: Lab) -> None:
    """--serial 3 --max-fail-percentage 0 with web05 unreachable: batches 1-2 run, web07-web10 are not attempted."""
    webs = _broken_fleet(fleet_lab)
    web05 = next(w for w in webs if w.name == "web05")
    web05.ctl("stop", "sshd")
    try:
        done = remediate_cli(
            "run", "-i", str(fleet_lab.inventory), "--limit", "web", "--cause", "socket", "--yes",
            "--serial", "3", "--max-fail-percentage", "0",
        )  # fmt: skip
    finally:
        web05.ctl("start", "sshd")
    assert done.returncode == 6, done.stdout + done.stderr  # the worst host: unreachable
    out = done.stdout
    table = out[out.index("host ") :]
    for row in ("web01", "web02", "web03", "web04", "web06"):
        assert re.search(rf"^{row}\s+socket\s+fixed\s+[\d.]+\s+\d{{8}}T", table, re.M), table
    assert re.search(r"^web05\s+socket\s+unreachable", table, re.M), table
    for row in ("web07", "web08", "web09", "web10"):
        assert re.search(rf"^{row}\s+-\s+not-attempted\s+-\s+-", table, re.M), table
    assert "stopped: batch 2: 1 of 3 failed, more than --max-fail-percentage 0" in out
    assert "not attempted: web07, web08, web09, web10" in out
    for web in webs:
        assert web.probe(PROBES["php"]) == (502 if web.name in ("web05", "web07", "web08", "web09", "web10") else 200)


def test_diagnose_limit_names_the_cause_on_each_host(fleet_lab: Lab) -> None:
    """`diagnose --limit 'web:!web01'` diagnoses the nine others in parallel; each verdict is socket."""
    _broken_fleet(fleet_lab, "web0[2-4]")
    done = remediate_cli("diagnose", "-i", str(fleet_lab.inventory), "--limit", "web:!web01", "--forks", "9", "--json")
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in done.stdout.splitlines()]
    verdicts = {r["host"]: r["cause"] for r in rows[:-1]}
    assert len(verdicts) == FLEET_SIZE - 1 and "web01" not in verdicts
    assert {verdicts[n] for n in ("web02", "web03", "web04")} == {"socket"}
    assert {v for n, v in verdicts.items() if n not in ("web02", "web03", "web04")} == {"unknown"}
    assert rows[-1]["summary"]["outcomes"] == {"diagnosed": FLEET_SIZE - 1}


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--limit", "nosuch", "--yes"], 2, "--limit 'nosuch' selects no host"),
        (["--limit", "web", "--serial", "0", "--yes"], 2, "--serial '0'"),
        (["--host", "web01", "--serial", "3", "--yes"], 2, "--serial need --limit PATTERN"),
        (["--host", "web01", "--limit", "web", "--yes"], 2, "give --host NAME (one host) or --limit PATTERN"),
        (["--limit", "web"], 3, "give --yes to apply, or --check to look"),
        (["--limit", "web", "--yes", "--forks", "0"], 2, "--forks must be at least 1"),
    ],
)
def test_fleet_bad_input_is_one_line_and_changes_nothing(
    fleet_lab: Lab, args: list[str], code: int, message: str
) -> None:
    """A wrong fleet command line is one line with its exit code, and no host is touched."""
    web02 = fleet_lab.webs("web02")[0]
    runs = Path(web02.root) / "journal" / "runs"
    before = sorted(runs.iterdir()) if runs.exists() else []
    done = remediate_cli("run", "-i", str(fleet_lab.inventory), "--cause", "socket", *args, stdin=subprocess.DEVNULL)
    assert done.returncode == code, done.stderr
    assert message in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert (sorted(runs.iterdir()) if runs.exists() else []) == before


def test_the_python_api_runs_a_fleet(fleet_lab: Lab) -> None:
    """`rem.fleet("web0[6-8]", "socket", yes=True)` fixes the three hosts; `rem.fleet(pattern)` diagnoses."""
    from remediate import api

    _broken_fleet(fleet_lab, "web0[6-8]")
    seen: list[str] = []
    with api.open(fleet_lab.inventory, requested_by="incident-7") as rem:
        verdicts = rem.fleet("web0[6-8]", forks=3)
        done = rem.fleet("web0[6-8]", "socket", yes=True, forks=3, finished=lambda r: seen.append(r.host))
    assert {r.cause for r in verdicts.results} == {"socket"} and verdicts.exit_code == 0
    assert [r.outcome for r in done.results] == ["fixed"] * 3 and done.exit_code == 0
    assert sorted(seen) == ["web06", "web07", "web08"]
    assert {r.report["requested_by"] for r in done.results if r.report} == {"incident-7"}
