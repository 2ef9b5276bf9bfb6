"""`remediate diagnose` and `run --cause auto` on the real lab: the cause named from the evidence, with the proof."""

from __future__ import annotations

import json

import pytest
from support.lab import remediate_cli

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
    # One round trip to web01 for the window and every candidate playbook's evidence, one more for what
    # that pointed at (the backend asked directly, dig, stub_status), and one to the host that owns a
    # refused address (down, proxy-pass: app01).
    assert 1 <= result["round_trips"] <= (3 if spec.cause in ("down", "proxy-pass") else 2), result["round_trips"]


FIXABLE = [b for b in BREAKS if (b.cause, b.variant) != ("dns", "nxdomain")]


@pytest.mark.parametrize("spec", FIXABLE, ids=[f"{b.cause}-{b.variant}" for b in FIXABLE])
def test_cause_auto_fixes_a_confident_verdict(lab: Lab, lab_cfg: LabConfig, spec: Break) -> None:
    """`run --cause auto --yes` for every fixable break: diagnose, then its playbook fixes it; 200 after."""
    _fresh_break(lab, lab_cfg, spec.cause, spec.variant)
    done = remediate_cli("run", "-i", str(lab.inventory), "--host", "web01", "--cause", "auto", "--yes")
    assert done.returncode == EXIT_OK, done.stdout + done.stderr
    assert f"auto: the diagnosis names {spec.cause}" in done.stdout
    assert lab.probe(lab_cfg, PROBES[spec.probe]) == 200


@pytest.mark.parametrize(("cause", "variant", "applies"), [("socket", "missing", 1), ("down", "crash", 2)])
def test_cause_auto_adds_only_the_apply_round_trips(
    lab: Lab, lab_cfg: LabConfig, cause: str, variant: str, applies: int
) -> None:
    """`run --cause auto` goes on from the diagnosis' own evidence: its round trips are the diagnosis'
    plus one apply per host changed (down: restart on app01, then reload and probe on web01)."""
    _fresh_break(lab, lab_cfg, cause, variant)
    done = remediate_cli("run", "-i", str(lab.inventory), "--host", "web01", "--cause", "auto", "--yes", "--json")
    report = json.loads(done.stdout)
    assert done.returncode == EXIT_OK and report["outcome"] == "fixed", report
    assert report["cause"] == cause and report["diagnosis"]["verdict"] == cause
    assert report["round_trips"] == report["diagnosis"]["round_trips"] + applies, report["steps"]
    evidence = next(s for s in report["steps"] if s["step"] == "evidence")
    assert "the diagnosis' evidence" in evidence["detail"]


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
    """No cause in the window: the verdict says so ("unknown"), and --cause auto has nothing to do (exit 0, a
    script driven by alerts must not see a refusal on a healthy host)."""
    lab.reset()
    for name in ("error", "access"):
        (lab.dir / "web01" / "nginx" / "logs" / f"{name}.log").write_bytes(b"")
    result = _diagnose(lab)
    assert result["verdict"] == "unknown" and result["findings"] == []
    done = remediate_cli("run", "-i", str(lab.inventory), "--host", "web01", "--cause", "auto", "--yes")
    assert done.returncode == 0, done.stderr
    assert "\nnothing-to-do: the error log's window has no line of any 502 cause" in done.stdout


def _no_live_lines(n: int = 3) -> bytes:
    """What nginx logs once every server of app_pool is marked failed (ngx_http_upstream_connect)."""
    import time

    stamp = time.strftime("%Y/%m/%d %H:%M:%S")
    return b"".join(
        f"{stamp} [error] 77#77: *{900 + i} no live upstreams while connecting to upstream, client: 127.0.0.1, "
        f'server: web01.lab, request: "GET / HTTP/1.1", upstream: "http://app_pool/", host: "web01.lab"\n'.encode()
        for i in range(n)
    )


def test_no_live_upstreams_is_named_by_the_failure_that_caused_it(lab: Lab, lab_cfg: LabConfig) -> None:
    """ "no live upstreams" beside the refused connects that marked the peers down: the finding is a consequence
    of down, and the verdict is down (the cause, not the symptom)."""
    _fresh_break(lab, lab_cfg, "down", "crash")
    with (lab.dir / "web01" / "nginx" / "logs" / "error.log").open("ab") as fh:
        fh.write(_no_live_lines())
    result = _diagnose(lab)
    assert result["verdict"] == "down", result
    no_live = next(f for f in result["findings"] if f["label"] == "no-live-upstreams")  # type: ignore[attr-defined]
    assert no_live["cause"] == "down" and no_live["confidence"] == "consequence" and not no_live["fixable"]
    assert "marked failed by the down lines" in no_live["facts"][-1]["reason"]


@pytest.mark.parametrize(("crashed", "cause", "says"), [(True, "down", "refuses"), (False, "", "answer now")])
def test_no_live_upstreams_alone_asks_the_peers(
    lab: Lab, lab_cfg: LabConfig, crashed: bool, cause: str, says: str
) -> None:
    """Only "no live upstreams" in the window: the servers of that upstream block are asked from web01. A peer that
    refuses names down; one that answers says the failure is over; neither is a verdict a run may act on."""
    if crashed:
        _fresh_break(lab, lab_cfg, "down", "crash")
    else:
        lab.reset()
    (lab.dir / "web01" / "nginx" / "logs" / "error.log").write_bytes(_no_live_lines())
    result = _diagnose(lab)
    no_live = next(f for f in result["findings"] if f["label"] == "no-live-upstreams")  # type: ignore[attr-defined]
    assert no_live["cause"] == (cause or "no-live-upstreams") and says in no_live["facts"][-1]["reason"], no_live
    assert list(no_live["peers"]) == [f"{lab_cfg.addr(2)}:{lab_cfg.app_port}"]
    assert not no_live["fixable"] and result["round_trips"] == 2
    done = remediate_cli("run", "-i", str(lab.inventory), "--host", "web01", "--cause", "auto", "--yes")
    assert done.returncode == EXIT_REFUSED, done.stdout + done.stderr
