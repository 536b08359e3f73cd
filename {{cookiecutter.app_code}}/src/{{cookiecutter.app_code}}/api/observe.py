"""The API's metrics and traces: what a request costs, what was submitted, where the trace goes.

- submissions are counted, and their trace context captured, where they commit:
  `ledger/submit.py` (`core/metrics.submitted`, `core/tracing.current_ids`).
- `RequestMetrics`: `{{ cookiecutter.app_code }}_http_request_duration_seconds{method,route,status}`,
  by route template (so /api/v1/jobs/{job_id} is one series, not one per job).
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
from typing import Any

from fastapi import FastAPI
from prometheus_client import Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.datastructures import MutableHeaders
from starlette.types import Message, Receive, Scope, Send

from ..core.metrics import DURATION_BUCKETS, metric, multiprocess
from ..core.tracing import attached, current_traceparent, setup_tracing, start_context
from ..db import Database, Role, get_many
from ..db.helpers import Conn
from ..db.pool import Pool
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
# How often each API process writes its pools' gauges (and at every scrape it answers).
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


@contextlib.asynccontextmanager
async def pool_watch(pools: dict[str, Database]) -> AsyncIterator[None]:
    """Keep the pool gauges current while the API runs (a scrape reaches one process only)."""

    async def loop() -> None:
        while True:
            pool_gauges(pools)
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
