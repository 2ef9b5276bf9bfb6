"""`remediate run --cause socket` end to end on the real lab, and every guard of the apply."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from support.lab import cli_argv, remediate_cli, run_at_prompt, run_paused_after_write

from remediate.engine.hoststate import rollback
from remediate.engine.run import RunOptions, run
from remediate.engine.session import HelperSession
from remediate.errors import EXIT_OK, EXIT_REFUSED, TransportError
from remediate.hosts.connect import open_transport
from remediate.hosts.inventory import Host
from remediate.lab.core import Lab, LabConfig

pytestmark = pytest.mark.usefixtures("state_dir")


def _tree_state(lab: Lab) -> dict[str, tuple[str, int, int, int]]:
    """sha256, uid, gid and mode of every config file on web01 (nginx and php-fpm)."""
    state = {}
    for root in (lab.dir / "web01" / "nginx", lab.dir / "web01" / "php"):
        for path in sorted(root.rglob("*")):
            if (
                path.is_file()
                and not path.is_symlink()
                and path.suffix in (".conf", "")
                and "logs" not in path.parts
                and "run" not in path.parts
                and "log" not in path.parts
            ):
                st = path.stat()
                state[str(path)] = (
                    hashlib.sha256(path.read_bytes()).hexdigest(),
                    st.st_uid,
                    st.st_gid,
                    st.st_mode & 0o7777,
                )
    return state


@pytest.fixture
def pool(lab: Lab) -> Path:
    return lab.dir / "web01" / "php" / "pool.d" / "www.conf"


@pytest.mark.parametrize("variant", ["missing", "permission"])
def test_socket_fixed_end_to_end_then_nothing_to_do(lab: Lab, lab_cfg: LabConfig, variant: str) -> None:
    """502 before; `run --yes` makes it 200 with exit 0; a second run says nothing to do and changes nothing."""
    lab.reset()
    lab.break_("socket", variant, keep=True)
    assert lab.probe(lab_cfg, "/index.php") == 502
    done = remediate_cli("run", "-i", str(lab.inventory), "--host", "web01", "--cause", "socket", "--yes")
    assert done.returncode == EXIT_OK, done.stdout + done.stderr
    assert lab.probe(lab_cfg, "/index.php") == 200
    before = _tree_state(lab)
    again = remediate_cli("run", "-i", str(lab.inventory), "--host", "web01", "--cause", "socket", "--yes", "--json")
    assert again.returncode == EXIT_OK
    report = json.loads(again.stdout)
    assert report["outcome"] == "nothing-to-do"
    assert report["changes"] == [] and not any(s["step"].startswith("restart") for s in report["steps"])
    assert _tree_state(lab) == before


def test_json_report_carries_evidence_reason_and_timed_steps(lab: Lab, lab_cfg: LabConfig) -> None:
    """--json prints one object with run_id, outcome, the evidence, the decision's reason, changes and steps."""
    lab.reset()
    lab.break_("socket", "permission", keep=True)
    done = remediate_cli("run", "-i", str(lab.inventory), "--host", "web01", "--cause", "socket", "--yes", "--json")
    report = json.loads(done.stdout)
    assert report["outcome"] == "fixed" and report["cause"] == "socket" and report["run_id"]
    assert "nobody:nogroup" in report["decision"]["reason"] and "www-data" in report["decision"]["reason"]
    socket = report["evidence"]["sockets"]["denied"][0]
    assert socket["stat"]["owner"] == "nobody" and socket["nginx_may_connect"] is False
    assert any("Permission denied" in line for line in report["evidence"]["log"]["last"])
    assert "+listen.owner = www-data" in report["changes"][0]["diff"]
    assert {s["step"] for s in report["steps"]} >= {
        "evidence",
        "decide",
        "plan",
        "backup",
        "write",
        "php-fpm -t",
        "restart php-fpm",
        "probe",
    }
    assert all(isinstance(s["seconds"], float | int) for s in report["steps"])
    journal = Path(report["journal"]).read_text().splitlines()
    assert all(json.loads(line)["run_id"] == report["run_id"] for line in journal)


