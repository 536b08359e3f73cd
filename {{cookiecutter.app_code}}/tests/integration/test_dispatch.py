"""The dispatcher on the real servers: each state Redis can be in for an unfinished ledger row,
made by hand, then one sweep, then the stack's worker does the rest.

The stack's own dispatcher sweeps too (every 2 s): both are safe together, so the test checks
outcomes, not who produced them.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from arq.connections import ArqRedis
from arq.jobs import serialize_job, serialize_result
from arq.worker import JobExecutionFailed

from {{ cookiecutter.app_code }}.core.config import Settings
from {{ cookiecutter.app_code }}.db import Database, Role, get_one
from {{ cookiecutter.app_code }}.ledger.dispatch import Dispatcher
from {{ cookiecutter.app_code }}.queue import serialize

from .conftest import forget
from .reads import hello_row

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

AGE_S = 10  # older than the dispatcher's MIN_AGE_S
WAIT_S = 20.0
CASES = ("lost", "gave_up", "done", "expired", "running", "orphan", "cron_lost")


@pytest.fixture
async def ids(database: Database, arq_redis: ArqRedis) -> AsyncIterator[dict[str, str]]:
    run_id = uuid.uuid4().hex[:10]
    made = {name: f"test-dispatch-{run_id}-{name}" for name in CASES}
    made["cron_lost"] = f"cron:hello:{run_id}"
    yield made
    await forget(database, arq_redis, list(made.values()))


async def add_row(database: Database, job_id: str, status: str, source: str = "api") -> None:
    async with database[Role.ADMIN].connection() as conn:
        await conn.execute(
            "INSERT INTO job (job_id, function, params, status, source, enqueued_at) "
            "VALUES (%s, 'hello', '{\"name\": \"dispatch\"}', %s, %s, "
            "now() - make_interval(secs => %s))",
            [job_id, status, source, AGE_S],
        )


def arq_result(settings: Settings, job_id: str, success: bool, outcome: Any, fn: str) -> bytes:
    """What arq's worker stores at the end of a run (arq/worker.py, run_job)."""
    raw = serialize_result(
        fn, (), {}, 1, 0, success, outcome, 0, 0, f"{job_id}:{fn}", settings.queue_name, job_id,
        serializer=serialize,
    )  # fmt: skip
    assert raw is not None
    return raw


async def settle(database: Database, ids: dict[str, str], want: dict[str, str]) -> dict[str, Any]:
    """Every row of `want` once it has its status; fails with what it saw."""
    deadline = time.monotonic() + WAIT_S
    rows: dict[str, Any] = {}
    while time.monotonic() < deadline:
        for name in want:
            rows[name] = await get_one(database[Role.ADMIN], "job.get", {"job_id": ids[name]})
        if all(rows[n] is not None and rows[n]["status"] == s for n, s in want.items()):
            return rows
        await asyncio.sleep(0.2)
    seen = {n: r and r["status"] for n, r in rows.items()}
    pytest.fail(f"after {WAIT_S:.0f} s: {seen}, wanted {want}")


async def test_one_sweep_makes_redis_and_the_ledger_agree(
    database: Database, arq_redis: ArqRedis, settings: Settings, ids: dict[str, str]
) -> None:
    ttl = 600
    # Lost: Redis knows nothing of a queued job (a FLUSHALL, a crash, a failover).
    await add_row(database, ids["lost"], "queued")
    # arq gave up (max tries): its failed result is all that is left.
    await add_row(database, ids["gave_up"], "queued")
    failed = arq_result(
        settings, ids["gave_up"], False, JobExecutionFailed("max 5 retries exceeded"), "hello"
    )
    await arq_redis.set(f"arq:result:{ids['gave_up']}", failed, ex=ttl)
    # Done, but the worker could not record the end (PostgreSQL was away).
    await add_row(database, ids["done"], "in_progress")
    ok = arq_result(settings, ids["done"], True, {"message": "hello dispatch: done"}, "hello")
    await arq_redis.set(f"arq:result:{ids['done']}", ok, ex=ttl)
    # Its keys expired before a worker came to it: arq wrote "job expired".
    await add_row(database, ids["expired"], "queued")
    expired = arq_result(
        settings, ids["expired"], False, JobExecutionFailed("job expired"), "<unknown>"
    )
    await arq_redis.set(f"arq:result:{ids['expired']}", expired, ex=ttl)
    # Claimed by a worker (in-progress key): left alone.
    await add_row(database, ids["running"], "in_progress")
    await arq_redis.set(f"arq:job:{ids['running']}", b"{}", ex=ttl)
    await arq_redis.set(f"arq:in-progress:{ids['running']}", b"1", ex=ttl)
    # A job key that lost its queue entry (neither queued nor claimed): it would never run.
    await add_row(database, ids["orphan"], "queued")
    job = serialize_job("hello", (), {"name": "orphan"}, None, 0, serializer=serialize)
    await arq_redis.set(f"arq:job:{ids['orphan']}", job, ex=ttl)
    # A cron run that Redis forgot: not delivered again (the next tick runs).
    await add_row(database, ids["cron_lost"], "in_progress", source="cron")

    await Dispatcher(settings, database[Role.DATA], arq_redis).sweep()

    rows = await settle(
        database,
        ids,
        {
            "lost": "succeeded",
            "gave_up": "failed",
            "done": "succeeded",
            "expired": "succeeded",
            "orphan": "succeeded",
            "cron_lost": "failed",
        },
    )
    assert "max 5 retries exceeded" in rows["gave_up"]["error"], rows["gave_up"]["error"]
    assert rows["done"]["result"] == {"message": "hello dispatch: done"}
    assert rows["done"]["finished_at"] is not None
    assert "Redis forgot" in rows["cron_lost"]["error"]
    for name in ("lost", "expired", "orphan"):  # run by the stack's worker, once
        assert rows[name]["tries"] == 1, rows[name]
        hello = await hello_row(database[Role.ADMIN], ids[name])
        assert hello is not None, name
    running = await get_one(database[Role.ADMIN], "job.get", {"job_id": ids["running"]})
    assert running is not None and running["status"] == "in_progress"
    assert await arq_redis.exists(f"arq:job:{ids['running']}")


async def test_a_sweep_never_overwrites_an_end_the_worker_recorded(
    database: Database, arq_redis: ArqRedis, settings: Settings, ids: dict[str, str]
) -> None:
    """arq's result says failed, but the ledger already says succeeded: the ledger stands."""
    await add_row(database, ids["done"], "succeeded")
    failed = arq_result(settings, ids["done"], False, RuntimeError("stale"), "hello")
    await arq_redis.set(f"arq:result:{ids['done']}", failed, ex=600)
    await Dispatcher(settings, database[Role.DATA], arq_redis).sweep(min_age_s=0)
    row = await get_one(database[Role.ADMIN], "job.get", {"job_id": ids["done"]})
    assert row is not None and row["status"] == "succeeded" and row["error"] is None
