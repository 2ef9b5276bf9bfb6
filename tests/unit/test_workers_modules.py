"""The workers fix on text: the open-files limit per service manager, and the sizing."""

from __future__ import annotations

from pathlib import Path

import pytest

from remediate.engine.host_modules import service_nofile
from remediate.evidence.framework import Context
from remediate.evidence.workers import size_workers
from remediate.hosts.inventory import load_inventory


def test_sizing() -> None:
    """Twice the current value and twice the peak, in steps of 64; the descriptor limit twice that, never lowered."""
    assert size_workers(512, 100, None) == (1024, 2048)
    assert size_workers(64, 300, None) == (640, 1280)
    assert size_workers(1024, 10, 65535) == (2048, 65535)
    # Nothing sets worker_rlimit_nofile: the workers run with the service's soft limit (1024 on a stock
    # Debian host). 2 x 64 = 128 would lower it; the limit stays 1024.
    assert size_workers(32, 32, None, 1024) == (64, 1024)
    assert size_workers(32, 32, 512, 1024) == (64, 1024)


def _ctx(tmp_path: Path, manager: str, files: dict[str, bytes]) -> Context:
    inv = tmp_path / "i.yml"
    inv.write_text(f"all:\n  hosts:\n    w:\n      service_manager: {manager}\n      supervisor_config: /etc/sv.conf\n")
    context = Context(load_inventory(inv).host("w"))
    context.files.update(files)
    return context


def test_service_nofile_per_service_manager(tmp_path: Path) -> None:
    """systemd: a LimitNOFILE drop-in plus daemon-reload; supervisor: minfds in [supervisord]; never above nr_open."""
    systemd = service_nofile(_ctx(tmp_path, "systemd", {}), {"nofile": 4096, "nr_open": 1048576})
    assert systemd.changes[0].path == "/etc/systemd/system/nginx.service.d/remediate-nofile.conf"
    assert systemd.changes[0].before is None and b"[Service]\nLimitNOFILE=4096\n" in systemd.changes[0].after
    assert [a.argv for a in systemd.actions] == [("systemctl", "daemon-reload")]
    sv = b"[supervisord]\nlogfile=/var/log/sv.log\n\n[program:nginx]\ncommand=nginx\n"
    supervisor = service_nofile(_ctx(tmp_path, "supervisor", {"/etc/sv.conf": sv}), {"nofile": 4096})
    assert supervisor.changes[0].after == sv.replace(
        b"logfile=/var/log/sv.log\n", b"logfile=/var/log/sv.log\nminfds = 4096 ; managed by remediate\n"
    )
    from remediate.errors import Refused

    with pytest.raises(Refused, match=r"above the kernel's fs\.nr_open"):
        service_nofile(_ctx(tmp_path, "systemd", {}), {"nofile": 4096, "nr_open": 1024})
