"""Fault injection against the real lab: each guarantee of the transaction, broken on purpose.

Every test here reproduces one way a host could be left worse than it was found (a failed
write later undoing a human's fix, a corrupted backup going live, a half-applied multi-file
fix, a lock outliving its controller, a reload after a rejected candidate, an injected value,
a log-controlled tool option, a misleading message) and shows what remains.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.lab import remediate_cli, run_at_prompt, run_paused_after_write, site_conf

from remediate.engine.apply import apply_plan
from remediate.engine.hoststate import host_status, rollback
from remediate.engine.plan import Change, Plan
from remediate.engine.run import RunOptions, run
from remediate.engine.session import IDLE, HelperSession
from remediate.errors import EXIT_INPUT, EXIT_OK, EXIT_REFUSED, TransportError
from remediate.events import new_run_id
from remediate.hosts.connect import open_transport
from remediate.hosts.inventory import Host, load_inventory
from remediate.lab.core import Lab, LabConfig
from remediate.nginx import NginxConfig

pytestmark = pytest.mark.usefixtures("state_dir")


def _fingerprint(path: Path) -> tuple[str, int, int, int]:
    st = path.stat()
    return hashlib.sha256(path.read_bytes()).hexdigest(), st.st_uid, st.st_gid, st.st_mode & 0o7777


def _pool(lab: Lab) -> Path:
    return lab.dir / "web01" / "php" / "pool.d" / "www.conf"


def _journal(web01: Host) -> Path:
    return Path(web01["journal_dir"])


def _meta(web01: Host, run_id: str) -> dict[str, object]:
    data: dict[str, object] = json.loads((_journal(web01) / "runs" / run_id / "meta.json").read_text())
    return data


def _nginx_pids(lab: Lab) -> set[int]:
    """nginx's master and its workers: a reload replaces the workers."""
    master = int((lab.dir / "web01" / "nginx" / "logs" / "nginx.pid").read_text().strip())
    kids = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                if int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1]) == master:
                    kids.add(int(entry))
    return {master, *kids}


def _php_fpm_master(lab: Lab) -> int:
    return int((lab.dir / "web01" / "php" / "run" / "php-fpm.pid").read_text().strip())


def _in_web01(lab: Lab, *argv: str) -> None:
    """Run argv inside web01's private mount namespace (where its sshd, and so the helper, live)."""
    pid = lab._load().roots["web01"]
    subprocess.run(["nsenter", "-t", str(pid), "-m", "--", *argv], check=True, capture_output=True)


@contextlib.contextmanager
def _immutable(path: Path) -> Iterator[None]:
    subprocess.run(["chattr", "+i", str(path)], check=True)
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(path)], check=True)


def test_a_failed_write_never_undoes_a_later_human_fix(lab: Lab, lab_cfg: LabConfig, web01: Host) -> None:
    """Immutable pool → the run fails cleanly and is closed; a human fixes by hand; a run of another cause leaves it."""
    lab.reset()
    lab.break_("socket", "permission", keep=True)
    pool = _pool(lab)
    before = _fingerprint(pool)
    with _immutable(pool):
        failed = run(web01, "socket", RunOptions(yes=True))
    assert failed.outcome == "failed", failed.message
    assert f"cannot write {pool}" in failed.message and "Operation not permitted" in failed.message
    assert "nothing was changed" in failed.message
    assert _fingerprint(pool) == before
    assert _meta(web01, failed.run_id)["state"] == "failed"  # closed, not left "applying"
    # The human applies the very diff remediate showed, and restarts php-fpm: 200.
    pool.write_bytes(failed.plan.changes[0].after)
    lab.ctl(lab_cfg, "web01", "restart", "php-fpm")
    deadline = time.monotonic() + 10  # supervisor says RUNNING before the pool listens, on a busy machine
    while lab.probe(lab_cfg, "/index.php") != 200 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert lab.probe(lab_cfg, "/index.php") == 200
    human = _fingerprint(pool)
    other = run(web01, "timeout", RunOptions(yes=True))
    assert other.recovered == []
    assert _fingerprint(pool) == human
    assert lab.probe(lab_cfg, "/index.php") == 200


