"""A retry keeps its job's priority (and its run_at), one job or "retry all failed" (#14).

Two views: the hand-over's own (a HandOver on the real Redis with a queue name no worker
reads, so the test sees where each retried job lands: `<queue>:high`, arq's queue, or
`<queue>:low`, and at what score), and the whole stack's (a `high` job failed and retried
through the API runs again at once and keeps `high`).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from arq.connections import ArqRedis
from psycopg.types.json import Jsonb

from {{ cookiecutter.app_code }}.core.config import Settings
from {{ cookiecutter.app_code }}.db import Database, Role
from {{ cookiecutter.app_code }}.ledger.control import retry_failed, retry_job
from {{ cookiecutter.app_code }}.ledger.submit import HandOver
from {{ cookiecutter.app_code }}.queue.names import queue_for

from .conftest import forget

pytestmark = pytest.mark.integration

HAND_OVER_WAIT_S = 5.0
INSERT_FAILED = (
    "INSERT INTO job (job_id, function, params, status, source, tries, enqueued_at, "
    "started_at, finished_at, error, priority, run_at) "
    "VALUES (%s, 'noop', %s, 'failed', 'api', 1, now() - interval '1 minute', "
    "now() - interval '50 s', now() - interval '49 s', 'boom', %s, %s)"
)


@pytest.fixture
async def side_queue(settings: Settings, arq_redis: ArqRedis) -> AsyncIterator[HandOver]:
    """A HandOver like the API's, on a queue name no worker reads; its queues deleted after."""
    # The queue's name comes from app_code (Settings.queue_name): another one, no worker's.
    mine = settings.model_copy(update={"app_code": f"test-retry-{uuid.uuid4().hex[:8]}"})
    name = mine.queue_name
    hand_over = HandOver(arq_redis, mine)
    try:
        yield hand_over
    finally:
        await hand_over.aclose()
        await arq_redis.delete(*(queue_for(name, p) for p in ("high", "default", "low")))


async def failed_rows(database: Database, rows: list[tuple[str, str, datetime | None]]) -> None:
    """Failed ledger rows (job id, priority, run_at), as a worker leaves them."""
    async with database[Role.ADMIN].connection() as conn:
        for job_id, priority, run_at in rows:
            await conn.execute(INSERT_FAILED, [job_id, Jsonb({}), priority, run_at])


async def placed(arq: ArqRedis, queue_name: str, job_ids: list[str]) -> dict[str, tuple[str, int]]:
    """Where each job waits, (priority, score in ms), once the hand-over has put them all."""
    deadline = time.monotonic() + HAND_OVER_WAIT_S
    while True:
        found: dict[str, tuple[str, int]] = {}
        for priority in ("high", "default", "low"):
            for job_id in job_ids:
                score = await arq.zscore(queue_for(queue_name, priority), job_id)
                if score is not None:
                    found[job_id] = (priority, int(score))
        if len(found) == len(job_ids) or time.monotonic() > deadline:
            return found
        await asyncio.sleep(0.05)


async def ledger(database: Database, job_ids: list[str]) -> dict[str, dict[str, Any]]:
    async with database[Role.ADMIN].connection() as conn:
        cur = await conn.execute(
            "SELECT job_id, status, priority, run_at FROM job WHERE job_id = ANY(%s)", [job_ids]
        )
        rows = await cur.fetchall()
    return {r["job_id"]: r for r in rows}


