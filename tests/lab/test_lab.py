"""The lab reproduces every runbook cause for real: nginx's own status code and error-log line."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
from support.lab import make_lab_dir

from remediate.lab.core import BREAKS, PROBES, Break, Lab, LabConfig, _pid_alive


def _wait_for_text(path: Path, since: int, pattern: str, timeout: float = 5.0) -> str:
    """The text appended to ``path`` after byte ``since``, once it matches ``pattern`` (or at the timeout).

    Log lines land asynchronously (nginx as it answers, supervisord as it copies a child's stderr).
    """
    deadline = time.monotonic() + timeout
    while True:
        with path.open("rb") as fh:
            fh.seek(since)
            text = fh.read().decode("utf-8", "replace")
        if re.search(pattern, text) or time.monotonic() > deadline:
            return text
        time.sleep(0.1)


def test_healthy_lab_answers_200_on_every_probe(lab: Lab, lab_cfg: LabConfig) -> None:
    """After a reset, every probe through nginx answers 200."""
    lab.reset()
    assert {name: lab.probe(lab_cfg, path) for name, path in PROBES.items()} == dict.fromkeys(PROBES, 200)


@pytest.mark.parametrize("spec", BREAKS, ids=lambda b: f"{b.cause}-{b.variant}")
def test_break_gives_real_status_and_signature(lab: Lab, lab_cfg: LabConfig, spec: Break) -> None:
    """`lab break` makes nginx answer the cause's status and log the runbook's signature line."""
    lab.reset()
    log_start = lab.log_size(lab_cfg, spec.log)
    lab.break_(spec.cause, spec.variant, keep=True)
    status = lab.probe(lab_cfg, PROBES[spec.probe])
    assert status == spec.status
    path = lab.dir / "web01" / "nginx" / "logs" / f"{spec.log}.log"
    text = _wait_for_text(path, log_start, spec.signature)
    assert re.search(spec.signature, text), f"no {spec.signature!r} in new {spec.log}.log text:\n{text[-800:]}"


def test_slash_variant_reaches_backend_without_prefix(lab: Lab, lab_cfg: LabConfig) -> None:
    """With the trailing-slash proxy_pass, /api/users reaches the app as /users."""
    lab.reset()
    lab.break_("proxy-pass", "slash", keep=True)
    log = lab.dir / "app01" / "supervisor" / "log" / "app.err.log"
    before = log.stat().st_size
    assert lab.probe(lab_cfg, "/api/users") == 502
    assert '"GET /users HTTP/1.1" 404' in _wait_for_text(log, before, re.escape('"GET /users HTTP/1.1" 404'))


def test_reset_heals_a_stack_of_breaks(lab: Lab, lab_cfg: LabConfig) -> None:
    """Two breaks stacked with keep=True are both undone by reset."""
    lab.reset()
    lab.break_("socket", "missing", keep=True)
    lab.break_("down", "crash", keep=True)
    assert lab.probe(lab_cfg, "/index.php") == 502
    assert lab.probe(lab_cfg, "/") == 502
    lab.reset()
    assert lab.probe(lab_cfg, "/index.php") == 200
    assert lab.probe(lab_cfg, "/") == 200


@pytest.mark.lab
def test_lab_down_leaves_no_process_behind() -> None:
    """`lab down` stops every process the lab started, its descendants included."""
    directory = make_lab_dir("remediate-down-lab-")
    lab = Lab(directory)
    lab.up(LabConfig(dir=str(directory), net="127.0.21"))
    started = lab.processes()
    names = " ".join(started.values())
    for expected in (
        "dnsmasq",
        "sshd",
        "nginx: master",
        "nginx: worker",
        "php-fpm",
        "supervisord",
        "backend",
    ):
        assert expected in names, f"{expected} not among the lab's processes: {names}"
    lab.down()
    assert lab.processes() == {}
    assert not [pid for pid in started if _pid_alive(pid)]


def test_reset_stops_the_load_and_forgets_it(lab: Lab, lab_cfg: LabConfig) -> None:
    """After a workers break, reset stops the load generator and status no longer lists it."""
    lab.reset()
    lab.break_("workers", "load", keep=True)
    pid = lab._load().roots["load-web01"]
    lab.reset()
    assert not _pid_alive(pid)
    assert "load-web01" not in lab.status()["running"]