def test_a_corrupted_backup_is_never_restored(lab: Lab, lab_cfg: LabConfig, web01: Host) -> None:
    """A backup whose bytes differ from the journal's sha256: rollback refuses, names it, and changes nothing."""
    lab.reset()
    lab.break_("socket", "permission", keep=True)
    fixed = run(web01, "socket", RunOptions(yes=True))
    assert fixed.outcome == "fixed", fixed.message
    backup = _journal(web01) / "runs" / fixed.run_id / "files" / "0.orig"
    backup.write_bytes(b"[www]\nlisten = /nowhere\ninclude = /etc/shadow\n")
    live = _fingerprint(_pool(lab))
    refused = rollback(web01, fixed.run_id)
    assert refused.outcome == "refused" and refused.exit_code == EXIT_REFUSED
    assert str(backup) in refused.message and "does not match the sha256" in refused.message
    assert _fingerprint(_pool(lab)) == live
    forced = rollback(web01, fixed.run_id, force=True)  # --force skips the edited-file check, never this one
    assert forced.outcome == "refused" and _fingerprint(_pool(lab)) == live
    assert lab.probe(lab_cfg, "/index.php") == 200


def test_disk_full_under_the_second_file_restores_the_first(lab: Lab, lab_cfg: LabConfig, web01: Host) -> None:
    """Two-file fix, the second file's filesystem full: both files byte-identical, nginx never reloaded."""
    lab.reset()
    full = lab.dir / "web01" / "full"
    full.mkdir(exist_ok=True)
    _in_web01(lab, "mount", "-t", "tmpfs", "-o", "size=16k", "tmpfs", str(full))
    try:
        second = full / "limits.conf"
        _in_web01(lab, "sh", "-c", f"printf 'minfds = 1024\\n' > {second}; cat /dev/zero > {full}/filler || true")
        site = site_conf(lab)
        enabled = str(lab.dir / "web01" / "nginx" / "sites-enabled" / "lab.conf")
        first_before, pids = _fingerprint(site), _nginx_pids(lab)
        after = site.read_bytes().replace(b"    location = /50x.html {", b"    # edited\n    location = /50x.html {")
        plan = Plan(
            changes=[
                Change(enabled, site.read_bytes(), after, "nginx"),
                Change(str(second), b"minfds = 1024\n", b"minfds = 65536\n" * 2000, "none"),
            ]
        )
        with open_transport(web01) as web:
            dump = web.run([*web01.nginx_base_argv, "-T"]).stdout
            answer = apply_plan(
                web, web01, plan, run_id=new_run_id(), cause="test", probes=[], config=NginxConfig.from_dump(dump)
            )
        assert answer["outcome"] == "failed" or answer["outcome"] == "rolled-back", answer
        assert f"cannot write {second}" in str(answer["reason"]) and "No space left on device" in str(answer["reason"])
        assert answer["restored"] == [enabled] and not answer["problems"]
        assert _fingerprint(site) == first_before
        reader = subprocess.run(
            ["nsenter", "-t", str(lab._load().roots["web01"]), "-m", "--", "cat", str(second)],
            capture_output=True,
            check=True,
        )
        assert reader.stdout == b"minfds = 1024\n"
        assert _nginx_pids(lab) == pids  # nothing was reloaded: nginx never saw the candidate
        assert lab.probe(lab_cfg, "/") == 200
    finally:
        _in_web01(lab, "umount", str(full))


def _wait_free(web01: Host, within: float) -> float:
    """Seconds until no run holds web01's lock (the host's own answer); fails after ``within``."""
    started = time.monotonic()
    with open_transport(web01) as t:
        while host_status(t, web01).get("lock") is not None:
            assert time.monotonic() - started < within, "the lock outlived its controller"
            time.sleep(0.2)
    return time.monotonic() - started


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM, signal.SIGHUP])
def test_a_controller_killed_at_the_prompt_does_not_keep_the_lock(lab: Lab, web01: Host, sig: signal.Signals) -> None:
    """Kill the controller while it asks [y/N]: its lock goes with it, and the next run proceeds."""
    lab.reset()
    lab.break_("socket", "permission", keep=True)
    proc, leader, output = run_at_prompt(lab)
    assert b"[y/N]" in output
    with open_transport(web01) as t:
        assert host_status(t, web01)["lock"] is not None  # held while it asks
    proc.send_signal(sig)
    proc.wait(30)
    os.close(leader)
    _wait_free(web01, within=IDLE)
    report = run(web01, "socket", RunOptions(yes=True))
    assert report.outcome == "fixed", report.message


