"""The clean-up cron on the real servers: old cron rows and their keys go, API rows stay.

(Rows that arq finished or Redis lost are the dispatcher's: test_dispatch.py.)"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from arq.connections import ArqRedis

from {{ cookiecutter.app_code }}.core.config import Settings
from {{ cookiecutter.app_code }}.db import Database, Role, get_one
from {{ cookiecutter.app_code }}.jobs.cleanup import CleanupJob, CleanupParams

from .conftest import forget

pytestmark = [pytest.mark.integration, pytest.mark.anyio]


@pytest.fixture
async def ids(database: Database, arq_redis: ArqRedis) -> AsyncIterator[dict[str, str]]:
    run_id = uuid.uuid4().hex[:10]
    names = ("old_cron", "new_cron", "old_api")
    made = {name: f"test-cleanup-{run_id}-{name}" for name in names}
    made["old_cron"] = f"cron:hello:{run_id}"
    made["new_cron"] = f"cron:hello:{run_id}1"
    yield made
    await forget(database, arq_redis, list(made.values()))


async def add_row(database: Database, job_id: str, status: str, age_s: int, source: str) -> None:
    async with database[Role.ADMIN].connection() as conn:
        await conn.execute(
            "INSERT INTO job (job_id, function, status, source, enqueued_at) "
            "VALUES (%s, 'hello', %s, %s, now() - make_interval(secs => %s))",
            [job_id, status, source, age_s],
        )


async def test_cleanup_deletes_old_cron_rows_and_keys_and_keeps_api_rows(
    database: Database, arq_redis: ArqRedis, settings: Settings, ids: dict[str, str]
) -> None:
    ttl = settings.key_ttl_seconds
    # A cron row older than the TTL goes with its keys; an API row of the same age stays, and
    # so does a recent cron row.
    await add_row(database, ids["old_cron"], "succeeded", ttl + 60, "cron")
    await arq_redis.set(f"arq:result:{ids['old_cron']}", b"{}", ex=600)
    await add_row(database, ids["new_cron"], "succeeded", 60, "cron")
    await add_row(database, ids["old_api"], "succeeded", ttl + 60, "api")

    job = CleanupJob("cron:cleanup:test", database[Role.DATA], arq_redis, ttl)
    summary = await job.execute(CleanupParams())

    async def row(name: str) -> dict[str, Any] | None:
        return await get_one(database[Role.ADMIN], "job.get", {"job_id": ids[name]})

    assert await row("old_cron") is None
    assert not await arq_redis.exists(f"arq:result:{ids['old_cron']}")
    assert await row("new_cron") is not None
    old_api = await row("old_api")
    assert old_api is not None and old_api["status"] == "succeeded"
    assert summary["ledger_rows"] >= 1 and summary["redis_keys"] >= 1
