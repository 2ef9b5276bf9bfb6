"""Real parts for the service tests: `remediate serve` as a process, a fake Slack Web API, Alertmanager.

Slack cannot be reached from here, so :class:`FakeSlack` plays its Web API on loopback (as
slack-bolt's own tests do) and records what the service posts; requests *to* the service are
signed with Slack's real v0 scheme (:func:`signed`). Alertmanager is Debian's real binary.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

SIGNING_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
BOT_TOKEN = "xoxb-000000000000-remediate-test-token"
API_TOKEN = "api-token-for-the-tests-0123456789"
AM_TOKEN = "alertmanager-token-for-tests-0123456789"
CHANNEL = "C0ALERTS"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class FakeSlack:
    """Slack's Web API on loopback: answers chat.postMessage, auth.test and usergroups.users.list; records calls."""

    def __init__(self, groups: dict[str, list[str]] | None = None) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.groups = groups or {}
        self.lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.do_POST()

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length).decode()
                if "?" in self.path:
                    raw = raw or self.path.split("?", 1)[1]
                    self.path = self.path.split("?", 1)[0]
                if self.headers.get("Content-Type", "").startswith("application/json"):
                    params = json.loads(raw or "{}")
                else:
                    params = {k: v[0] for k, v in urllib.parse.parse_qs(raw).items()}
                method = self.path.rstrip("/").rsplit("/", 1)[-1]
                answer: dict[str, Any] = {"ok": True}
                if method == "chat.postMessage":
                    answer.update(channel=params.get("channel"), ts=f"{time.time():.6f}")
                elif method == "auth.test":
                    answer.update(user_id="UBOT", bot_id="BBOT", team_id="T0TEAM", user="remediate")
                elif method == "usergroups.users.list":
                    answer.update(users=fake.groups.get(str(params.get("usergroup")), []))
                with fake.lock:
                    fake.calls.append((method, params))
                body = json.dumps(answer).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/api/"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def posts(self) -> list[dict[str, Any]]:
        with self.lock:
            return [p for m, p in self.calls if m == "chat.postMessage"]

    def wait_for(self, check: Callable[[dict[str, Any]], bool], timeout: float = 90) -> dict[str, Any]:
        """The first chat.postMessage for which ``check`` holds, waiting up to ``timeout`` s."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for post in self.posts():
                if check(post):
                    return post
            time.sleep(0.1)
        raise AssertionError(
            f"no such Slack post within {timeout}s; last posts: {json.dumps(self.posts()[-4:])[-3000:]}"
        )

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def signed(body: str, *, secret: str = SIGNING_SECRET, stamp: int | None = None) -> dict[str, str]:
    """Slack's request signing: v0=HMAC-SHA256(secret, "v0:{timestamp}:{body}")."""
    ts = str(int(time.time()) if stamp is None else stamp)
    mac = hmac.new(secret.encode(), f"v0:{ts}:{body}".encode(), hashlib.sha256).hexdigest()
    return {
        "X-Slack-Request-Timestamp": ts,
        "X-Slack-Signature": f"v0={mac}",
        "Content-Type": "application/x-www-form-urlencoded",
    }


def slash_body(text: str, user: str, channel: str = "C0CHAT") -> str:
    return urllib.parse.urlencode(
        {
            "token": "deprecated",
            "team_id": "T0TEAM",
            "team_domain": "example",
            "channel_id": channel,
            "channel_name": "incidents",
            "user_id": user,
            "user_name": user.lower(),
            "command": "/remediate",
            "text": text,
            "api_app_id": "A0APP",
            "response_url": "https://hooks.slack.invalid/commands/T0TEAM/1/x",
            "trigger_id": f"{time.time()}.1.abc",
        }
    )