def test_a_cut_off_controller_loses_the_lock_within_idle(lab: Lab, web01: Host) -> None:
    """A controller that stops talking (no pings) holds the host for IDLE seconds at most."""
    lab.reset()
    with open_transport(web01) as t:
        session = HelperSession(t, web01)
        answer = session.call({"op": "collect", "run_id": "silent", "journal_dir": web01["journal_dir"], "lock": True})
        assert answer["lock"]["acquired"]
        session._stop.set()  # the pings stop, as when the network is cut; the channel stays open
        waited = _wait_free(web01, within=IDLE + 5)
        assert waited >= 1  # it was held, then let go by itself
        session.close()


def test_a_corrupt_journal_entry_blocks_nothing(lab: Lab, web01: Host) -> None:
    """A garbage meta.json is reported and left alone; runs go on and the lock is released every time."""
    lab.reset()
    broken = _journal(web01) / "runs" / "20200101T000000Z-garbage"
    broken.mkdir(parents=True, exist_ok=True)
    (broken / "meta.json").write_bytes(b'{"run_id": "x", "state": "applying", "chan')
    try:
        for _ in range(2):
            report = run(web01, "socket", RunOptions(yes=True))
            assert report.outcome == "nothing-to-do", report.message
            problems = [p for r in report.recovered for p in r["problems"]]
            assert any("meta.json" in p and "unreadable" in p for p in problems)
            assert not (_journal(web01) / "lock").exists()
        assert (broken / "meta.json").read_bytes().endswith(b'"chan')  # left as it was
    finally:
        (broken / "meta.json").unlink()
        broken.rmdir()


def test_unlock_asks_a_stuck_holder_to_let_go(lab: Lab, web01: Host) -> None:
    """`remediate unlock` names the holder, ends its session, and the lock is free; a wrong RUN_ID is refused."""
    lab.reset()
    with open_transport(web01) as t:
        session = HelperSession(t, web01)
        try:
            session.call({"op": "collect", "run_id": "stuck-run", "journal_dir": web01["journal_dir"], "lock": True})
            wrong = remediate_cli("unlock", "-i", str(lab.inventory), "--host", "web01", "another-run")
            assert wrong.returncode == EXIT_REFUSED and "held by run stuck-run" in wrong.stderr
            done = remediate_cli("unlock", "-i", str(lab.inventory), "--host", "web01", "stuck-run")
            assert done.returncode == EXIT_OK, done.stderr
            assert "released" in done.stdout and "stuck-run" in done.stdout
            assert host_status(t, web01)["lock"] is None
        finally:
            session.close()


def test_check_says_a_change_would_fail_nginx_t_and_writes_nothing(lab: Lab, tmp_path: Path) -> None:
    """--check validates the candidate with nginx -t in a private namespace: a bad one is named, nothing is written."""
    lab.reset()
    site = site_conf(lab)
    line = next(n for n, text in enumerate(site.read_text().splitlines(), 1) if "proxy_pass http://app_pool;" in text)
    books = tmp_path / "books"
    books.mkdir()
    (books / "proxy-pass.yml").write_text(
        "cause: proxy-pass\n"
        "summary: a fix whose candidate nginx -t rejects\n"
        "evidence:\n  - {name: nginx, collect: nginx_config}\n"
        "decisions:\n  - {name: bad, when: 'true', reason: test, fix: bad}\n"
        "fixes:\n  bad:\n    - module: nginx_set_pass\n"
        f"      args: {{where: '{lab.dir}/web01/nginx/sites-enabled/lab.conf:{line}',"
        " target: 'http://no-such-upstream.invalid:8080'}\n"
        "verify: []\n"
    )
    before = _fingerprint(site)
    done = remediate_cli(
        "run",
        "-i",
        str(lab.inventory),
        "--host",
        "web01",
        "--cause",
        "proxy-pass",
        "--check",
        "--playbooks",
        str(books),
    )
    assert done.returncode == EXIT_REFUSED, done.stdout + done.stderr
    assert "would fail `nginx -t`" in done.stderr and "[emerg]" in done.stderr and "no-such-upstream" in done.stderr
    assert "nothing was written" in done.stderr
    assert _fingerprint(site) == before
    assert not (Path(load_inventory(lab.inventory).host("web01")["journal_dir"]) / "lock").exists()


