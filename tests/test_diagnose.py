"""`remediate diagnose` and `run --cause auto` on the real lab: the cause named from the evidence, with the proof."""

from __future__ import annotations

import json

import pytest
from conftest import remediate_cli

from remediate.errors import EXIT_OK, EXIT_REFUSED
from remediate.lab.core import BREAKS, PROBES, Break, Lab, LabConfig

pytestmark = pytest.mark.usefixtures("state_dir")


def _fresh_break(lab: Lab, lab_cfg: LabConfig, cause: str, variant: str, keep: bool = False) -> Break:
    """Break the lab with empty logs (as a new incident would look) and send the failing request."""
    if not keep:
        lab.reset()
        for name in ("error", "access"):
            (lab.dir / "web01" / "nginx" / "logs" / f"{name}.log").write_bytes(b"")
    spec = lab.break_(cause, variant, keep=True)
    assert lab.probe(lab_cfg, PROBES[spec.probe]) == spec.status
    return spec


def _diagnose(lab: Lab) -> dict[str, object]:
    done = remediate_cli("diagnose", "-i", str(lab.inventory), "--host", "web01", "--json")
    assert done.returncode == EXIT_OK, done.stdout + done.stderr
    return dict(json.loads(done.stdout))


@pytest.mark.parametrize("spec", BREAKS, ids=[f"{b.cause}-{b.variant}" for b in BREAKS])
def test_diagnose_names_each_cause_with_its_signature(lab: Lab, lab_cfg: LabConfig, spec: Break) -> None:
    """Every break: diagnose's verdict is its cause, and the evidence shows the signature line (or the access log)."""
    _fresh_break(lab, lab_cfg, spec.cause, spec.variant)
    result = _diagnose(lab)
    assert result["verdict"] == spec.cause, result
    finding = next(f for f in result["findings"] if f["cause"] == spec.cause)  # type: ignore[attr-defined]
    if spec.log == "error":
        import re

        assert re.search(spec.signature, finding["lines"]["example"]), finding
    assert finding["confidence"] in ("high", "confirmed, not fixable")
    assert finding["facts"], "the playbook's evidence must be part of the verdict"


FIXABLE = [b for b in BREAKS if (b.cause, b.variant) != ("dns", "nxdomain")]


@pytest.mark.parametrize("spec", FIXABLE, ids=[f"{b.cause}-{b.variant}" for b in FIXABLE])
def test_cause_auto_fixes_a_confident_verdict(lab: Lab, lab_cfg: LabConfig, spec: Break) -> None:
    """`run --cause auto --yes` for every fixable break: diagnose, then its playbook fixes it; 200 after."""
    _fresh_break(lab, lab_cfg, spec.cause, spec.variant)
    done = remediate_cli("run", "-i", str(lab.inventory), "--host", "web01", "--cause", "auto", "--yes")
    assert done.returncode == EXIT_OK, done.stdout + done.stderr
    assert f"auto: the diagnosis names {spec.cause}" in done.stdout
    assert lab.probe(lab_cfg, PROBES[spec.probe]) == 200


def test_cause_auto_refuses_a_cause_it_cannot_fix(lab: Lab, lab_cfg: LabConfig) -> None:
    """A name the resolver does not know: diagnosed as dns, confirmed, not fixable; auto refuses, exit 3."""
    _fresh_break(lab, lab_cfg, "dns", "nxdomain")
    done = remediate_cli("run", "-i", str(lab.inventory), "--host", "web01", "--cause", "auto", "--yes")
    assert done.returncode == EXIT_REFUSED, done.stdout + done.stderr
    assert "confirmed, not fixable" in done.stderr and "NXDOMAIN" in done.stderr
    assert lab.probe(lab_cfg, PROBES["dyn"]) == 502


def test_two_causes_at_once_are_both_reported_and_auto_refuses(lab: Lab, lab_cfg: LabConfig) -> None:
    """socket and down broken together: diagnose reports both; --cause auto refuses (exit 3) and changes nothing."""
    _fresh_break(lab, lab_cfg, "socket", "missing")
    _fresh_break(lab, lab_cfg, "down", "crash", keep=True)
    result = _diagnose(lab)
    assert result["verdict"] == "ambiguous"
    fixable = sorted(f["cause"] for f in result["findings"] if f["fixable"])  # type: ignore[attr-defined]
    assert fixable == ["down", "socket"]
    done = remediate_cli("run", "-i", str(lab.inventory), "--host", "web01", "--cause", "auto", "--yes")
    assert done.returncode == EXIT_REFUSED, done.stdout + done.stderr
    assert "the diagnosis is ambiguous" in done.stderr and "nothing was changed" in done.stderr
    assert lab.probe(lab_cfg, PROBES["php"]) == 502 and lab.probe(lab_cfg, PROBES["app"]) == 502


def test_a_healthy_host_is_unknown(lab: Lab, lab_cfg: LabConfig) -> None:
    """No cause in the window: the verdict says so ("unknown"), and --cause auto refuses."""
    lab.reset()
    for name in ("error", "access"):
        (lab.dir / "web01" / "nginx" / "logs" / f"{name}.log").write_bytes(b"")
    result = _diagnose(lab)
    assert result["verdict"] == "unknown" and result["findings"] == []
    done = remediate_cli("run", "-i", str(lab.inventory), "--host", "web01", "--cause", "auto", "--yes")
    assert done.returncode == EXIT_REFUSED
