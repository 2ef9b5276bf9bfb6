"""The service's Prometheus metrics.

Request counters, refused connections, and the ledger's families (read at most once per SCRAPE_TTL).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from remediate.serve.jobs import Stores
from remediate.serve.listen import ConnectionCap

__all__ = ["SCRAPE_TTL", "Metrics"]


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
