"""The CLI teaches itself: --help, usage errors in one line, the playbooks; no lab needed."""

from __future__ import annotations

from pathlib import Path

from support.lab import remediate_cli

from remediate.errors import EXIT_USAGE


def test_help_teaches_commands_and_exit_codes() -> None:
    """--help lists the commands and documents every exit code."""
    done = remediate_cli("--help")
    assert done.returncode == 0
    for word in ("lab", "config", "inventory", "exit codes:", "3  refused", "5  bad input", "6  unreachable"):
        assert word in done.stdout


def test_lab_break_help_lists_every_cause() -> None:
    """`lab break --help` shows every cause and variant with the status it produces."""
    done = remediate_cli("lab", "break", "--help")
    for word in ("--cause down", "--variant slash", "--variant no-resolver", "--cause workers"):
        assert word in done.stdout


def test_usage_errors_are_one_line_with_exit_2() -> None:
    """A bad command line gives one line on stderr and exit code 2."""
    bad_since = ("run", "-i", "/tmp/none.yml", "--host", "w", "--cause", "auto", "--since", "soon", "--check")
    for args in (("lab", "break", "--cause", "nope", "--dir", "/tmp/no-lab"), ("frobnicate",), ("config",), bad_since):
        done = remediate_cli(*args)
        assert done.returncode == EXIT_USAGE, args
        assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr


def test_lab_command_without_a_lab_says_how_to_make_one(tmp_path: Path) -> None:
    """Driving a lab that does not exist is one line that names `lab up`."""
    done = remediate_cli("lab", "status", "--dir", str(tmp_path / "none"))
    assert done.returncode == 1
    assert "remediate lab up --dir" in done.stderr


def test_playbooks_and_show() -> None:
    """`playbooks` lists each cause; `show socket` prints its evidence, decisions, fixes and verify steps."""
    listing = remediate_cli("playbooks")
    causes = [line.split()[0] for line in listing.stdout.splitlines()]
    assert listing.returncode == 0 and {"down", "socket"} <= set(causes)
    shown = remediate_cli("show", "socket")
    for word in (
        "evidence (one round trip):",
        "unix_sockets",
        "socket-denied",
        "fix socket-owner",
        "ini_set",
        "verify:",
    ):
        assert word in shown.stdout
    unknown = remediate_cli("show", "nope")
    assert unknown.returncode == EXIT_USAGE and "no playbook for cause 'nope'" in unknown.stderr
    assert all(cause in unknown.stderr for cause in causes)
