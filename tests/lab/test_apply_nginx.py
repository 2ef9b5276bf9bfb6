"""The guarded apply on nginx files, against the lab's real nginx: validate, reload, confirm, restore."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.lab import site_conf

from remediate.engine.apply import apply_plan
from remediate.engine.plan import Change, Plan
from remediate.events import new_run_id
from remediate.hosts.connect import open_transport
from remediate.hosts.inventory import Host
from remediate.lab.core import Lab, LabConfig
from remediate.nginx import NginxConfig
from remediate.transport.base import Transport


@pytest.fixture
def web(web01: Host) -> Iterator[Transport]:
    with open_transport(web01) as transport:
        yield transport


def _fingerprint(path: Path) -> tuple[str, int, int, int]:
    st = path.stat()
    return hashlib.sha256(path.read_bytes()).hexdigest(), st.st_uid, st.st_gid, st.st_mode & 0o7777


def _apply(web: Transport, host: Host, lab: Lab, after: bytes, probes: list[str]) -> dict[str, object]:
    site = site_conf(lab)
    # The change names the sites-enabled symlink, as nginx -T does; the write must keep the link.
    enabled = str(lab.dir / "web01" / "nginx" / "sites-enabled" / "lab.conf")
    plan = Plan(changes=[Change(enabled, site.read_bytes(), after, "nginx")])
    dump = web.run([*host.nginx_base_argv, "-T"]).stdout
    return apply_plan(
        web, host, plan, run_id=new_run_id(), cause="test", probes=probes, config=NginxConfig.from_dump(dump)
    )


def test_valid_nginx_change_is_reloaded_and_confirmed(
    lab: Lab, lab_cfg: LabConfig, web01: Host, web: Transport
) -> None:
    """A valid change passes nginx -t, is reloaded, confirmed by new workers, and serves."""
    lab.reset()
    site = site_conf(lab)
    original = site.read_bytes()
    after = original.replace(
        b"    location = /50x.html {",
        b'    location = /remediate-test { return 200 "new config"; }\n\n    location = /50x.html {',
    )
    try:
        answer = _apply(web, web01, lab, after, [f"http://{lab_cfg.addr(1)}:{lab_cfg.http_port}/remediate-test"])
        assert answer["outcome"] == "fixed", answer
        steps = {s["step"]: s for s in answer["steps"]}  # type: ignore[union-attr]
        assert steps["nginx -t"]["ok"] and "new workers" in steps["reload"]["detail"]
        assert lab.probe(lab_cfg, "/remediate-test") == 200
        assert site.read_bytes() == after
        assert (lab.dir / "web01" / "nginx" / "sites-enabled" / "lab.conf").is_symlink()
    finally:
        site.write_bytes(original)
        lab.reload_nginx(lab_cfg)


def _workers(lab: Lab) -> set[int]:
    """nginx's master and worker pids: a reload replaces the workers."""
    master = int((lab.dir / "web01" / "nginx" / "logs" / "nginx.pid").read_text().strip())
    kids = {int(p) for p in os.listdir("/proc") if p.isdigit() and _ppid(int(p)) == master}
    return {master, *kids}


def _ppid(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return -1


def test_candidate_failing_nginx_t_is_never_written(lab: Lab, lab_cfg: LabConfig, web01: Host, web: Transport) -> None:
    """A candidate nginx -t rejects is refused before the write: file identical, workers unchanged, nginx serving."""
    lab.reset()
    site = site_conf(lab)
    before, workers = _fingerprint(site), _workers(lab)
    answer = _apply(
        web, web01, lab, site.read_bytes().replace(b"proxy_pass http://app_pool;", b"proxy_pass http://app_pool", 1), []
    )
    assert answer["outcome"] == "refused" and answer["written"] is False, answer
    assert answer["failed_step"] == "nginx -t"
    assert "[emerg]" in str(answer["reason"]) and "lab.conf:" in str(answer["reason"])  # nginx names file:line
    assert _fingerprint(site) == before
    assert _workers(lab) == workers  # no reload: the candidate never went live
    assert lab.probe(lab_cfg, "/") == 200


def test_reload_nginx_rejects_is_detected_and_restored(
    lab: Lab, lab_cfg: LabConfig, web01: Host, web: Transport
) -> None:
    """nginx -t passes but the reload fails (port taken): nginx keeps its old config, which we detect, and restore."""
    lab.reset()
    site = site_conf(lab)
    before = _fingerprint(site)
    taken = f"listen {lab_cfg.addr(1)}:{lab_cfg.ssh_port};".encode()  # web01's sshd owns this port
    after = site.read_bytes().replace(b"default_server;", b"default_server;\n    " + taken, 1)
    answer = _apply(web, web01, lab, after, [])
    assert answer["outcome"] == "rolled-back", answer
    assert answer["failed_step"] == "reload"
    # nginx's own [emerg] line, read from its error log at once (not after waiting out a timeout)
    assert "nginx rejected the reload" in str(answer["reason"]) and "bind() to" in str(answer["reason"])
    assert _fingerprint(site) == before
    assert lab.probe(lab_cfg, "/") == 200


def test_a_created_file_is_removed_when_the_apply_fails(lab: Lab, web01: Host, web: Transport, tmp_path: Path) -> None:
    """A new file (a drop-in) is written, and on failure removed again: the host is left exactly as before."""
    from remediate.engine.plan import Action

    drop_in = lab.dir / "web01" / "etc" / "remediate-test-drop-in.conf"
    drop_in.unlink(missing_ok=True)
    plan = Plan(
        changes=[Change(str(drop_in), None, b"[Service]\nLimitNOFILE=4096\n", "none")],
        # fails while the file exists, passes once it is gone: the restore runs it again, as daemon-reload must
        actions=[Action("command", "daemon-reload", ("test", "!", "-e", str(drop_in)))],
    )
    answer = apply_plan(web, web01, plan, run_id=new_run_id(), cause="test", probes=[])
    assert answer["outcome"] == "rolled-back", answer
    assert answer["failed_step"] == "daemon-reload"
    assert not drop_in.exists()
    ok = apply_plan(
        web,
        web01,
        Plan(changes=plan.changes, actions=[Action("command", "daemon-reload", ("true",))]),
        run_id=new_run_id(),
        cause="test",
        probes=[],
    )
    assert ok["outcome"] == "fixed", ok
    assert drop_in.read_bytes() == b"[Service]\nLimitNOFILE=4096\n"
    drop_in.unlink()
