"""Redis and PostgreSQL go away and come back: clear 503s meanwhile, nothing half-written,
nothing lost, and the API and the worker recover by themselves (same processes throughout)."""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Callable
from types import ModuleType
from typing import Any

import httpx
import pytest
import redis

from {{ cookiecutter.app_code }}.core.config import Settings

from .conftest import PACKAGE, Ledger, Process, free_port

pytestmark = pytest.mark.reliability


def post(api: httpx.Client, auth: dict[str, str], jid: str, **params: Any) -> httpx.Response:
    body = {"job_id": jid, "function": "hello", "params": params}
    return api.post("/api/v1/jobs", json=body, headers=auth)


def timed(call: Callable[[], httpx.Response]) -> tuple[httpx.Response, float]:
    start = time.monotonic()
    response = call()
    return response, time.monotonic() - start


def accepted_within(
    api: httpx.Client, auth: dict[str, str], make_id: Callable[[str], str], within: float
) -> tuple[list[str], list[int]]:
    """Submit until one is accepted; returns the accepted id(s) and every status seen."""
    deadline = time.monotonic() + within
    seen: list[int] = []
    while time.monotonic() < deadline:
        jid = make_id("back")
        response = post(api, auth, jid, name="back")
        seen.append(response.status_code)
        assert response.status_code != 500, response.text
        if response.status_code == 202:
            return [jid], seen
        time.sleep(0.1)
    pytest.fail(f"no submission accepted within {within:.0f} s of the restart: {seen}")


def start_api(spawn: Callable[..., Process]) -> tuple[Process, httpx.Client]:
    port = free_port()
    argv = [sys.executable, "-m", "uvicorn", f"{PACKAGE}.api.main:app", "--port", str(port)]
    process = spawn("api", argv)
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if not process.alive():
            pytest.fail(f"an API started while Redis was down exited; see {process.log}")
        try:
            if client.get("/health").status_code == 200:
                return process, client
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    pytest.fail(f"an API started while Redis was down did not answer; see {process.log}")


def test_redis_down_then_back(
    stack: ModuleType,
    settings: Settings,
    api: httpx.Client,
    auth: dict[str, str],
    job_id: Callable[[str], str],
    ledger: Ledger,
    redis_db: redis.Redis,
    spawn: Callable[..., Process],
) -> None:
    worker, api_pid = stack.read_pid("worker"), stack.read_pid("api")
    # More jobs than the worker runs at once: some are running, the rest wait in the queue.
    ids = [job_id(f"aof{i}") for i in range(3 * settings.worker_max_jobs)]
    for jid in ids:
        assert post(api, auth, jid, name="aof", sleep_ms=1000).status_code == 202
    waiting = [j for j in ids if not redis_db.exists(f"arq:in-progress:{j}")]
    assert waiting, "every job had started: nothing was waiting in the queue"

    stack.stop_service("redis")
    down_at = time.monotonic()
    assert not stack.redis_answers(settings)

    # A submission: 503 at once, saying why, and no ledger row behind it.
    refused = job_id("refused")
    response, took = timed(lambda: post(api, auth, refused))
    assert response.status_code == 503, response.text
    assert took < 2.0, f"the 503 took {took:.2f} s"
    assert "Redis" in response.json()["detail"]
    assert response.headers["retry-after"]
    assert ledger.job(refused) is None, "a refused submission left a ledger row"

    # Readiness says what is missing; liveness and reads from the ledger carry on.
    readiness, took = timed(lambda: api.get("/api/v1/ready"))
    assert readiness.status_code == 503 and took < 2.0
    assert readiness.json()["components"]["redis"].startswith("unavailable")
    assert readiness.json()["components"]["postgres"] == "ok"
    assert api.get("/health").status_code == 200
    assert api.get(f"/api/v1/jobs/{ids[0]}").status_code == 200

    # An API that starts now starts anyway, and says why it is not ready.
    late_api, late = start_api(spawn)
    assert late.get("/api/v1/ready").json()["components"]["redis"].startswith("unavailable")
    assert post(late, auth, job_id("late-refused")).status_code == 503

    time.sleep(max(0.0, 4.0 - (time.monotonic() - down_at)))  # a real outage, not a blip
    stack.start_redis(settings)

    # Both APIs and the worker reconnect by themselves.
    back, statuses = accepted_within(api, auth, job_id, within=5)
    assert statuses == [202], f"the first submissions after Redis came back: {statuses}"
    late_back = job_id("late-back")
    assert post(late, auth, late_back).status_code == 202
    late.close()

    # Every job queued before the stop (append-only file) and after it runs, once.
    everything = ids + back + [late_back]
    rows = ledger.wait_for(everything, within=60)
    assert all(r["status"] == "succeeded" for r in rows)
    assert ledger.count("hello", everything) == len(everything)
    assert stack.read_pid("worker") == worker, "the worker was restarted"
    assert stack.read_pid("api") == api_pid, "the API was restarted"
    assert late_api.alive()


