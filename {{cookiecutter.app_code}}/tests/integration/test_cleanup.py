"""The clean-up cron on the real servers: old cron rows and their keys go, API rows stay, and
rows that arq will never finish are failed with the reason."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from arq.connections import ArqRedis
from arq.jobs import serialize_result
from arq.worker import JobExecutionFailed

from {{ cookiecutter.app_code }}.core.config import Settings
from {{ cookiecutter.app_code }}.db import Database, Role, get_one
from {{ cookiecutter.app_code }}.jobs.cleanup import UNFINISHED_GRACE_S, CleanupParams, run
from {{ cookiecutter.app_code }}.queue import serialize

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

OLD = UNFINISHED_GRACE_S + 60  # seconds


@pytest.fixture
async def ids(database: Database, arq_redis: ArqRedis) -> AsyncIterator[dict[str, str]]:
    run_id = uuid.uuid4().hex[:10]
    names = ("lost", "gave_up", "queued", "running", "recent", "old_cron", "old_api")
    made = {name: f"test-cleanup-{run_id}-{name}" for name in names}
    made["old_cron"] = f"cron:hello:{run_id}"
    yield made
    async with database[Role.ADMIN].connection() as conn:
        await conn.execute("DELETE FROM job WHERE job_id = ANY(%s)", [list(made.values())])
    keys = [f"arq:{kind}:{i}" for i in made.values() for kind in ("job", "result", "in-progress")]
    await arq_redis.delete(*keys)


async def add_row(database: Database, job_id: str, status: str, age_s: int, source: str) -> None:
    async with database[Role.ADMIN].connection() as conn:
        await conn.execute(
            "INSERT INTO job (job_id, function, status, source, enqueued_at) "
            "VALUES (%s, 'hello', %s, %s, now() - make_interval(secs => %s))",
            [job_id, status, source, age_s],
        )


async def test_cleanup_fails_what_arq_will_not_finish_and_nothing_else(
    database: Database, arq_redis: ArqRedis, settings: Settings, ids: dict[str, str]
) -> None:
    ttl = settings.key_ttl_seconds
    # Lost: queued long ago, and Redis knows nothing of it (its keys expired).
    await add_row(database, ids["lost"], "queued", OLD, "api")
    # arq gave up: its failed result is all that is left in Redis.
    await add_row(database, ids["gave_up"], "queued", OLD, "api")
    # What arq's worker stores then (arq/worker.py, run_job: "max retries exceeded").
    failed = serialize_result(
        "hello", (), {}, 6, 0, False, JobExecutionFailed("max 5 retries exceeded"), 0, 0,
        f"{ids['gave_up']}:hello", settings.queue_name, ids["gave_up"], serializer=serialize,
    )  # fmt: skip
    assert failed is not None
    await arq_redis.set(f"arq:result:{ids['gave_up']}", failed, ex=600)
    # Still queued in arq (a retry waiting), and running (in-progress key): left alone.
    await add_row(database, ids["queued"], "queued", OLD, "api")
    await arq_redis.set(f"arq:job:{ids['queued']}", b"{}", ex=600)
    await add_row(database, ids["running"], "in_progress", OLD, "api")
    await arq_redis.set(f"arq:in-progress:{ids['running']}", b"1", ex=600)
    # Too recent to judge.
    await add_row(database, ids["recent"], "queued", 5, "api")
    # A cron row older than the TTL goes with its keys; an API row of the same age stays.
    await add_row(database, ids["old_cron"], "succeeded", ttl + 60, "cron")
    await arq_redis.set(f"arq:result:{ids['old_cron']}", b"{}", ex=600)
    await add_row(database, ids["old_api"], "succeeded", ttl + 60, "api")

    ctx: dict[str, Any] = {"settings": settings, "db": database[Role.DATA], "redis": arq_redis}
    summary = await run(ctx, CleanupParams())

    async def row(name: str) -> dict[str, Any] | None:
        return await get_one(database[Role.ADMIN], "job.get", {"job_id": ids[name]})

    lost, gave_up = await row("lost"), await row("gave_up")
    assert lost is not None and lost["status"] == "failed" and lost["finished_at"] is not None
    assert "lost (ledger said queued)" in lost["error"] and "new id" in lost["error"]
    assert gave_up is not None and gave_up["status"] == "failed"
    assert "max 5 retries exceeded" in gave_up["error"], gave_up["error"]
    for name, status in (("queued", "queued"), ("running", "in_progress"), ("recent", "queued")):
        kept = await row(name)
        assert kept is not None and kept["status"] == status, (name, kept)
    assert await row("old_cron") is None
    assert not await arq_redis.exists(f"arq:result:{ids['old_cron']}")
    old_api = await row("old_api")
    assert old_api is not None and old_api["status"] == "succeeded"
    assert summary["lost_jobs_failed"] >= 2 and summary["ledger_rows"] >= 1

    # A second run leaves the failed rows as they are.
    await run(ctx, CleanupParams())
    assert await row("lost") == lost
