"""Prometheus metrics, shared by the API and the worker: names, and one scrape's text.

Every name starts with the app code (`metric("jobs")` is `{{ cookiecutter.app_code }}_jobs`).
Counters and histograms live in prometheus-client's objects; with several processes behind
one port (uvicorn's WEB_CONCURRENCY > 1) they are kept in prometheus-client's multiprocess
files, in the folder `PROMETHEUS_MULTIPROC_DIR` names, and a scrape sums them over the
processes. Values read at scrape time (the ledger's counts, the pools) come from collectors
added to the scrape (`exposition`).
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, generate_latest
from prometheus_client.registry import REGISTRY, Collector

from .config import APP_CODE

MULTIPROC_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"
CONTENT_TYPE = CONTENT_TYPE_LATEST
# Seconds: from a few milliseconds (a submission, a no-op job) to the job timeout's order.
DURATION_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300,
)  # fmt: skip


def metric(name: str) -> str:
    """The full name of one of the service's metrics."""
    return f"{APP_CODE}_{name}"


_submitted: Counter | None = None


def submitted(function: str, n: int = 1) -> None:
    """Count `n` accepted submissions of `function`: `<app>_jobs_submitted_total{function}`.

    The one place a submission is counted (ledger/submit.py calls it once the row commits);
    the counter is made at the first submission, so only the API serves it."""
    global _submitted
    if _submitted is None:
        _submitted = Counter(
            metric("jobs_submitted"), "Jobs accepted (committed to the ledger)", ["function"]
        )
    _submitted.labels(function).inc(n)


def multiprocess() -> bool:
    """Whether this process writes its metrics to prometheus-client's multiprocess files."""
    return bool(os.environ.get(MULTIPROC_VARIABLE))


def exposition(extra: Iterable[Collector] = ()) -> bytes:
    """One scrape: this process's metrics (or every process's, in multiprocess mode), and what
    the `extra` collectors read now."""
    if multiprocess():
        from prometheus_client import multiprocess as mp

        registry = CollectorRegistry()
        mp.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    else:
        registry = CollectorRegistry()
        registry.register(_Default())
    for collector in extra:
        registry.register(collector)
    return generate_latest(registry)


class _Default(Collector):
    """The process's default registry, as one collector of a scrape's registry."""

    def collect(self):  # type: ignore[no-untyped-def]
        return REGISTRY.collect()


def process_dead(pid: int) -> None:
    """Forget a stopped process's live gauges (multiprocess mode)."""
    if multiprocess():
        from prometheus_client import multiprocess as mp

        mp.mark_process_dead(pid)  # type: ignore[no-untyped-call]