def test_redis_frozen_answers_503_within_2_s(
    stack: ModuleType,
    api: httpx.Client,
    auth: dict[str, str],
    job_id: Callable[[str], str],
    ledger: Ledger,
    wait_for_job: Callable[..., dict[str, Any]],
) -> None:
    """A hung Redis (SIGSTOP: connections open, no answers) must not hang the API."""
    pid = stack.read_pid("redis")
    assert pid
    refused = job_id("frozen")
    os.kill(pid, signal.SIGSTOP)
    try:
        response, took = timed(lambda: post(api, auth, refused))
        readiness, took_ready = timed(lambda: api.get("/api/v1/ready"))
    finally:
        os.kill(pid, signal.SIGCONT)
    assert response.status_code == 503, response.text
    assert took < 2.0, f"the 503 took {took:.2f} s"
    assert "Redis" in response.json()["detail"]
    assert readiness.status_code == 503 and took_ready < 3.0
    assert ledger.job(refused) is None

    after = job_id("thawed")
    assert post(api, auth, after).status_code == 202
    assert wait_for_job(after)["status"] == "succeeded"


def test_postgres_down_then_back(
    stack: ModuleType,
    settings: Settings,
    api: httpx.Client,
    auth: dict[str, str],
    job_id: Callable[[str], str],
    ledger: Ledger,
    redis_db: redis.Redis,
) -> None:
    worker, api_pid = stack.read_pid("worker"), stack.read_pid("api")
    # Running when PostgreSQL stops: their writes fail, and they retry with backoff.
    ids = [job_id(f"pg{i}") for i in range(5)]
    for jid in ids:
        assert post(api, auth, jid, name="pg", sleep_ms=1000).status_code == 202
    time.sleep(0.3)

    stack.stop_service("postgres")
    down_at = time.monotonic()
    assert not stack.pg_answers(settings)

    refused = job_id("refused")
    response, took = timed(lambda: post(api, auth, refused))
    assert response.status_code == 503, response.text
    assert took < settings.db_connect_timeout + 1.0, f"the 503 took {took:.2f} s"
    assert "PostgreSQL" in response.json()["detail"]
    assert response.headers["retry-after"]
    assert redis_db.exists(f"arq:job:{refused}") == 0, "a refused submission reached Redis"

    readiness = api.get("/api/v1/ready")
    assert readiness.status_code == 503
    assert readiness.json()["components"]["postgres"].startswith("unavailable")
    assert readiness.json()["components"]["redis"] == "ok"
    assert api.get("/health").status_code == 200
    read = api.get(f"/api/v1/jobs/{ids[0]}")
    assert read.status_code == 503 and "PostgreSQL" in read.json()["detail"]

    time.sleep(max(0.0, 4.0 - (time.monotonic() - down_at)))  # the jobs hit the outage
    stack.start_postgres(settings)

    # The first requests after the restart: never a 500, and the pool is back within seconds.
    back, statuses = accepted_within(api, auth, job_id, within=5)
    assert statuses[0] in (202, 503), statuses

    rows = ledger.wait_for(ids + back, within=60)
    assert all(r["status"] == "succeeded" for r in rows)
    assert ledger.count("hello", ids + back) == len(ids + back)
    retried = [r["tries"] for r in rows if r["job_id"] in ids]
    assert max(retried) >= 2, f"no job was retried: tries {retried}"
    log = (stack.LOGS / "worker.log").read_text(errors="replace")
    assert "PostgreSQL unavailable" in log and "retrying" in log
    assert stack.read_pid("worker") == worker, "the worker was restarted"
    assert stack.read_pid("api") == api_pid, "the API was restarted"
    assert ledger.job(refused) is None
