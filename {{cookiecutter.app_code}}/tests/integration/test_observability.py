"""Metrics, trace ids and log lines, against the running stack.

The API's `/metrics` and the worker's (WORKER_METRICS_PORT) are scraped and parsed with
prometheus-client's own parser; the counts must move by what the test did. The Grafana
dashboard (deploy/grafana/) may query only series that are served. The OTLP export itself is
tested in tests/reliability/test_tracing.py (it needs an API and a worker of its own).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from {{ cookiecutter.app_code }}.core.config import Settings

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboard.json"
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"
JOBS = 21

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def samples(text: str) -> Samples:
    """Every sample of a scrape: (name, labels) -> value."""
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(scrape: Samples, name: str, **labels: str) -> float:
    """A sample's value; 0 when it is not there yet (a counter not incremented so far)."""
    return scrape.get((name, frozenset(labels.items())), 0.0)


@pytest.fixture
def api_metrics(api: httpx.Client, read_auth: dict[str, str]) -> Callable[[], Samples]:
    def scrape() -> Samples:
        response = api.get("/metrics", headers=read_auth)
        assert response.status_code == 200, response.text[:300]
        assert response.headers["content-type"].startswith("text/plain")
        return samples(response.text)

    return scrape


@pytest.fixture
def worker_metrics(settings: Settings) -> Callable[[], Samples]:
    url = f"http://127.0.0.1:{settings.worker_metrics_port}/metrics"

    def scrape() -> Samples:
        try:
            response = httpx.get(url, timeout=5)
        except httpx.TransportError as exc:
            pytest.fail(
                f"the worker's metrics do not answer at {url} ({exc}): is WORKER_METRICS_PORT "
                "in .env the worker's? (make status, make logs)"
            )
        assert response.status_code == 200, response.text[:300]
        return samples(response.text)

    return scrape


def test_metrics_need_a_token(api: httpx.Client, auth: dict[str, str]) -> None:
    assert api.get("/metrics").status_code == 401
    assert api.get("/metrics", headers={"Authorization": "Bearer nope"}).status_code == 401
    assert api.get("/metrics", headers=auth).status_code == 200  # API_TOKEN reads too


def test_21_jobs_move_the_api_and_worker_counters(
    api: httpx.Client,
    auth: dict[str, str],
    job_id: Callable[[str], str],
    wait_for_job: Callable[..., dict[str, Any]],
    api_metrics: Callable[[], Samples],
    worker_metrics: Callable[[], Samples],
) -> None:
    """21 hello jobs: submitted exactly 21, the ledger's succeeded at least 21 (the hello cron
    adds its own), the worker's runs and queue waits at least 21, the request histogram 21."""
    app = "{{ cookiecutter.app_code }}"
    api_before, worker_before = api_metrics(), worker_metrics()
    ids = [job_id(f"metrics{i:02d}") for i in range(JOBS)]
    for jid in ids:
        body = {"job_id": jid, "function": "hello", "params": {"name": "metrics"}}
        assert api.post("/api/v1/jobs", json=body, headers=auth).status_code == 202
    assert all(wait_for_job(jid)["status"] == "succeeded" for jid in ids)
    api_after, worker_after = api_metrics(), worker_metrics()

    def moved(before: Samples, after: Samples, name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert moved(api_before, api_after, f"{app}_jobs_submitted_total", function="hello") == JOBS
    assert moved(api_before, api_after, f"{app}_jobs", function="hello", status="succeeded") >= JOBS
    posts = {"method": "POST", "route": "/api/v1/jobs", "status": "202"}
    count = f"{app}_http_request_duration_seconds_count"
    assert moved(api_before, api_after, count, **posts) == JOBS
    assert value(api_after, f"{app}_queue_oldest_age_seconds", priority="default") >= 0
    assert value(api_after, f"{app}_db_pool_connections", role="app", pool="api", state="idle") >= 0

    runs = moved(
        worker_before, worker_after, f"{app}_job_runs_total", function="hello", outcome="succeeded"
    )
    assert runs >= JOBS
    assert (
        moved(worker_before, worker_after, f"{app}_job_duration_seconds_count", function="hello")
        == runs
    )
    assert moved(worker_before, worker_after, f"{app}_job_queue_wait_seconds_count") >= JOBS
    # Each job writes its start and its end: at least 42 writes, in fewer commits or as many.
    writes = moved(worker_before, worker_after, f"{app}_ledger_writes_total")
    batches = moved(worker_before, worker_after, f"{app}_ledger_write_batches_total")
    assert writes >= 2 * JOBS and 0 < batches <= writes
    assert moved(worker_before, worker_after, f"{app}_ledger_write_seconds_count") >= 2 * JOBS


def test_every_series_the_dashboard_queries_is_served(
    api_metrics: Callable[[], Samples], worker_metrics: Callable[[], Samples]
) -> None:
    """deploy/grafana/dashboard.json queries only names that a scrape of the API or the worker
    serves (after the jobs above, every counter has a sample)."""
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    used = {n for e in exprs for n in re.findall(r"\b{{ cookiecutter.app_code }}_[a-z0-9_]+", e)}
    served = {name for name, _ in api_metrics()} | {name for name, _ in worker_metrics()}
    assert len(used) >= 10, used
    assert used <= served, f"the dashboard queries series nobody serves: {sorted(used - served)}"


def test_the_job_record_carries_the_submitted_trace_id(
    api: httpx.Client,
    auth: dict[str, str],
    job_id: Callable[[str], str],
    wait_for_job: Callable[..., dict[str, Any]],
) -> None:
    jid = job_id("traced")
    body = {"job_id": jid, "function": "hello", "params": {"name": "traced"}}
    response = api.post("/api/v1/jobs", json=body, headers={**auth, "traceparent": PARENT})
    assert response.status_code == 202, response.text
    assert response.json()["trace_id"] == TRACE_ID
    version, trace_id, span_id, flags = response.headers["traceparent"].split("-")
    assert (version, trace_id, flags) == ("00", TRACE_ID, "01")
    assert span_id != "00f067aa0ba902b7", "the API's span is a child of the caller's"
    record = wait_for_job(jid)
    assert record["status"] == "succeeded"
    assert record["trace_id"] == TRACE_ID


def test_without_a_traceparent_the_api_starts_a_trace_and_says_which(
    api: httpx.Client, auth: dict[str, str], job_id: Callable[[str], str]
) -> None:
    jid = job_id("untraced")
    body = {"job_id": jid, "function": "hello", "params": {}}
    response = api.post("/api/v1/jobs", json=body, headers=auth)
    assert response.status_code == 202
    match = re.fullmatch(r"00-([0-9a-f]{32})-([0-9a-f]{16})-0[01]", response.headers["traceparent"])
    assert match, response.headers["traceparent"]
    assert match[1] != "0" * 32
    assert response.json()["trace_id"] == match[1]
    other = api.get("/health").headers["traceparent"].split("-")[1]
    assert other != match[1], "each request without a traceparent starts its own trace"
