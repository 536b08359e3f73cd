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
from {{ cookiecutter.app_code }}.queue import all_queues, connect, queue_for, turns_key
from {{ cookiecutter.app_code }}.worker.claim import Claimer

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

IN_PROGRESS_MS = 60_000


@pytest.fixture
async def queue(arq_redis: ArqRedis) -> AsyncIterator[str]:
    """A queue of this test's own; it and every in-progress key of its jobs go at the end."""
    name = f"test-claim:{uuid.uuid4().hex[:10]}"
    yield name
    ids = [m.decode() for q in all_queues(name) for m in await arq_redis.zrange(q, 0, -1)]
    await arq_redis.delete(
        *all_queues(name), turns_key(name), *[in_progress_key_prefix + i for i in ids]
    )


@pytest.fixture
def add(arq_redis: ArqRedis, queue: str) -> Callable[..., asyncio.Future[list[str]]]:
    """Put `n` jobs in the queue, due `due_ms` from now (negative: overdue), oldest first."""

    async def put(
        n: int, due_ms: int = -1000, name: str = "j", priority: str = "default"
    ) -> list[str]:
        now = int(time.time() * 1000)
        ids = [f"{queue}:{name}{k:05d}" for k in range(n)]
        scores = {job_id: now + due_ms + k for k, job_id in enumerate(ids)}
        await arq_redis.zadd(queue_for(queue, priority), scores)  # type: ignore[arg-type]
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


# The three priorities (high, default, low): worker/claim.py's CLAIM_LUA.


async def test_reads_high_then_default_then_low_and_moves_claims_to_arqs_queue(
    arq_redis: ArqRedis, queue: str, add: Callable[..., asyncio.Future[list[str]]]
) -> None:
    low = await add(3, due_ms=-3000, name="low", priority="low")  # the oldest: still last
    default = await add(3, due_ms=-2000, name="def")
    high = await add(3, due_ms=-1000, name="high", priority="high")
    assert await claim(arq_redis, queue, want=4, every=0) == [*high, default[0]]
    assert await claim(arq_redis, queue, want=10, every=0) == [*default[1:], *low]
    assert await arq_redis.zcard(queue_for(queue, "high")) == 0, "claimed: moved to arq's queue"
    assert await arq_redis.zcard(queue_for(queue, "low")) == 0
    held = {m.decode(): int(s) for m, s in await arq_redis.zrange(queue, 0, -1, withscores=True)}
    assert set(held) == {*high, *default, *low}, "arq finishes and retries jobs in its queue"
    assert held[low[0]] < held[high[0]], "a moved entry keeps its score"


async def test_each_priority_is_first_in_first_out(
    arq_redis: ArqRedis, queue: str, add: Callable[..., asyncio.Future[list[str]]]
) -> None:
    ids = {p: await add(20, name=p, priority=p) for p in ("high", "default", "low")}
    got: list[str] = []
    while step := await claim(arq_redis, queue, want=3, every=0):
        got += step
    assert got == [*ids["high"], *ids["default"], *ids["low"]]


async def test_takes_only_due_entries_of_every_queue(
    arq_redis: ArqRedis, queue: str, add: Callable[..., asyncio.Future[list[str]]]
) -> None:
    for priority in ("high", "default", "low"):
        await add(2, due_ms=60_000, name=f"later-{priority}", priority=priority)
    due = await add(1, due_ms=-1, name="due", priority="low")
    assert await claim(arq_redis, queue, want=10) == due
    assert await claim(arq_redis, queue, want=10) == [], "delayed jobs wait for their score"


async def test_every_fifth_claim_takes_the_oldest_entry_of_any_priority(
    arq_redis: ArqRedis, queue: str, add: Callable[..., asyncio.Future[list[str]]]
) -> None:
    """Anti-starvation: under a backlog of `high`, one claim in five takes the oldest `low`."""
    low = await add(3, due_ms=-5000, name="low", priority="low")
    high = await add(20, due_ms=-1000, name="high", priority="high")
    got: list[str] = []
    for _ in range(10):  # one at a time, as a worker with one free slot claims
        got += await claim(arq_redis, queue, want=1, every=5)
    assert got == [*high[:4], low[0], *high[4:8], low[1]]
    assert int(await arq_redis.get(turns_key(queue)) or 0) == 10, "the turn counter advanced"
    # One claim of many slots follows the same turns.
    assert await claim(arq_redis, queue, want=5, every=5) == [*high[8:12], low[2]]


async def test_a_fair_turn_with_nothing_older_takes_high_first(
    arq_redis: ArqRedis, queue: str, add: Callable[..., asyncio.Future[list[str]]]
) -> None:
    high = await add(6, due_ms=-5000, name="high", priority="high")
    low = await add(2, due_ms=-1000, name="low", priority="low")
    assert await claim(arq_redis, queue, want=8, every=5) == [*high, *low]
