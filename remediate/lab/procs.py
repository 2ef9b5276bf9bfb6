"""The lab's processes: starting them with the lab's mark, finding them again, and waiting on them.

Every process the lab starts carries REMEDIATE_LAB=<dir> in its environment, so ``marked`` finds
it (and everything it forked) even after its parent died; ``lab down`` sweeps what it finds.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from remediate.errors import LabError

__all__ = [
    "ENV_MARK",
    "alive",
    "children",
    "cmdline",
    "find_php_fpm",
    "marked",
    "read_pid",
    "reap",
    "send",
    "spawn",
    "wait_closed",
    "wait_path",
    "wait_port",
    "wait_until",
]

ENV_MARK = "REMEDIATE_LAB"


def spawn(lab_dir: Path, argv: list[str], log: Path, before_exec: Callable[[], None] | None = None) -> int:
    """Start ``argv`` in its own session with the lab's mark, output to ``log``; fail if it exits at once.

    ``before_exec`` runs in the child just before the exec (the Debian host enters its own cgroup there)."""
    env = {**os.environ, ENV_MARK: str(lab_dir)}
    with log.open("ab") as out:
        proc = subprocess.Popen(  # noqa: S603 - argv list, no shell
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
            cwd=str(lab_dir),
            preexec_fn=before_exec,
        )
    time.sleep(0.05)
    if proc.poll() is not None:
        tail = log.read_text(errors="replace").strip().splitlines()[-3:]
        raise LabError(f"`{argv[0]}` exited at once ({proc.returncode}): {' | '.join(tail)}")
    return proc.pid


def marked(lab_dir: Path) -> dict[int, str]:
    """Every live process of the lab in ``lab_dir``: marked ones and all their descendants, pid → command."""
    found: set[int] = set()
    parents: dict[int, int] = {}
    names: dict[int, str] = {}
    mark = f"{ENV_MARK}={lab_dir}".encode()
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
            env = Path(f"/proc/{pid}/environ").read_bytes()
            line = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
        parents[pid] = int(stat.rsplit(")", 1)[1].split()[1])
        names[pid] = line.strip() or stat.split("(", 1)[1].split(")")[0]
        if mark in env.split(b"\0") or str(lab_dir) in line:
            found.add(pid)
    changed = True
    while changed:
        changed = False
        for pid, ppid in parents.items():
            if ppid in found and pid not in found:
                found.add(pid)
                changed = True
    found.discard(os.getpid())
    return {pid: names[pid] for pid in found if pid in names}


def find_php_fpm() -> str | None:
    for name in ("php-fpm", *(f"php-fpm8.{n}" for n in range(4, -1, -1)), "php-fpm7.4"):
        found = shutil.which(name) or (f"/usr/sbin/{name}" if Path(f"/usr/sbin/{name}").exists() else None)
        if found:
            return found
    return None


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def send(pid: int | None, sig: int) -> None:
    if pid:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None


def children(pid: int) -> Iterator[int]:
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                stat = Path(f"/proc/{entry.name}/stat").read_text()
            except (FileNotFoundError, ProcessLookupError):
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                yield int(entry.name)


def cmdline(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except (FileNotFoundError, ProcessLookupError):
        return None


def wait_until(ready: Callable[[], bool], timeout: float, failure: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready():
            return
        time.sleep(0.05)
    raise LabError(f"{failure} after {timeout:g}s")


def accepts(addr: str, port: int) -> bool:
    try:
        with socket.create_connection((addr, port), timeout=1):
            return True
    except OSError:
        return False


def wait_port(addr: str, port: int, what: str, timeout: float = 20.0, udp: bool = False) -> None:
    check = (lambda: _udp_bound(addr, port)) if udp else (lambda: accepts(addr, port))
    wait_until(check, timeout, f"{what} is not listening on {addr}:{port}")


def _udp_bound(addr: str, port: int) -> bool:
    hex_addr = "".join(f"{int(o):02X}" for o in reversed(addr.split(".")))
    needle = f"{hex_addr}:{port:04X}"
    try:
        return any(line.split()[1] == needle for line in Path("/proc/net/udp").read_text().splitlines()[1:])
    except (FileNotFoundError, IndexError):
        return False


def wait_closed(addr: str, port: int, timeout: float = 10.0) -> None:
    wait_until(lambda: not accepts(addr, port), timeout, f"{addr}:{port} still accepts connections")


def wait_path(path: Path, what: str, timeout: float = 20.0) -> None:
    wait_until(path.exists, timeout, f"{what} did not appear at {path}")