def click_body(approval_id: str, user: str, *, approve: bool = True, channel: str = "C0CHAT") -> str:
    payload = {
        "type": "block_actions",
        "team": {"id": "T0TEAM", "domain": "example"},
        "user": {"id": user, "username": user.lower(), "team_id": "T0TEAM"},
        "api_app_id": "A0APP",
        "token": "deprecated",
        "container": {"type": "message", "message_ts": "1700000000.000100", "channel_id": channel},
        "trigger_id": f"{time.time()}.1.def",
        "channel": {"id": channel, "name": "incidents"},
        "message": {"type": "message", "ts": "1700000000.000100", "text": "plan"},
        "response_url": "https://hooks.slack.invalid/actions/T0TEAM/1/y",
        "actions": [
            {
                "action_id": "remediate_approve" if approve else "remediate_deny",
                "block_id": "remediate_approval",
                "type": "button",
                "value": approval_id,
                "action_ts": str(time.time()),
            }
        ],
    }
    return urllib.parse.urlencode({"payload": json.dumps(payload)})


def http(
    method: str, url: str, body: str | bytes | None = None, headers: dict[str, str] | None = None, timeout: float = 30
) -> tuple[int, dict[str, Any] | str]:
    """(status, JSON or text) for one request; HTTP errors are answers, not exceptions."""
    data = body.encode() if isinstance(body, str) else body
    request = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode("utf-8", "replace")


