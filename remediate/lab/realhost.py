"""The second lab kind: a stock Debian bookworm host, booted with systemd as PID 1.

The loopback lab proves the logic; this host is the reference. It is what people run:

* a root file system made by ``debootstrap`` from Debian's own packages (the mirror apt already
  uses): systemd, openssh-server, nginx 1.22, php8.2-fpm with its stock ``www`` pool, journald,
  and a small backend under its own systemd unit (``backend.service``, no ``Restart=``, as units
  people write usually are). Built once into a cache directory, rebuilt when missing or when its
  recipe changes (remediate.lab.rootfs);
* booted with ``systemd-nspawn -b`` on a throwaway overlay (``--volatile=overlay``), so every
  ``up`` starts from a stock host and nothing a test does reaches the cached tree. Machines here
  have no systemd as PID 1 and no D-Bus, so nspawn runs with ``--register=no --keep-unit
  --console=read-only``;
* in its own network namespace (``--network-veth``): the guest's default binds (nginx on :80,
  sshd on :22) never meet another lab's. The host side of the veth is configured here, by hand.
  Test traffic goes only to the guest's address inside that namespace.

Breaks are made the way they happen on such a host (remediate.lab.realbreaks): ``systemctl kill
-s KILL``, ``systemctl stop``, pool edits followed by a restart, unit files, ``error_log syslog:``.

The lab drives the guest with ``nsenter`` into its namespaces (no SSH needed for the lab's own
work); remediate itself reaches it over SSH as a user would, with a key the lab makes at ``up``
and the host keys the image was built with.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from remediate.errors import LabError
from remediate.lab import procs
from remediate.lab.realbreaks import PROBES, RealBreak, find_real_break, make
from remediate.lab.rootfs import (
    _need,
    build_rootfs,
)

__all__ = ["RealHost", "RealHostConfig"]


@dataclass
class RealHostConfig:
    dir: str
    name: str = "rmd-deb"  # the machine's name; the host side of the veth is ve-<name>
    subnet: int = 1  # the veth pair's /30: 10.231.<subnet>.0
    nspawn_pid: int = 0
    leader_pid: int = 0
    load_pid: int = 0
    broken: list[str] = field(default_factory=list)

    @property
    def guest_address(self) -> str:
        return f"10.231.{self.subnet}.2"

    @property
    def host_address(self) -> str:
        return f"10.231.{self.subnet}.1"

    @property
    def veth(self) -> str:
        return ("ve-" + self.name)[:15]


class RealHost:
    """One Debian host under systemd: up, run in it, break, status, down."""

    hostname = "debian-web"

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.dir = Path(directory).resolve()
        self.state_file = self.dir / "realhost.json"

    # -- state ---------------------------------------------------------------------

    def load(self) -> RealHostConfig:
        try:
            return RealHostConfig(**json.loads(self.state_file.read_text()))
        except FileNotFoundError:
            raise LabError(f"no Debian host is up in {self.dir}; run `remediate lab up --os debian`") from None

    def save(self, cfg: RealHostConfig) -> None:
        self.state_file.write_text(json.dumps(asdict(cfg), indent=2) + "\n")

    @property
    def inventory(self) -> Path:
        return self.dir / "inventory.yml"

    @property
    def key(self) -> Path:
        return self.dir / "id_ed25519"

    # -- life cycle ----------------------------------------------------------------

    def up(self, *, subnet: int = 1, name: str = "rmd-deb", say: Any = print, timeout: float = 90.0) -> RealHostConfig:
        if os.geteuid() != 0:
            raise LabError("the Debian host needs root (systemd-nspawn, a network namespace)")
        nspawn = _need("systemd-nspawn", "systemd-container")
        with contextlib.suppress(LabError):
            if procs.alive(self.load().nspawn_pid):
                raise LabError(f"a Debian host is already up in {self.dir}; `remediate lab down --os debian` first")
        rootfs = build_rootfs(say=say)
        self.dir.mkdir(parents=True, exist_ok=True)
        cfg = RealHostConfig(dir=str(self.dir), name=name, subnet=subnet)
        self._write_access(rootfs)
        argv = [
            nspawn,
            "--boot",
            f"--directory={rootfs}",
            "--volatile=overlay",
            "--register=no",
            "--keep-unit",
            "--console=read-only",
            f"--machine={name}",
            "--network-veth",
            "--resolv-conf=off",  # the image's own resolv.conf: the site's resolver, as on the host it stands for
            f"--bind-ro={self.dir / 'authorized_keys'}:/root/.ssh/authorized_keys",
            f"--bind-ro={self.dir / 'pki'}:/etc/lab-pki",  # made at each up: never stale, never in the image
        ]
        log = self.dir / "console.log"
        log.write_bytes(b"")
        cfg.nspawn_pid = procs.spawn(self.dir, argv, log, before_exec=_entering(_own_cgroups(name)))
        self.save(cfg)
        try:
            cfg.leader_pid = self._leader(cfg, log, timeout)
            self.save(cfg)
            self._network(cfg)
            self._wait_booted(cfg, log, timeout)
            self._write_inventory(cfg)
            self.wait_healthy(cfg)
        except BaseException:
            self.down()
            raise
        return cfg

    def down(self) -> None:
        try:
            cfg = self.load()
        except LabError:
            return
        procs.send(cfg.load_pid, signal.SIGTERM)
        if procs.alive(cfg.nspawn_pid):
            # nspawn turns SIGTERM into an orderly poweroff of the guest's systemd.
            with contextlib.suppress(ProcessLookupError):
                os.kill(cfg.nspawn_pid, signal.SIGTERM)
            deadline = time.monotonic() + 20
            while procs.alive(cfg.nspawn_pid) and time.monotonic() < deadline:
                time.sleep(0.1)
            if procs.alive(cfg.nspawn_pid):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(cfg.nspawn_pid, signal.SIGKILL)
                    os.kill(cfg.nspawn_pid, signal.SIGKILL)
        with contextlib.suppress(FileNotFoundError):
            self.state_file.unlink()
        for group in _own_cgroups(cfg.name, create=False):
            _remove_cgroup(group)

    def _leader(self, cfg: RealHostConfig, log: Path, timeout: float) -> int:
        """The guest's PID 1 (systemd), as this machine's pid: nspawn's descendant named systemd."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not procs.alive(cfg.nspawn_pid):
                raise LabError(f"systemd-nspawn exited while booting: {self._tail(log)}")
            todo = [cfg.nspawn_pid]
            while todo:
                pid = todo.pop()
                for child in procs.children(pid):
                    with contextlib.suppress(OSError):
                        if Path(f"/proc/{child}/comm").read_text().strip() == "systemd":
                            return child
                    todo.append(child)
            time.sleep(0.05)
        raise LabError(f"the guest's systemd did not start within {timeout:g}s: {self._tail(log)}")

    def _network(self, cfg: RealHostConfig) -> None:
        """Address both ends of the veth pair: this side by hand, the guest's host0 from inside."""
        ip = _need("ip", "iproute2")
        deadline = time.monotonic() + 10
        while not Path(f"/sys/class/net/{cfg.veth}").exists():
            if time.monotonic() > deadline:
                raise LabError(f"nspawn made no {cfg.veth} interface")
            time.sleep(0.05)
        for argv in (
            [ip, "addr", "replace", f"{cfg.host_address}/30", "dev", cfg.veth],
            [ip, "link", "set", cfg.veth, "up"],
        ):
            _run(argv)
        self.sh(cfg, ["ip", "addr", "replace", f"{cfg.guest_address}/30", "dev", "host0"])
        self.sh(cfg, ["ip", "link", "set", "host0", "up"])

    def _wait_booted(self, cfg: RealHostConfig, log: Path, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        state = ""
        while time.monotonic() < deadline:
            if not procs.alive(cfg.nspawn_pid):
                raise LabError(f"systemd-nspawn exited while booting: {self._tail(log)}")
            res = self.sh(cfg, ["systemctl", "is-system-running"], check=False)
            state = res.stdout.strip()
            if state in ("running", "degraded"):
                break
            time.sleep(0.2)
        else:
            raise LabError(f"the guest did not finish booting within {timeout:g}s (systemd says {state!r})")
        if state == "degraded":
            failed = self.sh(cfg, ["systemctl", "--failed", "--plain", "--no-legend"], check=False).stdout.strip()
            raise LabError(f"the guest booted degraded; failed units: {failed}")
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                socket.create_connection((cfg.guest_address, 22), timeout=1).close()
                return
            time.sleep(0.1)
        raise LabError(f"sshd on {cfg.guest_address}:22 does not answer")

    @staticmethod
    def _tail(log: Path) -> str:
        lines = [ln for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
        return " | ".join(lines[-3:])

    def _write_access(self, rootfs: Path) -> None:
        """A fresh key for this boot, and known_hosts from the image's host keys (verified, never trusted)."""
        for path in (self.key, self.key.with_suffix(".pub")):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        _run(
            [
                _need("ssh-keygen", "openssh-client"),
                "-q",
                "-t",
                "ed25519",
                "-N",
                "",
                "-C",
                "remediate-lab",
                "-f",
                str(self.key),
            ]
        )
        # TLS: a "public" CA nginx trusts, an "internal" one it does not (the tls break switches to it).
        from remediate.lab import pki

        shutil.rmtree(self.dir / "pki", ignore_errors=True)
        (self.dir / "pki").mkdir(mode=0o755)
        for ca_name in ("public-ca", "internal-ca"):
            ca = pki.make_ca(self.dir / "pki", ca_name)
            pki.make_leaf(self.dir / "pki", f"app01-{ca_name.removesuffix('-ca')}", ca, "app01.lab", "127.0.0.1")
        auth = self.dir / "authorized_keys"
        auth.write_text(self.key.with_suffix(".pub").read_text())
        auth.chmod(0o600)
        self._host_keys = [
            (rootfs / "etc/ssh" / n).read_text().split()[:2]
            for n in ("ssh_host_ed25519_key.pub", "ssh_host_rsa_key.pub", "ssh_host_ecdsa_key.pub")
            if (rootfs / "etc/ssh" / n).exists()
        ]

    def _write_inventory(self, cfg: RealHostConfig) -> None:
        known = self.dir / "known_hosts"
        known.write_text("".join(f"{cfg.guest_address} {kind} {b64}\n" for kind, b64 in self._host_keys))
        # What a user writes for such a host: its address, how to log in, what may be restarted.
        self.inventory.write_text(
            "# The Debian host of `remediate lab up --os debian`: only what a user knows about it.\n"
            "all:\n"
            "  hosts:\n"
            f"    {self.hostname}:\n"
            f"      ansible_host: {cfg.guest_address}\n"
            "      ansible_user: root\n"
            f"      ansible_ssh_private_key_file: {self.key}\n"
            f"      known_hosts: {known}\n"
            "      restartable_services: [php8.2-fpm, nginx, backend, flaky]\n"
        )

    # -- inside the guest ----------------------------------------------------------

    def sh(
        self,
        cfg: RealHostConfig,
        argv: list[str],
        *,
        check: bool = True,
        stdin: bytes | None = None,
        timeout: float = 60,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` inside the guest (all its namespaces), as root."""
        nsenter = _need("nsenter", "util-linux")
        full = [nsenter, "-t", str(cfg.leader_pid), "-m", "-u", "-i", "-n", "-p", "--", *argv]
        try:
            done = subprocess.run(  # noqa: S603 - argv list, no shell
                full,
                input=stdin.decode() if stdin else None,
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise LabError(f"`{' '.join(argv)}` in the guest ran longer than {timeout:g}s") from None
        if check and done.returncode != 0:
            raise LabError(f"`{' '.join(argv)}` in the guest exited {done.returncode}: {done.stderr.strip()[-300:]}")
        return done

    def read(self, cfg: RealHostConfig, path: str) -> bytes:
        return (Path(f"/proc/{cfg.leader_pid}/root") / path.lstrip("/")).read_bytes()

    def write(self, cfg: RealHostConfig, path: str, data: str) -> None:
        self.sh(cfg, ["tee", path], stdin=data.encode())

    def probe(self, cfg: RealHostConfig, path: str, timeout: float = 8.0) -> int | str:
        from remediate.lab.probes import probe

        return probe(cfg.guest_address, 80, path, self.hostname, timeout)

    def status(self, cfg: RealHostConfig | None = None) -> dict[str, int | str]:
        cfg = cfg or self.load()
        return {name: self.probe(cfg, path) for name, path in PROBES.items()}

    def wait_healthy(self, cfg: RealHostConfig | None = None, timeout: float = 30.0) -> None:
        cfg = cfg or self.load()
        deadline = time.monotonic() + timeout
        bad: dict[str, int | str] = {}
        while time.monotonic() < deadline:
            bad = {k: v for k, v in self.status(cfg).items() if v != 200}
            if not bad:
                return
            time.sleep(0.2)
        raise LabError(f"the Debian host is not healthy after {timeout:g}s: {bad}")

    # -- breaks --------------------------------------------------------------------

    def _log_text(self, cfg: RealHostConfig, which: str) -> str:
        if which == "journal":
            return self.sh(cfg, ["journalctl", "-q", "--no-pager", "-o", "cat", "-u", "nginx.service"]).stdout
        with contextlib.suppress(OSError):
            return self.read(cfg, f"/var/log/nginx/{which}.log").decode(errors="replace")
        return ""

    def break_(self, cause: str, variant: str | None = None) -> RealBreak:
        """Make one break the way it happens on such a host; returns it once nginx answers as it says."""
        cfg = self.load()
        brk = find_real_break(cause, variant)
        before = len(self._log_text(cfg, brk.log))
        make(self, cfg, brk)
        cfg.broken.append(f"{brk.cause}/{brk.variant}")
        self.save(cfg)
        deadline = time.monotonic() + 20
        status: int | str = ""
        while time.monotonic() < deadline:
            status = self.probe(cfg, PROBES[brk.probe])
            if status == brk.status and re.search(brk.signature, self._log_text(cfg, brk.log)[before:]):
                return brk
            time.sleep(0.2)
        raise LabError(f"break {brk.cause}/{brk.variant} did not take: {brk.probe} answers {status}")


# -- cgroups --------------------------------------------------------------------------
#
# With --keep-unit and no systemd on this machine, nspawn puts the guest's systemd under the
# caller's own cgroup ("…/payload"). Two guests started from the same cgroup would then share one
# tree, and each guest's systemd would manage (and kill) the other's services. Each guest gets a
# cgroup of its own, in every hierarchy systemd uses (name=systemd v1, and the unified v2 one).


def _own_cgroups(name: str, create: bool = True) -> list[Path]:
    found = []
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            fields = line.split()
            sep = fields.index("-")
            kind, options = fields[sep + 1], fields[sep + 3] if len(fields) > sep + 3 else ""
            if kind == "cgroup2" or (kind == "cgroup" and "name=systemd" in options.split(",")):
                found.append(Path(fields[4]) / "remediate-lab" / name)
    groups = []
    for group in found:
        if create:
            try:
                group.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise LabError(f"cannot make the guest's cgroup {group}: {exc.strerror}") from None
        if group.is_dir():
            groups.append(group)
    return groups


def _remove_cgroup(group: Path) -> None:
    """Remove a cgroup and everything the guest's systemd made under it (deepest first); leave busy ones."""
    for sub in sorted((p for p in group.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
        with contextlib.suppress(OSError):
            sub.rmdir()
    with contextlib.suppress(OSError):
        group.rmdir()


def _entering(groups: list[Path]) -> Callable[[], None]:
    """What the child does before it execs nspawn: move itself into ``groups``."""

    def enter() -> None:
        for group in groups:
            (group / "cgroup.procs").write_text(str(os.getpid()))

    return enter


def _run(argv: list[str]) -> None:
    done = subprocess.run(argv, capture_output=True, text=True, check=False)  # noqa: S603 - argv list
    if done.returncode != 0:
        raise LabError(f"`{' '.join(argv)}` exited {done.returncode}: {done.stderr.strip()[-300:]}")
