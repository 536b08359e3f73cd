"""The worker's grouped Redis transactions (worker/transactions.py), on the stack's real Redis.

Each test uses keys of its own and a client of its own with grouping on, and counts the
MULTI/EXECs Redis ran (INFO commandstats) to tell one group from one transaction per caller.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import redis.exceptions
from arq.connections import ArqRedis

from {{ cookiecutter.app_code }}.core.config import Settings
from {{ cookiecutter.app_code }}.queue import connect
from {{ cookiecutter.app_code }}.worker import transactions
from {{ cookiecutter.app_code }}.worker.transactions import GroupedPipeline, group_of

pytestmark = [pytest.mark.integration, pytest.mark.anyio]


@pytest.fixture
async def grouped(settings: Settings) -> AsyncIterator[ArqRedis]:
    """A client whose transactions are grouped (as the worker's), then grouping off again."""
    transactions.install()
    client = await connect(settings)
    try:
        yield client
    finally:
        transactions.uninstall()
        await client.aclose()


@pytest.fixture
async def prefix(arq_redis: ArqRedis) -> AsyncIterator[str]:
    name = f"test-tx:{uuid.uuid4().hex[:10]}:"
    yield name
    keys = [k async for k in arq_redis.scan_iter(match=name + "*")]
    if keys:
        await arq_redis.delete(*keys)


async def execs(redis: ArqRedis) -> int:
    """How many EXECs Redis has run since it started."""
    stats = await redis.info("commandstats")
    return int(stats.get("cmdstat_exec", {}).get("calls", 0))


async def finish_like_arq(redis: ArqRedis, prefix: str, n: int) -> list[object]:
    """What arq's Worker.finish_job sends for a job, as one transaction."""
    async with redis.pipeline(transaction=True) as tr:
        tr.set(f"{prefix}result:{n}", f"r{n}", px=60_000)
        tr.zrem(f"{prefix}queue", f"j{n}")
        tr.incr(f"{prefix}tries:{n}")
        tr.delete(f"{prefix}job:{n}")
        return await tr.execute()


async def test_concurrent_transactions_go_as_one_with_each_its_own_replies(
    grouped: ArqRedis, arq_redis: ArqRedis, prefix: str
) -> None:
    await arq_redis.zadd(f"{prefix}queue", {f"j{n}": n for n in range(20)})
    await arq_redis.mset({f"{prefix}job:{n}": b"x" for n in range(0, 20, 2)})
    group = group_of(grouped)
    before = (await execs(arq_redis), group.groups, group.transactions)

    replies = await asyncio.gather(*(finish_like_arq(grouped, prefix, n) for n in range(20)))

    # Each caller gets the replies to its own commands (INCR counts per key; DEL finds only
    # the even jobs' keys), as if it had been alone.
    assert replies == [[True, 1, 1, 1 if n % 2 == 0 else 0] for n in range(20)]
    assert await arq_redis.zcard(f"{prefix}queue") == 0
    assert await arq_redis.get(f"{prefix}result:7") == b"r7"
    ran = await execs(arq_redis) - before[0]
    assert (group.groups - before[1], group.transactions - before[2]) == (1, 20)
    # Redis counts every client's EXECs: the stack's own worker may add one meanwhile.
    assert ran <= 2, f"20 concurrent transactions took {ran} MULTI/EXECs; grouped, they take 1"


async def test_without_grouping_each_transaction_is_its_own_exec(
    arq_redis: ArqRedis, prefix: str
) -> None:
    """The control for the count above: redis-py alone sends one MULTI/EXEC per caller."""
    before = await execs(arq_redis)
    await asyncio.gather(*(finish_like_arq(arq_redis, prefix, n) for n in range(5)))
    assert await execs(arq_redis) - before >= 5


def refused_in_exec(tr: Any, prefix: str) -> None:
    """INCR of a string: Redis queues it, then refuses it inside EXEC; the rest applies."""
    tr.set(f"{prefix}bad-side", b"1")
    tr.incr(f"{prefix}text")


def refused_at_queue(tr: Any, prefix: str) -> None:
    """SET with a key alone: Redis will not queue it, and aborts the whole MULTI/EXEC."""
    tr.execute_command("SET", f"{prefix}only-a-key")


@pytest.mark.parametrize(
    "bad", [refused_in_exec, refused_at_queue], ids=["refused-in-exec", "aborts-the-group"]
)
async def test_a_bad_transaction_fails_alone(
    grouped: ArqRedis, prefix: str, bad: Callable[[Any, str], None]
) -> None:
    """Grouped with two good transactions, a bad one fails only itself (a group Redis aborts
    is sent again one transaction at a time)."""
    await grouped.set(f"{prefix}text", b"not a number")

    async def send_bad() -> list[object]:
        async with grouped.pipeline(transaction=True) as tr:
            bad(tr, prefix)
            return await tr.execute()

    results = await asyncio.gather(
        finish_like_arq(grouped, prefix, 1),
        send_bad(),
        finish_like_arq(grouped, prefix, 2),
        return_exceptions=True,
    )
    assert results[0] == [True, 0, 1, 0]
    assert isinstance(results[1], redis.exceptions.ResponseError), results[1]
    assert results[2] == [True, 0, 1, 0]
    assert await grouped.get(f"{prefix}result:2") == b"r2"


async def test_watch_and_plain_pipelines_are_left_alone(grouped: ArqRedis, prefix: str) -> None:
    """arq's enqueue_job WATCHes its job key: that transaction must keep its own EXEC, which
    fails when the key changed."""
    key = f"{prefix}watched"
    async with grouped.pipeline(transaction=True) as pipe:
        assert isinstance(pipe, GroupedPipeline)
        await pipe.watch(key)
        await grouped.set(key, b"changed meanwhile")  # another client's write
        pipe.multi()
        pipe.set(key, b"mine")
        with pytest.raises(redis.exceptions.WatchError):
            await pipe.execute()
    assert await grouped.get(key) == b"changed meanwhile"
    group = group_of(grouped)
    before = group.transactions
    async with grouped.pipeline(transaction=False) as pipe:
        pipe.set(f"{prefix}plain", b"1")
        assert await pipe.execute() == [True]
    assert group.transactions == before
