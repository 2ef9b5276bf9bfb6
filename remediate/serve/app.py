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
runs the jobs is the Dispatcher (remediate.serve.service): the worker process beside this one, or,
with ``queue:``, `remediate worker --config` processes anywhere (remediate.serve.queued).
"""

from __future__ import annotations

import asyncio

import structlog
from aiohttp import web

from remediate.errors import InputError, RemediateError
from remediate.serve.config import ServeConfig
from remediate.serve.gate import (
    HEADER_TIMEOUT,
    answer_errors,
)
from remediate.serve.listen import ConnectionCap, ensure_descriptors
from remediate.serve.service import Service
from remediate.stores.db import redact

__all__ = ["make_app", "serve"]

log = structlog.get_logger("remediate.serve")


def make_app(service: Service) -> web.Application:
    if service.config.slack is not None and service.slack_app is None:
        from remediate.serve.slack import build_app

        service.slack_app = build_app(service)
    app = web.Application(client_max_size=service.config.max_body, middlewares=[answer_errors(service.metrics)])
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
        service.probes.shutdown(wait=True)
