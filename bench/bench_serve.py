"""`remediate serve`: acknowledgement latency under 50 concurrent requests, and alert-to-fixed vs the CLI.

Run as root (it builds its own lab on 127.0.34.x, a fake Slack Web API, and the service as a
process, and tears them down):

    .venv/bin/python bench/bench_serve.py [--rounds 10] [--fixes 7]

* ack: ``--rounds`` rounds of 50 concurrent requests each, to ``/slack/events`` (a signed
  ``/remediate diagnose web01``: signature, replay cache, policy, two audit records and a ledger
  job, all fsync'd before the answer) and to ``/alertmanager`` (one new alert each: a ledger job
  and an audit record). Latency is per request, client side, on loopback, while the workers run
  the jobs earlier rounds recorded (as a service under a storm would); that service is then
  stopped and a fresh one does the fixes.
* alert-to-fixed: the lab broken as ``socket missing`` (and its failing request made), then
  either an alert (route ``mode: fix``) is POSTed to the warm service, or ``remediate run
  --cause auto --yes`` is started; the clock stops when the lab's /index.php answers 200.
  Alternated, ``--fixes`` times each, in one sitting.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from support.serving import AM_TOKEN, FakeSlack, Service, alert, alert_payload, signed, slash_body  # noqa: E402

from remediate.lab.core import PROBES, Lab, LabConfig  # noqa: E402


async def _burst(url: str, bodies: list[tuple[str, dict[str, str]]]) -> list[float]:
    async with aiohttp.ClientSession() as session:

        async def one(body: str, headers: dict[str, str]) -> float:
            started = time.perf_counter()
            async with session.post(url, data=body.encode(), headers=headers) as response:
                await response.read()
                assert response.status == 200, (response.status, await response.text())
            return time.perf_counter() - started

        return list(await asyncio.gather(*(one(b, h) for b, h in bodies)))


def _p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _drain(svc: Service) -> None:
    svc.wait_jobs_done(timeout=600)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--fixes", type=int, default=7)
    args = parser.parse_args()
    directory = Path(tempfile.mkdtemp(prefix="remediate-bench-serve-", dir="/tmp"))
    directory.chmod(0o755)
    cfg = LabConfig(dir=str(directory / "lab"), net="127.0.34")
    lab = Lab(Path(cfg.dir))
    lab.up(cfg)
    fake = FakeSlack()
    svc = Service(directory / "svc", lab.inventory, fake.url, cooldown=0, max_runs_per_hour=1000, workers=4)
    svc.start()
    env = {**os.environ, "REMEDIATE_STATE_DIR": str(directory / "journal")}
    results: dict[str, object] = {}
    try:
        slack_ms: list[float] = []
        am_ms: list[float] = []
        for r in range(args.rounds):
            bodies = []
            for i in range(50):
                body = slash_body("diagnose web01", "U111") + f"&n={r}-{i}"  # distinct bodies: no replays
                bodies.append((body, signed(body)))
            slack_ms += [s * 1000 for s in asyncio.run(_burst(svc.url + "/slack/events", bodies))]
            headers = {"Authorization": f"Bearer {AM_TOKEN}", "Content-Type": "application/json"}
            alerts = [
                json.dumps(alert_payload(alert({"alertname": "Nginx502Look", "instance": "web01"}, f"b-{r}-{i}")))
                for i in range(50)
            ]
            am_ms += [s * 1000 for s in asyncio.run(_burst(svc.url + "/alertmanager", [(a, headers) for a in alerts]))]
        results["ack_ms"] = {
            name: {"n": len(v), "median": round(statistics.median(v), 1), "p99": round(_p(v, 0.99), 1),
                   "max": round(max(v), 1)}
            for name, v in (("/slack/events", slack_ms), ("/alertmanager", am_ms))
        }  # fmt: skip
        svc.stop()
        svc = Service(directory / "svc2", lab.inventory, fake.url, cooldown=0, max_runs_per_hour=1000)
        svc.start()

        service_s: list[float] = []
        cli_s: list[float] = []
        for i in range(args.fixes):
            for way in ("service", "cli"):
                lab.reset()
                for name in ("error", "access"):
                    (Path(cfg.dir) / "web01" / "nginx" / "logs" / f"{name}.log").write_bytes(b"")
                lab.break_("socket", "missing", keep=True)
                assert lab.probe(cfg, PROBES["php"]) == 502
                time.sleep(1.1)  # the service's window starts after its last fix: the new lines are newer
                started = time.perf_counter()
                if way == "service":
                    labels = {"alertname": "Nginx502", "instance": "127.0.34.1:8080"}
                    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
                    status, answer = svc.alert(alert_payload(alert(labels, f"fix-{i}", starts=stamp)))
                    assert status == 200, answer
                    proc = None
                else:
                    proc = subprocess.Popen(
                        [sys.executable, "-m", "remediate.cli", "run", "-i", str(lab.inventory), "--host", "web01",
                         "--cause", "auto", "--yes"],
                        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT,
                    )  # fmt: skip
                deadline = time.monotonic() + 60
                while lab.probe(cfg, PROBES["php"], timeout=2) != 200:
                    assert time.monotonic() < deadline, f"{way} did not fix the lab"
                    time.sleep(0.02)
                (service_s if way == "service" else cli_s).append(time.perf_counter() - started)
                if proc is not None:
                    proc.wait(60)
                _drain(svc)
        results["alert_to_fixed_s"] = {
            "service": {"n": len(service_s), "median": round(statistics.median(service_s), 3)},
            "cli": {"n": len(cli_s), "median": round(statistics.median(cli_s), 3)},
            "cli_over_service": round(statistics.median(cli_s) / statistics.median(service_s), 2),
        }
        results["machine"] = f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"
        print(json.dumps(results, indent=1))
    finally:
        svc.stop()
        fake.close()
        lab.down()
        shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    main()