@pytest.mark.anyio
async def test_retry_hands_a_job_over_at_its_priority_and_run_at(
    database: Database, arq_redis: ArqRedis, side_queue: HandOver, job_id: Callable[[str], str]
) -> None:
    now = datetime.now(UTC)
    later = now + timedelta(hours=1)
    rows = [
        (job_id("high-past"), "high", now - timedelta(hours=1)),  # its run_at passed: at once
        (job_id("low"), "low", None),
        (job_id("default"), "default", None),
        (job_id("high-later"), "high", later),  # cancelled or failed before its time
    ]
    ids = [r[0] for r in rows]
    await failed_rows(database, rows)
    try:
        for jid in ids:
            record = await retry_job(database[Role.APP], side_queue, jid)
            assert record["status"] == "queued", record
        where = await placed(arq_redis, side_queue.settings.queue_name, ids)
        after = time.time() * 1000
        assert {jid: where[jid][0] for jid in ids} == {jid: p for jid, p, _ in rows}, where
        for jid in ids[:3]:  # at once: scored at the hand-over, not at a past run_at
            assert after - 10_000 < where[jid][1] <= after, (jid, where[jid], after)
        assert where[ids[3]][1] == int(later.timestamp() * 1000), "not before its run_at"
        kept = await ledger(database, ids)
        assert {jid: kept[jid]["priority"] for jid in ids} == {jid: p for jid, p, _ in rows}
        assert all(kept[jid]["status"] == "queued" for jid in ids), kept
    finally:
        await forget(database, arq_redis, ids)


@pytest.mark.anyio
async def test_retry_all_failed_keeps_each_priority(
    database: Database, arq_redis: ArqRedis, side_queue: HandOver, job_id: Callable[[str], str]
) -> None:
    prefix = job_id("bulk") + "-"
    priorities = ["high", "high", "low", "default", "high"]
    rows = [(f"{prefix}{n}", p, None) for n, p in enumerate(priorities)]
    ids = [r[0] for r in rows]
    await failed_rows(database, rows)
    try:
        # Retry all failed with a filter (the id prefix and the function: job.failed_ids's
        # statement for that pair), then where each job went.
        retried = await retry_failed(
            database[Role.APP], side_queue, function="noop", id_prefix=prefix
        )
        assert retried == len(ids)
        where = await placed(arq_redis, side_queue.settings.queue_name, ids)
        assert {jid: where.get(jid, ("nowhere", 0))[0] for jid in ids} == dict(
            zip(ids, priorities, strict=True)
        )
        kept = await ledger(database, ids)
        assert [kept[jid]["priority"] for jid in ids] == priorities
        # An exact id retries that one only; it is queued now, so nothing is retried again.
        assert await retry_failed(database[Role.APP], side_queue, job_id=ids[0]) == 0
    finally:
        await forget(database, arq_redis, ids)


def test_failed_high_job_retried_through_the_api_runs_again_at_once_as_high(
    api: httpx.Client,
    auth: dict[str, str],
    job_id: Callable[[str], str],
    wait_for_job: Callable[..., dict[str, Any]],
) -> None:
    jid = job_id("high-again")
    past = (datetime.now(UTC) - timedelta(minutes=5)).isoformat()
    body = {
        "job_id": jid,
        "function": "hello",
        "params": {"fail": True},
        "priority": "high",
        "run_at": past,
    }
    assert api.post("/api/v1/jobs", json=body, headers=auth).status_code == 202
    first = wait_for_job(jid)
    assert first["status"] == "failed" and first["priority"] == "high", first
    answer = api.post(f"/api/v1/jobs/{jid}/retry", headers=auth)
    assert answer.status_code == 202, answer.text
    assert answer.json()["priority"] == "high"
    retried_at = time.monotonic()
    deadline = retried_at + 20
    while (rec := api.get(f"/api/v1/jobs/{jid}", headers=auth).json())["tries"] < 2 or rec[
        "status"
    ] != "failed":
        assert time.monotonic() < deadline, f"the retry did not run: {rec}"
        time.sleep(0.1)
    assert rec["priority"] == "high" and rec["run_at"] is not None, rec
    assert [a["outcome"] for a in rec["attempts"]] == ["failed", "failed"]
    # At once: well before the dispatcher's sweep would have delivered it.
    assert time.monotonic() - retried_at < 10, "the retry waited"