@pytest.mark.parametrize("value", ["5s\\ninclude /etc/passwd", "5s; include /etc/passwd"])
def test_an_injected_inventory_value_is_refused_naming_the_var(lab: Lab, tmp_path: Path, value: str) -> None:
    """A newline or `;` in a value bound for nginx's config: exit 5 naming the var and its line; nothing runs."""
    inventory = tmp_path / "inventory.yml"
    text = lab.inventory.read_text().replace("    web01:\n", f'    web01:\n      resolver_timeout: "{value}"\n', 1)
    inventory.write_text(text)
    line = text.splitlines().index(f'      resolver_timeout: "{value}"') + 1
    done = remediate_cli("run", "-i", str(inventory), "--host", "web01", "--cause", "dns", "--yes")
    assert done.returncode == EXIT_INPUT
    assert done.stderr.startswith(f"remediate: error: {inventory}:{line}: var 'resolver_timeout'")
    assert "an nginx time" in done.stderr and len(done.stderr.strip().splitlines()) == 1


def test_a_dash_leading_name_from_the_log_never_reaches_dig(lab: Lab, lab_cfg: LabConfig) -> None:
    """`host not found in upstream "-f/etc/passwd"` in the log: the name is not a host name, so dig is never run."""
    lab.reset()
    log = lab.dir / "web01" / "nginx" / "logs" / "error.log"
    stamp = time.strftime("%Y/%m/%d %H:%M:%S")
    with log.open("a") as fh:
        fh.write(f'{stamp} [emerg] 1#1: host not found in upstream "-f/etc/passwd" in /x.conf:1\n')
    done = remediate_cli("run", "-i", str(lab.inventory), "--host", "web01", "--cause", "dns", "--check", "--json")
    report = json.loads(done.stdout)
    found = report["evidence"]["dns"]
    assert found["name"] == "-f/etc/passwd"
    assert [a["status"] for a in found["answers"]] == ["NOT ASKED"] and found["resolves"] is False
    assert report["changes"] == []


def test_a_dropped_connection_reports_what_the_host_journal_says(lab: Lab, lab_cfg: LabConfig, web01: Host) -> None:
    """Cut SSH mid-apply: the helper finishes on its own, and the error (exit 6) says the journal's verdict."""
    lab.reset()
    lab.break_("socket", "permission", keep=True)
    thread, outcome = run_paused_after_write(web01, _pool(lab), 3)
    for entry in os.listdir("/proc"):  # the sshd process of that session: the helper's parent
        with contextlib.suppress(OSError):
            if b"The helper remediate runs *on the host*" in Path(f"/proc/{entry}/cmdline").read_bytes():
                os.kill(int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1]), signal.SIGKILL)
    thread.join(90)
    error = outcome.get("error")
    assert isinstance(error, TransportError) and error.exit_code == 6, outcome
    assert "the connection dropped during the apply" in str(error)
    assert "is committed: the fix is in place and was verified" in str(error)
    assert lab.probe(lab_cfg, "/index.php") == 200


def test_a_failing_nginx_T_names_the_file_and_line(lab: Lab, lab_cfg: LabConfig) -> None:
    """A config nginx cannot load: one line with nginx's [emerg] naming file:line (not just "test failed")."""
    lab.reset()
    site = site_conf(lab)
    original = site.read_bytes()
    site.write_bytes(original + b"\nthis is not a directive\n")
    try:
        done = remediate_cli("run", "-i", str(lab.inventory), "--host", "web01", "--cause", "socket", "--check")
        assert done.returncode == 1 and len(done.stderr.strip().splitlines()) == 1, done.stderr
        assert "[emerg]" in done.stderr and "lab.conf:" in done.stderr
    finally:
        site.write_bytes(original)
