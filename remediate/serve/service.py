"""Everything `remediate serve` holds and does per request.

Config, inventory, stores, dispatcher, storm control, and the handlers for Alertmanager, Slack and
the API. The routes that lead here are remediate.serve.app's.
"""

from __future__ import annotations

import asyncio
import difflib
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

import structlog
from aiohttp import web

from remediate.engine.playbook import load_playbooks
from remediate.errors import RemediateError
from remediate.hosts.inventory import Host, load_inventory
from remediate.serve.commands import USAGE, Command, parse_command
from remediate.serve.config import ServeConfig
from remediate.serve.dispatcher import WorkerProcess
from remediate.serve.gate import (
    JSON_TYPE,
    REPLAY_WINDOW,
    alerts_of,
    answer_error,
    bearer_ok,
    is_slack_form,
    read_body,
    untrusted_json,
)
from remediate.serve.jobs import Stores
from remediate.serve.metrics import Metrics
from remediate.serve.notify import Notifier, mrkdwn
from remediate.stores.db import errors
from remediate.stores.ledger import AlertJob

__all__ = ["REPORT_INTERVAL", "Dispatcher", "Service", "log"]

log = structlog.get_logger("remediate.serve")


class Dispatcher(Protocol):
    """Who runs the ledger's jobs. Two engines: the embedded worker process (remediate.serve.dispatcher,
    the default), or Procrastinate on PostgreSQL (remediate.serve.queued.ServiceQueue, with ``queue:``)."""

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
            from remediate.serve.queued import ServiceQueue

            self.dispatcher = ServiceQueue(config.queue, self.inventory)
        else:
            self.dispatcher = WorkerProcess(str(config.path), config.workers)
        self.pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="remediate-store")
        self.probes = ThreadPoolExecutor(max_workers=1, thread_name_prefix="remediate-healthz")
        self.slack_app: Any = None  # the Bolt app, set by remediate.serve.app.make_app when slack: is configured
        self._tasks: set[asyncio.Task[Any]] = set()
        self._report_pending: list[str] = []
        self._report_last = -REPORT_INTERVAL
        self._report_timer: asyncio.TimerHandle | None = None
        if config.slack is not None:
            from slack_sdk.signature import SignatureVerifier

            self.verifier = SignatureVerifier(config.slack.signing_secret)

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
        """Record every job durably (deduplicated, storms coalesced): the webhook's alerts in one ledger
        transaction, then its audit records in one; the reports that are new (unknown hosts, causes).
        One audit record per job the webhook created, and one per job its other alerts joined."""
        ledger, audit, reports = self.stores.ledger, self.stores.audit, []
        remembered = 0
        asks = [item for item in decided if "host" in item]
        became = ledger.submit_alerts([
            AlertJob(item["host"], item["cause"], item["mode"], item["fingerprint"], item["dedupe"],
                     {"reply": {}, "alertname": item["alertname"]})
            for item in asks
        ])  # fmt: skip
        entries: list[tuple[str, str, dict[str, Any] | None]] = []
        created: list[tuple[str, str, str]] = []
        joined: dict[str, dict[str, Any]] = {}  # job id -> what this webhook's alerts added to it
        for item, (job, what) in zip(asks, became, strict=True):
            fields = {"source": "alertmanager", "job": job.id, "host": job.host, "cause": job.cause,
                      "mode": item["mode"], "alertname": item["alertname"]}  # fmt: skip
            if what == "created":
                created.append((job.id, job.host, item["dedupe"]))
                item.update(job=job.id, result="recorded")
                entries.append(("trigger", item["fingerprint"], fields))
                continue
            said = "joined job " if what == "joined" else "duplicate: already job "
            item.update(job=job.id, result=said + job.id)
            batch = joined.setdefault(job.id, {**fields, "joined": 0, "duplicates": 0, "fingerprints": []})
            batch["joined" if what == "joined" else "duplicates"] += 1
            if len(batch["fingerprints"]) < _REPORTED:
                batch["fingerprints"].append(item["fingerprint"])
        for item in (item for item in decided if "report" in item):
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
        # storm coalescing: one record per job and webhook, with the count
        entries += [("coalesced", "alertmanager", batch) for batch in joined.values()]
        if reports:  # one audit record per webhook, however many alerts it reports
            entries.append(("refused", "alertmanager", {"source": "alertmanager", "count": len(reports),
                                                         "reasons": reports[:_REPORTED]}))  # fmt: skip
        if entries:
            audit.extend(entries)
        for job_id, host, dedupe in created:  # recorded and audited: now the workers may have them
            self.dispatcher.submitted(job_id, host, dedupe)
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
        if not bearer_ok(request, self.config.alert_token):
            return answer_error(401, "a valid bearer token is required", www_authenticate=True)
        body = await read_body(request, self.config.max_body)
        try:
            payload = untrusted_json(body)
            alerts = alerts_of(payload)
        except (ValueError, TypeError, KeyError) as exc:
            return answer_error(400, f"not an Alertmanager webhook (version 4) payload: {exc}")
        decided = self.alert_jobs(alerts)
        try:
            reports = await self.store(self.record_alerts, decided)
        except errors() as exc:
            log.error("record-failed", error=str(exc))
            return answer_error(503, "cannot record the jobs now; retry")
        if reports:
            self.report(reports)
        return web.json_response({"alerts": [{k: v for k, v in d.items() if k != "dedupe"} for d in decided]})

    # -- Slack ---------------------------------------------------------------------

    async def slack_events(self, request: web.Request) -> web.Response:
        from slack_bolt.request.async_request import AsyncBoltRequest

        assert self.config.slack is not None
        raw = await read_body(request, self.config.max_body)
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            return answer_error(400, "the body is not UTF-8")
        stamp = request.headers.get("X-Slack-Request-Timestamp", "")
        signature = request.headers.get("X-Slack-Signature", "")
        if not stamp or not signature:
            return answer_error(401, "X-Slack-Request-Timestamp and X-Slack-Signature are required")
        if not signature.isascii() or not signature.isprintable():
            return answer_error(401, "invalid signature")
        # ASCII digits only: "²".isdigit() is True and int("²") raises
        if not (stamp.isascii() and stamp.isdigit()) or abs(time.time() - int(stamp)) > REPLAY_WINDOW:
            return answer_error(401, "the request timestamp is not within 5 minutes of now")
        if not self.verifier.is_valid(body=text, timestamp=stamp, signature=signature):
            return answer_error(401, "invalid signature")
        try:
            first = await self.store(lambda: self.stores.seen.first("slack:" + signature))
        except errors():
            return answer_error(503, "cannot record the request now")
        if not first:
            # One audit record per replayed request, not per replay: a captured request sent again 400 times in
            # its 300 s window is one record (the 401s are counted in remediate_requests_total).
            def audit_once() -> None:
                if self.stores.seen.first("slack:replayed:" + signature):
                    self.audit("replay", "slack", {"signature": signature[:16]})

            await self.store(audit_once)
            return answer_error(401, "this request was already received (replayed); nothing was started")
        if not is_slack_form(text):
            return answer_error(400, "not a slash command or an interaction payload")
        headers = {k.lower(): [v] for k, v in request.headers.items()}
        try:
            answer = await self.slack_app.async_dispatch(
                AsyncBoltRequest(body=text, query=request.query_string, headers=headers)  # type: ignore[arg-type]
            )
        except Exception as exc:  # a payload Bolt cannot read is bad input, not our crash
            log.warning("slack-dispatch-failed", error=str(exc))
            return answer_error(400, "malformed Slack request")
        if answer.status == 404:
            return answer_error(400, "not a command or button remediate handles")
        return web.Response(
            status=answer.status,
            body=answer.body,
            content_type=JSON_TYPE if answer.body.startswith("{") else "text/plain",
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
        # Not on the store pool: a probe must not wait behind a storm's writes (it reads nothing they write;
        # the local dispatcher answers from its process, the queue's from its own connection).
        try:
            health = await asyncio.get_running_loop().run_in_executor(self.probes, self.dispatcher.health)
        except errors() as exc:
            health = {"ok": False, "workers": 0, "error": str(exc).splitlines()[0] if str(exc) else "unavailable"}
        return web.json_response(health, status=200 if health["ok"] else 503)

    async def metrics_text(self, request: web.Request) -> web.Response:
        return web.Response(body=await self.store(self.metrics.text), content_type="text/plain", charset="utf-8")

    async def api_jobs(self, request: web.Request) -> web.Response:
        if not bearer_ok(request, self.config.api_token):
            return answer_error(401, "a valid bearer token is required", www_authenticate=True)
        job_id = request.match_info.get("job_id")
        if job_id is None:
            try:
                limit = min(1000, max(1, int(request.query.get("limit", "100"))))
            except ValueError:
                return answer_error(400, "limit must be a number")
            listed = await self.store(self.jobs_json, None, limit)
            return web.json_response({"jobs": listed})
        try:
            found = await self.store(self.jobs_json, job_id, 1)
        except KeyError:
            return answer_error(404, f"no job {job_id[:40]!r}")
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


#: How many alerts the service cannot act on one webhook's message (and audit record) quotes.
_REPORTED = 5


#: The most report keys one webhook adds to the store (storm control: state grows by a bounded amount).
_REMEMBERED = 50


#: Seconds between two messages about alerts the service cannot act on.
REPORT_INTERVAL = 10.0
