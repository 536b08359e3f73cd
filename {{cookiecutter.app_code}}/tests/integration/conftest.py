"""Fixtures for tests against the running stack (`make up`): API over HTTP, real pools, Redis.

A service that is not there fails the test with what to do; nothing is skipped.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from arq.connections import ArqRedis

from {{ cookiecutter.app_code }}.core.config import Settings
from {{ cookiecutter.app_code }}.db import Database, DatabaseUnavailable
from {{ cookiecutter.app_code }}.queue import QueueUnavailable, connect

JOB_WAIT_SECONDS = 20.0


@pytest.fixture(scope="session")
def auth(settings: Settings) -> dict[str, str]:
    return {"Authorization": f"Bearer {settings.api_token.get_secret_value()}"}


@pytest.fixture
def job_id() -> Callable[[str], str]:
    """Fresh ids: every submission needs a new one, forever."""
    run = uuid.uuid4().hex[:10]
    return lambda name="t": f"test-{name}-{run}-{uuid.uuid4().hex[:6]}"


@pytest.fixture
def wait_for_job(api: httpx.Client) -> Callable[..., dict[str, Any]]:
    def wait(job_id: str, statuses: tuple[str, ...] = ("succeeded", "failed")) -> dict[str, Any]:
        deadline = time.monotonic() + JOB_WAIT_SECONDS
        record: dict[str, Any] = {}
        while time.monotonic() < deadline:
            response = api.get(f"/api/v1/jobs/{job_id}")
            if response.status_code == 200:
                record = response.json()
                if record["status"] in statuses:
                    return record
            time.sleep(0.1)
        pytest.fail(
            f"job {job_id} did not reach {statuses} within {JOB_WAIT_SECONDS:.0f} s "
            f"(last seen: {record.get('status', 'not found')}); is the worker running? "
            "(make status, make logs)"
        )

    return wait


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
async def arq_redis(settings: Settings) -> AsyncIterator[ArqRedis]:
    try:
        redis = await connect(settings)
    except QueueUnavailable as exc:
        pytest.fail(f"{exc}: start the stack with `make up`", pytrace=False)
    try:
        yield redis
    finally:
        await redis.aclose()
