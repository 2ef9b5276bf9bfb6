"""The lab helpers the tests share: the CLI as a user runs it, the lab's addresses and files, a run at
its prompt, and a run paused after its write."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from remediate.evidence.framework import Context
from remediate.hosts.inventory import Host, Inventory, load_inventory
from remediate.lab.core import APT_PACKAGES, Lab, LabConfig

# The tests' lab lives on its own addresses so a demo lab (127.0.10.x) can run beside it.
TEST_NET = "127.0.20"


# The fleet tests' lab: ten web hosts, beside the other.
FLEET_NET = "127.0.24"  # (test_lab.py builds a throwaway lab on 127.0.21)


FLEET_SIZE = 10


def _lab_prerequisites() -> str | None:
    if os.geteuid() != 0:
        return "the lab tests need root"
    missing = [
        p
        for p in ("nginx", "sshd", "supervisord", "dnsmasq", "unshare", "sudo")
        if not shutil.which(p) and not Path(f"/usr/sbin/{p}").exists()
    ]
    if missing:
        return f"missing {', '.join(missing)}; run: apt-get install {' '.join(APT_PACKAGES)}"
    return None


def cli_argv(*args: str) -> list[str]:
    """argv that runs the remediate CLI with this interpreter."""
    return [sys.executable, "-m", "remediate.cli", *args]


def remediate_cli(*args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """Run the CLI as a user would, capturing its text output."""
    options: dict[str, Any] = {"capture_output": True, "text": True, "check": False, "timeout": 300, **kwargs}
    return subprocess.run(cli_argv(*args), **options)


def site_conf(lab: Lab) -> Path:
    """The lab site's config file (sites-enabled/lab.conf links to it)."""
    return lab.dir / "web01" / "nginx" / "sites-available" / "lab.conf"


def inventory_with(lab: Lab, tmp_path: Path, old: str, new: str) -> Inventory:
    """The lab's inventory with one text replaced (the text must be there), loaded from tmp_path."""
    text = lab.inventory.read_text()
    assert old in text
    path = tmp_path / "inventory.yml"
    path.write_text(text.replace(old, new, 1))
    return load_inventory(path)


def text_context(tmp_path: Path, site: bytes) -> Context:
    """A Context for module tests on text: host ``w`` and one nginx file, /n.conf, holding ``site``."""
    from remediate.nginx import NginxConfig, parse

    inv = tmp_path / "i.yml"
    inv.write_text("all:\n  hosts:\n    w:\n")
    context = Context(load_inventory(inv).host("w"))
    context.config = NginxConfig({"/n.conf": parse(site, "/n.conf")}, "/n.conf")
    return context


class WorkerProcesses:
    """`remediate worker` processes, each in its own session (killable as a group), logging to ``logs/NAME``."""

    def __init__(self, logs: Path, state: Path, prefix: str = "") -> None:
        self.logs, self.state, self.prefix = logs, state, prefix
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def spawn(self, name: str, *argv: str) -> None:
        """``remediate worker ARGV --name NAME``, with this pool's state directory."""
        log = (self.logs / f"{self.prefix}{name}.log").open("wb")
        self.procs[name] = subprocess.Popen(
            cli_argv("worker", *argv, "--name", name),
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "REMEDIATE_STATE_DIR": str(self.state)},
            start_new_session=True,
        )

    def kill(self, name: str) -> None:
        os.killpg(self.procs[name].pid, signal.SIGKILL)
        self.procs[name].wait()

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()

    def log(self, name: str) -> str:
        return (self.logs / f"{self.prefix}{name}.log").read_text(errors="replace")


def run_cli(lab: Lab, cause: str, *extra: str) -> subprocess.CompletedProcess[str]:
    """`remediate run --host web01 --cause CAUSE -i LAB/inventory.yml --yes --json` as a user types it."""
    return remediate_cli(
        "run", "-i", str(lab.inventory), "--host", "web01", "--cause", cause, "--yes", "--json", *extra
    )


def broken(lab: Lab, lab_cfg: LabConfig, cause: str, variant: str, path: str) -> bytes:
    """The lab reset and broken as ``cause``/``variant`` says, ``path`` answering 502; the site's config then."""
    lab.reset()
    lab.break_(cause, variant, keep=True)
    before = site_conf(lab).read_bytes()
    assert lab.probe(lab_cfg, path) == 502
    return before


def ran(lab: Lab, cause: str, code: int) -> dict[str, Any]:
    """The report of `run --cause CAUSE --yes --json` on web01, which must exit ``code``."""
    done = run_cli(lab, cause)
    assert done.returncode == code, done.stdout + done.stderr
    report: dict[str, Any] = json.loads(done.stdout)
    return report


def run_at_prompt(lab: Lab) -> tuple[subprocess.Popen[bytes], int, bytes]:
    """`remediate run --host web01 --cause socket` on a terminal (a pty), read until it asks [y/N]:
    (the process, the pty's controlling end, what it printed)."""
    import pty
    import time

    leader, follower = pty.openpty()
    proc = subprocess.Popen(
        cli_argv("run", "-i", str(lab.inventory), "--host", "web01", "--cause", "socket"),
        stdin=follower,
        stdout=follower,
        stderr=follower,
    )
    os.close(follower)
    output, deadline = b"", time.monotonic() + 60
    while b"[y/N]" not in output and time.monotonic() < deadline:
        output += os.read(leader, 4096)
    return proc, leader, output


def run_paused_after_write(host: Host, watched: Path, pause: float) -> tuple[Any, dict[str, object]]:
    """Start `run --cause socket --yes` in a thread whose apply pauses ``pause`` s after its write,
    and return (thread, outcome) once ``watched`` holds new bytes: the moment to cut the connection."""
    import threading
    import time

    from remediate.engine import run as engine  # the module: PAUSE_AFTER_WRITE is set on it
    from remediate.errors import RemediateError

    original = watched.read_bytes()
    outcome: dict[str, object] = {}

    def doomed() -> None:
        try:
            outcome["report"] = engine.run(host, "socket", engine.RunOptions(yes=True))
        except RemediateError as exc:
            outcome["error"] = exc
        finally:
            engine.PAUSE_AFTER_WRITE = None

    engine.PAUSE_AFTER_WRITE = pause  # the helper sleeps this long after its write (tests only)

    thread = threading.Thread(target=doomed)
    thread.start()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and watched.read_bytes() == original:
        time.sleep(0.05)
    assert watched.read_bytes() != original, "the run never wrote the file"
    return thread, outcome


def make_lab_dir(prefix: str) -> Path:
    # Not pytest's tmp_path: that lives under a 0700 directory, and nginx's workers (www-data) must reach the lab.
    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    path.chmod(0o755)
    return path


def running_lab(prefix: str, **config: Any) -> Iterator[Lab]:
    problem = _lab_prerequisites()
    if problem:
        pytest.fail(f"cannot build the lab: {problem}", pytrace=False)
    directory = make_lab_dir(prefix)
    the_lab = Lab(directory)
    the_lab.up(LabConfig(dir=str(directory), **config))
    try:
        yield the_lab
    finally:
        the_lab.down()
        shutil.rmtree(directory, ignore_errors=True)
