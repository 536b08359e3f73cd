"""The worker's Prometheus metrics, served on WORKER_METRICS_PORT (`/metrics`).

- `<app>_job_runs_total{function,outcome}`: every run's end (succeeded, failed, retried, cancelled,
  put_back, interrupted);
- `<app>_job_duration_seconds{function}`: a run's time, start to end;
- `<app>_job_queue_wait_seconds`: from the submission (arq's enqueue time) to the start;
- `<app>_ledger_write_batches_total`, `<app>_ledger_writes_total`: the group commits of the
  ledger writer and the writes in them; `<app>_ledger_write_seconds`: a write's lag, from
  being queued to being committed.

Each worker process serves its own (one port per worker on one host; 0 serves none), so
Prometheus scrapes every worker and sums. The ledger package knows nothing of Prometheus:
ledger/tracking.py reports to the `JobMetrics` the worker puts in arq's ctx.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from prometheus_client import Counter, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import REGISTRY, Collector

from ..core.metrics import DURATION_BUCKETS, metric
from ..ledger.writer import LedgerWriter

log = logging.getLogger(__name__)


class JobMetrics:
    """What ledger/tracking.py reports about each run."""

    def __init__(self) -> None:
        self.runs = Counter(
            metric("job_runs"), "Job runs by how they ended", ["function", "outcome"]
        )
        self.duration = Histogram(
            metric("job_duration_seconds"),
            "Time a job's run took, start to end",
            ["function"],
            buckets=DURATION_BUCKETS,
        )
        self.queue_wait = Histogram(
            metric("job_queue_wait_seconds"),
            "Time from a job's submission to the start of its run",
            buckets=DURATION_BUCKETS,
        )
        self.ledger_write = Histogram(
            metric("ledger_write_seconds"),
            "Ledger write lag: from queued in the group commit to committed",
            buckets=DURATION_BUCKETS,
        )

    def ran(self, function: str, outcome: str, seconds: float) -> None:
        self.runs.labels(function, outcome).inc()
        self.duration.labels(function).observe(seconds)

    def waited(self, seconds: float) -> None:
        self.queue_wait.observe(max(0.0, seconds))


class LedgerBatches(Collector):
    """The writers' own counts of commits and writes, and their pools' connections (the
    worker's role), read at each scrape."""

    def __init__(self) -> None:
        self.writers: list[LedgerWriter] = []

    def collect(self) -> Iterable[Metric]:
        batches = CounterMetricFamily(
            metric("ledger_write_batches"), "Group commits of the worker's ledger writes"
        )
        batches.add_metric([], sum(w.batches for w in self.writers))
        writes = CounterMetricFamily(metric("ledger_writes"), "Ledger writes committed")
        writes.add_metric([], sum(w.writes for w in self.writers))
        pool = GaugeMetricFamily(
            metric("db_pool_connections"),
            "PostgreSQL connections of the worker's pool: in_use, idle, waiting (requests)",
            labels=["role", "pool", "state"],
        )
        stats = [w.pool.get_stats() for w in self.writers]
        size = sum(s.get("pool_size", 0) for s in stats)
        idle = sum(s.get("pool_available", 0) for s in stats)
        pool.add_metric(["data", "worker", "in_use"], size - idle)
        pool.add_metric(["data", "worker", "idle"], idle)
        pool.add_metric(
            ["data", "worker", "waiting"], sum(s.get("requests_waiting", 0) for s in stats)
        )
        return [batches, writes, pool]


_metrics: JobMetrics | None = None
_batches: LedgerBatches | None = None


def job_metrics(writer: LedgerWriter) -> JobMetrics:
    """This process's job metrics (made once), counting `writer`'s batches too."""
    global _metrics, _batches
    if _metrics is None or _batches is None:
        _metrics, _batches = JobMetrics(), LedgerBatches()
        REGISTRY.register(_batches)
    _batches.writers.append(writer)
    writer.observe = _metrics.ledger_write.observe
    return _metrics


def serve(host: str, port: int) -> Any:
    """Serve /metrics on `port` (a thread of prometheus-client's); None when 0 or taken."""
    if not port:
        return None
    try:
        server, _thread = start_http_server(port, addr=host)
    except OSError as exc:
        log.warning(
            "worker metrics not served: %s:%d: %s; give each worker on a host its own "
            "WORKER_METRICS_PORT (0: none)",
            host,
            port,
            exc,
        )
        return None
    log.info("worker metrics on http://%s:%d/metrics", host, port)
    return server
