"""The batched claim's Lua script (worker/claim.py) on the stack's real Redis, called directly.

Each test makes a queue of its own, with arq's key layout (a sorted set scored by due time in
ms, `arq:in-progress:<id>` for a claimed job), and checks what one call claims and leaves.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable

import pytest
from arq.connections import ArqRedis
from arq.constants import in_progress_key_prefix

from {{ cookiecutter.app_code }}.core.config import Settings
from {{ cookiecutter.app_code }}.queue import connect
from {{ cookiecutter.app_code }}.worker.claim import Claimer

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

IN_PROGRESS_MS = 60_000


@pytest.fixture
async def queue(arq_redis: ArqRedis) -> AsyncIterator[str]:
    """A queue of this test's own; it and every in-progress key of its jobs go at the end."""
    name = f"test-claim:{uuid.uuid4().hex[:10]}"
    yield name
    ids = [m.decode() for m in await arq_redis.zrange(name, 0, -1)]
    await arq_redis.delete(name, *[in_progress_key_prefix + i for i in ids])


@pytest.fixture
def add(arq_redis: ArqRedis, queue: str) -> Callable[..., asyncio.Future[list[str]]]:
    """Put `n` jobs in the queue, due `due_ms` from now (negative: overdue), oldest first."""

    async def put(n: int, due_ms: int = -1000, name: str = "j") -> list[str]:
        now = int(time.time() * 1000)
        ids = [f"{queue}:{name}{k:05d}" for k in range(n)]
        await arq_redis.zadd(queue, {job_id: now + due_ms + k for k, job_id in enumerate(ids)})
        return ids

    return put  # type: ignore[return-value]


async def running(arq_redis: ArqRedis, ids: list[str]) -> None:
    """Mark jobs as claimed by some worker, as arq does."""
    for job_id in ids:
        await arq_redis.set(in_progress_key_prefix + job_id, b"1", px=IN_PROGRESS_MS)


async def claim(redis: ArqRedis, queue: str, want: int, window: int = 10, **more: int) -> list[str]:
    found = await Claimer(redis).claim(
        queue, want=want, in_progress_ms=IN_PROGRESS_MS, window=window, **more
    )
    return [job_id for job_id, _ in found]


async def test_claims_due_jobs_oldest_first_and_marks_them_in_progress(
    arq_redis: ArqRedis, queue: str, add: Callable[..., asyncio.Future[list[str]]]
) -> None:
    due = await add(5)
    got = await claim(arq_redis, queue, want=3)
    assert got == due[:3], "the claim takes the oldest due jobs, as many as asked"
    for job_id in due[:3]:
        ttl = await arq_redis.pttl(in_progress_key_prefix + job_id)
        assert 0 < ttl <= IN_PROGRESS_MS, f"{job_id}: in-progress key TTL {ttl} ms"
    for job_id in due[3:]:
        assert not await arq_redis.exists(in_progress_key_prefix + job_id)
    assert await arq_redis.zcard(queue) == 5, "claimed jobs stay queued until they finish"


async def test_leaves_jobs_that_are_not_due(
    arq_redis: ArqRedis, queue: str, add: Callable[..., asyncio.Future[list[str]]]
) -> None:
    due = await add(2, due_ms=-1000, name="due")
    await add(3, due_ms=60_000, name="later")
    assert await claim(arq_redis, queue, want=10) == due


async def test_skips_jobs_already_claimed(
    arq_redis: ArqRedis, queue: str, add: Callable[..., asyncio.Future[list[str]]]
) -> None:
    ids = await add(4)
    await running(arq_redis, ids[:2])
    assert await claim(arq_redis, queue, want=10) == ids[2:]
    assert await claim(arq_redis, queue, want=10) == [], "a second claim finds nothing left"


async def test_reads_past_running_jobs_beyond_the_first_window(
    arq_redis: ArqRedis, queue: str, add: Callable[..., asyncio.Future[list[str]]]
) -> None:
    ids = await add(40)
    await running(arq_redis, ids[:30])
    # Windows of 5, 10, 20: the first 35 entries; the next window reaches the rest.
    assert await claim(arq_redis, queue, want=20, window=5) == ids[30:]


async def test_reads_no_further_than_its_limit(
    arq_redis: ArqRedis, queue: str, add: Callable[..., asyncio.Future[list[str]]]
) -> None:
    ids = await add(8)
    await running(arq_redis, ids[:5])
    # A window starts only below `most`: with 5, the first window (5 running jobs) is all.
    assert await claim(arq_redis, queue, want=5, window=5, most=5) == []
    assert await claim(arq_redis, queue, want=5, window=5, most=10) == ids[5:]


async def test_concurrent_claimers_share_the_jobs_without_overlap(
    settings: Settings,
    arq_redis: ArqRedis,
    queue: str,
    add: Callable[..., asyncio.Future[list[str]]],
) -> None:
    ids = await add(400)
    clients = [await connect(settings) for _ in range(4)]
    try:

        async def drain(redis: ArqRedis) -> list[str]:
            mine: list[str] = []
            while got := await claim(redis, queue, want=7, window=10):
                mine += got
            return mine

        shares = await asyncio.gather(*(drain(c) for c in clients))
    finally:
        for client in clients:
            await client.aclose()
    every = [job_id for share in shares for job_id in share]
    assert len(every) == len(set(every)), "a job was claimed twice"
    assert sorted(every) == ids, "a due job was left unclaimed"
    assert sum(1 for share in shares if share) > 1, "one claimer took everything"
