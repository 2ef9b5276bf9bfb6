"""The command line as a user meets it: help, one-line errors with exit codes, and real output."""

from __future__ import annotations

import json
from pathlib import Path

from support.lab import remediate_cli

from remediate.errors import EXIT_USAGE
from remediate.hosts.inventory import Inventory
from remediate.lab.core import Lab


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


def test_config_lists_passes_over_ssh(lab: Lab, lab_inventory: Inventory) -> None:
    """`remediate config` reads nginx -T over SSH and reports every *_pass with file:line and the route."""
    done = remediate_cli(
        "config",
        "-i",
        str(lab.inventory),
        "--host",
        "web01",
        "--json",
        "--route",
        "http://web01.lab:8080/index.php",
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    kinds = {(p["directive"], p["location"]) for p in report["passes"]}
    assert ("fastcgi_pass", "~ \\.php$") in kinds and ("proxy_pass", "/api/") in kinds
    assert report["user"] == ["www-data", "www-data"]
    assert report["route"]["location"] == "~ \\.php$"
    assert any(f.endswith("sites-enabled/lab.conf") for f in report["files"])


def test_lab_status_json(lab: Lab) -> None:
    """`lab status --json` reports each probe's status code."""
    lab.reset()
    done = remediate_cli("lab", "status", "--dir", str(lab.dir), "--json")
    report = json.loads(done.stdout)
    assert set(report["probes"]["web01"].values()) == {200}
    assert all(report["running"].values())


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
