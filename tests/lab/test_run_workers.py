"""`remediate run --cause workers` on the real lab under a bounded load, and the sizing and limit edits."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support.lab import inventory_with, run_cli

from remediate.engine.run import RunOptions, run
from remediate.errors import EXIT_OK
from remediate.lab.core import Lab, LabConfig
from remediate.nginx import MARKER

pytestmark = pytest.mark.usefixtures("state_dir")


def _nginx_files(lab: Lab) -> tuple[Path, Path]:
    return lab.dir / "web01" / "nginx" / "nginx.conf", lab.dir / "web01" / "nginx" / "conf.d" / "upstreams.conf"


def test_exhausted_workers_get_more_connections_under_the_same_load(lab: Lab, lab_cfg: LabConfig) -> None:
    """worker_connections doubled, worker_rlimit_nofile twice that (never below the workers' soft limit now),
    keepalive added; the load stays; 200 after."""
    lab.reset()
    lab.break_("workers", "load", keep=True)
    conf, upstreams = _nginx_files(lab)
    before_conf, before_up = conf.read_bytes(), upstreams.read_bytes()
    assert lab.probe(lab_cfg, "/") == 500  # nginx's answer when no connection is free (not the runbook's 502)
    done = run_cli(lab, "workers")
    assert done.returncode == EXIT_OK, done.stdout + done.stderr
    report = json.loads(done.stdout)
    workers = report["evidence"]["workers"]
    wc = lab_cfg.worker_connections
    assert workers["worker_connections"] == wc and workers["needed"] == 2 * wc
    assert workers["active"] is not None and workers["master_nofile"]["soft"] > 0 and workers["nr_open"] > 0
    assert workers["upstreams"] == ["app_pool"]
    soft = max(limit["soft"] for limit in workers["nofile"]["workers"].values())  # what the workers run with
    rlimit = max(4 * wc, soft)
    assert workers["rlimit_needed"] == rlimit
    golden_conf = before_conf.replace(
        f"events {{\n    worker_connections {wc};\n".encode(),
        f"worker_rlimit_nofile {rlimit};  {MARKER}\nevents {{\n    worker_connections {2 * wc};  {MARKER}\n".encode(),
    )
    assert conf.read_bytes() == golden_conf
    assert upstreams.read_bytes() == before_up.replace(b";\n}", f";\n    keepalive 16;  {MARKER}\n}}".encode())
    assert json.loads((lab.dir / "load" / "web01.status").read_text())["state"] == "holding"  # same load, still on
    assert lab.probe(lab_cfg, "/") == 200
    again = json.loads(run_cli(lab, "workers").stdout)
    assert again["outcome"] == "nothing-to-do" and "older than nginx's current workers" in again["message"]
    assert conf.read_bytes() == golden_conf


def test_above_the_ceiling_is_refused(lab: Lab, lab_cfg: LabConfig, tmp_path: Path) -> None:
    """A computed worker_connections above worker_connections_ceiling: refused, nothing changed."""
    lab.reset()
    lab.break_("workers", "load", keep=True)
    conf, _ = _nginx_files(lab)
    before = conf.read_bytes()
    assert lab.probe(lab_cfg, "/") == 500
    inventory = inventory_with(
        lab, tmp_path, "      journal_dir: ", "      worker_connections_ceiling: 100\n      journal_dir: "
    )
    report = run(inventory.host("web01"), "workers", RunOptions(yes=True), inventory=inventory)
    assert report.outcome == "refused"
    assert f"computed worker_connections {2 * lab_cfg.worker_connections} is above the ceiling 100" in report.message
    assert conf.read_bytes() == before
    assert lab.probe(lab_cfg, "/") == 500
