"""`remediate serve`: Alertmanager webhooks and Slack commands start remediate; one aiohttp process.

Routes::

    POST /alertmanager   Alertmanager's webhook (v4), bearer token; 200 once every job is durably
                         recorded, 503 when it cannot be (Alertmanager retries), 4xx for bad input
    POST /slack/events   /remediate and the Approve / Deny buttons (slack-bolt), after the Gate
    GET  /healthz        200 while the workers run (on the queue: while its database answers)
    GET  /metrics        Prometheus text: jobs by trigger and outcome, queue depth, run seconds
    GET  /api/jobs[/ID]  the ledger as JSON (on the queue, with each job's queue state), bearer token

Nothing a request carries is trusted before it is checked, and no bad request is a 500: every
handler turns bad input into a 4xx with a one-line reason. Store work (SQLite, or PostgreSQL with
``queue:``) runs on a small thread pool, so the event loop only parses, checks and answers. Who
runs the jobs is the :class:`Dispatcher`: the worker process beside this one, or, with ``queue:``,
`remediate worker --config` processes anywhere (remediate.queue.ServiceQueue).
"""

from __future__ import annotations

import asyncio
import difflib
import hmac
import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

import structlog
from aiohttp import web

from remediate.engine.playbook import load_playbooks
from remediate.errors import InputError, RemediateError
from remediate.hosts.inventory import Host, load_inventory
from remediate.serve.config import ServeConfig
from remediate.serve.jobs import Stores
from remediate.serve.listen import ConnectionCap, ensure_descriptors
from remediate.serve.notify import Notifier, mrkdwn
from remediate.serve.slack import USAGE, Command, parse_command
from remediate.serve.worker import WorkerProcess
from remediate.stores.db import errors, redact

__all__ = ["Dispatcher", "Metrics", "Service", "make_app", "serve"]

log = structlog.get_logger("remediate.serve")
_REPLAY_WINDOW = 300  # seconds: Slack's own limit on a request's age (the replay cache keeps twice that)
_JSON = "application/json"