def wait_ready(name: str, url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float) -> None:
    """Until ``url`` answers 200; an AssertionError with the end of ``log`` if ``proc`` exits or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"{name} exited {proc.returncode}: {log.read_text()[-3000:]}")
        try:
            if http("GET", url, timeout=2)[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"{name} did not come up within {timeout}s: {log.read_text()[-3000:]}")


def write_secret(path: Path, value: str) -> Path:
    path.write_text(value + "\n")
    path.chmod(0o600)
    return path


class Service:
    """`remediate serve --config DIR/serve.yml` as a process, started and stopped like a user would."""

    def __init__(self, directory: Path, inventory: Path, slack_url: str, **overrides: Any) -> None:
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        secrets = self.dir / "secrets"
        secrets.mkdir(exist_ok=True)
        config: dict[str, Any] = {
            "listen": f"127.0.0.1:{self.port}",
            "inventory": str(inventory),
            "state_dir": str(self.dir / "state"),
            "api_token_file": str(write_secret(secrets / "api.token", API_TOKEN)),
            "alertmanager": {
                "token_file": str(write_secret(secrets / "am.token", AM_TOKEN)),
                "routes": [
                    {
                        "match": {"alertname": "Nginx502"},
                        "host_label": "instance",
                        "cause_label": "remediate_cause",
                        "mode": "fix",
                    },
                    {"match": {"alertname": "Nginx502Ask"}, "host_label": "instance", "mode": "approve"},
                    {"match": {"alertname": "Nginx502Look"}, "host_label": "instance", "mode": "diagnose"},
                ],
            },
            "slack": {
                "signing_secret_file": str(write_secret(secrets / "slack.secret", SIGNING_SECRET)),
                "token_file": str(write_secret(secrets / "slack.token", BOT_TOKEN)),
                "api_url": slack_url,
                "channel": CHANNEL,
            },
            "policy": {
                "roles": {
                    "oncall": {"verbs": ["diagnose", "check", "run", "rollback"], "hosts": "all", "causes": "all"},
                    "lead": {"verbs": ["approve"], "hosts": "all", "causes": "all"},
                    "viewer": {"verbs": ["diagnose"], "hosts": "all"},
                },
                "users": {"U111": ["oncall"], "U222": ["oncall", "lead"], "U333": ["viewer"]},
                "groups": {"S0LEADS": ["lead"]},
            },
            "cooldown": "30m",
            "workers": 2,
        }
        config.update(overrides)
        self.config_path = self.dir / "serve.yml"
        self.config_path.write_text(json.dumps(config, indent=1))  # JSON is YAML
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = self.dir / "serve.log"

    def start(self, timeout: float = 30) -> Service:
        env = {**os.environ, "REMEDIATE_STATE_DIR": str(self.dir / "journal")}
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "remediate.cli", "serve", "--config", str(self.config_path)],
                stdout=log,
                stderr=log,
                env=env,
            )
        wait_ready("remediate serve", self.url + "/healthz", self.proc, self.log, timeout)
        return self

    def stop(self, sig: int = signal.SIGTERM) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(60)
        finally:
            self.proc = None

    def slack(self, body: str, **sign: Any) -> tuple[int, dict[str, Any] | str]:
        return http("POST", self.url + "/slack/events", body, signed(body, **sign))

    def alert(self, payload: dict[str, Any], token: str = AM_TOKEN) -> tuple[int, dict[str, Any] | str]:
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        return http("POST", self.url + "/alertmanager", json.dumps(payload), headers)

    def jobs(self) -> list[dict[str, Any]]:
        status, answer = http(
            "GET", self.url + "/api/jobs?limit=1000", headers={"Authorization": f"Bearer {API_TOKEN}"}
        )
        assert status == 200 and isinstance(answer, dict), answer
        return list(answer["jobs"])

    def wait_jobs_done(self, timeout: float = 120) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            jobs = self.jobs()
            if jobs and all(j["state"] == "done" for j in jobs):
                return jobs
            time.sleep(0.2)
        raise AssertionError(f"jobs not done within {timeout}s: {self.jobs()}")


def alert_payload(*alerts: dict[str, Any], status: str = "firing") -> dict[str, Any]:
    """An Alertmanager webhook body (version 4) holding ``alerts``."""
    return {
        "version": "4",
        "groupKey": '{}:{alertname="Nginx502"}',
        "truncatedAlerts": 0,
        "status": status,
        "receiver": "remediate",
        "groupLabels": {"alertname": "Nginx502"},
        "commonLabels": {},
        "commonAnnotations": {},
        "externalURL": "http://127.0.0.1:9093",
        "alerts": list(alerts),
    }


def alert(
    labels: dict[str, str], fingerprint: str, *, status: str = "firing", starts: str | None = None
) -> dict[str, Any]:
    return {
        "status": status,
        "labels": labels,
        "annotations": {},
        "startsAt": starts or "2026-11-21T03:00:00.000Z",
        "endsAt": "0001-01-01T00:00:00Z",
        "generatorURL": "http://prometheus.invalid/graph",
        "fingerprint": fingerprint,
    }


class Alertmanager:
    """Debian's prometheus-alertmanager on loopback, with a webhook receiver pointing at the service."""

    def __init__(self, directory: Path, service_url: str, token_file: Path) -> None:
        binary = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
        if binary is None:
            raise AssertionError("prometheus-alertmanager is missing; run: apt-get install prometheus-alertmanager")
        self.binary = binary
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        (self.dir / "alertmanager.yml").write_text(
            "route:\n"
            "  receiver: remediate\n"
            "  group_by: [alertname, instance]\n"
            "  group_wait: 1s\n"
            "  group_interval: 1s\n"
            "  repeat_interval: 2s\n"
            "receivers:\n"
            "  - name: remediate\n"
            "    webhook_configs:\n"
            f"      - url: {service_url}/alertmanager\n"
            "        send_resolved: true\n"
            "        http_config:\n"
            "          authorization:\n"
            "            type: Bearer\n"
            f"            credentials_file: {token_file}\n"
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Alertmanager:
        log = (self.dir / "alertmanager.log").open("ab")
        self.proc = subprocess.Popen(
            [
                self.binary,
                f"--config.file={self.dir / 'alertmanager.yml'}",
                f"--storage.path={self.dir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--cluster.listen-address=",
                "--log.level=debug",
            ],
            stdout=log,
            stderr=log,
        )
        wait_ready("alertmanager", self.url + "/-/ready", self.proc, self.dir / "alertmanager.log", 30)
        return self

    def add(self, *labels: str) -> None:
        """``amtool alert add LABEL=VALUE ...``: an alert, as Prometheus would send it."""
        done = subprocess.run(
            ["amtool", "alert", "add", *labels, f"--alertmanager.url={self.url}"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert done.returncode == 0, done.stderr

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(30)
            self.proc = None
