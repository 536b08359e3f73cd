"""The API's metrics and traces: what a request costs, what was submitted, where the trace goes.

- submissions are counted, and their trace context captured, where they commit:
  `ledger/submit.py` (`core/metrics.submitted`, `core/tracing.current_ids`).
- `RequestMetrics`: `{{ cookiecutter.app_code }}_http_request_duration_seconds{method,route,status}`,
  by route template (so /api/v1/jobs/{job_id} is one series, not one per job).
- `live_gauges`: what this process holds now, written every 2 s (`watch`) and at each scrape
  it answers: its pools' connections, and the jobs its hand-over to Redis holds
  (ledger/submit.py's `HandOver` keeps the counts; a job that goes through costs no metric
  call).
- `TraceResponse`: every answer carries a `traceparent` header; without the SDK (no
  OTEL_EXPORTER_OTLP_ENDPOINT) it continues the request's `traceparent` or starts a trace
  itself, so a job's trace id is known either way.
- `install`: the tracing (core/tracing.py) and FastAPI's instrumentation when exporting.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI
from prometheus_client import Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.datastructures import MutableHeaders
from starlette.types import Message, Receive, Scope, Send

from ..core.metrics import DURATION_BUCKETS, metric, multiprocess
from ..core.tracing import attached, current_traceparent, setup_tracing, start_context
from ..db import Database, Role, get_many
from ..db.helpers import Conn
from ..db.pool import Pool
from ..ledger.submit import LEFT_REASONS, HandOver
from .middleware import HttpMiddleware

log = logging.getLogger(__name__)

REQUEST_SECONDS = Histogram(
    metric("http_request_duration_seconds"),
    "Time the API took to answer, by route template",
    ["method", "route", "status"],
    buckets=DURATION_BUCKETS,
)
POOL_CONNECTIONS = Gauge(
    metric("db_pool_connections"),
    "PostgreSQL connections of the API's pools: in_use, idle, waiting (requests)",
    ["role", "pool", "state"],
    multiprocess_mode="livesum",
)
# The hand-over to Redis (ledger/submit.py). Gauges: a sum over the live processes (the jobs
# of a dead one are the dispatcher's), the oldest the oldest of any; counters: every process's.
HAND_OVER_WAITING = Gauge(
    metric("hand_over_waiting"),
    "Jobs accepted (committed) that the API has not handed to Redis yet",
    multiprocess_mode="livesum",
)
HAND_OVER_OLDEST = Gauge(
    metric("hand_over_oldest_age_seconds"),
    "Seconds the oldest job waiting for the hand-over to Redis has waited (0 when none waits)",
    multiprocess_mode="livemax",
)
HAND_OVER_FAILED = Counter(
    metric("hand_over_failed_tries"), "Hand-overs to Redis that failed (each tried again)"
)
HAND_OVER_LEFT = Counter(
    metric("hand_over_left"),
    "Accepted jobs the API left to the dispatcher: keep_max (more waited while Redis failed), "
    "error, shutdown",
    ["reason"],
)
for _reason in LEFT_REASONS:  # every series from the start, at 0: rate() sees the first one
    HAND_OVER_LEFT.labels(_reason)
# How often each API process writes its live gauges (and at every scrape it answers).
POOL_EVERY_S = 2.0
UNMATCHED = "<unmatched>"


class RequestMetrics(HttpMiddleware):
    """Times every HTTP request; the label is the route's template, never the raw path."""

    async def http(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        status = 500

        async def sent(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sent)
        finally:
            route = scope.get("route")
            template = getattr(route, "path_format", None) or getattr(route, "path", UNMATCHED)
            REQUEST_SECONDS.labels(scope["method"], template, str(status)).observe(
                time.perf_counter() - started
            )


class TraceResponse(HttpMiddleware):
    """Adds `traceparent` to every answer: the id of the request's span (the SDK's, or one this
    starts when no SDK is installed), so a client can find its request and its job."""

    async def http(self, scope: Scope, receive: Receive, send: Send) -> None:
        context = None
        if current_traceparent() is None:  # no SDK span: continue the caller's trace, or start one
            headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
            context = start_context(headers)

        async def with_header(message: Message) -> None:
            if message["type"] == "http.response.start":
                value = current_traceparent()
                if value:
                    MutableHeaders(scope=message)["traceparent"] = value
            await send(message)

        if context is None:
            await self.app(scope, receive, with_header)
            return
        with attached(context):
            await self.app(scope, receive, with_header)


def install(app: FastAPI) -> None:
    """Metrics and trace headers on every request; FastAPI's spans when exporting."""
    app.add_middleware(TraceResponse)
    app.add_middleware(RequestMetrics)
    if setup_tracing("api"):
        from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

        # Probes and scrapes are no traces (patterns are searched in the whole URL), and the
        # ASGI receive/send of a request are no spans of their own: two spans fewer a request.
        FastAPIInstrumentor.instrument_app(
            app, excluded_urls="/health$,/metrics$", exclude_spans=["receive", "send"]
        )
    workers = int(os.environ.get("WEB_CONCURRENCY") or 1)
    if workers > 1 and not multiprocess():
        log.warning(
            "WEB_CONCURRENCY=%d without PROMETHEUS_MULTIPROC_DIR: /metrics shows one process "
            "at a time; set it to an empty folder the API may write",
            workers,
        )


def pool_gauges(pools: dict[str, Database]) -> None:
    """Write the pools' connection counts to the gauges (this process's share)."""
    for name, database in pools.items():
        stats = database[Role.APP].get_stats()
        size, idle = stats.get("pool_size", 0), stats.get("pool_available", 0)
        POOL_CONNECTIONS.labels("app", name, "in_use").set(size - idle)
        POOL_CONNECTIONS.labels("app", name, "idle").set(idle)
        POOL_CONNECTIONS.labels("app", name, "waiting").set(stats.get("requests_waiting", 0))


@dataclass
class _Counted:
    """What of the hand-over's running totals this process's counters have had so far."""

    failed: int = 0
    left: dict[str, int] = field(default_factory=lambda: dict.fromkeys(LEFT_REASONS, 0))


_counted = _Counted()  # one HandOver a process (api/main.py's)


def hand_over_metrics(hand_over: HandOver) -> None:
    """Write the hand-over's gauges, and add to its counters what it counted since."""
    HAND_OVER_WAITING.set(hand_over.waiting)
    HAND_OVER_OLDEST.set(hand_over.oldest_age())
    if hand_over.failed_total > _counted.failed:
        HAND_OVER_FAILED.inc(hand_over.failed_total - _counted.failed)
        _counted.failed = hand_over.failed_total
    for reason, n in hand_over.left_total.items():
        if n > _counted.left[reason]:
            HAND_OVER_LEFT.labels(reason).inc(n - _counted.left[reason])
            _counted.left[reason] = n


def live_gauges(state: Any) -> None:
    """What this process holds now: its pools' connections, its hand-over's jobs."""
    pool_gauges(scrape_state(state))
    hand_over_metrics(state.hand_over)


@contextlib.asynccontextmanager
async def watch(state: Any) -> AsyncIterator[None]:
    """Keep the live gauges current while the API runs (a scrape reaches one process only)."""

    async def loop() -> None:
        while True:
            live_gauges(state)
            await asyncio.sleep(POOL_EVERY_S)

    task = asyncio.create_task(loop())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


class Snapshot(Collector):
    """Gauges read from the ledger for one scrape."""

    def __init__(self, families: Iterable[Metric]) -> None:
        self.families = list(families)

    def collect(self) -> Iterable[Metric]:
        return self.families


async def ledger_gauges(pool: Pool | Conn) -> Snapshot:
    """`<app>_jobs{function,status}` from the counters the status page reads (V4's job_count),
    and `<app>_queue_oldest_age_seconds{priority}` from the unfinished-rows index."""
    jobs = GaugeMetricFamily(
        metric("jobs"), "Jobs in the ledger by function and status", labels=["function", "status"]
    )
    for row in await get_many(pool, "status.counts"):
        jobs.add_metric([row["function"], row["status"]], float(row["n"]))
    oldest = GaugeMetricFamily(
        metric("queue_oldest_age_seconds"),
        "Age of the oldest queued job (0 when none is queued)",
        labels=["priority"],
    )
    for row in await get_many(pool, "metrics.queue_oldest"):
        oldest.add_metric([row["priority"]], float(row["age"] or 0))
    return Snapshot([jobs, oldest])


def scrape_state(state: Any) -> dict[str, Database]:
    """The API's pools by name, for the pool gauges."""
    return {"api": state.database, "page": state.page_database}