class Metrics:
    """The service's Prometheus metrics, in a registry of its own.

    Jobs and run durations are read from the ledger (the worker process runs the jobs; the ledger is
    what both processes share), so they survive restarts as counters should. ``/metrics`` needs no
    credential, so that read is bounded: at most one per ``SCRAPE_TTL`` seconds, however often it is
    scraped (a Prometheus scrapes every 15 s or more; a flood gets the same answer again).
    """

    def __init__(self, stores: Stores) -> None:
        from prometheus_client import CollectorRegistry, Counter

        self.stores = stores
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "remediate_requests", "HTTP requests answered, by route and status", ["route", "status"],
            registry=self.registry,
        )  # fmt: skip
        self.refused = Counter(
            "remediate_connections_refused", "Connections answered 503 at once, by reason (busy, per-client)",
            ["reason"], registry=self.registry,
        )  # fmt: skip
        self.registry.register(self)
        self._cap: ConnectionCap | None = None
        self._cached: tuple[float, list[Any]] | None = None
        self.reads = 0  # ledger reads for /metrics (what a scrape flood costs)

    def watch_connections(self, cap: ConnectionCap) -> None:
        """Report the listener's open connections (a gauge read from the cap at each scrape)."""
        self._cap = cap

    def describe(self) -> list[Any]:
        return []  # registering must not read the ledger (on the event loop's thread)

    def collect(self) -> Iterator[Any]:
        """The ledger's families: read again only when the last read is older than SCRAPE_TTL."""
        now = time.monotonic()
        if self._cached is None or now - self._cached[0] > SCRAPE_TTL:
            self._cached = (now, list(self._from_ledger()))
            self.reads += 1
        yield from self._cached[1]
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        if self._cap is not None:
            yield GaugeMetricFamily("remediate_connections_open", "Client connections open now", value=self._cap.open)

        yield CounterMetricFamily(
            "remediate_metrics_ledger_reads", "Reads of the ledger for /metrics (at most one per SCRAPE_TTL)",
            value=self.reads,
        )  # fmt: skip

    def _from_ledger(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

        db = self.stores.ledger.db
        jobs = CounterMetricFamily(
            "remediate_jobs", "Jobs finished, by trigger and outcome", labels=["trigger", "outcome"]
        )
        for trigger, outcome, count in db.execute(
            "SELECT trigger, outcome, COUNT(*) FROM jobs WHERE state = 'done' GROUP BY trigger, outcome"
        ):
            jobs.add_metric([trigger, outcome], count)
        yield jobs
        depth = db.execute("SELECT COUNT(*) FROM jobs WHERE state IN ('pending', 'running')").fetchone()[0]
        yield GaugeMetricFamily("remediate_queue_depth", "Jobs pending or running", value=depth)
        seconds = [r[0] for r in db.execute("SELECT ended - started FROM jobs WHERE run_id IS NOT NULL")]
        buckets, total = [], 0
        for bound in _RUN_BUCKETS:
            total = sum(1 for s in seconds if s <= bound)
            buckets.append((str(bound), total))
        buckets.append(("+Inf", len(seconds)))
        yield HistogramMetricFamily(
            "remediate_run_duration_seconds", "How long jobs that ran remediate on a host took",
            buckets=buckets, sum_value=sum(seconds),
        )  # fmt: skip

    def text(self) -> bytes:
        from prometheus_client import generate_latest

        return generate_latest(self.registry)


_RUN_BUCKETS = (0.5, 1.0, 2.0, 3.0, 5.0, 8.0, 13.0, 21.0, 34.0, 60.0, 120.0, 300.0)
#: Seconds one read of the ledger serves /metrics for.
SCRAPE_TTL = 5.0


class Dispatcher(Protocol):
    """Who runs the ledger's jobs. Two engines: the embedded worker process (remediate.serve.worker,
    the default), or Procrastinate on PostgreSQL (remediate.queue.ServiceQueue, with ``queue:``)."""

    def start(self) -> None: ...

    def submitted(self, job_id: str, host: str, dedupe: str | None = None) -> None:
        """The ledger recorded ``job_id`` (called from a store thread, after the commit)."""

    def watch(self) -> None:
        """Called every second from the event loop; must not block."""

    def health(self) -> dict[str, Any]:
        """``ok`` and how many ``workers`` run jobs now (may block: called from a store thread)."""
        ...

    def states(self, job_ids: list[str]) -> dict[str, dict[str, Any]]:
        """Where each job is in the engine's queue (empty for the embedded worker)."""
        ...

    def stop(self) -> None: ...


class Service:
    """Everything `remediate serve` holds: the config, inventory, stores, dispatcher and Slack app."""

    def __init__(self, config: ServeConfig) -> None:
        self.config = config
        self.inventory = load_inventory(config.inventory)
        self.causes = sorted(load_playbooks())
        config.state_dir.mkdir(parents=True, exist_ok=True)
        self.stores = Stores(config.stores)
        self.stores.create()  # every file and table, once, before threads and the worker open them at once
        self.metrics = Metrics(self.stores)
        self.notifier = Notifier(config.slack)
        self.dispatcher: Dispatcher
        if config.queue:
            from remediate.queue import ServiceQueue

            self.dispatcher = ServiceQueue(config.queue, self.inventory)
        else:
            self.dispatcher = WorkerProcess(str(config.path), config.workers)
        self.pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="remediate-store")
        self.slack_app: Any = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._report_pending: list[str] = []
        self._report_last = -REPORT_INTERVAL
        self._report_timer: asyncio.TimerHandle | None = None
        if config.slack is not None:
            from slack_sdk.signature import SignatureVerifier

            from remediate.serve.slack import build_app

            self.verifier = SignatureVerifier(config.slack.signing_secret)
            self.slack_app = build_app(self)

    # -- the store, off the event loop -------------------------------------------

    async def store(self, call: Any, *args: Any) -> Any:
        """``call(*args)`` on the store pool. Pass a lambda or a method of self, never ``self.stores.X.method``:
        that would open X's connection on the event loop's thread."""
        return await asyncio.get_running_loop().run_in_executor(self.pool, call, *args)

    def later(self, work: Any) -> None:
        """Run the coroutine ``work`` after the current answer; kept referenced until it ends."""
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def audit(self, kind: str, actor: str, data: dict[str, Any]) -> None:
        self.stores.audit.append(kind, actor, data)

    # -- Alertmanager --------------------------------------------------------------

    def host_for(self, value: str) -> Host | None:
        """``instance`` minus its port, as an inventory host name or ``ansible_host``; None if not exactly one."""
        name = value.strip()
        if name.startswith("["):  # [::1]:9100
            name = name[1:].partition("]")[0]
        elif name.count(":") == 1:
            name = name.partition(":")[0]
        if name in self.inventory.hosts:
            return self.inventory.hosts[name]
        found = [h for h in self.inventory if h.vars.get("ansible_host") == name]
        return found[0] if len(found) == 1 else None

    def alert_jobs(self, alerts: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """What each alert asks for (in memory; nothing recorded yet)."""
        decided = []
        for alert in alerts:
            labels, fingerprint = alert["labels"], alert["fingerprint"]
            item: dict[str, Any] = {"fingerprint": fingerprint, "alertname": labels.get("alertname", "")}
            decided.append(item)
            if alert["status"] != "firing":
                item["result"] = "ignored: resolved alerts start nothing"
                continue
            route = next((r for r in self.config.routes if r.matches(labels)), None)
            if route is None:
                item["result"] = "ignored: no route matches its labels"
                continue
            value = labels.get(route.host_label)
            host = self.host_for(value) if value else None
            cause = labels.get(route.cause_label, "auto") if route.cause_label else "auto"
            item.update(mode=route.mode, cause=cause, dedupe=f"am:{fingerprint}:{alert['startsAt']}")
            if host is None:
                item["report_key"] = f"{labels.get('alertname', '?')}:{route.host_label}={value}"
                item["report"] = (
                    f"alert {labels.get('alertname', '?')} ({fingerprint}): {route.host_label}={value!r} is not a "
                    f"host in {self.inventory.path} (by name or ansible_host); nothing was started"
                )
            elif cause != "auto" and cause not in self.causes:
                item["report_key"] = f"{labels.get('alertname', '?')}:{host.name}:{route.cause_label}={cause}"
                item["report"] = (
                    f"alert {labels.get('alertname', '?')} ({fingerprint}) for {host.name}: {route.cause_label}="
                    f"{cause!r} is not a cause ({', '.join(self.causes)}); nothing was started"
                )
            else:
                item["host"] = host.name
        return decided

    def record_alerts(self, decided: list[dict[str, Any]]) -> list[str]:
        """Record every job durably (deduplicated); the reports that are new (unknown hosts, causes)."""
        ledger, audit, reports = self.stores.ledger, self.stores.audit, []
        remembered = 0
        for item in decided:
            if "host" in item:
                mode = item["mode"]  # a route's modes are ledger modes
                job, created = ledger.submit(
                    item["host"], item["cause"], mode, trigger="alertmanager", requested_by=item["fingerprint"],
                    dedupe=item["dedupe"], data={"reply": {}, "alertname": item["alertname"]},
                )  # fmt: skip
                if created:
                    self.dispatcher.submitted(job.id, job.host, item["dedupe"])
                item.update(job=job.id, result="recorded" if created else "duplicate: already job " + job.id)
                audit.append(
                    "trigger" if created else "duplicate",
                    item["fingerprint"],
                    {"source": "alertmanager", "job": job.id, "host": job.host, "cause": job.cause, "mode": mode,
                     "alertname": item["alertname"]},
                )  # fmt: skip
            elif "report" in item:
                # Storm control: one report per alert name and unknown value per cool-down window, however
                # many alerts or new startsAt carry it (an outage on hosts missing from the inventory); and at
                # most _REMEMBERED keys a webhook, so a storm of distinct names grows state by a bounded amount
                # (the rest are counted in the webhook's one audit record, and may be reported again later).
                if remembered >= _REMEMBERED:
                    item["result"] = "reported (storm: counted, not remembered)"
                    reports.append(item["report"])
                    continue
                remembered += 1
                bucket = int(time.time() // max(self.config.cooldown, 60))
                new = self.stores.seen.first(f"report:{item['report_key']}:{bucket}")
                item["result"] = "reported" if new else "duplicate: already reported"
                if new:
                    reports.append(item["report"])
        if reports:  # one audit record per webhook, however many alerts it reports
            audit.append("refused", "alertmanager", {"source": "alertmanager", "count": len(reports),
                                                     "reasons": reports[:_REPORTED]})  # fmt: skip
        return reports

    def report(self, reports: list[str]) -> None:
        """Post what alerts the service cannot act on: at most one message per REPORT_INTERVAL (Slack allows
        about one a second per channel), the first few quoted and how many more; what arrives in between is
        counted into the next message, which a timer sends if no webhook does."""
        self._report_pending += reports
        now = time.monotonic()
        if now - self._report_last >= REPORT_INTERVAL:
            self._flush_reports()
        elif self._report_timer is None:
            delay = REPORT_INTERVAL - (now - self._report_last)
            self._report_timer = asyncio.get_running_loop().call_later(delay, self._flush_reports)

    def _flush_reports(self) -> None:
        self._report_timer = None
        pending, self._report_pending = self._report_pending, []
        if not pending:
            return
        self._report_last = time.monotonic()
        more = f"\n… and {len(pending) - _REPORTED} more (the audit has the count)" if len(pending) > _REPORTED else ""
        shown = "\n".join(f":question: {mrkdwn(text)}" for text in pending[:_REPORTED])
        self.pool.submit(self.notifier.post, {}, shown + more)

    async def alertmanager(self, request: web.Request) -> web.Response:
        if not _bearer_ok(request, self.config.alert_token):
            return _error(401, "a valid bearer token is required", www_authenticate=True)
        body = await _read_body(request, self.config.max_body)
        try:
            payload = untrusted_json(body)
            alerts = _alerts(payload)
        except (ValueError, TypeError, KeyError) as exc:
            return _error(400, f"not an Alertmanager webhook (version 4) payload: {exc}")
        decided = self.alert_jobs(alerts)
        try:
            reports = await self.store(self.record_alerts, decided)
        except errors() as exc:
            log.error("record-failed", error=str(exc))
            return _error(503, "cannot record the jobs now; retry")
        if reports:
            self.report(reports)
        return web.json_response({"alerts": [{k: v for k, v in d.items() if k != "dedupe"} for d in decided]})

    # -- Slack ---------------------------------------------------------------------

    async def slack_events(self, request: web.Request) -> web.Response:
        from slack_bolt.request.async_request import AsyncBoltRequest

        assert self.config.slack is not None
        raw = await _read_body(request, self.config.max_body)
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            return _error(400, "the body is not UTF-8")
        stamp = request.headers.get("X-Slack-Request-Timestamp", "")
        signature = request.headers.get("X-Slack-Signature", "")
        if not stamp or not signature:
            return _error(401, "X-Slack-Request-Timestamp and X-Slack-Signature are required")
        if not signature.isascii() or not signature.isprintable():
            return _error(401, "invalid signature")
        # ASCII digits only: "²".isdigit() is True and int("²") raises
        if not (stamp.isascii() and stamp.isdigit()) or abs(time.time() - int(stamp)) > _REPLAY_WINDOW:
            return _error(401, "the request timestamp is not within 5 minutes of now")
        if not self.verifier.is_valid(body=text, timestamp=stamp, signature=signature):
            return _error(401, "invalid signature")
        try:
            first = await self.store(lambda: self.stores.seen.first("slack:" + signature))
        except errors():
            return _error(503, "cannot record the request now")
        if not first:
            # One audit record per replayed request, not per replay: a captured request sent again 400 times in
            # its 300 s window is one record (the 401s are counted in remediate_requests_total).
            def audit_once() -> None:
                if self.stores.seen.first("slack:replayed:" + signature):
                    self.audit("replay", "slack", {"signature": signature[:16]})

            await self.store(audit_once)
            return _error(401, "this request was already received (replayed); nothing was started")
        if not _slack_form(text):
            return _error(400, "not a slash command or an interaction payload")
        headers = {k.lower(): [v] for k, v in request.headers.items()}
        try:
            answer = await self.slack_app.async_dispatch(
                AsyncBoltRequest(body=text, query=request.query_string, headers=headers)  # type: ignore[arg-type]
            )
        except Exception as exc:  # a payload Bolt cannot read is bad input, not our crash
            log.warning("slack-dispatch-failed", error=str(exc))
            return _error(400, "malformed Slack request")
        if answer.status == 404:
            return _error(400, "not a command or button remediate handles")
        return web.Response(
            status=answer.status, body=answer.body, content_type=_JSON if answer.body.startswith("{") else "text/plain"
        )

    async def slash(self, user: str, text: str, reply: dict[str, Any], groups: tuple[str, ...]) -> str:
        """``/remediate TEXT`` from ``user``: the ack (an ephemeral message); a job recorded if allowed."""

        async def refuse(reason: str, icon: str) -> str:
            await self.store(self.audit, "refused", user, {"source": "slack", "text": text[:200], "reason": reason})
            return f"{icon} {reason}"

        listed = self.config.policy.lists(user, groups)
        if not listed:  # before anything about hosts is said
            return await refuse(listed.reason, ":no_entry:")
        try:
            command = parse_command(text, self.causes)
        except (ValueError, RemediateError) as exc:
            return await refuse(
                str(exc).split(": ", 1)[-1] if isinstance(exc, RemediateError) else str(exc), ":warning:"
            )
        policy = self.config.policy
        if command.host is not None and (
            command.host not in self.inventory.hosts or not policy.may_see(self.inventory, user, command.host, groups)
        ):
            # An unknown host and one outside the user's scope read the same, and "did you mean" only ever
            # names hosts the user may act on: the inventory is not disclosed to a user of a narrow role.
            mine = [h for h in self.inventory.hosts if policy.may_see(self.inventory, user, h, groups)]
            close = difflib.get_close_matches(command.host, mine, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            return await refuse(f"no host {command.host!r} that you may act on{hint}", ":warning:")
        if command.verb == "help":
            return USAGE
        if command.verb == "status":
            await self.store(self.audit, "trigger", user, {"source": "slack", "text": text[:200]})
            return str(await self.store(self.status_text, user, command, groups))
        verb = command.verb
        allowed = self.config.policy.allows(
            self.inventory, user, verb, command.host or "", None if command.cause in (None, "auto") else command.cause,
            groups,
        )  # fmt: skip
        mode = {"diagnose": "diagnose", "run": "approve", "rollback": "rollback"}[verb]
        try:
            job = await self.store(self.record_command, user, text, command, mode, allowed, reply, groups)
        except errors():
            return ":x: remediate cannot record jobs right now (its state directory); nothing was started"
        if job is None:
            return f":no_entry: {allowed.reason}; nothing was started"
        what = {"diagnose": "diagnosing", "approve": "planning (you will get a plan to approve)",
                "rollback": f"rolling back {command.run_id} on"}[mode]  # fmt: skip
        return f":hourglass: job `{job}`: {what} {command.host}"

    def record_command(
        self, user: str, text: str, command: Command, mode: str, allowed: Any, reply: dict[str, Any], groups: Any
    ) -> str | None:
        self.stores.audit.extend(
            [
                ("trigger", user, {"source": "slack", "text": text[:200]}),
                ("decision", user, {"verb": command.verb, "host": command.host, "cause": command.cause,
                                    "allowed": allowed.allowed, "reason": allowed.reason}),
            ]
        )  # fmt: skip
        if not allowed:
            return None
        data = {"reply": reply, "groups": list(groups)}
        if command.run_id:
            data["run_id"] = command.run_id
        job, _ = self.stores.ledger.submit(
            command.host or "", command.cause or "auto", mode, trigger="slack", requested_by=user, data=data
        )
        self.dispatcher.submitted(job.id, job.host)
        return job.id

    def status_text(self, user: str, command: Command, groups: tuple[str, ...]) -> str:
        ledger = self.stores.ledger
        if command.run_id:
            job = ledger.by_run(command.run_id)
            if job is None:
                try:
                    job = ledger.get(command.run_id)
                except KeyError:
                    return f"no job or run {command.run_id!r}"
            jobs = [job]
        else:
            jobs = ledger.jobs(limit=50)
        visible = [j for j in jobs if self.config.policy.allows(self.inventory, user, "diagnose", j.host, None, groups)]
        if not visible:
            return "no jobs you may see" if jobs else "no jobs yet"
        return "\n".join(
            f"`{j.id}` {j.host} {j.cause} {j.mode}: *{j.outcome or j.state}*"
            + (f" run `{j.run_id}`" if j.run_id else "")
            for j in visible[:10]
        )

    async def click(
        self, user: str, approval_id: str, approve: bool, reply: dict[str, Any], groups: tuple[str, ...]
    ) -> str:
        try:
            return str(await self.store(self.decide, user, approval_id, approve, reply, groups))
        except errors():
            return ":x: remediate cannot record the decision right now; nothing was started"

    def decide(self, user: str, approval_id: str, approve: bool, reply: dict[str, Any], groups: Any) -> str:
        verdict = self.stores.approvals.decide(
            approval_id[:64], user, approve=approve, policy=self.config.policy, inventory=self.inventory,
            user_groups=tuple(groups),
        )  # fmt: skip
        a = verdict.approval
        data = {"approval": approval_id[:64], "host": a.host if a else None, "cause": a.cause if a else None,
                "reason": verdict.reason}  # fmt: skip
        if not verdict.ok:
            self.stores.audit.append("refused", user, {"source": "slack", "action": "approve" if approve else "deny",
                                                       **data})  # fmt: skip
            return f":no_entry: <@{user}>: {verdict.reason}; nothing was changed"
        assert a is not None
        if not approve:
            self.stores.audit.append("denial", user, data)
            return f":x: denied by <@{user}>; nothing was changed on {a.host}"
        self.stores.audit.append("approval", user, data)
        job, _ = self.stores.ledger.submit(
            a.host, a.cause, "run", trigger="slack", requested_by=a.requester,
            data={"reply": reply, "approval": a.id, "approved_by": user},
        )  # fmt: skip
        self.dispatcher.submitted(job.id, job.host)
        return f":white_check_mark: approved by <@{user}>; job `{job.id}` runs {a.cause} on {a.host}"

    # -- the rest ------------------------------------------------------------------

    async def healthz(self, request: web.Request) -> web.Response:
        try:
            health = await self.store(self.dispatcher.health)
        except errors() as exc:
            health = {"ok": False, "workers": 0, "error": str(exc).splitlines()[0] if str(exc) else "unavailable"}
        return web.json_response(health, status=200 if health["ok"] else 503)

    async def metrics_text(self, request: web.Request) -> web.Response:
        return web.Response(body=await self.store(self.metrics.text), content_type="text/plain", charset="utf-8")

    async def api_jobs(self, request: web.Request) -> web.Response:
        if not _bearer_ok(request, self.config.api_token):
            return _error(401, "a valid bearer token is required", www_authenticate=True)
        job_id = request.match_info.get("job_id")
        if job_id is None:
            try:
                limit = min(1000, max(1, int(request.query.get("limit", "100"))))
            except ValueError:
                return _error(400, "limit must be a number")
            listed = await self.store(self.jobs_json, None, limit)
            return web.json_response({"jobs": listed})
        try:
            found = await self.store(self.jobs_json, job_id, 1)
        except KeyError:
            return _error(404, f"no job {job_id[:40]!r}")
        return web.json_response(found[0])

    def jobs_json(self, job_id: str | None, limit: int) -> list[dict[str, Any]]:
        """Ledger jobs as JSON; on the queue, each with ``queue``: its queue (zone), status and attempts."""
        jobs = [self.stores.ledger.get(job_id)] if job_id is not None else self.stores.ledger.jobs(limit=limit)
        shown = [j.to_json() for j in jobs]
        if self.config.queue:
            states = self.dispatcher.states([j.id for j in jobs])
            for item in shown:
                item["queue"] = states.get(item["id"])
        return shown


def make_app(service: Service) -> web.Application:
    app = web.Application(client_max_size=service.config.max_body, middlewares=[_answer_errors(service.metrics)])
    if service.config.alert_token:
        app.router.add_post("/alertmanager", service.alertmanager)
    if service.slack_app is not None:
        app.router.add_post("/slack/events", service.slack_events)
    app.router.add_get("/healthz", service.healthz)
    app.router.add_get("/metrics", service.metrics_text)
    if service.config.api_token:
        app.router.add_get("/api/jobs", service.api_jobs)
        app.router.add_get("/api/jobs/{job_id}", service.api_jobs)
    return app


def _answer_errors(metrics: Metrics) -> Any:
    @web.middleware
    async def middleware(request: web.Request, handler: Any) -> web.StreamResponse:
        route = request.match_info.route.resource.canonical if request.match_info.route.resource else "other"
        try:
            response: web.StreamResponse = await handler(request)
        except web.HTTPException as exc:
            response = _error(exc.status, exc.reason)
        except _BodyTooLarge as exc:
            response = _error(exc.status, str(exc))
        except Exception:  # logged with its traceback; the client gets one line
            log.exception("handler-crashed", path=request.path)
            response = _error(500, "internal error; see remediate serve's log")
        metrics.requests.labels(route, str(response.status)).inc()
        return response

    return middleware


#: Seconds a client gets to send its request's headers (and an idle kept-alive connection lives).
HEADER_TIMEOUT = 10.0
#: How many alerts the service cannot act on one webhook's message (and audit record) quotes.
_REPORTED = 5
#: The most report keys one webhook adds to the store (storm control: state grows by a bounded amount).
_REMEMBERED = 50
#: Seconds between two messages about alerts the service cannot act on.
REPORT_INTERVAL = 10.0


class _BodyTooLarge(Exception):
    """An untrusted body remediate will not read: too large, or compressed (status 400 or 415)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


async def _read_body(request: web.Request, limit: int) -> bytes:
    """The one place untrusted request bytes are read: the whole body, however many TCP segments it came
    in, at most ``limit`` bytes on the wire and after decoding. A compressed body is refused before a
    byte is inflated (Slack and Alertmanager send none; a small gzip can inflate a thousandfold)."""
    encoding = request.headers.get("Content-Encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):
        raise _BodyTooLarge(f"Content-Encoding {encoding[:20]!r} is not accepted; send the body uncompressed", 415)
    if request.content_length is not None and request.content_length > limit:
        raise _BodyTooLarge(f"the body is larger than {limit} bytes")
    chunks, size = [], 0
    while True:
        chunk = await request.content.read(limit + 1 - size)  # b"" at the body's end
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
        if size > limit:
            raise _BodyTooLarge(f"the body is larger than {limit} bytes")
    return b"".join(chunks)


def _bearer_ok(request: web.Request, token: str | None) -> bool:
    if not token:
        return False
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    # .encode(): compare_digest refuses non-ASCII str, and bytes of any value compare in constant time
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode("utf-8", "replace"), token.encode())


def _error(status: int, message: str, *, www_authenticate: bool = False) -> web.Response:
    headers = {"WWW-Authenticate": 'Bearer realm="remediate"'} if www_authenticate else None
    return web.json_response({"error": message}, status=status, headers=headers)


def untrusted_json(data: str | bytes) -> Any:
    """``json.loads`` of bytes from outside: nesting too deep for the parser is bad input (ValueError, a 400),
    not a RecursionError that would answer 500."""
    try:
        return json.loads(data)
    except RecursionError:
        raise ValueError("the JSON is nested too deeply") from None


def _alerts(payload: Any) -> list[dict[str, Any]]:
    if not isinstance(payload, dict):
        raise ValueError("the body must be a JSON object")
    if str(payload.get("version")) != "4":
        raise ValueError(f"version {payload.get('version')!r}, expected '4'")
    alerts = payload.get("alerts")
    if not isinstance(alerts, list) or not alerts:
        raise ValueError("'alerts' must be a non-empty list")
    for alert in alerts:
        if not isinstance(alert, dict) or not isinstance(alert.get("labels"), dict):
            raise ValueError("each alert needs a 'labels' object")
        for key in ("status", "fingerprint", "startsAt"):
            if not isinstance(alert.get(key), str) or not alert[key]:
                raise ValueError(f"each alert needs a string {key!r}")
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in alert["labels"].items()):
            raise ValueError("labels must map strings to strings")
    return alerts


def _slack_form(text: str) -> bool:
    """A slash command (``command=``) or an interaction (``payload=`` holding a JSON object)."""
    from urllib.parse import parse_qs

    try:
        form = parse_qs(text, strict_parsing=True, max_num_fields=100)
    except ValueError:
        return False
    if "command" in form:
        return True
    if "payload" in form:
        try:
            return isinstance(untrusted_json(form["payload"][0]), dict)
        except ValueError:
            return False
    return False


def serve(config: ServeConfig) -> None:
    """Run until SIGINT or SIGTERM: start the worker process (it resumes recorded jobs), then listen."""
    import signal

    try:
        ensure_descriptors(config.max_connections)
    except ValueError as exc:
        raise InputError(f"max_connections: {exc}", file=str(config.path)) from None
    service = Service(config)

    async def main() -> None:
        # auto_decompress=False: aiohttp would inflate a gzip body as it arrives, before any check (a 255 KB
        # body can inflate to 250 MB); bodies are read as sent, and a compressed one is refused (415).
        # keepalive_timeout: aiohttp arms it when a connection opens and closes an idle handler when it fires,
        # so a client that has not finished its headers by then (a slowloris) is dropped too: a header timeout.
        runner = web.AppRunner(
            make_app(service), access_log=None, handle_signals=False, auto_decompress=False,
            keepalive_timeout=HEADER_TIMEOUT,
        )  # fmt: skip
        await runner.setup()
        context = None
        if config.tls is not None:
            import ssl

            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.minimum_version = ssl.TLSVersion.TLSv1_2
            context.load_cert_chain(*config.tls)
        assert runner.server is not None
        cap = ConnectionCap(
            runner.server, config.max_connections, config.max_connections_per_client,
            refused=lambda reason: service.metrics.refused.labels(reason).inc(),
        )  # fmt: skip
        service.metrics.watch_connections(cap)
        loop = asyncio.get_running_loop()
        try:
            listener = await loop.create_server(
                cap, config.host, config.port, ssl=context, reuse_address=True, backlog=128,
                ssl_handshake_timeout=HEADER_TIMEOUT if context else None,
            )  # fmt: skip
        except OSError as exc:
            await runner.cleanup()
            raise RemediateError(f"cannot listen on {config.host}:{config.port}: {exc.strerror}") from None
        service.dispatcher.start()
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        log.info(
            "listening", url=f"{'https' if config.tls else 'http'}://{config.host}:{config.port}",
            stores=redact(config.stores),
            jobs="queue" if config.queue else f"{config.workers} local workers", slack=config.slack is not None,
            alertmanager=bool(config.alert_token),
        )  # fmt: skip
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), timeout=1.0)
            except TimeoutError:
                service.dispatcher.watch()  # a worker process that died is replaced; unqueued jobs queued
        log.info("stopping")
        listener.close()
        await runner.cleanup()

    try:
        asyncio.run(main())
    finally:
        service.dispatcher.stop()
        service.pool.shutdown(wait=True)
