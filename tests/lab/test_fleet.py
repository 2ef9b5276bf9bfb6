"""Fleet rollouts: Ansible's batching and stop rules on text inventories, then the CLI on a lab of ten web hosts."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
from support.lab import FLEET_SIZE, remediate_cli

from remediate.lab.core import PROBES, Lab
from remediate.lab.webhost import WebHost

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