def test_check_prints_the_diff_and_writes_nothing(lab: Lab) -> None:
    """--check shows the unified diff and leaves every file (and the journal) untouched."""
    lab.reset()
    lab.break_("socket", "permission", keep=True)
    before = _tree_state(lab)
    journal = lab.dir / "web01" / "journal"
    runs_before = sorted(os.listdir(journal / "runs")) if (journal / "runs").exists() else []
    done = remediate_cli("run", "-i", str(lab.inventory), "--host", "web01", "--cause", "socket", "--check")
    assert done.returncode == EXIT_OK
    assert "-listen.owner = nobody" in done.stdout and "+listen.owner = www-data" in done.stdout
    assert _tree_state(lab) == before
    assert (sorted(os.listdir(journal / "runs")) if (journal / "runs").exists() else []) == runs_before
    assert not (journal / "lock").exists()


def test_non_interactive_without_yes_refuses(lab: Lab) -> None:
    """Without a terminal and without --yes, run refuses before touching anything."""
    done = subprocess.run(
        cli_argv("run", "-i", str(lab.inventory), "--host", "web01", "--cause", "socket"),
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    assert done.returncode == EXIT_REFUSED
    assert "--yes" in done.stderr


def _bad_playbook(tmp_path: Path, extra_values: str = "", verify: str | None = None) -> str:
    """The shipped socket playbook with a fault injected: an extra pool value, or another probe."""
    from remediate.resources import playbooks_dir

    text = (playbooks_dir() / "socket.yml").read_text()
    if extra_values:
        text = text.replace('          listen.mode: "0660"', '          listen.mode: "0660"\n' + extra_values)
    if verify:
        text = text.split("verify:")[0] + "verify:\n  - probe: " + verify + "\n"
    directory = tmp_path / "books"
    directory.mkdir()
    (directory / "socket.yml").write_text(text)
    return str(directory)


def _php_fpm_master(lab: Lab) -> int:
    return int((lab.dir / "web01" / "php" / "run" / "php-fpm.pid").read_text().strip())


def test_candidate_failing_validation_is_never_written(
    lab: Lab, lab_cfg: LabConfig, tmp_path: Path, web01: Host
) -> None:
    """A candidate php-fpm -t rejects is refused before it replaces anything: files identical, php-fpm not restarted."""
    lab.reset()
    lab.break_("socket", "permission", keep=True)
    before, master = _tree_state(lab), _php_fpm_master(lab)
    books = _bad_playbook(tmp_path, extra_values='          pm: "no-such-process-manager"')
    report = run(web01, "socket", RunOptions(yes=True, playbooks=(str(books),)))
    assert report.outcome == "refused" and report.exit_code == EXIT_REFUSED, report.message
    assert report.message.startswith("php-fpm -t failed") and "nothing was changed" in report.message
    assert "invalid process manager" in report.message  # php-fpm's own words, naming the file:line
    assert "write" not in [s["step"] for s in report.steps]
    assert _tree_state(lab) == before
    assert _php_fpm_master(lab) == master  # nothing was restarted: the candidate never went live
    assert lab.probe(lab_cfg, "/") == 200  # nginx still serves what it served
    assert lab.probe(lab_cfg, "/index.php") == 502  # and the socket is as broken as before, not worse


def test_probe_still_failing_is_rolled_back(lab: Lab, lab_cfg: LabConfig, tmp_path: Path, web01: Host) -> None:
    """When the probe still fails after the fix, every file is restored and the run says rolled back."""
    lab.reset()
    lab.break_("socket", "permission", keep=True)
    before = _tree_state(lab)
    books = _bad_playbook(tmp_path, verify=f"http://{lab_cfg.addr(1)}:{lab_cfg.http_port + 1}/unreachable")
    fast = dataclasses.replace(web01, vars={**web01.vars, "probe_budget": 1.0})
    report = run(fast, "socket", RunOptions(yes=True, playbooks=(str(books),)))
    assert report.outcome == "rolled-back", report.message
    assert "every file was restored byte for byte" in report.message and "INCOMPLETE" not in report.message
    assert report.steps[-1]["step"] == "restore" and report.steps[-1]["ok"]
    assert "probe" in [s["step"] for s in report.steps if not s["ok"]]
    assert _tree_state(lab) == before


def test_second_run_while_lock_is_held_is_refused(lab: Lab, web01: Host) -> None:
    """A run while another session holds the host's lock is refused (exit 3), naming the holder and the way out."""
    lab.reset()
    with open_transport(web01) as t:
        other = HelperSession(t, web01)
        try:
            held = other.call(
                {"op": "collect", "run_id": "other-run", "journal_dir": web01["journal_dir"], "lock": True}
            )
            assert held["lock"]["acquired"]
            report = run(web01, "socket", RunOptions(yes=True))
            assert report.outcome == "refused" and report.exit_code == EXIT_REFUSED
            assert "other-run holds the lock" in report.message
            assert f"remediate unlock -i {web01.inventory_file} --host web01 other-run" in report.message
        finally:
            other.close()
    assert run(web01, "socket", RunOptions(yes=True)).outcome == "nothing-to-do"  # the session ended: the lock is free


def test_stale_lock_of_a_dead_run_is_taken_over(lab: Lab, web01: Host) -> None:
    """A lock whose lease ran out and whose helper is gone does not block the next run."""
    lab.reset()
    lock = Path(web01["journal_dir"]) / "lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    lock.write_text(json.dumps({"run_id": "dead-run", "pid": None, "since": 0, "expires": 1}))
    report = run(web01, "socket", RunOptions(yes=True))
    assert report.outcome == "nothing-to-do"
    assert not lock.exists()


def _states(runs: Path) -> list[str]:
    """The state of every run in a host journal (a run being created has none yet)."""
    states = []
    for run_dir in runs.iterdir():
        with contextlib.suppress(OSError, ValueError):
            states.append(json.loads((run_dir / "meta.json").read_text())["state"])
    return states


def _helper_pids() -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cmd = Path(f"/proc/{entry}/cmdline").read_bytes()
            except OSError:
                continue
            if b"The helper remediate runs *on the host*" in cmd:
                found.append(int(entry))
    return found


def test_connection_cut_mid_apply_is_recovered_by_the_next_run(
    lab: Lab, lab_cfg: LabConfig, web01: Host, pool: Path
) -> None:
    """Kill the SSH session and its helper after the write: the next run restores from the journal, then fixes."""
    lab.reset()
    lab.break_("socket", "permission", keep=True)
    thread, outcome = run_paused_after_write(web01, pool, 20)
    runs = Path(web01["journal_dir"]) / "runs"
    deadline = time.monotonic() + 10  # kill it once its journal says the files are written (activating)
    while time.monotonic() < deadline and "activating" not in _states(runs):
        time.sleep(0.02)
    for pid in _helper_pids():
        parent = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        os.kill(pid, signal.SIGKILL)
        os.kill(parent, signal.SIGKILL)  # that session's sshd child
    thread.join(60)
    # The controller says what the host's journal says (exit 6), not "the helper gave no answer".
    error = outcome.get("error")
    assert isinstance(error, TransportError), outcome
    assert "the connection dropped during the apply" in str(error) and "is activating" in str(error)
    crashed = [
        r
        for r in os.listdir(Path(web01["journal_dir"]) / "runs")
        if json.loads((Path(web01["journal_dir"]) / "runs" / r / "meta.json").read_text())["state"] == "activating"
    ]
    assert crashed
    report = run(web01, "socket", RunOptions(yes=True))
    assert [r["run_id"] for r in report.recovered] == crashed
    assert str(pool) in report.recovered[0]["restored"]
    assert report.outcome == "fixed"
    assert lab.probe(lab_cfg, "/index.php") == 200


def test_rollback_restores_the_files_of_a_run(lab: Lab, lab_cfg: LabConfig, web01: Host, pool: Path) -> None:
    """`remediate rollback RUN_ID` puts back the exact bytes, owner and mode, and restarts what the run restarted."""
    lab.reset()
    lab.break_("socket", "permission", keep=True)
    before = _tree_state(lab)
    report = run(web01, "socket", RunOptions(yes=True))
    assert report.outcome == "fixed"
    done = remediate_cli("rollback", "-i", str(lab.inventory), "--host", "web01", report.run_id)
    assert done.returncode == EXIT_OK, done.stderr
    assert _tree_state(lab) == before
    assert lab.probe(lab_cfg, "/index.php") == 502  # the run's fix is undone, restart included


def test_rollback_refuses_a_file_edited_since(lab: Lab, web01: Host, pool: Path) -> None:
    """A file edited by hand after the run makes rollback refuse (exit 3) unless --force."""
    lab.reset()
    lab.break_("socket", "permission", keep=True)
    report = run(web01, "socket", RunOptions(yes=True))
    assert report.outcome == "fixed"
    pool.write_bytes(pool.read_bytes() + b"; edited by a human\n")
    refused = rollback(web01, report.run_id)
    assert refused.outcome == "refused" and "changed since run" in refused.message
    assert pool.read_bytes().endswith(b"; edited by a human\n")
    forced = rollback(web01, report.run_id, force=True)
    assert forced.outcome == "restored" and forced.exit_code == EXIT_OK
    assert b"listen.owner = nobody" in pool.read_bytes()


def test_file_changed_between_plan_and_apply_is_refused(lab: Lab, web01: Host, pool: Path) -> None:
    """Compare-and-swap: if the file changes after the plan was made, nothing is written and the run refuses."""
    lab.reset()
    lab.break_("socket", "permission", keep=True)
    meddled = pool.read_bytes() + b"; someone else was here\n"

    def confirm_after_someone_edits(report: object) -> bool:
        pool.write_bytes(meddled)
        return True

    report = run(web01, "socket", RunOptions(confirm=confirm_after_someone_edits))
    assert report.outcome == "refused" and "changed since the plan was made" in report.message
    assert pool.read_bytes() == meddled
    assert not (Path(web01["journal_dir"]) / "lock").exists()


def test_journal_inside_an_nginx_include_folder_is_refused(lab: Lab, web01: Host) -> None:
    """Backups must never be read as config: a journal_dir under a folder nginx includes is refused."""
    inside = str(lab.dir / "web01" / "nginx" / "conf.d" / "remediate-journal")
    host = dataclasses.replace(web01, vars={**web01.vars, "journal_dir": inside})
    report = run(host, "socket", RunOptions(check=True))
    assert report.outcome == "refused" and "which nginx includes" in report.message
    assert not Path(inside).exists()


def test_terminal_asks_before_applying(lab: Lab, lab_cfg: LabConfig, pool: Path) -> None:
    """On a terminal, run shows the diff and asks; "n" changes nothing (exit 3), "y" applies (exit 0)."""

    lab.reset()
    lab.break_("socket", "permission", keep=True)
    before = pool.read_bytes()
    for answer, code in ((b"n\n", EXIT_REFUSED), (b"y\n", EXIT_OK)):
        proc, leader, output = run_at_prompt(lab)
        assert b"+listen.owner = www-data" in output and b"[y/N]" in output
        os.write(leader, answer)
        while proc.poll() is None:
            try:
                os.read(leader, 4096)
            except OSError:
                break
        assert proc.wait(60) == code
        os.close(leader)
        if code == EXIT_REFUSED:
            assert pool.read_bytes() == before
    assert lab.probe(lab_cfg, "/index.php") == 200
