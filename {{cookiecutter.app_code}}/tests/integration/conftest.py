"""Fixtures for tests against the running stack (`make up`): API over HTTP, real pools, Redis.

A service that is not there fails the test with what to do; nothing is skipped.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
from arq.connections import ArqRedis

from {{ cookiecutter.app_code }}.core.config import Settings
from {{ cookiecutter.app_code }}.db import Database, DatabaseUnavailable, Role
from {{ cookiecutter.app_code }}.queue import QueueUnavailable, connect


@pytest.fixture
async def database(settings: Settings) -> AsyncIterator[Database]:
    """Pools of all three roles, like the processes open them."""
    db = Database(settings)
    try:
        await db.open()
    except DatabaseUnavailable as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        yield db
    finally:
        await db.close()


@pytest.fixture
async def function(database: Database) -> AsyncIterator[str]:
    """A job function name of this test alone: the stack's jobs never count under it, so the
    test's rows, counters and per-minute rollup are its own (all deleted afterwards)."""
    name = f"test-fn-{uuid.uuid4().hex[:10]}"
    yield name
    async with database[Role.ADMIN].connection() as conn:
        for table in ("job", "job_minute", "job_count"):
            await conn.execute(f"DELETE FROM {table} WHERE function = %s", [name])


@pytest.fixture
async def arq_redis(settings: Settings) -> AsyncIterator[ArqRedis]:
    try:
        redis = await connect(settings)
    except QueueUnavailable as exc:
        pytest.fail(f"{exc}: start the stack with `make up`", pytrace=False)
    try:
        yield redis
    finally:
        await redis.aclose()


async def forget(database: Database, arq_redis: ArqRedis, job_ids: list[str]) -> None:
    """Remove what a test made for these ids: their ledger rows and arq's keys."""
    async with database[Role.ADMIN].connection() as conn:
        await conn.execute("DELETE FROM job WHERE job_id = ANY(%s)", [job_ids])
    keys = [f"arq:{kind}:{i}" for i in job_ids for kind in ("job", "result", "in-progress")]
    await arq_redis.delete(*keys)
