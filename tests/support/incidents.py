"""Helpers of the service's tests on the lab: a break and its answers, a plan posted for approval,
threads that say what they saw."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from remediate.lab.core import PROBES, Lab, LabConfig
from support.serving import (
    FakeSlack,
)


def break_lab(lab: Lab, lab_cfg: LabConfig, variant: str = "missing") -> None:
    """A fresh socket incident: healthy lab, empty logs, then the break and the failing request."""
    lab.reset()
    for name in ("error", "access"):
        (lab.dir / "web01" / "nginx" / "logs" / f"{name}.log").write_bytes(b"")
    spec = lab.break_("socket", variant, keep=True)
    assert spec.probe == "php"
    assert lab.probe(lab_cfg, PROBES[spec.probe]) == 502


def answers(lab: Lab, lab_cfg: LabConfig) -> int | str:
    return lab.probe(lab_cfg, PROBES["php"])


def plan_post(fake: FakeSlack, since: int) -> tuple[dict[str, Any], str]:
    """The plan message (with buttons) posted after ``since`` calls, and its approval id."""
    post = fake.wait_for(lambda p: bool(p.get("blocks")) and fake.posts().index(p) >= since)
    blocks = post["blocks"] if isinstance(post["blocks"], list) else json.loads(post["blocks"])
    buttons = next(b for b in blocks if b["type"] == "actions")["elements"]
    assert [b["action_id"] for b in buttons] == ["remediate_approve", "remediate_deny"]
    return post, str(buttons[0]["value"])


def thread_says(fake: FakeSlack, text: str, timeout: float = 90) -> dict[str, Any]:
    return fake.wait_for(lambda p: text in p.get("text", ""), timeout=timeout)


def children(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out
